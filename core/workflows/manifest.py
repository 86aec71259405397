"""Workflow manifests: what a ComfyUI API-format workflow accepts and where each value goes.

A workflow is two files side by side: `<stem>.json`, the prompt exactly as ComfyUI's
"Export (API)" writes it, and `<stem>.manifest.json`, which names the workflow and maps every
parameter the bot may set onto node inputs. The manifest file is parsed with pydantic
(`ManifestFile`), cross-checked against the prompt, and turned into the plain dataclasses the
rest of the code uses (`Workflow`, `ParamSpec`, `Target`, `Bypass`).

Parameter names come from a closed catalogue (`PARAMETERS`) so that the orchestrator can fill
any workflow from a scene without knowing it; each has a fixed value type.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.errors import WorkflowError

ValueType = Literal["int", "float", "str", "bool"]
Kind = Literal["image", "video", "upscale"]
Family = Literal["sd15", "sdxl", "wan"]
ParamValue = int | float | str | bool

MANIFEST_SUFFIX = ".manifest.json"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class ParamInfo:
    """Catalogue entry: the value type of a parameter and whether it names a file."""

    type: ValueType
    description: str
    file: bool = False  # a model file or an uploaded image: deployment-specific combo value


PARAMETERS: Mapping[str, ParamInfo] = {
    "positive": ParamInfo("str", "positive prompt text"),
    "negative": ParamInfo("str", "negative prompt text"),
    "seed": ParamInfo("int", "noise seed"),
    "steps": ParamInfo("int", "sampling steps"),
    "cfg": ParamInfo("float", "classifier-free guidance scale"),
    "sampler_name": ParamInfo("str", "sampler"),
    "scheduler": ParamInfo("str", "noise schedule"),
    "denoise": ParamInfo("float", "denoising strength (below 1 keeps the input image)"),
    "width": ParamInfo("int", "output width in pixels"),
    "height": ParamInfo("int", "output height in pixels"),
    "batch_size": ParamInfo("int", "images per run"),
    "frames": ParamInfo("int", "video length in frames"),
    "fps": ParamInfo("float", "video frames per second"),
    "shift": ParamInfo("float", "ModelSamplingSD3 shift"),
    "scale": ParamInfo("float", "resize factor"),
    "upscale_method": ParamInfo("str", "pixel resize method"),
    "checkpoint": ParamInfo("str", "checkpoint file", file=True),
    "lora_name": ParamInfo("str", "first LoRA file (empty: LoRA bypassed)", file=True),
    "lora_strength": ParamInfo("float", "first LoRA strength"),
    "lora2_name": ParamInfo("str", "second LoRA file (empty: LoRA bypassed)", file=True),
    "lora2_strength": ParamInfo("float", "second LoRA strength"),
    "unet": ParamInfo("str", "diffusion model file", file=True),
    "clip": ParamInfo("str", "text encoder file", file=True),
    "clip_vision": ParamInfo("str", "CLIP vision file", file=True),
    "vae": ParamInfo("str", "VAE file", file=True),
    "upscale_model": ParamInfo("str", "upscale model file", file=True),
    "reference_image": ParamInfo("str", "uploaded character reference image", file=True),
    "input_image": ParamInfo("str", "uploaded input image", file=True),
}


# --------------------------------------------------------------------------- manifest file


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TargetModel(_Strict):
    node: str = Field(min_length=1)
    input: str = Field(min_length=1)


class ParamModel(_Strict):
    type: ValueType
    targets: list[TargetModel] = Field(min_length=1)
    default: ParamValue | None = None
    model_key: str | None = Field(default=None, min_length=1)
    min: int | float | None = None
    max: int | float | None = None
    multiple_of: int | None = Field(default=None, ge=1)
    choices: list[ParamValue] | None = None
    max_length: int | None = Field(default=None, ge=1)
    description: str = ""


class BypassModel(_Strict):
    when_empty: str
    node: str = Field(min_length=1)
    outputs: list[str] = Field(min_length=1)


class ManifestFile(_Strict):
    name: str
    kind: Kind
    description: str = ""
    family: Family | None = None
    needs_reference_image: bool = False
    needs_input_image: bool = False
    outputs: list[str] = Field(min_length=1)
    parameters: dict[str, ParamModel]
    bypass: list[BypassModel] = Field(default_factory=list)


# --------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True)
class Target:
    node: str
    input: str


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: ValueType
    targets: tuple[Target, ...]
    default: ParamValue | None
    model_key: str | None = None
    min: int | float | None = None
    max: int | float | None = None
    multiple_of: int | None = None
    choices: tuple[ParamValue, ...] | None = None
    max_length: int | None = None
    description: str = ""

    @property
    def is_file(self) -> bool:
        return PARAMETERS[self.name].file


@dataclass(frozen=True)
class Bypass:
    """Remove `node` when parameter `when_empty` has no value; links to its output i are
    rewired to whatever fed its input `outputs[i]` (e.g. LoraLoader: ("model", "clip"))."""

    when_empty: str
    node: str
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class Workflow:
    name: str
    kind: Kind
    description: str
    family: Family | None
    needs_reference_image: bool
    needs_input_image: bool
    params: Mapping[str, ParamSpec]
    outputs: tuple[str, ...]
    bypasses: tuple[Bypass, ...]
    prompt: Mapping[str, Any]  # the API-format prompt; never mutated (patch deep-copies)
    source: Path
    builtin: bool

    @property
    def model_keys(self) -> dict[str, str]:
        """Parameter name -> settings key for parameters whose default is a model setting."""
        return {p.name: p.model_key for p in self.params.values() if p.model_key}

    @property
    def required_params(self) -> list[str]:
        """Parameters a caller must pass (no default, and not bypassable)."""
        optional = {b.when_empty for b in self.bypasses}
        return [
            p.name for p in self.params.values() if p.default is None and p.name not in optional
        ]


# --------------------------------------------------------------------------- value checks


def is_link(value: object) -> bool:
    """API-format link: `["node_id", output_index]`."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )


