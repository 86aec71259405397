"""Workflow templates, manifests, the registry, object_info checks and parameter injection."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from core import director
from core.errors import WorkflowError
from core.workflows import (
    BUILTIN_DIR,
    PARAMETERS,
    Registry,
    Workflow,
    check_against_object_info,
    even_scaled_size,
    job_prefix,
    patch,
    required_node_types,
)
from core.workflows.manifest import is_link

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "comfyui" / "object_info.json"
MODELS = {
    "checkpoint": "anything-v5.safetensors",
    "sdxl_checkpoint": "animagine-xl-3.1.safetensors",
    "video_unet": "wan2.1_t2v_1.3B_fp16.safetensors",
    "video_i2v_unet": "wan2.1_i2v_480p_14B_fp16.safetensors",
    "video_clip": "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
    "video_vae": "wan_2.1_vae.safetensors",
    "video_clip_vision": "clip_vision_h.safetensors",
    "upscale_model": "RealESRGAN_x4plus_anime_6B.pth",
}
BUILTINS = {
    "txt2img_sd15": "image",
    "txt2img_sdxl": "image",
    "img2img_sd15": "image",
    "img2img_sdxl": "image",
    "txt2video_wan": "video",
    "img2video_wan": "video",
    "upscale_esrgan": "upscale",
}
TRICKY = 'she says "hi" {"x":1} {positive} %date:yyyy% \\n\nnew line 🌸👩‍👩‍👧 שלום ) ('


@pytest.fixture(scope="module")
def object_info() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(FIXTURE.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.load(model_defaults=MODELS)


def _as_workflow(wf: Workflow, prompt: dict[str, Any]) -> Workflow:
    """A patched prompt wrapped as a workflow, so it can be checked against object_info (file
    parameters keep marking their inputs as deployment-specific)."""
    params = {
        name: dataclasses.replace(spec, targets=kept)
        for name, spec in wf.params.items()
        if (kept := tuple(t for t in spec.targets if t.node in prompt))
    }
    return dataclasses.replace(wf, prompt=prompt, params=params, bypasses=())


def _links_ok(prompt: dict[str, Any]) -> bool:
    return all(
        value[0] in prompt
        for node in prompt.values()
        for value in node["inputs"].values()
        if is_link(value)
    )


def _write(directory: Path, stem: str, prompt: Any, manifest: Any) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for suffix, data in ((".json", prompt), (".manifest.json", manifest)):
        text = data if isinstance(data, str) else json.dumps(data)
        (directory / f"{stem}{suffix}").write_text(text, encoding="utf-8")


def _builtin(stem: str) -> tuple[dict[str, Any], dict[str, Any]]:
    prompt = json.loads((BUILTIN_DIR / f"{stem}.json").read_text(encoding="utf-8"))
    manifest = json.loads((BUILTIN_DIR / f"{stem}.manifest.json").read_text(encoding="utf-8"))
    return prompt, manifest


# --------------------------------------------------------------------------- builtins


def test_builtins_load_with_kinds_and_flags(registry: Registry) -> None:
    assert {wf.name: wf.kind for wf in registry} == BUILTINS
    assert registry.problems == []
    assert all(wf.builtin for wf in registry)
    assert registry.get("img2img_sd15").needs_reference_image
    assert registry.get("img2video_wan").needs_input_image
    assert registry.get("upscale_esrgan").needs_input_image
    assert not registry.get("txt2img_sd15").needs_input_image
    assert [w.name for w in registry.of_kind("video")] == ["img2video_wan", "txt2video_wan"]
    assert registry.get("txt2img_sdxl").family == "sdxl"
    with pytest.raises(WorkflowError, match="unknown workflow 'nope'"):
        registry.get("nope")


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_builtin_fits_the_real_object_info(
    registry: Registry, object_info: dict[str, Any], name: str
) -> None:
    wf = registry.get(name)
    assert check_against_object_info(wf, object_info) == []
    assert required_node_types(wf) <= set(object_info)
    for node_id in wf.outputs:
        assert object_info[wf.prompt[node_id]["class_type"]]["output_node"] is True


def test_builtin_model_defaults_come_from_settings(registry: Registry) -> None:
    assert registry.get("txt2img_sd15").params["checkpoint"].default == MODELS["checkpoint"]
    assert registry.get("txt2img_sdxl").params["checkpoint"].default == MODELS["sdxl_checkpoint"]
    i2v = registry.get("img2video_wan")
    assert i2v.model_keys == {
        "unet": "video_i2v_unet",
        "clip": "video_clip",
        "vae": "video_vae",
        "clip_vision": "video_clip_vision",
    }
    assert i2v.params["unet"].default == MODELS["video_i2v_unet"]
    bare = Registry.load()
    assert bare.get("txt2img_sd15").params["checkpoint"].default is None
    assert "checkpoint" in bare.get("txt2img_sd15").required_params


def test_builtin_graph_shapes(registry: Registry) -> None:
    assert required_node_types(registry.get("img2video_wan")) >= {
        "UNETLoader",
        "CLIPLoader",
        "VAELoader",
        "CLIPVisionLoader",
        "CLIPVisionEncode",
        "WanImageToVideo",
        "ModelSamplingSD3",
        "KSampler",
        "VAEDecode",
        "CreateVideo",
        "SaveVideo",
    }
    assert "EmptyHunyuanLatentVideo" in required_node_types(registry.get("txt2video_wan"))
    for name in ("txt2video_wan", "img2video_wan"):
        wf = registry.get(name)
        save = wf.prompt[wf.outputs[0]]
        assert save["class_type"] == "SaveVideo"
        assert (save["inputs"]["format"], save["inputs"]["codec"]) == ("mp4", "h264")
        assert wf.params["width"].multiple_of == 16 and wf.params["height"].multiple_of == 16
    img2img = registry.get("img2img_sd15")
    sampler = next(n for n in img2img.prompt.values() if n["class_type"] == "KSampler")
    assert sampler["inputs"]["denoise"] < 1
    assert img2img.params["denoise"].max == 1.0
    assert {"LoadImage", "VAEEncode"} <= required_node_types(img2img)
    upscale = registry.get("upscale_esrgan")
    assert required_node_types(upscale) == {
        "LoadImage",
        "UpscaleModelLoader",
        "ImageUpscaleWithModel",
        "ImageScale",
        "SaveImage",
    }
    assert upscale.params["width"].multiple_of == 2
    assert set(upscale.required_params) == {"input_image", "width", "height"}
    # every manifest parameter name comes from the catalogue
    assert all(p in PARAMETERS for wf in registry for p in wf.params)


# --------------------------------------------------------------------------- object_info checks


def test_object_info_check_reports_missing_nodes_and_inputs(
    registry: Registry, object_info: dict[str, Any]
) -> None:
    wf = registry.get("img2video_wan")
    info = copy.deepcopy(object_info)
    del info["WanImageToVideo"]
    del info["KSampler"]["input"]["required"]["denoise"]
    info["KSampler"]["input"]["required"]["new_required"] = ["INT", {"min": 0, "max": 1}]
    problems = check_against_object_info(wf, info)
    assert "node 11 (WanImageToVideo): node class is not installed on the backend" in problems
    assert "node 12 (KSampler): input 'denoise' is not declared by the backend" in problems
    assert "node 12 (KSampler): required input 'new_required' is missing" in problems


def test_object_info_check_reports_bad_values_links_and_outputs(
    registry: Registry, object_info: dict[str, Any]
) -> None:
    wf = registry.get("txt2img_sd15")
    prompt = copy.deepcopy(dict(wf.prompt))
    prompt["10"]["inputs"]["sampler_name"] = "warp_drive"
    prompt["10"]["inputs"]["steps"] = 0
    prompt["10"]["inputs"]["positive"] = ["1", 0]  # MODEL into CONDITIONING
    prompt["11"]["inputs"]["vae"] = ["1", 7]
    broken = dataclasses.replace(wf, prompt=prompt, outputs=("11",))
    problems = check_against_object_info(broken, object_info)
    assert any("'sampler_name'" in p and "warp_drive" in p for p in problems)
    assert any("'steps'" in p and "below the minimum 1" in p for p in problems)
    assert any("expects CONDITIONING but node 1 output 0 is MODEL" in p for p in problems)
    assert any("uses output 7 of node 1, which has only 3" in p for p in problems)
    assert "output node 11: VAEDecode is not an output node" in problems


def test_object_info_check_models_optionally(
    registry: Registry, object_info: dict[str, Any]
) -> None:
    wf = registry.get("txt2img_sd15")
    # the fixture server has no model files: only reported when asked for
    assert check_against_object_info(wf, object_info) == []
    problems = check_against_object_info(wf, object_info, check_models=True)
    assert problems == [
        "node 1 (CheckpointLoaderSimple): checkpoint 'anything-v5.safetensors' (setting "
        "'checkpoint') is not installed on the backend"
    ]
    info = copy.deepcopy(object_info)
    info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] = [MODELS["checkpoint"]]
    assert check_against_object_info(wf, info, check_models=True) == []


def test_object_info_check_covers_manifest_ranges(
    registry: Registry, object_info: dict[str, Any]
) -> None:
    wf = registry.get("txt2img_sd15")
    steps = dataclasses.replace(wf.params["steps"], max=20000)
    sampler = dataclasses.replace(wf.params["sampler_name"], choices=("euler", "nope"))
    loose = dataclasses.replace(wf, params={**wf.params, "steps": steps, "sampler_name": sampler})
    problems = check_against_object_info(loose, object_info)
    assert any("parameter 'steps'" in p and "above the maximum 10000" in p for p in problems)
    assert any("parameter 'sampler_name'" in p and "'nope'" in p for p in problems)


# --------------------------------------------------------------------------- patch


def test_patch_writes_values_and_keeps_template(registry: Registry) -> None:
    wf = registry.get("txt2img_sd15")
    before = copy.deepcopy(dict(wf.prompt))
    prompt = patch(
        wf,
        {
            "positive": TRICKY,
            "negative": "bad",
            "seed": 2**32 - 1,
            "steps": 30,
            "cfg": 6,
            "width": 768,
            "height": 512,
            "lora_name": "aiko.safetensors",
            "lora_strength": 0.65,
        },
        job_id="job-1",
    )
    assert dict(wf.prompt) == before  # template untouched
    assert prompt["5"]["inputs"]["text"] == TRICKY
    assert json.loads(json.dumps(prompt))["5"]["inputs"]["text"] == TRICKY
    assert prompt["6"]["inputs"]["text"] == "bad"
    ks = prompt["10"]["inputs"]
    assert (ks["seed"], ks["steps"], ks["cfg"]) == (2**32 - 1, 30, 6.0)
    assert isinstance(ks["cfg"], float)
    assert (prompt["7"]["inputs"]["width"], prompt["7"]["inputs"]["height"]) == (768, 512)
    assert prompt["1"]["inputs"]["ckpt_name"] == MODELS["checkpoint"]
    lora = prompt["2"]["inputs"]
    assert (lora["lora_name"], lora["strength_model"], lora["strength_clip"]) == (
        "aiko.safetensors",
        0.65,
        0.65,
    )
    assert ks["sampler_name"] == "dpmpp_2m"  # default
    assert prompt["12"]["inputs"]["filename_prefix"] == "animebot/job-1"
    # the second LoRA was not given: bypassed, the first one feeds the rest
    assert "3" not in prompt
    assert ks["model"] == ["2", 0]
    assert prompt["4"]["inputs"]["clip"] == ["2", 1]


def test_patch_bypasses_both_loras_cleanly(registry: Registry, object_info: dict[str, Any]) -> None:
    for name in ("txt2img_sd15", "txt2img_sdxl", "img2img_sd15"):
        wf = registry.get(name)
        params: dict[str, object] = {"positive": "a cat", "seed": 1, "lora_name": None}
        if wf.needs_reference_image:
            params["reference_image"] = "ref.png"
        prompt = patch(wf, params, job_id="j")
        assert "2" not in prompt and "3" not in prompt
        assert not any(n["class_type"] == "LoraLoader" for n in prompt.values())
        assert prompt["10"]["inputs"]["model"] == ["1", 0]
        assert _links_ok(prompt)
        assert check_against_object_info(_as_workflow(wf, prompt), object_info) == []
    sd15 = patch(registry.get("txt2img_sd15"), {"positive": "x", "seed": 1, "lora_name": "  "})
    assert sd15["4"]["inputs"]["clip"] == ["1", 1]


def test_patch_only_second_lora(registry: Registry, object_info: dict[str, Any]) -> None:
    wf = registry.get("txt2img_sdxl")
    prompt = patch(wf, {"positive": "x", "seed": 1, "lora2_name": "ren.safetensors"})
    assert "2" not in prompt
    assert prompt["3"]["inputs"]["model"] == ["1", 0]
    assert prompt["3"]["inputs"]["clip"] == ["1", 1]
    assert prompt["5"]["inputs"]["clip"] == ["3", 1]
    assert check_against_object_info(_as_workflow(wf, prompt), object_info) == []


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"seed": "42"}, "seed must be a whole number"),
        ({"seed": True}, "seed must be a whole number"),
        ({"seed": -1}, "seed must be between 0 and 4294967295"),
        ({"seed": 2**32}, "seed must be between 0 and 4294967295"),
        ({"steps": 0}, "steps must be between 1 and 100"),
        ({"steps": 7.5}, "steps must be a whole number"),
        ({"cfg": float("nan")}, "cfg must be a finite number"),
        ({"cfg": "7"}, "cfg must be a number"),
        ({"width": 513}, "width must be a multiple of 8"),
        ({"height": 8}, "height must be between 256 and 1536"),
        ({"sampler_name": "warp"}, "sampler_name must be one of euler"),
        ({"positive": 5}, "positive must be text"),
        ({"positive": "x" * 8001}, "positive must be at most 8000 characters"),
    ],
)
def test_patch_rejects_bad_values(
    registry: Registry, params: dict[str, object], message: str
) -> None:
    wf = registry.get("txt2img_sd15")
    with pytest.raises(WorkflowError) as caught:
        patch(wf, {"positive": "a", "seed": 1, **params})
    assert caught.value.user_message.startswith(message)


def test_patch_video_sizes_must_fit_the_latent(registry: Registry) -> None:
    wf = registry.get("txt2video_wan")
    with pytest.raises(WorkflowError, match="multiple of 16"):
        patch(wf, {"positive": "a", "seed": 1, "width": 840})
    prompt = patch(wf, {"positive": "a", "seed": 1, "width": 848, "frames": 81, "fps": 24})
    assert prompt["11"]["inputs"]["width"] == 848
    assert prompt["11"]["inputs"]["length"] == 81
    assert prompt["14"]["inputs"]["fps"] == 24.0


def test_patch_sets_every_target_of_a_parameter(registry: Registry) -> None:
    wf = registry.get("img2video_wan")
    prompt = patch(
        wf,
        {"positive": "a", "seed": 1, "input_image": "start.png", "width": 480, "height": 832},
        job_id="v",
    )
    assert prompt["8"]["inputs"]["image"] == "start.png"
    assert (prompt["9"]["inputs"]["width"], prompt["11"]["inputs"]["width"]) == (480, 480)
    assert (prompt["9"]["inputs"]["height"], prompt["11"]["inputs"]["height"]) == (832, 832)
    assert prompt["7"]["inputs"]["clip_name"] == MODELS["video_clip_vision"]
    assert prompt["15"]["inputs"]["filename_prefix"] == "animebot/v"


def test_patch_unknown_and_missing_parameters(registry: Registry) -> None:
    wf = registry.get("txt2img_sd15")
    with pytest.raises(WorkflowError, match="unknown parameter"):
        patch(wf, {"positive": "a", "seed": 1, "frames": 10})
    with pytest.raises(WorkflowError, match="'positive' is required"):
        patch(wf, {"seed": 1})
    with pytest.raises(WorkflowError, match="'positive' is required"):
        patch(wf, {"positive": None, "seed": 1})
    with pytest.raises(WorkflowError, match="'reference_image' is required"):
        patch(registry.get("img2img_sd15"), {"positive": "a", "seed": 1})
    bare = Registry.load().get("txt2img_sd15")
    with pytest.raises(WorkflowError, match="set the model setting 'checkpoint'"):
        patch(bare, {"positive": "a", "seed": 1})
    assert patch(bare, {"positive": "a", "seed": 1, "checkpoint": "mine.safetensors"})["1"][
        "inputs"
    ]["ckpt_name"] == ("mine.safetensors")


def test_filename_prefix_is_unique_per_job(registry: Registry) -> None:
    wf = registry.get("txt2img_sd15")
    params = {"positive": "a", "seed": 1}
    first = patch(wf, params)["12"]["inputs"]["filename_prefix"]
    second = patch(wf, params)["12"]["inputs"]["filename_prefix"]
    assert first.startswith("animebot/") and second.startswith("animebot/")
    assert first != second
    assert patch(wf, params, job_id="../etc/pass wd")["12"]["inputs"]["filename_prefix"] == (
        "animebot/etc_pass_wd"
    )
    assert job_prefix("abc", root="x") == "x/abc"


def test_even_scaled_size() -> None:
    assert even_scaled_size(513, 767, 2) == (1026, 1534)
    assert even_scaled_size(333, 333, 1.5) == (500, 500)
    assert even_scaled_size(101, 51, 4) == (404, 204)
    width, height = even_scaled_size(4000, 1000, 4, maximum=8191)
    assert width <= 8190 and width % 2 == 0 and height % 2 == 0
    with pytest.raises(WorkflowError):
        even_scaled_size(0, 10, 2)


def test_upscale_patch(registry: Registry, object_info: dict[str, Any]) -> None:
    wf = registry.get("upscale_esrgan")
    width, height = even_scaled_size(511, 383, 2)
    prompt = patch(wf, {"input_image": "in.png", "width": width, "height": height})
    assert prompt["4"]["inputs"]["width"] == 1022 and prompt["4"]["inputs"]["height"] == 766
    assert prompt["2"]["inputs"]["model_name"] == MODELS["upscale_model"]
    assert check_against_object_info(_as_workflow(wf, prompt), object_info) == []
    with pytest.raises(WorkflowError, match="multiple of 2"):
        patch(wf, {"input_image": "in.png", "width": 1023, "height": 766})


def test_director_plan_feeds_patch(registry: Registry, object_info: dict[str, Any]) -> None:
    aiko = director.CharacterSpec(
        id="a", name="Aiko", appearance="silver hair", lora_name="aiko.safetensors"
    )
    request = director.parse_scene_request('@Aiko says "{hi}" 🌸 --ar 16:9 --steps 30')
    plan = director.plan_generation(request=request, kind="image", characters=[aiko])
    wf = registry.get("txt2img_sd15")
    prompt = patch(wf, plan.params, job_id="p")
    assert prompt["5"]["inputs"]["text"] == plan.positive
    assert '"{hi}" 🌸' in prompt["5"]["inputs"]["text"]
    assert (prompt["7"]["inputs"]["width"], prompt["7"]["inputs"]["height"]) == (704, 384)
    assert prompt["2"]["inputs"]["lora_name"] == "aiko.safetensors"
    assert check_against_object_info(_as_workflow(wf, prompt), object_info) == []

    video = director.parse_scene_request("@Aiko waves --length 5s", kind="video")
    vplan = director.plan_generation(
        request=video, kind="video", characters=[aiko], chat_aspect_ratio="9:16"
    )
    vwf = registry.get("txt2video_wan")
    vprompt = patch(vwf, vplan.params, job_id="v")
    assert vprompt["11"]["inputs"]["length"] == 81
    assert (vprompt["11"]["inputs"]["width"], vprompt["11"]["inputs"]["height"]) == (480, 848)
    assert check_against_object_info(_as_workflow(vwf, vprompt), object_info) == []


# --------------------------------------------------------------------------- registry / user dirs


def _user_txt2img(name: str = "txt2img_sd15") -> tuple[dict[str, Any], dict[str, Any]]:
    prompt, manifest = _builtin("txt2img_sd15")
    manifest["name"] = name
    manifest["description"] = "user version"
    return prompt, manifest


def test_user_workflow_overrides_builtin_and_adds_new(tmp_path: Path) -> None:
    prompt, manifest = _user_txt2img()
    _write(tmp_path / "mine", "my_txt2img", prompt, manifest)

    def node(class_type: str, **inputs: Any) -> dict[str, Any]:
        return {"class_type": class_type, "inputs": inputs}

    two_samplers = {
        "1": node("EmptyImage", width=64, height=64, batch_size=1, color=0),
        "2": node("ImageAddNoise", image=["1", 0], seed=1, strength=0.5),
        "3": node("ImageAddNoise", image=["2", 0], seed=1, strength=0.5),
        "4": node("SaveImage", images=["3", 0], filename_prefix="p"),
        "5": node("PreviewImage", images=["3", 0]),
    }
    noise_manifest = {
        "name": "noise",
        "kind": "image",
        "outputs": ["4", "5"],
        "parameters": {
            "seed": {
                "type": "int",
                "targets": [{"node": "2", "input": "seed"}, {"node": "3", "input": "seed"}],
                "default": 7,
                "min": 0,
                "max": 100,
            }
        },
    }
    _write(tmp_path / "mine", "noise", two_samplers, noise_manifest)
    registry = Registry.load(extra_dirs=[tmp_path / "mine"], model_defaults=MODELS)
    assert registry.problems == []
    assert registry.overridden == ["txt2img_sd15"]
    wf = registry.get("txt2img_sd15")
    assert not wf.builtin and wf.description == "user version"
    assert len(registry) == len(BUILTINS) + 1
    noise = patch(registry.get("noise"), {"seed": 42}, job_id="n")
    assert noise["2"]["inputs"]["seed"] == noise["3"]["inputs"]["seed"] == 42
    assert noise["4"]["inputs"]["filename_prefix"] == "animebot/n"
    assert "filename_prefix" not in noise["5"]["inputs"]


def _bad_cases() -> list[tuple[str, Any, Any, str]]:
    prompt, manifest = _user_txt2img("broken")

    def with_manifest(**changes: Any) -> dict[str, Any]:
        changed = copy.deepcopy(manifest)
        changed.update(changes)
        return changed

    def with_param(name: str, spec: dict[str, Any]) -> dict[str, Any]:
        changed = copy.deepcopy(manifest)
        changed["parameters"][name] = spec
        return changed

    text_target = [{"node": "5", "input": "text"}]
    steps_target = [{"node": "10", "input": "steps"}]
    return [
        ("malformed JSON", "{not json", manifest, "malformed JSON at line 1"),
        ("malformed manifest", prompt, '{"name": ', "malformed JSON"),
        ("UI format", {"nodes": [], "links": []}, manifest, "Export (API)"),
        ("no class_type", {"1": {"inputs": {}}}, manifest, "has no 'class_type'"),
        (
            "dangling link",
            {**prompt, "99": {"class_type": "VAEDecode", "inputs": {"samples": ["77", 0]}}},
            manifest,
            "links to missing node '77'",
        ),
        (
            "unknown parameter",
            prompt,
            with_param("sharpness", {"type": "int", "targets": text_target}),
            "unknown parameter 'sharpness'",
        ),
        (
            "missing node",
            prompt,
            with_param("positive", {"type": "str", "targets": [{"node": "42", "input": "text"}]}),
            "target node '42' does not exist",
        ),
        (
            "missing input",
            prompt,
            with_param("positive", {"type": "str", "targets": [{"node": "5", "input": "txt"}]}),
            "has no input 'txt'",
        ),
        (
            "target is a link",
            prompt,
            with_param("positive", {"type": "str", "targets": [{"node": "5", "input": "clip"}]}),
            "is a link, not a value",
        ),
        (
            "wrong type",
            prompt,
            with_param("seed", {"type": "str", "targets": [{"node": "10", "input": "seed"}]}),
            "type must be 'int'",
        ),
        (
            "bad default",
            prompt,
            with_param("steps", {"type": "int", "targets": steps_target, "default": 500, "max": 9}),
            "default 500 is invalid",
        ),
        ("missing output", prompt, with_manifest(outputs=["99"]), "output node '99' does not"),
        ("unknown field", prompt, with_manifest(colour="red"), "colour: Extra inputs"),
        ("bad kind", prompt, with_manifest(kind="audio"), "kind: Input should be"),
        ("bad name", prompt, with_manifest(name="Bad Name!"), "must be 1-64 lowercase"),
        (
            "bypass unknown param",
            prompt,
            with_manifest(bypass=[{"when_empty": "lora9", "node": "2", "outputs": ["model"]}]),
            "undeclared parameter 'lora9'",
        ),
        (
            "bypass non-link",
            prompt,
            with_manifest(
                bypass=[{"when_empty": "lora_name", "node": "2", "outputs": ["model", "lora_name"]}]
            ),
            "'lora_name' does not exist or is not a link",
        ),
        (
            "reference flag",
            prompt,
            with_manifest(needs_reference_image=True),
            "needs_reference_image is true but there is no 'reference_image'",
        ),
    ]


@pytest.mark.parametrize(
    ("label", "prompt", "manifest", "message"), _bad_cases(), ids=[c[0] for c in _bad_cases()]
)
def test_bad_user_workflow_is_reported_and_skipped(
    tmp_path: Path, label: str, prompt: Any, manifest: Any, message: str
) -> None:
    user = tmp_path / "user"
    _write(user, "broken", prompt, manifest)
    good_prompt, good_manifest = _user_txt2img("good_one")
    _write(user, "good", good_prompt, good_manifest)
    registry = Registry.load(extra_dirs=[user], model_defaults=MODELS)
    assert "good_one" in registry and "broken" not in registry
    assert len(registry.problems) == 1, label
    problem = str(registry.problems[0])
    assert "broken" in problem  # names the file
    assert message in problem


def test_unpaired_files_and_missing_dir_are_reported(tmp_path: Path) -> None:
    user = tmp_path / "user"
    user.mkdir()
    (user / "lonely.json").write_text("{}", encoding="utf-8")
    (user / "orphan.manifest.json").write_text("{}", encoding="utf-8")
    registry = Registry.load(extra_dirs=[user, tmp_path / "absent"])
    messages = [str(p) for p in registry.problems]
    assert any("lonely.json: no manifest file lonely.manifest.json" in m for m in messages)
    assert any("orphan.manifest.json: no workflow file orphan.json" in m for m in messages)
    assert any("absent: workflow directory does not exist" in m for m in messages)
    assert len(registry) == len(BUILTINS)


def test_same_name_twice_in_one_user_dir(tmp_path: Path) -> None:
    prompt, manifest = _user_txt2img("dup")
    _write(tmp_path, "a", prompt, manifest)
    _write(tmp_path, "b", prompt, manifest)
    registry = Registry.load(extra_dirs=[tmp_path])
    assert registry.get("dup").source.name == "a.json"
    assert len(registry.problems) == 1 and "defined twice" in str(registry.problems[0])


def test_bad_builtin_is_a_hard_error(tmp_path: Path) -> None:
    builtin = tmp_path / "builtin"
    shutil.copytree(BUILTIN_DIR, builtin)
    (builtin / "txt2video_wan.json").write_text('{"1": ', encoding="utf-8")
    with pytest.raises(WorkflowError, match=r"txt2video_wan\.json: malformed JSON"):
        Registry.load(builtin_dir=builtin)
    (builtin / "txt2video_wan.json").unlink()
    with pytest.raises(WorkflowError, match=r"no workflow file txt2video_wan\.json"):
        Registry.load(builtin_dir=builtin)


def test_model_setting_that_breaks_a_constraint_is_reported(tmp_path: Path) -> None:
    prompt, manifest = _user_txt2img("pinned")
    manifest["parameters"]["checkpoint"]["choices"] = ["only-this.safetensors"]
    _write(tmp_path, "pinned", prompt, manifest)
    registry = Registry.load(extra_dirs=[tmp_path], model_defaults={"checkpoint": "other.ckpt"})
    assert "pinned" not in registry
    assert "model setting 'checkpoint' 'other.ckpt' is invalid" in str(registry.problems[0])
    both = copy.deepcopy(manifest)
    both["parameters"]["checkpoint"] = {
        "type": "str",
        "targets": [{"node": "1", "input": "ckpt_name"}],
        "model_key": "checkpoint",
        "default": "x.safetensors",
    }
    _write(tmp_path / "two", "pinned", prompt, both)
    again = Registry.load(extra_dirs=[tmp_path / "two"])
    assert "has both 'default' and 'model_key'" in str(again.problems[0])
