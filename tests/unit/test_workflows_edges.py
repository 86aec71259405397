"""Workflow edges: every way an operator's manifest or template can be broken is refused when
the registry loads (one problem naming the file), and the object_info check copes with odd
literal values and backend answers."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from core.errors import WorkflowError
from core.workflows import BUILTIN_DIR, Registry, check_against_object_info, patch

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "comfyui" / "object_info.json"
MODELS = {"checkpoint": "anything-v5.safetensors"}

Json = dict[str, Any]


def _builtin(stem: str = "txt2img_sd15") -> tuple[Json, Json]:
    prompt = json.loads((BUILTIN_DIR / f"{stem}.json").read_text(encoding="utf-8"))
    manifest = json.loads((BUILTIN_DIR / f"{stem}.manifest.json").read_text(encoding="utf-8"))
    return prompt, manifest


def _write(directory: Path, stem: str, prompt: Any, manifest: Any) -> tuple[Path, Path]:
    """Write a pair; a `bytes` or `str` value is written as is (broken JSON, bad encoding)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = (directory / f"{stem}.json", directory / f"{stem}.manifest.json")
    for path, data in zip(paths, (prompt, manifest), strict=True):
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return paths


def _load_one_broken(tmp_path: Path, prompt: Any, manifest: Any) -> tuple[str, Path, Path]:
    """Load a user dir holding the broken pair and a good one: the good one loads, the broken
    one is skipped with exactly one problem, returned with the pair's paths."""
    user = tmp_path / "user"
    workflow_path, manifest_path = _write(user, "broken", prompt, manifest)
    good_prompt, good_manifest = _builtin()
    _write(user, "good", good_prompt, {**good_manifest, "name": "good_one"})
    registry = Registry.load(extra_dirs=[user], model_defaults=MODELS)
    assert "good_one" in registry
    assert "broken" not in registry
    assert len(registry.problems) == 1, [str(p) for p in registry.problems]
    return str(registry.problems[0]), workflow_path, manifest_path


# --------------------------------------------------------------------------- broken workflows

PromptChange = Callable[[Json], Any]


def _node_not_object(prompt: Json) -> Json:
    prompt["7"] = "EmptyLatentImage"
    return prompt


def _node_without_inputs(prompt: Json) -> Json:
    del prompt["7"]["inputs"]
    return prompt


TEMPLATE_CASES: list[tuple[str, PromptChange, str]] = [
    ("list", lambda p: list(p.values()), "an API-format workflow is a JSON object of nodes"),
    ("empty", lambda p: {}, "the workflow has no nodes"),
    ("node is a string", _node_not_object, "node '7' is not an object"),
    (
        "node without inputs",
        _node_without_inputs,
        "node '7' (EmptyLatentImage) has no 'inputs' object",
    ),
]


def test_template_not_in_utf8_is_refused_naming_the_file(tmp_path: Path) -> None:
    prompt, manifest = _builtin()
    manifest["name"] = "broken"
    latin1 = json.dumps(prompt).replace("school uniform", "écolière").encode("latin-1")
    problem, workflow_path, _ = _load_one_broken(tmp_path, latin1, manifest)
    assert problem.startswith(f"{workflow_path}: cannot be read: 'utf-8' codec can't decode")


def test_manifest_not_in_utf8_is_refused_naming_the_file(tmp_path: Path) -> None:
    prompt, manifest = _builtin()
    manifest["name"] = "broken"
    manifest["description"] = "Schöne Mädchen"
    problem, _, manifest_path = _load_one_broken(
        tmp_path, prompt, json.dumps(manifest, ensure_ascii=False).encode("latin-1")
    )
    assert problem.startswith(f"{manifest_path}: cannot be read: 'utf-8' codec can't decode")


def test_duplicate_node_id_in_the_template_is_refused(tmp_path: Path) -> None:
    """A node pasted in with an id already used would silently replace the first one."""
    prompt, manifest = _builtin()
    manifest["name"] = "broken"
    text = json.dumps(prompt)
    pasted = '"5": {"class_type": "CLIPTextEncode", "inputs": {"text": "x", "clip": ["4", 0]}}, '
    text = text.replace('"6": {', pasted + '"6": {', 1)
    assert text.count('"5": {') == 2
    problem, workflow_path, _ = _load_one_broken(tmp_path, text, manifest)
    assert problem == f"{workflow_path}: key '5' appears twice in the same object"


def test_duplicate_parameter_in_the_manifest_is_refused(tmp_path: Path) -> None:
    """Two "steps" entries: the first (whose default is out of range) must not vanish."""
    prompt, manifest = _builtin()
    manifest["name"] = "broken"
    text = json.dumps(manifest)
    first = (
        '"steps": {"type": "int", "targets": [{"node": "10", "input": "steps"}], "default": 0}, '
    )
    text = text.replace('"parameters": {', '"parameters": {' + first, 1)
    problem, _, manifest_path = _load_one_broken(tmp_path, prompt, text)
    assert problem == f"{manifest_path}: key 'steps' appears twice in the same object"


