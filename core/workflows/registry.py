"""The set of workflows the bot can run: the builtin templates plus user-supplied ones.

`Registry.load(builtin_dir, extra_dirs, model_defaults=...)` reads every `<stem>.json` +
`<stem>.manifest.json` pair. A broken builtin is a hard error; a broken user workflow is logged,
kept in `Registry.problems` (for `animebot doctor`) and skipped. A user workflow whose name
matches an earlier one replaces it (logged).

`required_node_types` and `check_against_object_info` compare a workflow with a backend's
`/object_info` so jobs are routed only to backends that can run them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import WorkflowError
from core.logs import get_logger
from core.workflows.manifest import (
    MANIFEST_SUFFIX,
    Kind,
    Workflow,
    is_link,
    load_workflow,
    manifest_path_for,
    workflow_path_for,
)

log = get_logger(__name__)

BUILTIN_DIR = Path(__file__).resolve().parent / "templates"


def _pairs(directory: Path) -> tuple[list[tuple[Path, Path]], list[WorkflowError]]:
    """Workflow/manifest pairs in `directory` (sorted), plus errors for unpaired files."""
    if not directory.is_dir():
        return [], [WorkflowError(f"{directory}: workflow directory does not exist")]
    pairs: list[tuple[Path, Path]] = []
    errors: list[WorkflowError] = []
    for path in sorted(directory.iterdir()):
        if not path.is_file() or not path.name.endswith(".json"):
            continue
        if path.name.endswith(MANIFEST_SUFFIX):
            if not workflow_path_for(path).is_file():
                errors.append(
                    WorkflowError(f"{path}: no workflow file {workflow_path_for(path).name}")
                )
            continue
        manifest = manifest_path_for(path)
        if not manifest.is_file():
            errors.append(WorkflowError(f"{path}: no manifest file {manifest.name}"))
            continue
        pairs.append((path, manifest))
    return pairs, errors


@dataclass
class Registry:
    workflows: dict[str, Workflow] = field(default_factory=dict)
    problems: list[WorkflowError] = field(default_factory=list)
    overridden: list[str] = field(default_factory=list)

    @classmethod
    def load(
        cls,
        builtin_dir: Path | None = None,
        extra_dirs: Sequence[Path] = (),
        *,
        model_defaults: Mapping[str, str] | None = None,
    ) -> Registry:
        """Builtins from `builtin_dir` (default: the packaged templates), then each extra dir
        in order. `model_defaults` maps manifest `model_key`s (e.g. "checkpoint",
        "video_unet") to model file names from settings."""
        registry = cls()
        pairs, errors = _pairs(builtin_dir or BUILTIN_DIR)
        if errors:
            raise errors[0]
        for workflow_path, manifest in pairs:
            wf = load_workflow(workflow_path, manifest, model_defaults=model_defaults, builtin=True)
            if wf.name in registry.workflows:
                raise WorkflowError(f"{manifest}: builtin workflow {wf.name!r} is defined twice")
            registry.workflows[wf.name] = wf
        for directory in extra_dirs:
            registry._load_user_dir(directory, model_defaults)
        return registry

    def _load_user_dir(self, directory: Path, model_defaults: Mapping[str, str] | None) -> None:
        pairs, errors = _pairs(directory)
        for error in errors:
            self._report(error)
        seen_here: set[str] = set()
        for workflow_path, manifest in pairs:
            try:
                wf = load_workflow(
                    workflow_path, manifest, model_defaults=model_defaults, builtin=False
                )
            except WorkflowError as exc:
                self._report(exc)
                continue
            if wf.name in seen_here:
                self._report(
                    WorkflowError(
                        f"{manifest}: workflow {wf.name!r} is defined twice in {directory}"
                    )
                )
                continue
            seen_here.add(wf.name)
            previous = self.workflows.get(wf.name)
            if previous is not None:
                log.info(
                    "workflow overridden",
                    workflow=wf.name,
                    source=str(wf.source),
                    replaced=str(previous.source),
                )
                self.overridden.append(wf.name)
            self.workflows[wf.name] = wf

    def _report(self, error: WorkflowError) -> None:
        log.warning("user workflow skipped", error=str(error))
        self.problems.append(error)

    def get(self, name: str) -> Workflow:
        wf = self.workflows.get(name)
        if wf is None:
            raise WorkflowError(
                f"unknown workflow {name!r}; known: {', '.join(sorted(self.workflows))}",
                user_message=f"There is no workflow called {name!r}.",
            )
        return wf

    def names(self) -> list[str]:
        return sorted(self.workflows)

    def of_kind(self, kind: Kind) -> list[Workflow]:
        return [self.workflows[n] for n in self.names() if self.workflows[n].kind == kind]

    def __contains__(self, name: object) -> bool:
        return name in self.workflows

    def __iter__(self) -> Iterator[Workflow]:
        return iter([self.workflows[n] for n in self.names()])

    def __len__(self) -> int:
        return len(self.workflows)


# --------------------------------------------------------------------------- object_info


def required_node_types(workflow: Workflow) -> set[str]:
    """Every node class the workflow uses (bypassable ones included)."""
    return {str(node["class_type"]) for node in workflow.prompt.values()}


def _input_specs(node_info: Mapping[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """All declared inputs of a node class (name -> spec) and the names of required ones."""
    declared: dict[str, Any] = {}
    required: set[str] = set()
    sections = node_info.get("input") or {}
    for section in ("required", "optional", "hidden"):
        entries = sections.get(section) or {}
        if isinstance(entries, dict):
            declared.update(entries)
            if section == "required":
                required.update(entries)
    return declared, required


def _spec_parts(spec: Any) -> tuple[Any, dict[str, Any]]:
    if isinstance(spec, list) and spec:
        options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
        return spec[0], options
    return spec, {}


def _combo_options(type_: Any, options: Mapping[str, Any]) -> list[Any] | None:
    """The allowed values of a combo input (legacy `[[...], {}]` or `["COMBO", {options}]`)."""
    if isinstance(type_, list):
        return type_
    if type_ == "COMBO":
        values = options.get("options")
        return list(values) if isinstance(values, list) else []
    return None


def _value_problem(type_: Any, options: Mapping[str, Any], value: Any) -> str | None:
    combo = _combo_options(type_, options)
    if combo is not None:
        return None if value in combo else f"value {value!r} is not one of the allowed values"
    if type_ in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"value {value!r} is not a number"
        if type_ == "INT" and not isinstance(value, int):
            return f"value {value!r} is not a whole number"
        if isinstance(value, float) and not math.isfinite(value):
            return f"value {value!r} is not finite"
        low, high = options.get("min"), options.get("max")
        if isinstance(low, int | float) and value < low:
            return f"value {value!r} is below the minimum {low}"
        if isinstance(high, int | float) and value > high:
            return f"value {value!r} is above the maximum {high}"
        return None
    if type_ == "STRING" and not isinstance(value, str):
        return f"value {value!r} is not text"
    if type_ == "BOOLEAN" and not isinstance(value, bool):
        return f"value {value!r} is not true/false"
    return None


def _types_match(wanted: Any, produced: str) -> bool:
    if not isinstance(wanted, str) or wanted in ("*", "COMBO") or produced == "*":
        return True
    return bool(set(wanted.split(",")) & set(produced.split(",")))


def check_against_object_info(
    workflow: Workflow, object_info: Mapping[str, Any], *, check_models: bool = False
) -> list[str]:
    """Problems running `workflow` on a backend with this `/object_info`; empty when it fits.

    Reports missing node classes, inputs the backend's node does not declare, required inputs
    the workflow lacks, links to an output of the wrong type, and literal values outside the
    declared ranges or combo lists. Values set from file parameters (model files, uploaded
    images) are deployment- or job-specific and are skipped, unless `check_models` is true: then
    each model parameter's default (the configured file) must be in the backend's list.
    """
    problems: list[str] = []
    file_inputs: dict[tuple[str, str], str] = {}
    for spec in workflow.params.values():
        if spec.is_file:
            for target in spec.targets:
                file_inputs[(target.node, target.input)] = spec.name

    for node_id, node in workflow.prompt.items():
        class_type = node["class_type"]
        info = object_info.get(class_type)
        where = f"node {node_id} ({class_type})"
        if not isinstance(info, Mapping):
            problems.append(f"{where}: node class is not installed on the backend")
            continue
        declared, required = _input_specs(info)
        for input_name in sorted(required - set(node["inputs"])):
            problems.append(f"{where}: required input {input_name!r} is missing")
        for input_name, value in node["inputs"].items():
            if input_name not in declared:
                problems.append(f"{where}: input {input_name!r} is not declared by the backend")
                continue
            type_, options = _spec_parts(declared[input_name])
            if is_link(value):
                source = workflow.prompt[value[0]]
                source_info = object_info.get(source["class_type"])
                if not isinstance(source_info, Mapping):
                    continue  # reported on its own node
                produced = source_info.get("output") or []
                if value[1] >= len(produced):
                    problems.append(
                        f"{where}: input {input_name!r} uses output {value[1]} of node "
                        f"{value[0]}, which has only {len(produced)}"
                    )
                elif not _types_match(type_, str(produced[value[1]])):
                    problems.append(
                        f"{where}: input {input_name!r} expects {type_} but node {value[0]} "
                        f"output {value[1]} is {produced[value[1]]}"
                    )
                continue
            param = file_inputs.get((node_id, input_name))
            if param is not None:
                default = workflow.params[param].default
                if check_models and workflow.params[param].model_key and default is not None:
                    problem = _value_problem(type_, options, default)
                    if problem is not None:
                        problems.append(
                            f"{where}: {param} {default!r} (setting "
                            f"{workflow.params[param].model_key!r}) is not installed on the backend"
                        )
                continue
            problem = _value_problem(type_, options, value)
            if problem is not None:
                problems.append(f"{where}: input {input_name!r}: {problem}")

    for spec in workflow.params.values():
        if spec.is_file:
            continue
        candidates: Iterable[Any] = [
            *([spec.default] if spec.default is not None else []),
            *(spec.choices or ()),
            *(bound for bound in (spec.min, spec.max) if bound is not None),
        ]
        for target in spec.targets:
            node = workflow.prompt[target.node]
            info = object_info.get(node["class_type"])
            if not isinstance(info, Mapping):
                continue
            declared, _ = _input_specs(info)
            if target.input not in declared:
                continue
            type_, options = _spec_parts(declared[target.input])
            for candidate in candidates:
                problem = _value_problem(type_, options, candidate)
                if problem is not None:
                    problems.append(
                        f"parameter {spec.name!r} -> node {target.node}.{target.input}: {problem}"
                    )
    for node_id in workflow.outputs:
        info = object_info.get(workflow.prompt[node_id]["class_type"])
        if isinstance(info, Mapping) and not info.get("output_node", False):
            problems.append(f"output node {node_id}: {info.get('name')} is not an output node")
    return problems