def check_value(spec: ParamSpec, value: object) -> ParamValue:
    """Type- and range-check one value for `spec`; returns it normalised (int -> float for
    float parameters). Raises `WorkflowError` whose user_message says what is allowed."""

    def fail(reason: str) -> WorkflowError:
        return WorkflowError(
            f"parameter {spec.name!r}: {reason} (got {value!r:.80})",
            user_message=f"{spec.name} {reason}.",
        )

    out: ParamValue
    if spec.type == "bool":
        if not isinstance(value, bool):
            raise fail("must be true or false")
        out = value
    elif spec.type == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("must be a whole number")
        out = value
    elif spec.type == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise fail("must be a number")
        out = float(value)
        if not math.isfinite(out):
            raise fail("must be a finite number")
    else:
        if not isinstance(value, str):
            raise fail("must be text")
        out = value
        if spec.max_length is not None and len(value) > spec.max_length:
            raise fail(f"must be at most {spec.max_length} characters")

    if isinstance(out, int | float) and not isinstance(out, bool):
        too_low = spec.min is not None and out < spec.min
        too_high = spec.max is not None and out > spec.max
        if (too_low or too_high) and spec.min is not None and spec.max is not None:
            raise fail(f"must be between {spec.min} and {spec.max}")
        if too_low:
            raise fail(f"must be at least {spec.min}")
        if too_high:
            raise fail(f"must be at most {spec.max}")
        if spec.multiple_of is not None and isinstance(out, int) and out % spec.multiple_of:
            raise fail(f"must be a multiple of {spec.multiple_of}")
    if spec.choices is not None and out not in spec.choices:
        raise fail("must be one of " + ", ".join(str(c) for c in spec.choices))
    return out