@pytest.mark.parametrize(
    ("links", "loop"),
    [
        ({"2": {"model": ["3", 0], "clip": ["3", 1]}}, "2 -> 3 -> 2"),  # the two LoRAs
        ({"2": {"model": ["2", 0]}}, "2 -> 2"),  # a node fed by itself
        ({"7": {"extra": ["11", 0]}}, "7 -> 11 -> 10 -> 7"),  # through the sampler
    ],
    ids=["lora-loop", "self-link", "long-loop"],
)
def test_template_whose_links_loop_is_refused_at_load(
    tmp_path: Path, links: dict[str, Json], loop: str
) -> None:
    """ComfyUI cannot run a graph with a loop, and bypassing LoRAs in one looped forever: it
    must be refused at start-up, not at the first job."""
    prompt, manifest = _builtin()
    manifest["name"] = "broken"
    for node_id, inputs in links.items():
        prompt[node_id]["inputs"].update(inputs)
    problem, workflow_path, _ = _load_one_broken(tmp_path, prompt, manifest)
    assert problem == f"{workflow_path}: node links form a loop ({loop})"


def test_a_template_listing_consumers_before_their_sources_has_no_loop(tmp_path: Path) -> None:
    """ComfyUI's exports list nodes in any order (its default graph starts with the sampler);
    shared sources (node 4 feeds both prompts) are not a loop either."""
    prompt, manifest = _builtin()
    backwards = dict(reversed(prompt.items()))
    assert next(iter(backwards)) == "12"
    _write(tmp_path, "backwards", backwards, {**manifest, "name": "backwards"})
    registry = Registry.load(extra_dirs=[tmp_path], model_defaults=MODELS)
    assert registry.problems == []
    params = {"positive": "a", "seed": 1, "lora_name": "aiko.safetensors"}
    forward = Registry.load(model_defaults=MODELS).get("txt2img_sd15")
    assert patch(registry.get("backwards"), params, job_id="j") == patch(
        forward, params, job_id="j"
    )


# --------------------------------------------------------------------------- broken manifests

ManifestChange = Callable[[Json], None]


def _param(name: str, **changes: Any) -> ManifestChange:
    def change(manifest: Json) -> None:
        manifest["parameters"].setdefault(name, {}).update(changes)

    return change


def _top(**changes: Any) -> ManifestChange:
    def change(manifest: Json) -> None:
        manifest.update(changes)

    return change


def _bypass(*items: Json) -> ManifestChange:
    def change(manifest: Json) -> None:
        manifest["bypass"] = list(items)

    return change


def _input_image(default: str | None, flag: bool) -> ManifestChange:
    def change(manifest: Json) -> None:
        spec: Json = {"type": "str", "targets": [{"node": "12", "input": "filename_prefix"}]}
        if default is not None:
            spec["default"] = default
        manifest["parameters"]["input_image"] = spec
        manifest["needs_input_image"] = flag

    return change


LORA1 = {"when_empty": "lora_name", "node": "2", "outputs": ["model", "clip"]}
LORA2 = {"when_empty": "lora2_name", "node": "3", "outputs": ["model", "clip"]}
STEPS = [{"node": "10", "input": "steps"}]

