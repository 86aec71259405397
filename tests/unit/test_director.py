"""The production director: scene parsing, prompt building, seeds and sizes."""

from __future__ import annotations

import time
from dataclasses import dataclass
from uuid import UUID

import pytest

from core.director import (
    MAX_NEGATIVE_TOKENS,
    MAX_PROMPT_TOKENS,
    MAX_SCENE_CHARS,
    SEED_MAX,
    STYLE_PRESETS,
    CharacterSpec,
    SceneRequest,
    character_seed,
    clean_text,
    derive_base_seed,
    dimensions_for,
    direct,
    estimate_tokens,
    find_named_characters,
    get_style,
    parse_aspect_ratio,
    parse_scene_request,
    plan_generation,
    reroll_seed,
    scene_seed,
    spec_from,
    video_frames,
    video_size_like,
)
from core.errors import InvalidInput

AIKO = CharacterSpec(
    id=UUID("00000000-0000-0000-0000-00000000a1c0"),
    name="Aiko",
    appearance="silver hair, red eyes, school uniform",
    personality="cheerful, clumsy",
    style="soft lighting",
    negative="short hair",
    lora_name="aiko.safetensors",
    lora_strength=0.7,
)
REN = CharacterSpec(
    id=2,
    name="Ren",
    appearance="black hair, glasses, tall",
    personality="calm",
    negative="smile, short hair",
    lora_name="ren.safetensors",
)


# --------------------------------------------------------------------------- parsing


def test_parse_all_options() -> None:
    request = parse_scene_request(
        "@Aiko and @Ren walk in the rain --ar 16:9 --seed 42 --steps 30 --cfg 6.5 "
        '--no hats, glasses --music "city pop"'
    )
    assert request == SceneRequest(
        scene_text="Aiko and Ren walk in the rain",
        characters=("Aiko", "Ren"),
        aspect_ratio=(16, 9),
        seed=42,
        steps=30,
        cfg=6.5,
        negative_extra="hats, glasses",
        music_query="city pop",
    )


def test_parse_video_options_and_order_independence() -> None:
    request = parse_scene_request("--frames 49 a fox runs --cfg 5,5", kind="video")
    assert (request.scene_text, request.frames, request.cfg) == ("a fox runs", 49, 5.5)
    assert parse_scene_request("x --length 5s", kind="video").seconds == 5.0
    assert parse_scene_request("x --length 2.5", kind="video").seconds == 2.5
    assert parse_scene_request("x --LENGTH 3S", kind="video").seconds == 3.0


