"""Parameter injection: a workflow + values -> the API prompt to POST to ComfyUI.

`patch` is pure apart from generating a job id when none is given: it deep-copies the template,
writes each value into its node inputs as a JSON value (never by string templating, so a prompt
with quotes, braces or newlines stays exactly that string), removes bypassed nodes (e.g. the
LoraLoader when no LoRA is given) rewiring their consumers, and gives every output node a
per-job `filename_prefix` so outputs never collide and a rerun is never served from cache.
"""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Mapping
from typing import Any

from core.errors import WorkflowError
from core.workflows.manifest import ParamValue, Workflow, check_value, is_link

DEFAULT_PREFIX_ROOT = "animebot"
_UNSAFE_ID = re.compile(r"[^A-Za-z0-9_-]")


def _empty(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def job_prefix(job_id: str, root: str = DEFAULT_PREFIX_ROOT) -> str:
    """`animebot/<job id>`, with anything but letters, digits, '_' and '-' replaced."""
    safe = _UNSAFE_ID.sub("_", job_id)[:64].strip("_") or uuid.uuid4().hex
    return f"{root}/{safe}"


def resolve_values(workflow: Workflow, params: Mapping[str, object]) -> dict[str, ParamValue]:
    """Check `params` against the manifest and fill defaults. Returns the value of every
    parameter that will be written (bypassed LoRA parameters are left out)."""
    unknown = sorted(set(params) - set(workflow.params))
    if unknown:
        raise WorkflowError(
            f"workflow {workflow.name!r}: unknown parameter(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(sorted(workflow.params))}",
            user_message=f"Unknown option {unknown[0]!r} for this workflow.",
        )
    bypassed = _bypassed_nodes(workflow, params)
    values: dict[str, ParamValue] = {}
    for name, spec in workflow.params.items():
        if all(t.node in bypassed for t in spec.targets):
            continue
        given = params.get(name)
        value: object = spec.default if given is None else given
        if value is None:
            hint = (
                f"; set the model setting {spec.model_key!r}" if spec.model_key is not None else ""
            )
            raise WorkflowError(
                f"workflow {workflow.name!r}: parameter {name!r} is required{hint}",
                user_message=f"{name} is missing.",
            )
        values[name] = check_value(spec, value)
    return values


def _bypassed_nodes(workflow: Workflow, params: Mapping[str, object]) -> set[str]:
    bypassed: set[str] = set()
    for bypass in workflow.bypasses:
        value = params.get(bypass.when_empty)
        if value is None:
            value = workflow.params[bypass.when_empty].default
        if _empty(value):
            bypassed.add(bypass.node)
    return bypassed


def _rewire(prompt: dict[str, Any], workflow: Workflow, bypassed: set[str]) -> None:
    """Drop bypassed nodes; a link to output i of one is replaced by the link feeding its
    stand-in input, followed through chains of bypassed nodes."""
    stand_in = {b.node: b.outputs for b in workflow.bypasses if b.node in bypassed}
    originals = {node_id: prompt[node_id] for node_id in bypassed}
    for node_id in bypassed:
        del prompt[node_id]

    def resolve(link: list[Any]) -> list[Any]:
        seen: set[str] = set()
        while link[0] in stand_in:
            if link[0] in seen:
                raise WorkflowError(f"workflow {workflow.name!r}: bypass loop at node {link[0]}")
            seen.add(link[0])
            link = originals[link[0]]["inputs"][stand_in[link[0]][link[1]]]
        return [link[0], link[1]]

    for node in prompt.values():
        inputs = node["inputs"]
        for input_name, value in inputs.items():
            if is_link(value) and value[0] in stand_in:
                inputs[input_name] = resolve(value)
    for node_id, node in prompt.items():
        for input_name, value in node["inputs"].items():
            if is_link(value) and value[0] not in prompt:
                raise WorkflowError(
                    f"workflow {workflow.name!r}: node {node_id} input {input_name!r} still "
                    f"links to removed node {value[0]}"
                )


def patch(
    workflow: Workflow,
    params: Mapping[str, object],
    *,
    job_id: str | None = None,
    prefix_root: str = DEFAULT_PREFIX_ROOT,
) -> dict[str, Any]:
    """A new API-format prompt with `params` (validated, defaults filled) written in.

    `None` means "not given" (the default is used). An empty/None LoRA name bypasses that
    LoraLoader. Raises `WorkflowError` for an unknown parameter, a missing required one, or a
    value of the wrong type or out of range (its `user_message` names the limit).
    """
    values = resolve_values(workflow, params)
    bypassed = _bypassed_nodes(workflow, params)
    prompt: dict[str, Any] = copy.deepcopy(dict(workflow.prompt))
    for name, value in values.items():
        for target in workflow.params[name].targets:
            if target.node not in bypassed:
                prompt[target.node]["inputs"][target.input] = value
    if bypassed:
        _rewire(prompt, workflow, bypassed)

    prefix = job_prefix(job_id if job_id is not None else uuid.uuid4().hex, prefix_root)
    with_prefix = [n for n in workflow.outputs if "filename_prefix" in prompt[n]["inputs"]]
    for node_id in with_prefix:
        suffix = f"_{node_id}" if len(with_prefix) > 1 else ""
        prompt[node_id]["inputs"]["filename_prefix"] = prefix + suffix
    return prompt


def even_scaled_size(
    width: int, height: int, scale: float, *, maximum: int = 8192
) -> tuple[int, int]:
    """`width`x`height` times `scale`, each side rounded to an even number (h264 and most
    encoders need even sizes), at least 2 and at most `maximum` keeping the aspect ratio."""
    if width < 1 or height < 1 or not scale > 0:
        raise WorkflowError(
            f"cannot scale {width}x{height} by {scale}", user_message="Bad image size."
        )
    top = max(2, maximum - maximum % 2)
    factor = min(scale, top / width, top / height)
    return (
        min(top, max(2, round(width * factor / 2) * 2)),
        min(top, max(2, round(height * factor / 2) * 2)),
    )