MANIFEST_CASES: list[tuple[str, ManifestChange, str]] = [
    (
        "model_key on a number",
        _param("steps", model_key="checkpoint", default=None),
        "parameter 'steps': 'model_key' is only for file parameters",
    ),
    (
        "min on text",
        _param("sampler_name", min=1),
        "parameter 'sampler_name': 'min'/'max' apply to numbers only",
    ),
    (
        "min above max",
        _param("steps", min=50, max=10),
        "parameter 'steps': 'min' is greater than 'max'",
    ),
    (
        "multiple_of on a float",
        _param("cfg", multiple_of=2),
        "parameter 'cfg': 'multiple_of' applies to whole numbers only",
    ),
    (
        "max_length on a number",
        _param("steps", max_length=3),
        "parameter 'steps': 'max_length' applies to text only",
    ),
    (
        "same target twice",
        _param("steps", targets=STEPS + STEPS),
        "parameter 'steps': target 10.steps is listed twice",
    ),
    (
        "choice of the wrong type",
        _param("steps", choices=[10, "twenty"]),
        "parameter 'steps': choice 'twenty' is invalid: parameter 'steps': must be a whole "
        "number (got 'twenty')",
    ),
    (
        "text onto a number input",
        _param("positive", targets=[{"node": "4", "input": "stop_at_clip_layer"}]),
        "parameter 'positive': node '4' (CLIPSetLastLayer) input 'stop_at_clip_layer' holds -2, "
        "not text",
    ),
    (
        "number onto a text input",
        _param("steps", targets=[{"node": "12", "input": "filename_prefix"}]),
        "parameter 'steps': node '12' (SaveImage) input 'filename_prefix' holds "
        "'animebot/txt2img_sd15', not a number",
    ),
    (
        "two parameters, one input",
        _param("denoise", type="float", targets=[{"node": "10", "input": "cfg"}]),
        "parameters 'cfg' and 'denoise' both set 10.cfg",
    ),
    (
        "input_image without its flag",
        _input_image(None, flag=False),
        "parameter 'input_image' requires needs_input_image: true",
    ),
    (
        "input_image with a default",
        _input_image("start.png", flag=True),
        "'input_image' must not have a default",
    ),
    ("output twice", _top(outputs=["12", "12"]), "output node '12' is listed twice"),
    (
        "bypass keyed on a number",
        _bypass({**LORA1, "when_empty": "lora_strength"}, LORA2),
        "bypass of node '2': 'when_empty' parameter must be text",
    ),
    (
        "bypass of a missing node",
        _bypass(LORA1, {**LORA2, "node": "77"}),
        "bypass of node '77': node does not exist in the workflow",
    ),
    (
        "node bypassed twice",
        _bypass(LORA1, {**LORA1, "when_empty": "lora2_name"}),
        "bypass of node '2': node is bypassed twice",
    ),
    (
        "bypass missing an output",
        _bypass({**LORA1, "outputs": ["model"]}, LORA2),
        "bypass of node '2': node '3' input 'clip' uses output 1, which 'outputs' does not cover",
    ),
    (
        "output node bypassed",
        _bypass(LORA1, LORA2, {"when_empty": "lora_name", "node": "12", "outputs": ["images"]}),
        "output node '12' cannot be bypassed",
    ),
]


BROKEN_FILE_CASES = [
    *(
        pytest.param("template", change, message, id=f"template: {label}")
        for label, change, message in TEMPLATE_CASES
    ),
    *(
        pytest.param("manifest", change, message, id=f"manifest: {label}")
        for label, change, message in MANIFEST_CASES
    ),
]


@pytest.mark.parametrize(("broken_file", "change", "message"), BROKEN_FILE_CASES)
def test_broken_file_is_refused_naming_that_file(
    tmp_path: Path, broken_file: str, change: PromptChange | ManifestChange, message: str
) -> None:
    """A template change returns the new template; a manifest change edits it in place."""
    prompt, manifest = _builtin()
    manifest["name"] = "broken"
    if broken_file == "template":
        prompt = change(prompt)
    else:
        change(manifest)
    problem, workflow_path, manifest_path = _load_one_broken(tmp_path, prompt, manifest)
    named = workflow_path if broken_file == "template" else manifest_path
    assert problem == f"{named}: {message}"


def test_a_minimum_without_a_maximum_tells_the_user_the_minimum(tmp_path: Path) -> None:
    prompt, manifest = _builtin()
    manifest["name"] = "floor_only"
    manifest["parameters"]["steps"] = {"type": "int", "targets": STEPS, "default": 20, "min": 12}
    _write(tmp_path, "floor_only", prompt, manifest)
    registry = Registry.load(extra_dirs=[tmp_path], model_defaults=MODELS)
    assert registry.problems == []
    wf = registry.get("floor_only")
    with pytest.raises(WorkflowError) as caught:
        patch(wf, {"positive": "a", "seed": 1, "steps": 11})
    assert caught.value.user_message == "steps must be at least 12."
    assert str(caught.value) == "parameter 'steps': must be at least 12 (got 11)"
    assert patch(wf, {"positive": "a", "seed": 1, "steps": 500})["10"]["inputs"]["steps"] == 500


def test_an_input_left_empty_in_the_template_takes_any_parameter_type(tmp_path: Path) -> None:
    """A null value in the template says nothing about the input's type: not refused."""
    prompt, manifest = _builtin()
    prompt["5"]["inputs"]["text"] = None
    _write(tmp_path, "nulls", prompt, {**manifest, "name": "nulls"})
    registry = Registry.load(extra_dirs=[tmp_path], model_defaults=MODELS)
    assert registry.problems == []
    assert patch(registry.get("nulls"), {"positive": "a", "seed": 1})["5"]["inputs"]["text"] == "a"


# --------------------------------------------------------------------------- registry files


