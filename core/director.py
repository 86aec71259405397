"""The production director: from what a user typed to the prompt ComfyUI gets. Pure functions.

- `parse_scene_request` splits the typed text into the scene and its options (`--ar 16:9`,
  `--seed 42`, `--steps 30`, `--cfg 6.5`, `--no ...`, `--music "..."`, `--frames N`,
  `--length Ns`) and collects `@Name` mentions.
- `direct` builds a `DirectedPrompt` from the scene, the characters in it and the chat's style
  preset: characters in the order they appear in the scene, weighted, duplicates removed, the
  whole prompt bounded to a CLIP-friendly length by cutting the least important parts first
  (never the start of the scene text).
- Seeds: every character has a stable base seed (derived from its id when not set); a scene's
  seed combines its characters' base seeds with the scene text; `--seed` wins; a reroll takes
  `reroll_seed(previous, attempt)`.

User text is only ever used as a value: it is cleaned of control characters, never
interpreted as a template, and unbalanced parentheses (ComfyUI's weight syntax) are escaped.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import unicodedata
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar
from uuid import UUID

from core.errors import InvalidInput

SEED_MAX = 2**32 - 1  # KSampler takes up to 2**64-1; many other nodes stop at 2**32-1.
MAX_SCENE_CHARS = 2000
MAX_PROMPT_TOKENS = 225  # three CLIP windows of 75 tokens
MAX_NEGATIVE_TOKENS = 150
SCENE_MIN_TOKENS = 120  # the start of the scene text that is never cut
MAX_MUSIC_QUERY_CHARS = 200
MAX_NAME_CHARS = 64
MAX_TAG_TOKENS = 40
MAIN_CHARACTER_WEIGHT = 1.2
CHARACTER_WEIGHT = 1.1

STEPS_RANGE = (1, 100)
CFG_RANGE = (1.0, 30.0)
FRAMES_RANGE = (5, 161)  # the builtin Wan workflows accept 5..161
SECONDS_RANGE = (0.5, 10.0)
ASPECT_LIMIT = 4.0  # from 1:4 to 4:1

QUALITY_TAGS: tuple[str, ...] = ("masterpiece", "best quality", "highly detailed")
BASE_NEGATIVE: tuple[str, ...] = (
    "lowres",
    "worst quality",
    "low quality",
    "bad anatomy",
    "bad hands",
    "extra digits",
    "fewer digits",
    "jpeg artifacts",
    "watermark",
    "signature",
    "text",
    "blurry",
)


# --------------------------------------------------------------------------- types


@dataclass(frozen=True)
class CharacterSpec:
    id: UUID | int | str
    name: str
    appearance: str = ""
    personality: str = ""
    style: str = ""
    negative: str = ""
    base_seed: int | None = None
    lora_name: str | None = None
    lora_strength: float = 0.8


@dataclass(frozen=True)
class StylePreset:
    name: str
    positive: tuple[str, ...]
    negative: tuple[str, ...]


STYLE_PRESETS: dict[str, StylePreset] = {
    p.name: p
    for p in (
        StylePreset(
            "anime",
            ("anime style", "anime coloring", "clean lineart", "vibrant colors"),
            ("photorealistic", "realistic", "3d render"),
        ),
        StylePreset(
            "ghibli-watercolor",
            (
                "studio ghibli style",
                "watercolor",
                "soft pastel colors",
                "hand-drawn",
                "painterly background",
                "warm lighting",
            ),
            ("photorealistic", "3d render", "harsh shadows", "neon"),
        ),
        StylePreset(
            "cel-shaded",
            ("cel shading", "flat colors", "bold outlines", "anime screencap", "hard shadows"),
            ("photorealistic", "soft shading", "gradient", "3d render"),
        ),
        StylePreset(
            "chibi",
            ("chibi", "super deformed", "big head", "small body", "cute", "simple background"),
            ("realistic proportions", "photorealistic", "tall"),
        ),
        StylePreset(
            "cyberpunk",
            ("cyberpunk", "neon lights", "night city", "futuristic", "glowing", "high contrast"),
            ("daylight", "pastoral", "photorealistic"),
        ),
        StylePreset(
            "manga-bw",
            ("monochrome", "greyscale", "manga", "screentone", "ink lineart", "high contrast"),
            ("color", "colorful", "photorealistic"),
        ),
    )
}
DEFAULT_STYLE = "anime"


@dataclass(frozen=True)
class SceneRequest:
    scene_text: str
    characters: tuple[str, ...] = ()  # "@Name" mentions, in order, without duplicates
    aspect_ratio: tuple[int, int] | None = None
    seed: int | None = None
    steps: int | None = None
    cfg: float | None = None
    negative_extra: str = ""
    music_query: str | None = None
    frames: int | None = None
    seconds: float | None = None


@dataclass(frozen=True)
class DirectedPrompt:
    positive: str
    negative: str
    seed: int
    loras: list[tuple[str, float]] = field(default_factory=list)
    characters: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- text hygiene

_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_SPACES = re.compile(r"\s+")


# Letters that render as nothing: used to fake an "empty" text.
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
_NOT_SHOWN = frozenset({"Cc", "Cf", "Cs", "Mn", "Me", "Zs", "Zl", "Zp"})


def has_visible(text: str) -> bool:
    """True when `text` shows something: not only spaces, zero-width and bidi format
    characters, lone combining marks or blank filler letters."""
    return any(
        unicodedata.category(char) not in _NOT_SHOWN and char not in _BLANK_LETTERS for char in text
    )


def clean_text(text: str) -> str:
    """Control characters, bidi overrides and lone surrogates removed, whitespace collapsed.
    Emoji (with their joiners), RTL letters and quotes are kept as they are. Text that shows
    nothing (only zero-width or blank characters) becomes empty."""
    out: list[str] = []
    for char in text:
        category = unicodedata.category(char)
        if char in "\t\n\r\v\f\u2028\u2029\x85":
            out.append(" ")
        elif category in ("Cc", "Cs") or char in _BIDI_CONTROLS or char == "\ufeff":
            continue
        else:
            out.append(char)
    cleaned = _SPACES.sub(" ", "".join(out)).strip()
    return cleaned if has_visible(cleaned) else ""


def _escape_unbalanced(text: str) -> str:
    """Keep `(tag:1.2)` weight syntax when balanced; escape every parenthesis otherwise, so a
    stray ')' cannot close the group around it or disable the weights after it."""
    depth = 0
    escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                break
    if depth == 0:
        return text
    return re.sub(r"(?<!\\)([()])", r"\\\1", text)


def _tags(text: str) -> list[str]:
    """Comma/semicolon/newline separated tags, cleaned, each at most MAX_TAG_TOKENS long."""
    tags: list[str] = []
    for part in re.split(r"[,;\n]", text):
        tag = clean_text(part)
        if estimate_tokens(tag) > MAX_TAG_TOKENS:
            tag = "".join(_bound_pieces(_scene_pieces(tag), MAX_TAG_TOKENS)).strip()
        if tag:
            tags.append(_escape_unbalanced(tag))
    return tags


_WORD_RE = re.compile(r"[A-Za-z0-9]+|\S")


def estimate_tokens(text: str) -> int:
    """Rough CLIP token count: an ASCII word is one token per 8 characters, any other
    non-space character (punctuation, CJK, RTL letters, emoji parts) one token each."""
    total = 0
    for match in _WORD_RE.finditer(text):
        word = match.group()
        total += 1 + (len(word) - 1) // 8 if word.isascii() and word.isalnum() else 1
    return total


def _scene_pieces(scene: str, max_piece_tokens: int = 8) -> list[str]:
    """The scene as pieces that keep their following whitespace (so joining them gives the
    text back); a long run without spaces (CJK, a pasted blob) is split into short chunks."""
    pieces: list[str] = []
    for match in re.finditer(r"\S+\s*", scene):
        piece = match.group()
        if estimate_tokens(piece) <= max_piece_tokens:
            pieces.append(piece)
            continue
        chunk = ""
        for char in piece:
            if chunk and estimate_tokens(chunk + char) > max_piece_tokens:
                pieces.append(chunk)
                chunk = ""
            chunk += char
        pieces.append(chunk)
    return pieces


def _bound_pieces(pieces: list[str], max_tokens: int) -> list[str]:
    """The longest prefix of `pieces` within `max_tokens`."""
    kept: list[str] = []
    used = 0
    for piece in pieces:
        used += estimate_tokens(piece)
        if used > max_tokens:
            break
        kept.append(piece)
    return kept


# --------------------------------------------------------------------------- seeds


def _hash_seed(*parts: str) -> int:
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % (SEED_MAX + 1)


def derive_base_seed(character_id: UUID | int | str) -> int:
    """A stable seed in 0..SEED_MAX for a character that has none stored."""
    return _hash_seed("animebot-character", str(character_id))


def character_seed(character: CharacterSpec) -> int:
    if character.base_seed is not None:
        return character.base_seed % (SEED_MAX + 1)
    return derive_base_seed(character.id)


def scene_seed(characters: Sequence[CharacterSpec], scene_text: str) -> int:
    """Same characters (in the same order) + same scene text (ignoring case and spacing) ->
    same seed; a different cast or text -> a different seed."""
    normalized = clean_text(scene_text).casefold()
    return _hash_seed("animebot-scene", *(str(character_seed(c)) for c in characters), normalized)


def reroll_seed(previous_seed: int, attempt: int | None = None) -> int:
    """A new seed, never equal to the previous one: deterministic for reroll number `attempt`
    (1, 2, ...), random when `attempt` is None (the caller records the seed it gets)."""
    if attempt is None:
        seed = secrets.randbelow(SEED_MAX + 1)
    elif attempt < 1:
        raise InvalidInput(f"reroll attempt must be >= 1, got {attempt}")
    else:
        seed = _hash_seed("animebot-reroll", str(previous_seed), str(attempt))
    return (seed + 1) % (SEED_MAX + 1) if seed == previous_seed else seed


# --------------------------------------------------------------------------- sizes

_FAMILY_SIZES: dict[str, tuple[int, int]] = {
    # family: (target pixel area, multiple)
    "sd15": (512 * 512, 64),
    "sdxl": (1024 * 1024, 64),
    "wan": (832 * 480, 16),
}


def parse_aspect_ratio(text: str) -> tuple[int, int]:
    """ "16:9" -> (16, 9); between 1:4 and 4:1."""
    message = "--ar must look like 16:9, between 1:4 and 4:1"
    match = re.fullmatch(r"\s*(\d{1,4})\s*:\s*(\d{1,4})\s*", text)
    if not match:
        raise InvalidInput(f"bad aspect ratio {text!r:.40}", user_message=message)
    width, height = int(match.group(1)), int(match.group(2))
    if width == 0 or height == 0 or not 1 / ASPECT_LIMIT <= width / height <= ASPECT_LIMIT:
        raise InvalidInput(f"bad aspect ratio {text!r:.40}", user_message=message)
    return width, height


def dimensions_for(
    aspect_ratio: tuple[int, int] | None, family: str | None = "sd15"
) -> tuple[int, int]:
    """Width and height with about the family's native pixel area (SD1.5 ~512², SDXL ~1024²,
    Wan ~832x480), each a multiple of 64 (16 for Wan video)."""
    area, multiple = _FAMILY_SIZES.get(family or "sd15", _FAMILY_SIZES["sd15"])
    ratio_w, ratio_h = aspect_ratio or (1, 1)
    if family == "wan" and aspect_ratio is None:
        ratio_w, ratio_h = 832, 480
    ratio = ratio_w / ratio_h
    width = math.sqrt(area * ratio)
    height = math.sqrt(area / ratio)
    return (
        max(multiple, round(width / multiple) * multiple),
        max(multiple, round(height / multiple) * multiple),
    )


def video_frames(seconds: float, fps: float = 16.0) -> int:
    """Frame count for `seconds` at `fps`, as 4k+1 (what Wan generates), at least 5."""
    frames = seconds * fps
    return 4 * max(1, round((frames - 1) / 4)) + 1


# --------------------------------------------------------------------------- parsing

KNOWN_FLAGS = ("ar", "seed", "steps", "cfg", "no", "music", "frames", "length")
_FLAG_RE = re.compile(r"(?<!\S)(--|[\u2014\u2013])([A-Za-z][A-Za-z0-9_-]*)")
_VALUE_RE = re.compile(r"\s+(\S+)")
_QUOTED_RE = re.compile(r"\s+(?:\"([^\"]*)\"|“([^”]*)”|«([^»]*)»|„([^“”]*)[“”]|'([^']*)')")
_MENTION_RE = re.compile(r"(?<![\w@])@(\w(?:[\w-]{0,38}\w)?)")


def _next_flag(text: str, pos: int) -> re.Match[str] | None:
    """The next option at or after `pos`; a dash before an ordinary word is not one."""
    match = _FLAG_RE.search(text, pos)
    while match and match.group(1) != "--" and match.group(2).lower() not in KNOWN_FLAGS:
        match = _FLAG_RE.search(text, match.end())
    return match


def _bad(flag: str, message: str, value: str = "") -> InvalidInput:
    return InvalidInput(f"--{flag} {value!r:.60}: {message}", user_message=message)


def _parse_int(flag: str, value: str, low: int, high: int, example: str) -> int:
    message = f"--{flag} must be a whole number from {low} to {high}, like --{flag} {example}"
    if not re.fullmatch(r"\d{1,20}", value):
        raise _bad(flag, message, value)
    number = int(value)
    if not low <= number <= high:
        raise _bad(flag, message, value)
    return number


def _parse_float(flag: str, value: str, low: float, high: float, example: str) -> float:
    message = f"--{flag} must be a number from {low:g} to {high:g}, like --{flag} {example}"
    if not re.fullmatch(r"\d{1,4}(?:[.,]\d{1,4})?", value):
        raise _bad(flag, message, value)
    number = float(value.replace(",", "."))
    if not low <= number <= high:
        raise _bad(flag, message, value)
    return number


def _parse_seconds(value: str) -> float:
    low, high = SECONDS_RANGE
    message = f"--length must be seconds from {low:g} to {high:g}, like --length 5s"
    match = re.fullmatch(r"(\d{1,3}(?:[.,]\d{1,3})?)s?", value.lower())
    if not match:
        raise _bad("length", message, value)
    seconds = float(match.group(1).replace(",", "."))
    if not low <= seconds <= high:
        raise _bad("length", message, value)
    return seconds


def _parse_music(text: str, pos: int) -> tuple[str, int]:
    quoted = _QUOTED_RE.match(text, pos)
    query = ""
    if quoted:
        query = next((g for g in quoted.groups() if g is not None), "").strip()
    if quoted is None or not query or len(query) > MAX_MUSIC_QUERY_CHARS:
        raise _bad(
            "music",
            f"--music needs a quoted search of at most {MAX_MUSIC_QUERY_CHARS} characters, "
            'like --music "city pop"',
        )
    return query, quoted.end()


def _bound_scene(scene: str) -> str:
    if len(scene) <= MAX_SCENE_CHARS:
        return scene
    cut = scene[:MAX_SCENE_CHARS]
    space = cut.rfind(" ")
    return (cut[:space] if space > MAX_SCENE_CHARS // 2 else cut).rstrip()


def parse_scene_request(text: str, kind: str = "image") -> SceneRequest:
    """Split typed text into the scene and its options. Raises `InvalidInput` (with a
    `user_message` saying what to type) for an unknown `--flag`, a repeated one or a bad value;
    `--frames`/`--length` only when `kind` is "video". `--no` takes everything up to the next
    option; `--music` takes a quoted query. An em or en dash works as `--` (phones replace
    "--"), but only before a known option name."""
    text = clean_text(text)
    request: dict[str, object] = {}
    scene_parts: list[str] = []
    pos = 0
    while (match := _next_flag(text, pos)) is not None:
        scene_parts.append(text[pos : match.start()])
        flag = match.group(2).lower()
        if flag not in KNOWN_FLAGS:
            known = ", ".join(f"--{f}" for f in KNOWN_FLAGS)
            raise InvalidInput(
                f"unknown option --{flag}", user_message=f"Unknown option --{flag}. Known: {known}"
            )
        if flag in request:
            raise _bad(flag, f"--{flag} is given twice")
        pos = match.end()
        if flag == "no":
            following = _next_flag(text, pos)
            end = following.start() if following else len(text)
            words = text[pos:end].strip()
            if not words:
                raise _bad(flag, "--no needs the things to avoid, like --no hats, glasses")
            request[flag] = _bound_scene(words)
            pos = end
            continue
        if flag == "music":
            request[flag], pos = _parse_music(text, pos)
            continue
        value_match = _VALUE_RE.match(text, pos)
        if value_match is None or _FLAG_RE.fullmatch(value_match.group(1)):
            raise _bad(flag, f"--{flag} needs a value")
        value = value_match.group(1)
        pos = value_match.end()
        if flag == "ar":
            request[flag] = parse_aspect_ratio(value)
        elif flag == "seed":
            request[flag] = _parse_int(flag, value, 0, SEED_MAX, "42")
        elif flag == "steps":
            request[flag] = _parse_int(flag, value, *STEPS_RANGE, "30")
        elif flag == "cfg":
            request[flag] = _parse_float(flag, value, *CFG_RANGE, "6.5")
        elif flag == "frames":
            request[flag] = _parse_int(flag, value, *FRAMES_RANGE, "81")
        else:
            request[flag] = _parse_seconds(value)
    scene_parts.append(text[pos:])
    if "frames" in request and "length" in request:
        raise _bad("length", "Use either --frames or --length, not both")
    for flag in ("frames", "length"):
        if flag in request and kind != "video":
            raise _bad(flag, f"--{flag} is only for videos")

    scene = clean_text(" ".join(scene_parts))
    names: list[str] = []
    for mention in _MENTION_RE.finditer(scene):
        if mention.group(1).casefold() not in {n.casefold() for n in names}:
            names.append(mention.group(1))
    scene = _bound_scene(_MENTION_RE.sub(lambda m: m.group(1), scene))

    aspect, seed, steps = request.get("ar"), request.get("seed"), request.get("steps")
    cfg, frames, seconds = request.get("cfg"), request.get("frames"), request.get("length")
    negative, music = request.get("no"), request.get("music")
    return SceneRequest(
        scene_text=scene,
        characters=tuple(names),
        aspect_ratio=aspect if isinstance(aspect, tuple) else None,
        seed=seed if isinstance(seed, int) else None,
        steps=steps if isinstance(steps, int) else None,
        cfg=cfg if isinstance(cfg, float) else None,
        negative_extra=negative if isinstance(negative, str) else "",
        music_query=music if isinstance(music, str) else None,
        frames=frames if isinstance(frames, int) else None,
        seconds=seconds if isinstance(seconds, float) else None,
    )


# --------------------------------------------------------------------------- directing


def get_style(name: str | None) -> StylePreset:
    """The preset called `name` (default "anime" when empty)."""
    key = (name or DEFAULT_STYLE).strip().lower()
    preset = STYLE_PRESETS.get(key)
    if preset is None:
        raise InvalidInput(
            f"unknown style preset {name!r}",
            user_message="Unknown style. Choose one of: " + ", ".join(STYLE_PRESETS),
        )
    return preset


def _character_style_tags(style: str) -> list[str]:
    """A character's own style: a preset name brings that preset's tags, else free text."""
    preset = STYLE_PRESETS.get(style.strip().lower())
    return list(preset.positive) if preset is not None else _tags(style)


@dataclass
class _Segment:
    items: list[str]
    priority: int  # lower is cut first
    keep: int = 0  # items never cut
    weight: float | None = None
    free_text: bool = False  # scene text: pieces carry their own spacing

    def render(self) -> str:
        if self.free_text:
            return _escape_unbalanced("".join(self.items).strip())
        body = ", ".join(self.items)
        if self.weight is not None and body:
            return f"({body}:{self.weight:g})"
        return body


def _render(segments: Iterable[_Segment]) -> str:
    return ", ".join(text for text in (s.render() for s in segments) if text)


def _fit(segments: list[_Segment], max_tokens: int) -> str:
    """Cut items from the end of the lowest-priority segments until the text fits."""
    text = _render(segments)
    while estimate_tokens(text) > max_tokens:
        cuttable = [s for s in segments if len(s.items) > s.keep]
        if not cuttable:
            break
        victim = min(cuttable, key=lambda s: (s.priority, -segments.index(s)))
        victim.items.pop()
        text = _render(segments)
    return text


def _dedupe(segments: list[_Segment], seen: set[str]) -> None:
    """Drop tags already present in a more important segment (highest priority first)."""
    for segment in sorted(segments, key=lambda s: -s.priority):
        unique: list[str] = []
        for index, item in enumerate(segment.items):
            key = item.casefold()
            if key in seen and index >= segment.keep:
                continue
            seen.add(key)
            unique.append(item)
        segment.items = unique


def order_characters(
    characters: Sequence[CharacterSpec], request: SceneRequest
) -> list[CharacterSpec]:
    """Duplicates (same id) removed; ordered by first mention (`@Name` or the name in the
    scene text), unmentioned characters after them in the given order."""
    unique: list[CharacterSpec] = []
    ids: set[str] = set()
    for character in characters:
        if str(character.id) not in ids:
            ids.add(str(character.id))
            unique.append(character)
    scene = request.scene_text.casefold()
    mentions = [n.casefold() for n in request.characters]

    def position(item: tuple[int, CharacterSpec]) -> tuple[int, int, int]:
        index, character = item
        name = clean_text(character.name).casefold()
        if name in mentions:
            return (0, mentions.index(name), index)
        found = re.search(rf"(?<!\w){re.escape(name)}(?!\w)", scene) if name else None
        if found:
            return (1, found.start(), index)
        return (2, 0, index)

    return [c for _, c in sorted(enumerate(unique), key=position)]


def direct(
    request: SceneRequest,
    characters: Sequence[CharacterSpec] = (),
    *,
    style: str | StylePreset | None = None,
    quality_tags: Sequence[str] = QUALITY_TAGS,
    max_tokens: int = MAX_PROMPT_TOKENS,
    max_negative_tokens: int = MAX_NEGATIVE_TOKENS,
) -> DirectedPrompt:
    """The prompt for one scene.

    Positive, in order: quality tags, style preset, each character as a weighted group
    `(Name, appearance...:1.2)` (first-mentioned character weighted most), the scene text,
    then characters' own style and personality. When too long, cut first: personality,
    character style, the scene text's tail, quality tags, style preset, other characters'
    appearance, the main character's appearance; never names or the scene text's start
    (its first SCENE_MIN_TOKENS tokens).
    """
    preset = style if isinstance(style, StylePreset) else get_style(style)
    cast = order_characters(characters, request)
    scene = clean_text(request.scene_text)[:MAX_SCENE_CHARS]
    if not scene and not cast:
        raise InvalidInput("empty scene", user_message="Describe the scene to draw.")

    char_groups: list[_Segment] = []
    extras: list[_Segment] = []
    for index, character in enumerate(cast):
        name = _escape_unbalanced(clean_text(character.name)[:MAX_NAME_CHARS])
        weight = MAIN_CHARACTER_WEIGHT if index == 0 else CHARACTER_WEIGHT
        char_groups.append(
            _Segment(
                [name or f"character {index + 1}", *_tags(character.appearance)],
                priority=7 if index == 0 else 6,
                keep=1,
                weight=weight,
            )
        )
        extras.append(_Segment(_character_style_tags(character.style), priority=2))
        extras.append(_Segment(_tags(character.personality), priority=1))

    # The scene's start is never cut: as much of it as fits next to the names, at most
    # SCENE_MIN_TOKENS; its tail can go when the prompt is too long.
    names = _render(_Segment(g.items[:1], 0, 1, g.weight) for g in char_groups)
    names_cost = estimate_tokens(names + ", ") if names else 0  # the separator counts too
    all_pieces = _scene_pieces(scene)
    pieces = _bound_pieces(all_pieces, max_tokens - names_cost) or all_pieces[:1]
    scene_keep = len(_bound_pieces(pieces, min(SCENE_MIN_TOKENS, max_tokens - names_cost)))
    scene_seg = _Segment(
        pieces, priority=3, keep=max(1, scene_keep) if pieces else 0, free_text=True
    )
    quality = _Segment(_tags(", ".join(quality_tags)), priority=4)
    style_seg = _Segment(list(preset.positive), priority=5)

    _dedupe([quality, style_seg, *char_groups, *extras], set())
    positive = _fit([quality, style_seg, *char_groups, scene_seg, *extras], max_tokens)

    user_negative = _Segment(_tags(request.negative_extra[:MAX_SCENE_CHARS]), priority=5)
    char_negative = _Segment([t for c in cast for t in _tags(c.negative)], priority=3)
    style_negative = _Segment(list(preset.negative), priority=2)
    base_negative = _Segment(list(BASE_NEGATIVE), priority=1)
    negatives = [user_negative, char_negative, style_negative, base_negative]
    _dedupe(negatives, set())
    negative = _fit(negatives, max_negative_tokens)

    loras: list[tuple[str, float]] = []
    for character in cast:
        lora = (character.lora_name or "").strip()
        if lora and lora not in (name for name, _ in loras):
            loras.append((lora, float(character.lora_strength)))

    seed = request.seed if request.seed is not None else scene_seed(cast, scene)
    return DirectedPrompt(
        positive=positive,
        negative=negative,
        seed=seed,
        loras=loras,
        characters=[clean_text(c.name) for c in cast],
    )


_LORA_SLOTS = (("lora_name", "lora_strength"), ("lora2_name", "lora2_strength"))


def workflow_params(
    directed: DirectedPrompt,
    request: SceneRequest,
    *,
    supported: Collection[str],
    family: str | None = None,
    fps: float = 16.0,
) -> dict[str, object]:
    """Workflow parameter values for this scene, limited to the names in `supported` (a
    workflow's `params`): prompts, seed, LoRA slots, steps/cfg, size from `--ar`, frames from
    `--frames`/`--length`. LoRAs beyond the workflow's slots are left out."""
    values: dict[str, object] = {
        "positive": directed.positive,
        "negative": directed.negative,
        "seed": directed.seed,
    }
    for (name_key, strength_key), (lora, strength) in zip(
        _LORA_SLOTS, directed.loras, strict=False
    ):
        values[name_key] = lora
        values[strength_key] = strength
    if request.steps is not None:
        values["steps"] = request.steps
    if request.cfg is not None:
        values["cfg"] = request.cfg
    if request.aspect_ratio is not None:
        values["width"], values["height"] = dimensions_for(request.aspect_ratio, family)
    if request.frames is not None:
        values["frames"] = request.frames
    elif request.seconds is not None:
        values["frames"] = video_frames(request.seconds, fps)
    return {key: value for key, value in values.items() if key in supported}


# --------------------------------------------------------------------------- glue for callers


class _Named(Protocol):
    @property
    def name(self) -> str: ...


class CharacterRow(Protocol):
    """What a stored character row offers (core.models.Character fits)."""

    @property
    def id(self) -> UUID | int | str: ...
    @property
    def name(self) -> str: ...
    @property
    def appearance(self) -> str: ...
    @property
    def personality(self) -> str: ...
    @property
    def style(self) -> str: ...
    @property
    def negative_prompt(self) -> str: ...
    @property
    def base_seed(self) -> int | None: ...
    @property
    def lora_name(self) -> str | None: ...
    @property
    def lora_strength(self) -> float: ...


NamedT = TypeVar("NamedT", bound=_Named)


def spec_from(row: CharacterRow) -> CharacterSpec:
    return CharacterSpec(
        id=row.id,
        name=row.name,
        appearance=row.appearance,
        personality=row.personality,
        style=row.style,
        negative=row.negative_prompt,
        base_seed=row.base_seed,
        lora_name=row.lora_name,
        lora_strength=row.lora_strength,
    )


def find_named_characters(text: str, characters: Sequence[NamedT]) -> list[NamedT]:
    """The characters named in `text` (`@Name` or the name as a whole word, any case), in the
    order they first appear. A longer name wins over a shorter one inside it ("Mary Jane"
    over "Mary")."""
    haystack = clean_text(text).casefold()
    claimed: list[tuple[int, int]] = []
    found: list[tuple[int, int, NamedT]] = []
    by_length = sorted(enumerate(characters), key=lambda item: -len(item[1].name))
    for index, character in by_length:
        name = clean_text(character.name).casefold()
        if not name:
            continue
        for match in re.finditer(rf"(?<!\w){re.escape(name)}(?!\w)", haystack):
            start, end = match.span()
            if any(start < c_end and c_start < end for c_start, c_end in claimed):
                continue
            claimed.append((start, end))
            found.append((start, index, character))
            break
    return [character for _, _, character in sorted(found, key=lambda f: (f[0], f[1]))]


def video_size_like(width: int, height: int, family: str = "wan") -> tuple[int, int]:
    """A video size for `family` with the aspect of a `width`x`height` image (clamped to
    between 1:4 and 4:1)."""
    if width < 1 or height < 1:
        raise InvalidInput(f"bad image size {width}x{height}", user_message="Bad image size.")
    ratio = min(max(width / height, 1 / ASPECT_LIMIT), ASPECT_LIMIT)
    return dimensions_for((round(ratio * 1000), 1000), family)


@dataclass
class GenerationPlan:
    """What a job stores: the prompts, the seed and the workflow parameter values."""

    positive: str
    negative: str
    seed: int | None
    params: dict[str, object] = field(default_factory=dict)


def plan_generation(
    *,
    request: SceneRequest,
    kind: str,
    characters: Sequence[CharacterSpec],
    chat_preset: str | None = None,
    chat_aspect_ratio: str | None = None,
    video_seconds: float | None = None,
    family: str | None = None,
    fps: float = 16.0,
) -> GenerationPlan:
    """Direct the scene and fill the parameters a builtin workflow of `kind` ("image" or
    "video") takes. `--ar` wins over the chat's aspect ratio; for a video, `--frames` or
    `--length` win over the chat's `video_seconds`. LoRAs only go to image workflows. `family`
    (a workflow's `family`) picks the native size; default sd15 for images, wan for videos."""
    directed = direct(request, characters, style=chat_preset)
    family = family or ("wan" if kind == "video" else "sd15")
    aspect = request.aspect_ratio
    if aspect is None and chat_aspect_ratio:
        aspect = parse_aspect_ratio(chat_aspect_ratio)
    supported = {"positive", "negative", "seed", "steps", "cfg", "width", "height"}
    if kind == "video":
        supported.add("frames")
        if request.frames is None and request.seconds is None and video_seconds:
            low, high = SECONDS_RANGE
            request = replace(request, seconds=min(max(float(video_seconds), low), high))
    else:
        supported.update(name for slot in _LORA_SLOTS for name in slot)
    sized = replace(request, aspect_ratio=aspect)
    params = workflow_params(directed, sized, supported=supported, family=family, fps=fps)
    if "width" not in params:
        params["width"], params["height"] = dimensions_for(None, family)
    return GenerationPlan(directed.positive, directed.negative, directed.seed, params)
