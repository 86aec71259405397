"""The bad-input corpus, pure parts: scene options, names and free text, callback data,
reference images and captions. The same corpus goes through the real bot in
tests/e2e/test_abuse.py; here each rule is pinned down without a bot (the flood limit lives in
PostgreSQL: tests/integration/test_store_rate_limits.py).

The crafted files (`bomb_png`, `truncated_jpeg`, `text_as_jpeg`) are shared with the e2e tests.
"""

from __future__ import annotations

import io
import random
import struct
import time
import unicodedata
import uuid
import zlib

import pytest
from PIL import Image

from bot.keyboards import MAX_BYTES, MAX_INT, ArgKind, decode, known_actions
from bot.render import CaptionInfo, JobProgress, caption, clusters, progress_text, visible_len
from core.director import MAX_SCENE_CHARS, direct, parse_scene_request
from core.errors import InvalidInput
from core.media.images import validate_reference
from core.models import JobKind
from core.service import clean_name, clean_text

# -- crafted files (also used by tests/e2e/test_abuse.py) ------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int = 50_000, height: int = 50_000) -> bytes:
    """A tiny PNG whose header declares `width` x `height` pixels (the pixel data is a stub)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 256)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", pixels)
        + _chunk(b"IEND", b"")
    )


def noise_jpeg(width: int = 400, height: int = 400) -> bytes:
    rng = random.Random(7)
    image = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def truncated_jpeg() -> bytes:
    """A real JPEG cut at 60%: the header reads fine, the pixels do not."""
    data = noise_jpeg()
    return data[: len(data) * 6 // 10]


def text_as_jpeg() -> bytes:
    return b"This is not a picture, it is a text file renamed to photo.jpg\n" * 20


# -- scene options -------------------------------------------------------------------------------

OPTION_ABUSE = [
    ("a cat --ar 100:1", "--ar must look like 16:9, between 1:4 and 4:1"),
    ("a cat --ar 0:0", "--ar must look like 16:9, between 1:4 and 4:1"),
    ("a cat --ar 16:9:4", "--ar must look like 16:9, between 1:4 and 4:1"),
    ("a cat —ar 100:1", "--ar must look like 16:9, between 1:4 and 4:1"),  # a phone's em dash
    ("a cat --seed -1", "--seed must be a whole number from 0 to 4294967295, like --seed 42"),
    ("a cat --seed 4294967296", "--seed must be a whole number from 0 to 4294967295"),
    ("a cat --seed " + "9" * 40, "--seed must be a whole number from 0 to 4294967295"),
    ("a cat --seed", "--seed needs a value"),
    ("a cat --steps 100000", "--steps must be a whole number from 1 to 100, like --steps 30"),
    ("a cat --steps 0", "--steps must be a whole number from 1 to 100"),
    ("a cat --steps 5 --steps 6", "--steps is given twice"),
    ("a cat --cfg nan", "--cfg must be a number from 1 to 30, like --cfg 6.5"),
    ("a cat --cfg inf", "--cfg must be a number from 1 to 30"),
    ("a cat --cfg 1e9", "--cfg must be a number from 1 to 30"),
    ("a cat --cfg -5", "--cfg must be a number from 1 to 30"),
    ("a cat --flag", "Unknown option --flag. Known: --ar, --seed, --steps"),
    ("a cat --DROP TABLE", "Unknown option --drop"),
    ('a cat --music "unterminated', "--music needs a quoted search of at most 200 characters"),
    ("a cat --music", "--music needs a quoted search"),
    ("a cat --no", "--no needs the things to avoid"),
    ("a cat --length 3s", "--length is only for videos"),
]


@pytest.mark.parametrize(("text", "message"), OPTION_ABUSE)
def test_bad_options_are_refused_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_scene_request(text, kind="image")
    assert refused.value.user_message.startswith(message)
    assert len(refused.value.user_message) < 200


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "\x00\x07\x1b",
        "\u202e\u2066\u2069",  # bidi controls only
        "\u200b\u200b",  # zero-width spaces
        "\u2060\ufeff\u200e\u200f",  # word joiner, BOM, LRM, RLM
        "\u200d",  # a lone zero-width joiner
        "\u3164\u2800",  # Hangul filler, Braille blank: the classic "invisible" text
        "--seed 5",
    ],
)
def test_scene_without_anything_visible_is_empty(text: str) -> None:
    request = parse_scene_request(text)
    assert request.scene_text == ""
    with pytest.raises(InvalidInput) as refused:
        direct(request)
    assert refused.value.user_message == "Describe the scene to draw."


def test_control_and_bidi_characters_are_removed_from_scenes() -> None:
    request = parse_scene_request("a gi\x00rl\x07 in\u202e the\u2066 rain\x7f --seed 7")
    assert request.scene_text == "a girl in the rain" and request.seed == 7


@pytest.mark.parametrize(
    "scene",
    [
        "فتاة تقرأ في مقهى ممطر",
        "ילדה קוראת בבית קפה גשום",
        "🌸👩‍👩‍👧 🇯🇵 👋🏽 🏳️‍🌈 a family picnic",
        "Robert'); DROP TABLE users; -- on a rooftop",
        '{"prompt": {"3": {"class_type": "SaveImage"}}, "seed": "{{seed}}"} a cat',
        "<b>bold</b> & <script>alert(1)</script> {scene} {0} %s \\n",
    ],
)
def test_scene_text_is_kept_verbatim_as_data(scene: str) -> None:
    assert parse_scene_request(scene).scene_text == scene


def test_huge_scenes_are_bounded_quickly() -> None:
    corpus = [
        "sunset " * 1500,
        "x" * 10_000,
        "🌸" * 5000,
        "(" * 10_000,
        "a, " * 5000,
        "@" * 10_000,
        "-- " * 5000,
        "@a-" * 3000,
    ]
    for text in corpus:
        started = time.perf_counter()
        request = parse_scene_request(text)
        assert len(request.scene_text) <= MAX_SCENE_CHARS
        if request.scene_text:
            prompt = direct(request)
            assert prompt.positive
        assert time.perf_counter() - started < 1.0, text[:10]
    # an unknown option hidden at the end of a huge text is still found
    with pytest.raises(InvalidInput):
        parse_scene_request("word " * 2000 + "--bogus")


# -- names and free text -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("Ai\x00ko\u202e", "Aiko"),
        ("\u2066Ren\u2069 \u200bKai", "Ren Kai"),
        ("ليلى", "ليلى"),
        ("لَيْلَى", "لَيْلَى"),  # Arabic with its vowel marks
        ("נועה", "נועה"),
        ("אֲבִיגַיִל", "אֲבִיגַיִל"),  # Hebrew with niqqud
        ("अनीता", "अनीता"),  # Devanagari vowel signs
        ("Zoe\u0308", "Zo\u00eb"),  # decomposed, as some keyboards send it
        ("さくら", "さくら"),
        ("Hana\u200d", "Hana"),
    ],
)
def test_names_are_cleaned_and_kept_in_any_script(typed: str, stored: str) -> None:
    assert clean_name(typed) == stored


@pytest.mark.parametrize(
    "typed",
    [
        "\u200b\u202e\u2066",
        "\u3164",  # Hangul filler: looks empty
        "Aiko 🌸",
        "Robert'); DROP TABLE characters;--",
        '{"name": 1}',
        "<b>Aiko</b>",
        "\u0301Aiko",  # starts with a combining mark
        "-Aiko",
    ],
)
def test_unusable_names_are_refused(typed: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        clean_name(typed)
    assert refused.value.user_message


def test_free_text_keeps_words_emoji_and_data_but_drops_controls() -> None:
    assert clean_text("a\x00b\x07c\u202ed\x7f", limit=100, field="appearance") == "abcd"
    lines = clean_text("silver hair\nred scarf\r\ngreen\teyes", limit=100, field="appearance")
    assert lines.split() == ["silver", "hair", "red", "scarf", "green", "eyes"]
    emoji = "codes at night 👩‍💻, proud 🏳️‍🌈, family 👩‍👩‍👧"
    assert clean_text(emoji, limit=100, field="appearance") == emoji
    persian = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0645"  # ZWNJ is part of the word
    assert clean_text(persian, limit=100, field="personality") == persian
    data = '\'); DROP TABLE characters; -- {"x": 1} <i>'
    assert clean_text(data, limit=100, field="appearance") == data


@pytest.mark.parametrize("typed", ["\u200b\u2060", "\ufeff\u200e", "\u3164 \u2800", "\x00"])
def test_free_text_without_anything_visible_is_empty(typed: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        clean_text(typed, limit=100, field="appearance")
    assert refused.value.user_message == "The appearance is empty. Please write it again."
    assert clean_text(typed, limit=100, field="personality", minimum=0) == ""


def test_free_text_limit_counts_what_is_kept() -> None:
    with pytest.raises(InvalidInput) as refused:
        clean_text("y" * 10_000, limit=2000, field="appearance")
    assert refused.value.user_message == (
        "The appearance is too long (10000 characters, at most 2000)."
    )


# -- callback data -------------------------------------------------------------------------------


def _sample_args(action_name: str) -> list[object]:
    declared = known_actions()[action_name]
    values: list[object] = []
    for spec in declared.args:
        if spec.kind is ArgKind.UUID:
            values.append(uuid.UUID(int=2**128 - 1))
        elif spec.kind is ArgKind.INT:
            values.append(spec.max_int)
        else:
            assert spec.choices is not None
            values.append(max(spec.choices, key=len))
    return values


def test_every_button_fits_64_bytes_even_with_the_longest_values() -> None:
    assert known_actions()
    for name, declared in known_actions().items():
        owner = MAX_INT if declared.owned else None
        data = declared.data(*_sample_args(name), owner=owner)  # type: ignore[arg-type]
        assert len(data.encode()) <= MAX_BYTES, name
        decoded = decode(data)
        assert decoded is not None and decoded.action == declared and decoded.owner == owner


def test_forged_variants_of_every_button_are_rejected() -> None:
    for name, declared in known_actions().items():
        owner = 42 if declared.owned else None
        data = declared.data(*_sample_args(name), owner=owner)  # type: ignore[arg-type]
        forged = [
            "v2" + data[2:],
            "V1" + data[2:],
            data + "|x",
            data + "\x00",
            " " + data,
            data.replace(name, name.upper(), 1),
            data.replace(f"|{name}", f"|{name}x", 1),
            data + "A" * 64,
        ]
        if declared.owned:
            forged += [
                data.replace("|42", "|0", 1),
                data.replace("|42", "|-42", 1),
                data.replace("|42", "|042", 1),
                data.replace("|42", "|4e1", 1),
                data.replace("|42", "|" + str(MAX_INT + 1), 1),
            ]
        if declared.args:
            forged.append(data.rsplit("|", 1)[0])  # an argument missing
        for bad in forged:
            assert decode(bad) is None, (name, bad)


def test_random_garbage_never_decodes_and_never_raises() -> None:
    rng = random.Random(20240601)
    alphabet = "v1|abcdefghijklmnopqrstuvwxyz_0123456789-ABCXYZ\x00\u202e😀é"
    for _ in range(3000):
        size = rng.randint(0, 80)
        garbage = "".join(rng.choice(alphabet) for _ in range(size))
        callback = decode(garbage)
        if callback is not None:  # only if it happens to be well formed
            assert garbage.startswith("v1|")
    for _ in range(500):
        raw = rng.randbytes(rng.randint(1, 100))
        assert decode(raw.decode("utf-8", "replace")) is None
        assert decode(raw.decode("latin-1")) is None
    assert decode("\ud800") is None  # a lone surrogate (cannot be UTF-8 encoded)
    assert decode(None) is None


# -- reference images --------------------------------------------------------------------------


def test_bad_reference_images_get_a_clear_message_without_decoding() -> None:
    cases = [
        (bomb_png(), "The image has far too many pixels."),
        (bomb_png(8000, 8000), "The image is too large (8000x8000)"),
        (text_as_jpeg(), "That is not an image I can read"),
        (truncated_jpeg(), "The image file is damaged or incomplete"),
        (b"", "The file is empty"),
        (b"\x89PNG\r\n\x1a\n", "That is not an image I can read"),
        (bomb_png(4000, 64), "The image is too long and thin (4000x64)"),
    ]
    for data, message in cases:
        started = time.perf_counter()
        with pytest.raises(InvalidInput) as refused:
            validate_reference(data)
        assert refused.value.user_message.startswith(message), refused.value.user_message
        assert time.perf_counter() - started < 1.0
    assert len(bomb_png()) < 200  # the bomb really is tiny
    with pytest.raises(InvalidInput) as refused:
        validate_reference(b"\x00" * 100, max_file_bytes=99)
    assert "too big" in refused.value.user_message


# -- captions and progress texts ---------------------------------------------------------------


def _utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


@pytest.mark.parametrize(
    "scene",
    [
        "sunset " * 1500,
        "x" * 10_000,
        "🌸👩‍👩‍👧" * 1000,
        "فتاة تقرأ في مقهى ممطر " * 400,
        "<b>&amp;</b> " * 1000,
    ],
)
def test_captions_and_progress_of_huge_scenes_fit_telegram(scene: str) -> None:
    names = ["ليلى", "Aiko", "👤" * 300]
    text = caption(CaptionInfo(scene=scene, characters=names, seed=4294967295), "en")
    assert visible_len(text) <= 1024
    assert "4294967295" in text
    shown = text.splitlines()[0]
    # the cut never splits an emoji or a joined sequence
    for cluster in clusters(shown):
        if "\u200d" in cluster:
            assert cluster.count("\u200d") == 2 and not cluster.endswith("\u200d")
    assert unicodedata.category(shown[-1]) != "Cs"
    progress = progress_text(JobProgress(kind=JobKind.IMAGE, scene=scene), "en")
    assert visible_len(progress) <= 1024


def test_short_scene_is_not_changed_in_the_caption() -> None:
    scene = "ילדה קוראת 🌧️☕ <i>x</i> & {0}"
    text = caption(CaptionInfo(scene=scene, seed=1), "en")
    assert "ילדה קוראת 🌧️☕ &lt;i&gt;x&lt;/i&gt; &amp; {0}" in text
    assert _utf16(text) < 1024
