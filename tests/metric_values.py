"""Reading the process's Prometheus counters in tests."""

from __future__ import annotations

from core.metrics import METRICS


def telegram_api_calls(method: str, status: str) -> float:
    """`animebot_telegram_api_calls_total{method, status}` as counted so far (0 when never)."""
    for metric in METRICS.registry.collect():
        for sample in metric.samples:
            if sample.name == "animebot_telegram_api_calls_total" and sample.labels == {
                "method": method,
                "status": status,
            }:
                return float(sample.value)
    return 0.0
