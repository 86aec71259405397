"""Progress maths (pure): overall percent over all sampler nodes, ETA from the recent step rate.

A workflow may sample more than once (a refiner, a second pass); the percent is over the sum of
the steps of every sampler node, and non-sampler nodes only move a small share of the bar.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SAMPLER_CLASSES = frozenset(
    {"KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced"}
)
# Share of the bar for everything that is not a sampler step (loading, decoding, saving).
NON_SAMPLER_SHARE = 0.1
_RATE_WINDOW = 8


def sampler_steps(prompt: Mapping[str, Any]) -> dict[str, int]:
    """Steps per sampler node of an API-format prompt (1 when steps is not a plain number)."""
    steps: dict[str, int] = {}
    for node_id, node in prompt.items():
        if not isinstance(node, Mapping) or node.get("class_type") not in SAMPLER_CLASSES:
            continue
        value = node.get("inputs", {}).get("steps")
        steps[str(node_id)] = value if isinstance(value, int) and value > 0 else 1
    return steps


@dataclass(frozen=True)
class ProgressSnapshot:
    percent: float  # 0..100
    node: str | None
    step: int | None
    steps: int | None
    eta_s: float | None


@dataclass
class ProgressModel:
    """Fed with ComfyUI events of one prompt; `snapshot()` says where it is."""

    samplers: dict[str, int]
    total_nodes: int
    node: str | None = None
    executed_nodes: set[str] = field(default_factory=set)
    sampler_done: dict[str, int] = field(default_factory=dict)
    _step_times: deque[tuple[float, int]] = field(
        default_factory=lambda: deque(maxlen=_RATE_WINDOW)
    )

    @classmethod
    def for_prompt(cls, prompt: Mapping[str, Any]) -> ProgressModel:
        return cls(samplers=sampler_steps(prompt), total_nodes=max(1, len(prompt)))

    @property
    def total_steps(self) -> int:
        return sum(self.samplers.values())

    def cached(self, nodes: tuple[str, ...] | list[str]) -> None:
        for node in nodes:
            self.executed_nodes.add(node)
            if node in self.samplers:
                self.sampler_done[node] = self.samplers[node]

    def executing(self, node: str) -> None:
        if self.node is not None and self.node != node:
            self.executed_nodes.add(self.node)
            if self.node in self.samplers:
                self.sampler_done[self.node] = self.samplers[self.node]
        self.node = node

    def step(self, node: str | None, value: int, maximum: int, now: float) -> None:
        if node is None:
            node = self.node
        if node is None:
            return
        if node not in self.samplers or self.samplers[node] != maximum:
            self.samplers[node] = max(1, maximum)
        self.sampler_done[node] = min(value, self.samplers[node])
        self.node = node
        self._step_times.append((now, self._done_steps()))

    def _done_steps(self) -> int:
        return sum(self.sampler_done.get(node, 0) for node in self.samplers)

    def percent(self) -> float:
        node_part = len(self.executed_nodes) / self.total_nodes
        if not self.samplers:
            return round(100 * min(1.0, node_part), 1)
        step_part = self._done_steps() / max(1, self.total_steps)
        value = (1 - NON_SAMPLER_SHARE) * step_part + NON_SAMPLER_SHARE * min(1.0, node_part)
        return round(100 * min(1.0, value), 1)

    def eta(self) -> float | None:
        """Seconds left for the remaining sampler steps at the recent step rate."""
        if len(self._step_times) < 2:
            return None
        (t0, s0), (t1, s1) = self._step_times[0], self._step_times[-1]
        if t1 <= t0 or s1 <= s0:
            return None
        rate = (s1 - s0) / (t1 - t0)
        return max(0.0, (self.total_steps - s1) / rate)

    def snapshot(self) -> ProgressSnapshot:
        node = self.node
        step = self.sampler_done.get(node) if node in self.samplers else None
        steps = self.samplers.get(node) if node is not None else None
        return ProgressSnapshot(self.percent(), node, step, steps, self.eta())