def test_other_files_in_a_workflow_dir_are_ignored(tmp_path: Path) -> None:
    user = tmp_path / "user"
    prompt, manifest = _builtin()
    _write(user, "mine", prompt, {**manifest, "name": "mine"})
    (user / "README.md").write_text("my workflows", encoding="utf-8")
    (user / "mine.json.bak").write_text("{", encoding="utf-8")
    (user / "old.json").mkdir()  # a folder named like a workflow
    registry = Registry.load(extra_dirs=[user], model_defaults=MODELS)
    assert registry.problems == []
    assert registry.get("mine").source == user / "mine.json"


def test_a_builtin_name_defined_twice_is_a_hard_error(tmp_path: Path) -> None:
    builtin = tmp_path / "builtin"
    shutil.copytree(BUILTIN_DIR, builtin)
    shutil.copy(builtin / "txt2img_sd15.json", builtin / "a_copy.json")
    shutil.copy(builtin / "txt2img_sd15.manifest.json", builtin / "a_copy.manifest.json")
    with pytest.raises(WorkflowError) as caught:
        Registry.load(builtin_dir=builtin)
    manifest = builtin / "txt2img_sd15.manifest.json"
    assert str(caught.value) == f"{manifest}: builtin workflow 'txt2img_sd15' is defined twice"


# --------------------------------------------------------------------------- object_info


@pytest.fixture(scope="module")
def object_info() -> Json:
    data: Json = json.loads(FIXTURE.read_text(encoding="utf-8"))
    return data


def _with_inputs(wf_name: str, changes: dict[str, Json]) -> Any:
    wf = Registry.load(model_defaults=MODELS).get(wf_name)
    prompt = copy.deepcopy(dict(wf.prompt))
    for node_id, inputs in changes.items():
        prompt[node_id]["inputs"].update(inputs)
    return dataclasses.replace(wf, prompt=prompt)


@pytest.mark.parametrize(
    ("inputs", "problem"),
    [
        (
            {"4": {"stop_at_clip_layer": "-2"}},
            "node 4 (CLIPSetLastLayer): input 'stop_at_clip_layer': value '-2' is not a number",
        ),
        (
            {"4": {"stop_at_clip_layer": -2.5}},
            "node 4 (CLIPSetLastLayer): input 'stop_at_clip_layer': value -2.5 is not a whole "
            "number",
        ),
        (
            {"10": {"cfg": float("nan")}},
            "node 10 (KSampler): input 'cfg': value nan is not finite",
        ),
        (
            {"12": {"filename_prefix": 7}},
            "node 12 (SaveImage): input 'filename_prefix': value 7 is not text",
        ),
    ],
    ids=["text-for-int", "float-for-int", "nan", "int-for-text"],
)
def test_object_info_check_reports_literals_of_the_wrong_type(
    object_info: Json, inputs: dict[str, Json], problem: str
) -> None:
    assert check_against_object_info(_with_inputs("txt2img_sd15", inputs), object_info) == [problem]


def test_object_info_check_boolean_and_bare_type_inputs(object_info: Json) -> None:
    """A BOOLEAN input gets true/false only; an input declared with a bare type string (as
    ComfyUI does for hidden inputs) is still checked, not a crash."""
    info = copy.deepcopy(object_info)
    info["CLIPSetLastLayer"]["input"]["optional"] = {"flip": ["BOOLEAN", {"default": False}]}
    info["EmptyLatentImage"]["input"]["required"]["batch_size"] = "INT"
    wf = _with_inputs("txt2img_sd15", {"4": {"flip": "yes"}, "7": {"batch_size": "two"}})
    assert check_against_object_info(wf, info) == [
        "node 4 (CLIPSetLastLayer): input 'flip': value 'yes' is not true/false",
        "node 7 (EmptyLatentImage): input 'batch_size': value 'two' is not a number",
    ]
    fine = _with_inputs("txt2img_sd15", {"4": {"flip": True}})
    assert check_against_object_info(fine, info) == []


def test_object_info_check_accepts_wildcard_link_types(object_info: Json) -> None:
    """Custom nodes declare "*" (any type) for an input or an output: a link into or out of
    one is never a type mismatch."""
    info = copy.deepcopy(object_info)
    info["VAEDecode"]["input"]["required"]["samples"] = ["*", {}]
    info["CheckpointLoaderSimple"]["output"] = ["MODEL", "CLIP", "*"]  # feeds VAEDecode.vae
    wf = _with_inputs("txt2img_sd15", {"11": {"samples": ["5", 0]}})  # CONDITIONING into "*"
    assert check_against_object_info(wf, info) == []


def test_undeclared_parameter_input_is_reported_once(object_info: Json) -> None:
    info = copy.deepcopy(object_info)
    del info["KSampler"]["input"]["required"]["steps"]
    wf = _with_inputs("txt2img_sd15", {})
    assert check_against_object_info(wf, info) == [
        "node 10 (KSampler): input 'steps' is not declared by the backend"
    ]