def test_parse_phone_dashes() -> None:
    request = parse_scene_request("a cat \u2014ar 3:4 \u2013seed 7")
    assert (request.scene_text, request.aspect_ratio, request.seed) == ("a cat", (3, 4), 7)
    # a dash before an ordinary word is text, and so is a lone "--"
    assert parse_scene_request("wait \u2014what -- no way").scene_text == (
        "wait \u2014what -- no way"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x --ar 16x9", "--ar must look like 16:9, between 1:4 and 4:1"),
        ("x --ar 1:5", "--ar must look like 16:9, between 1:4 and 4:1"),
        ("x --ar 0:1", "--ar must look like 16:9, between 1:4 and 4:1"),
        ("x --seed abc", "--seed must be a whole number from 0 to 4294967295, like --seed 42"),
        ("x --seed -1", "--seed must be a whole number from 0 to 4294967295"),
        ("x --seed 4294967296", "--seed must be a whole number from 0 to 4294967295"),
        ("x --steps 0", "--steps must be a whole number from 1 to 100"),
        ("x --cfg 99", "--cfg must be a number from 1 to 30"),
        ("x --cfg 1e3", "--cfg must be a number from 1 to 30"),
        ("x --seed", "--seed needs a value"),
        ("x --seed --ar 1:1", "--seed needs a value"),
        ("x --seed 1 --seed 2", "--seed is given twice"),
        ("x --no", "--no needs the things to avoid"),
        ("x --no --seed 1", "--no needs the things to avoid"),
        ("x --music city pop", "--music needs a quoted search of at most 200 characters"),
        ('x --music ""', "--music needs a quoted search"),
        ("x --frames 10", "--frames is only for videos"),
        ("x --length 3s", "--length is only for videos"),
        ("x --style ghibli", "Unknown option --style. Known: --ar, --seed"),
    ],
)
def test_parse_rejects_with_clear_message(text: str, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_scene_request(text)
    assert caught.value.user_message.startswith(message)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x --frames 2", "--frames must be a whole number from 5 to 161"),
        ("x --length 60s", "--length must be seconds from 0.5 to 10"),
        ("x --length five", "--length must be seconds"),
        ("x --frames 9 --length 1s", "Use either --frames or --length, not both"),
    ],
)
def test_parse_rejects_bad_video_options(text: str, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_scene_request(text, kind="video")
    assert caught.value.user_message.startswith(message)


def test_parse_music_quote_styles() -> None:
    for text in ('--music "lo-fi"', "--music \u201clo-fi\u201d", "--music \u00ablo-fi\u00bb"):
        assert parse_scene_request(f"rain {text} --seed 1").music_query == "lo-fi"
    request = parse_scene_request("rain --music 'Don\u2019t Stop' ok")
    assert (request.music_query, request.scene_text) == ("Don\u2019t Stop", "rain ok")


def test_parse_mentions() -> None:
    request = parse_scene_request("@Ren meets @aiko-chan, then @ren again; mail a@b.com @")
    assert request.characters == ("Ren", "aiko-chan")
    assert request.scene_text == "Ren meets aiko-chan, then ren again; mail a@b.com @"
    assert parse_scene_request("@Аня и @さくら").characters == ("Аня", "さくら")


def test_parse_keeps_user_text_as_a_value() -> None:
    text = 'she says "hi" {"x":1} {positive} %date% \\ 🌸👩‍👩‍👧 שלום עולם'
    assert parse_scene_request(text).scene_text == text


def test_parse_strips_control_characters() -> None:
    text = "a\x00b\x07 cat\r\n\tsits\u202e on\u2066 mat\x7f\ufeff"
    assert parse_scene_request(text).scene_text == "ab cat sits on mat"
    # joiners that emoji and Persian need stay
    assert clean_text("👩\u200d👩 \u0645\u06cc\u200c\u062e\u0648\u0627\u0645") == (
        "👩\u200d👩 \u0645\u06cc\u200c\u062e\u0648\u0627\u0645"
    )


def test_parse_bounds_huge_input() -> None:
    started = time.perf_counter()
    request = parse_scene_request("word " * 2000 + "--seed 5 " + "x" * 5000)
    assert time.perf_counter() - started < 1.0
    assert request.seed == 5
    assert len(request.scene_text) <= MAX_SCENE_CHARS
    assert request.scene_text.startswith("word word")


def test_parse_aspect_ratio() -> None:
    assert parse_aspect_ratio("16:9") == (16, 9)
    assert parse_aspect_ratio(" 1 : 4 ") == (1, 4)
    for bad in ("4:17", "abc", "16/9", ""):
        with pytest.raises(InvalidInput):
            parse_aspect_ratio(bad)


# --------------------------------------------------------------------------- directing


def test_direct_orders_weights_and_dedupes_characters() -> None:
    request = parse_scene_request("@Ren hands @Aiko an umbrella")
    result = direct(request, [AIKO, REN, AIKO])
    assert result.characters == ["Ren", "Aiko"]
    assert result.loras == [("ren.safetensors", 0.8), ("aiko.safetensors", 0.7)]
    positive = result.positive
    ren = positive.index("(Ren, black hair, glasses, tall:1.2)")
    aiko = positive.index("(Aiko, silver hair, red eyes, school uniform:1.1)")
    assert ren < aiko
    assert positive.count("(Aiko,") == 1
    assert "Ren hands Aiko an umbrella" in positive
    assert positive.startswith("masterpiece, best quality")
    for tag in STYLE_PRESETS["anime"].positive:
        assert tag in positive
    assert "cheerful" in positive and "soft lighting" in positive


def test_direct_orders_by_plain_name_when_not_mentioned() -> None:
    result = direct(SceneRequest("aiko sleeps while ren reads"), [REN, AIKO])
    assert result.characters == ["Aiko", "Ren"]
    unmentioned = direct(SceneRequest("a quiet room"), [REN, AIKO])
    assert unmentioned.characters == ["Ren", "Aiko"]


def test_direct_negative_merges_and_dedupes() -> None:
    request = parse_scene_request("@Aiko @Ren --no hats, short hair")
    negative = direct(request, [AIKO, REN], style="manga-bw").negative
    tags = negative.split(", ")
    assert tags[:3] == ["hats", "short hair", "smile"]
    assert len(tags) == len({t.casefold() for t in tags})
    assert "colorful" in tags and "lowres" in tags


def test_direct_style_presets() -> None:
    request = SceneRequest("a cat on a roof")
    for name, preset in STYLE_PRESETS.items():
        result = direct(request, [], style=name)
        assert all(tag in result.positive for tag in preset.positive)
        assert all(tag in result.negative for tag in preset.negative)
    assert get_style(None).name == "anime" and get_style(" Chibi ").name == "chibi"
    with pytest.raises(InvalidInput) as caught:
        direct(request, [], style="vaporwave")
    assert "ghibli-watercolor" in caught.value.user_message
    # a character whose style is a preset name brings that preset's tags
    styled = direct(request, [CharacterSpec(id=1, name="Mo", style="chibi")])
    assert "super deformed" in styled.positive


def test_direct_keeps_user_text_literal_and_escapes_stray_parentheses() -> None:
    text = 'she says "{positive}" (smiling:1.3) 🌸 שלום'
    assert text in direct(SceneRequest(text), []).positive
    stray = direct(SceneRequest("a cat :) waves"), [CharacterSpec(1, "Ko", "blue eyes)")])
    assert "a cat :\\) waves" in stray.positive
    assert "(Ko, blue eyes\\):1.2)" in stray.positive


def test_direct_requires_something_to_draw() -> None:
    with pytest.raises(InvalidInput):
        direct(SceneRequest("  \x00 "), [])
    assert direct(SceneRequest(""), [AIKO]).positive.count("Aiko") == 1


def test_direct_bounds_long_prompts_cutting_least_important_first() -> None:
    full = direct(SceneRequest("a walk in the park"), [AIKO, REN])
    budget = estimate_tokens(full.positive) - 3
    cut = direct(SceneRequest("a walk in the park"), [AIKO, REN], max_tokens=budget)
    assert estimate_tokens(cut.positive) <= budget
    assert "clumsy" not in cut.positive  # personality goes first
    assert "soft lighting" in cut.positive and "masterpiece" in cut.positive


def test_direct_bounds_huge_scene_keeping_its_start_and_names() -> None:
    scene = "Aiko opens the old door. " + "then more and more happens " * 500
    request = parse_scene_request(scene)
    result = direct(request, [AIKO, REN])
    assert estimate_tokens(result.positive) <= MAX_PROMPT_TOKENS
    assert "Aiko opens the old door." in result.positive
    assert "(Aiko, silver hair, red eyes, school uniform:1.2)" in result.positive
    assert "(Ren," in result.positive
    assert "anime style" in result.positive  # style outranks the scene's tail
    tiny = direct(request, [AIKO, REN], max_tokens=30)
    assert "(Aiko" in tiny.positive and "(Ren" in tiny.positive
    assert "Aiko opens" in tiny.positive
    assert estimate_tokens(tiny.positive) <= 30
    crowded = [CharacterSpec(id=i, name=f"Name{i}") for i in range(20)]
    assert direct(request, crowded, max_tokens=30).positive.endswith("(Name19:1.1), Aiko")


def test_direct_bounds_unspaced_and_emoji_text() -> None:
    for scene in ("猫が" * 3000, "🌸" * 5000, "x" * 10000, "שלום " * 2000):
        result = direct(SceneRequest(scene), [])
        assert 0 < estimate_tokens(result.positive) <= MAX_PROMPT_TOKENS
        assert scene[:8] in result.positive
    one_blob = direct(parse_scene_request("cat --no " + "y " * 3000), []).negative
    assert one_blob.startswith("y y y") and estimate_tokens(one_blob) <= MAX_NEGATIVE_TOKENS
    many = ", ".join(f"thing{i}" for i in range(400))
    negative = direct(parse_scene_request(f"cat --no {many}"), []).negative
    assert 0 < estimate_tokens(negative) <= MAX_NEGATIVE_TOKENS
    assert negative.startswith("thing0, thing1, thing2")
    assert "lowres" not in negative  # the generic negative went before the user's words


# --------------------------------------------------------------------------- seeds


def test_character_seed_is_stable_and_in_range() -> None:
    seed = derive_base_seed(AIKO.id)
    assert seed == derive_base_seed(UUID(str(AIKO.id)))
    assert 0 <= seed <= SEED_MAX
    assert derive_base_seed("other") != seed
    assert character_seed(AIKO) == seed
    assert character_seed(CharacterSpec(id=1, name="x", base_seed=99)) == 99


def test_scene_seed_combines_cast_and_text() -> None:
    base = scene_seed([AIKO, REN], "In the rain")
    assert base == scene_seed([AIKO, REN], "  in   the RAIN ")
    assert base != scene_seed([AIKO], "In the rain")
    assert base != scene_seed([AIKO, REN], "In the snow")
    assert 0 <= base <= SEED_MAX
    request = parse_scene_request("@Aiko @Ren in the rain")
    assert direct(request, [AIKO, REN]).seed == scene_seed([AIKO, REN], "Aiko Ren in the rain")
    assert direct(parse_scene_request("@Aiko in the rain --seed 5"), [AIKO]).seed == 5


def test_reroll_seed() -> None:
    first = reroll_seed(123, 1)
    assert first == reroll_seed(123, 1) and first != 123
    assert reroll_seed(123, 2) != first
    assert 0 <= first <= SEED_MAX
    random_seeds = {reroll_seed(123) for _ in range(20)}
    assert 123 not in random_seeds and len(random_seeds) > 15
    with pytest.raises(InvalidInput):
        reroll_seed(1, 0)


# --------------------------------------------------------------------------- sizes


def test_dimensions_for_families() -> None:
    assert dimensions_for(None, "sd15") == (512, 512)
    assert dimensions_for((16, 9), "sd15") == (704, 384)
    assert dimensions_for((16, 9), "sdxl") == (1344, 768)
    assert dimensions_for((9, 16), "sdxl") == (768, 1344)
    assert dimensions_for(None, "wan") == (832, 480)
    for ratio in ((1, 4), (4, 1), (3, 2), (2, 3), (21, 9)):
        for family, area, multiple in (("sd15", 512**2, 64), ("sdxl", 1024**2, 64)):
            width, height = dimensions_for(ratio, family)
            assert width % multiple == 0 and height % multiple == 0
            assert abs(width * height - area) / area < 0.2
            assert abs(width / height - ratio[0] / ratio[1]) / (ratio[0] / ratio[1]) < 0.2
        width, height = dimensions_for(ratio, "wan")
        assert width % 16 == 0 and height % 16 == 0


def test_video_helpers() -> None:
    assert video_frames(5, 16) == 81
    assert video_frames(0.1, 16) == 5
    assert all(video_frames(s / 2, 16) % 4 == 1 for s in range(1, 30))
    assert video_size_like(1024, 1024) == (624, 624)
    width, height = video_size_like(100, 10000)
    assert height > width and width % 16 == 0


# --------------------------------------------------------------------------- glue


@dataclass(frozen=True)
class _Row:
    id: UUID
    name: str
    appearance: str = "green eyes"
    personality: str = ""
    style: str = "anime"
    negative_prompt: str = "hat"
    base_seed: int | None = 7
    lora_name: str | None = None
    lora_strength: float = 1.0


def test_spec_from_row_and_find_named_characters() -> None:
    mary = _Row(UUID(int=1), "Mary")
    mary_jane = _Row(UUID(int=2), "Mary Jane")
    ren = _Row(UUID(int=3), "Ren")
    spec = spec_from(mary)
    assert (spec.name, spec.negative, spec.base_seed) == ("Mary", "hat", 7)
    found = find_named_characters(
        "Renaissance art: mary jane and @REN, then Mary", [mary, ren, mary_jane]
    )
    assert found == [mary_jane, ren, mary]
    assert find_named_characters("Renaissance", [ren]) == []


def test_plan_generation_image_and_video() -> None:
    image = plan_generation(
        request=parse_scene_request("@Aiko smiles --steps 25"),
        kind="image",
        characters=[AIKO],
        chat_preset="cel-shaded",
        chat_aspect_ratio="2:3",
    )
    assert image.params["lora_name"] == "aiko.safetensors"
    assert image.params["steps"] == 25
    assert (image.params["width"], image.params["height"]) == dimensions_for((2, 3), "sd15")
    assert "cel shading" in image.positive and image.params["positive"] == image.positive
    assert "frames" not in image.params
    video = plan_generation(
        request=parse_scene_request("@Aiko smiles --ar 1:1", kind="video"),
        kind="video",
        characters=[AIKO],
        chat_aspect_ratio="16:9",
        video_seconds=3,
    )
    assert video.params["frames"] == video_frames(3)
    assert (video.params["width"], video.params["height"]) == dimensions_for((1, 1), "wan")
    assert "lora_name" not in video.params
    assert video.seed == image.seed