# --------------------------------------------------------------------------- loading


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`object_pairs_hook`: a repeated key (a pasted node, a parameter declared twice) would
    silently replace the first one; refuse it."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkflowError(f"{path}: cannot be read: {exc}") from exc
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise WorkflowError(
            f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc
    except _DuplicateKey as exc:
        raise WorkflowError(
            f"{path}: key {exc.args[0]!r} appears twice in the same object"
        ) from exc


def _check_prompt(path: Path, prompt: Any) -> dict[str, Any]:
    if not isinstance(prompt, dict):
        raise WorkflowError(f"{path}: an API-format workflow is a JSON object of nodes")
    if "nodes" in prompt and "links" in prompt:
        raise WorkflowError(
            f"{path}: this is a UI-format workflow; save it with ComfyUI's 'Export (API)'"
        )
    if not prompt:
        raise WorkflowError(f"{path}: the workflow has no nodes")
    for node_id, node in prompt.items():
        if not isinstance(node, dict):
            raise WorkflowError(f"{path}: node {node_id!r} is not an object")
        class_type = node.get("class_type")
        if not isinstance(class_type, str) or not class_type:
            raise WorkflowError(f"{path}: node {node_id!r} has no 'class_type'")
        inputs = node.get("inputs")
        if not isinstance(inputs, dict):
            raise WorkflowError(f"{path}: node {node_id!r} ({class_type}) has no 'inputs' object")
        for input_name, value in inputs.items():
            if is_link(value) and value[0] not in prompt:
                raise WorkflowError(
                    f"{path}: node {node_id!r} ({class_type}) input {input_name!r} links to "
                    f"missing node {value[0]!r}"
                )
    _check_no_loop(path, prompt)
    return prompt


def _check_no_loop(path: Path, prompt: Mapping[str, Any]) -> None:
    """ComfyUI cannot run a graph whose links loop (and bypassing a node on the loop would
    follow it forever): refuse it. Depth-first along the links, from consumer to source."""

    def sources(node_id: str) -> Iterator[str]:
        return (v[0] for v in prompt[node_id]["inputs"].values() if is_link(v))

    done: set[str] = set()
    for start in prompt:
        if start in done:
            continue
        trail: list[str] = [start]
        pending = [sources(start)]
        while pending:
            source = next(pending[-1], None)
            if source is None:
                done.add(trail.pop())
                pending.pop()
            elif source in trail:
                loop = " -> ".join([*trail[trail.index(source) :], source])
                raise WorkflowError(f"{path}: node links form a loop ({loop})")
            elif source not in done:
                trail.append(source)
                pending.append(sources(source))


_TYPE_WORDS: Mapping[str, str] = {
    "int": "a number",
    "float": "a number",
    "str": "text",
    "bool": "true/false",
}


def _same_json_type(type_: ValueType, literal: object) -> bool:
    """Whether the template's own value of an input has the JSON type the parameter writes
    (any number for int/float: ComfyUI exports 7.0 as 7); an empty (null) value is unknown."""
    if literal is None:
        return True
    if type_ == "str":
        return isinstance(literal, str)
    return isinstance(literal, int | float) and isinstance(literal, bool) == (type_ == "bool")


def _format_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def _param_from_model(
    path: Path,
    name: str,
    model: ParamModel,
    prompt: Mapping[str, Any],
    model_defaults: Mapping[str, str],
) -> ParamSpec:
    def fail(reason: str) -> WorkflowError:
        return WorkflowError(f"{path}: parameter {name!r}: {reason}")

    info = PARAMETERS.get(name)
    if info is None:
        raise WorkflowError(
            f"{path}: unknown parameter {name!r}; known parameters: {', '.join(sorted(PARAMETERS))}"
        )
    if model.type != info.type:
        raise fail(f"type must be {info.type!r}, not {model.type!r}")
    if model.model_key is not None and model.default is not None:
        raise fail("has both 'default' and 'model_key'; a model default comes from settings")
    if model.model_key is not None and not info.file:
        raise fail("'model_key' is only for file parameters")
    if (model.min is not None or model.max is not None) and info.type not in ("int", "float"):
        raise fail("'min'/'max' apply to numbers only")
    if model.min is not None and model.max is not None and model.min > model.max:
        raise fail("'min' is greater than 'max'")
    if model.multiple_of is not None and info.type != "int":
        raise fail("'multiple_of' applies to whole numbers only")
    if model.max_length is not None and info.type != "str":
        raise fail("'max_length' applies to text only")
    seen: set[tuple[str, str]] = set()
    for target in model.targets:
        node = prompt.get(target.node)
        if node is None:
            raise fail(f"target node {target.node!r} does not exist in the workflow")
        inputs = node["inputs"]
        if target.input not in inputs:
            raise fail(f"node {target.node!r} ({node['class_type']}) has no input {target.input!r}")
        if is_link(inputs[target.input]):
            raise fail(
                f"node {target.node!r} input {target.input!r} is a link, not a value; "
                "a parameter cannot replace a link"
            )
        literal = inputs[target.input]
        if not _same_json_type(model.type, literal):
            raise fail(
                f"node {target.node!r} ({node['class_type']}) input {target.input!r} holds "
                f"{literal!r:.60}, not {_TYPE_WORDS[model.type]}"
            )
        if (target.node, target.input) in seen:
            raise fail(f"target {target.node}.{target.input} is listed twice")
        seen.add((target.node, target.input))

    default: ParamValue | None = model.default
    if model.model_key is not None:
        default = model_defaults.get(model.model_key) or None
    spec = ParamSpec(
        name=name,
        type=model.type,
        targets=tuple(Target(t.node, t.input) for t in model.targets),
        default=default,
        model_key=model.model_key,
        min=model.min,
        max=model.max,
        multiple_of=model.multiple_of,
        choices=tuple(model.choices) if model.choices is not None else None,
        max_length=model.max_length,
        description=model.description or info.description,
    )
    if spec.choices is not None:
        for choice in spec.choices:
            try:
                check_value(
                    ParamSpec(name, spec.type, spec.targets, None, max_length=spec.max_length),
                    choice,
                )
            except WorkflowError as exc:
                raise fail(f"choice {choice!r} is invalid: {exc}") from exc
    if default is not None:
        try:
            check_value(spec, default)
        except WorkflowError as exc:
            origin = (
                f"model setting {model.model_key!r}" if model.model_key is not None else "default"
            )
            raise fail(f"{origin} {default!r} is invalid: {exc}") from exc
    return spec


def _bypasses(
    path: Path, items: list[BypassModel], prompt: Mapping[str, Any], params: Mapping[str, Any]
) -> tuple[Bypass, ...]:
    out: list[Bypass] = []
    nodes: set[str] = set()
    for item in items:
        where = f"{path}: bypass of node {item.node!r}"
        if item.when_empty not in params:
            raise WorkflowError(
                f"{where}: 'when_empty' names undeclared parameter {item.when_empty!r}"
            )
        if params[item.when_empty].type != "str":
            raise WorkflowError(f"{where}: 'when_empty' parameter must be text")
        node = prompt.get(item.node)
        if node is None:
            raise WorkflowError(f"{where}: node does not exist in the workflow")
        if item.node in nodes:
            raise WorkflowError(f"{where}: node is bypassed twice")
        nodes.add(item.node)
        for input_name in item.outputs:
            if not is_link(node["inputs"].get(input_name)):
                raise WorkflowError(
                    f"{where}: input {input_name!r} does not exist or is not a link, so it "
                    "cannot stand in for an output"
                )
        for other_id, other in prompt.items():
            for input_name, value in other["inputs"].items():
                if is_link(value) and value[0] == item.node and value[1] >= len(item.outputs):
                    raise WorkflowError(
                        f"{where}: node {other_id!r} input {input_name!r} uses output "
                        f"{value[1]}, which 'outputs' does not cover"
                    )
        out.append(Bypass(item.when_empty, item.node, tuple(item.outputs)))
    return tuple(out)


def load_workflow(
    workflow_path: Path,
    manifest_path: Path,
    *,
    model_defaults: Mapping[str, str] | None = None,
    builtin: bool = False,
) -> Workflow:
    """Read and cross-check one workflow + manifest pair. Raises `WorkflowError` naming the
    file and the problem."""
    defaults = model_defaults or {}
    raw_manifest = _read_json(manifest_path)
    try:
        manifest = ManifestFile.model_validate(raw_manifest)
    except ValidationError as exc:
        raise WorkflowError(
            f"{manifest_path}: invalid manifest: {_format_validation_error(exc)}"
        ) from exc
    if not _NAME_RE.match(manifest.name):
        raise WorkflowError(
            f"{manifest_path}: name {manifest.name!r} must be 1-64 lowercase letters, digits, "
            "'_' or '-'"
        )
    prompt = _check_prompt(workflow_path, _read_json(workflow_path))

    params: dict[str, ParamSpec] = {}
    for name, model in manifest.parameters.items():
        params[name] = _param_from_model(manifest_path, name, model, prompt, defaults)

    owner: dict[tuple[str, str], str] = {}
    for spec in params.values():
        for target in spec.targets:
            key = (target.node, target.input)
            if key in owner:
                raise WorkflowError(
                    f"{manifest_path}: parameters {owner[key]!r} and {spec.name!r} both set "
                    f"{target.node}.{target.input}"
                )
            owner[key] = spec.name

    for flag, param in (
        ("needs_reference_image", "reference_image"),
        ("needs_input_image", "input_image"),
    ):
        needed = getattr(manifest, flag)
        if needed and param not in params:
            raise WorkflowError(f"{manifest_path}: {flag} is true but there is no {param!r}")
        if param in params and not needed:
            raise WorkflowError(f"{manifest_path}: parameter {param!r} requires {flag}: true")
        if needed and params[param].default is not None:
            raise WorkflowError(f"{manifest_path}: {param!r} must not have a default")

    outputs: list[str] = []
    for node_id in manifest.outputs:
        if node_id not in prompt:
            raise WorkflowError(f"{manifest_path}: output node {node_id!r} does not exist")
        if node_id in outputs:
            raise WorkflowError(f"{manifest_path}: output node {node_id!r} is listed twice")
        outputs.append(node_id)

    bypasses = _bypasses(manifest_path, manifest.bypass, prompt, params)
    removable = {b.node for b in bypasses}
    for node_id in outputs:
        if node_id in removable:
            raise WorkflowError(f"{manifest_path}: output node {node_id!r} cannot be bypassed")

    return Workflow(
        name=manifest.name,
        kind=manifest.kind,
        description=manifest.description,
        family=manifest.family,
        needs_reference_image=manifest.needs_reference_image,
        needs_input_image=manifest.needs_input_image,
        params=params,
        outputs=tuple(outputs),
        bypasses=bypasses,
        prompt=prompt,
        source=workflow_path,
        builtin=builtin,
    )


def manifest_path_for(workflow_path: Path) -> Path:
    return workflow_path.with_name(workflow_path.stem + MANIFEST_SUFFIX)


def workflow_path_for(manifest_path: Path) -> Path:
    return manifest_path.with_name(manifest_path.name[: -len(MANIFEST_SUFFIX)] + ".json")
