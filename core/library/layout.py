"""Where a result goes in the Jellyfin library, what it is called, and its NFO sidecar (pure).

Layout of a "homevideos" library (videos become Video items, images Photo items, folders albums)::

    <root>/<character or chat>/2026-11-25 1432 Sakura at the beach [abcd1234].mp4
    <root>/<character or chat>/2026-11-25 1432 Sakura at the beach [abcd1234].nfo
    <root>/<character or chat>/2026-11-25 1432 Sakura at the beach [abcd1234-p1].png

Rules kept here, so that Jellyfin indexes every file as its own item:

- An image whose name starts with a video's base name is taken as that video's artwork. Video names
  end their stem with ``[<job>]`` (or ``[<job>-v<n>]``), image names with ``[<job>-p<n>]``, and
  titles never contain ``[``: no image name can start with a video's base name.
- Every name starts with the date, so no name is ever ``folder``/``poster``/``thumb``/``fanart``/
  ``backdrop``/``cover``/``logo`` (never indexed as photos) or ``sample`` (ignored).
- Folder names Jellyfin ignores or treats as extras (``metadata``, ``extras``, ``sample`` ...) and
  Windows device names (``CON``, ``NUL`` ...) get a trailing ``_``.
- Names never start with a dot (Jellyfin ignores hidden files), never contain path separators or
  control characters, and stay well below the 255-byte limit of a file name.
"""

from __future__ import annotations

import re
import unicodedata
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Literal
from urllib.parse import quote

from core.errors import ConfigError, InvalidInput
from core.models import JobKind

LayoutMode = Literal["character", "chat"]

STUDIO = "Anime Studio Bot"
GENRE = "Anime"

VIDEO_EXTENSIONS = frozenset({".mp4", ".mkv", ".webm", ".mov", ".m4v"})
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif"})

TITLE_MAX_CHARS = 80
TITLE_MAX_BYTES = 150  # date (16) + title + " [abcd1234-p99]" + " (999)" + ".jpeg" < 255 bytes
FOLDER_MAX_CHARS = 60
FOLDER_MAX_BYTES = 120
NFO_TITLE_MAX_CHARS = 200
MAX_COUNTER = 999

# Image names never indexed as photos (artwork names), in any case.
ARTWORK_NAMES = frozenset(
    {
        "folder",
        "poster",
        "thumb",
        "fanart",
        "backdrop",
        "cover",
        "logo",
        "banner",
        "clearart",
        "clearlogo",
        "disc",
        "discart",
        "landscape",
        "art",
        "small",
        "albumart",
    }
)

# Folder names Jellyfin's scanner ignores or resolves as extras of a video (lower case).
RESERVED_FOLDER_NAMES = frozenset(
    {
        "metadata",
        "sample",
        "samples",
        "subs",
        "extrafanart",
        "extrathumbs",
        "ps3_update",
        "ps3_vprm",
        "lost+found",
        "temprec",
        "tempsbe",
        "eadir",
        "@eadir",
        "#recycle",
        "@recycle",
        "$recycle.bin",
        "system volume information",
        "extras",
        "trailers",
        "featurettes",
        "behind the scenes",
        "deleted scenes",
        "interviews",
        "scenes",
        "shorts",
        "clips",
        "other",
        "backdrops",
        "theme-music",
        "specials",
        "video_ts",
        "bdmv",
        "audio_ts",
    }
)

_WINDOWS_DEVICES = frozenset(
    {"con", "prn", "aux", "nul"}
    | {f"com{i}" for i in range(1, 10)}
    | {f"lpt{i}" for i in range(1, 10)}
)

# Characters never allowed in a name: separators and what Windows/SMB shares refuse.
_FORBIDDEN = frozenset('/\\<>:"|?*')
_BRACKETS = str.maketrans({"[": "(", "]": ")"})
_KEEP_FORMAT = frozenset({"\u200c", "\u200d"})  # ZWNJ/ZWJ: needed by scripts and emoji sequences
_TRAILING_JUNK = " .\u200c\u200d\ufe0e\ufe0f"
_SPACES = re.compile(r"\s+")
_WORD = re.compile(r"\w+")
_JOB_CHARS = re.compile(r"[^0-9a-z]")


@dataclass(frozen=True)
class PathMapping:
    """One prefix rewrite: ``bot_prefix`` (as the bot sees it) -> ``jellyfin_prefix``."""

    bot_prefix: PurePosixPath
    jellyfin_prefix: str


@dataclass(frozen=True)
class LayoutSettings:
    """Where and how results are filed (from JELLYFIN_LIBRARY_DIR, _LAYOUT, _PATH_MAP)."""

    root: Path
    mode: LayoutMode = "character"
    path_map: tuple[PathMapping, ...] = ()


@dataclass(frozen=True)
class FilingMetadata:
    """What is known about one output when it is filed.

    `title` is the user's scene text, `prompt` the full positive prompt, `position` the output's
    index within its job (several images from one job get distinct names).
    """

    title: str
    prompt: str
    characters: tuple[str, ...]
    chat_title: str | None
    job_id: str
    created_at: datetime
    kind: JobKind
    position: int = 0


# --- text cleaning ---------------------------------------------------------------------------


def _clean_chars(text: str, *, path_safe: bool) -> str:
    out: list[str] = []
    for ch in unicodedata.normalize("NFC", text):
        category = unicodedata.category(ch)
        if ch.isspace() or category in ("Zs", "Zl", "Zp"):
            out.append(" ")
        elif category in ("Cc", "Cs", "Co", "Cn"):
            continue
        elif category == "Cf" and ch not in _KEEP_FORMAT:
            continue  # bidi overrides (U+202E ...), BOM, zero-width space
        elif path_safe and ch in _FORBIDDEN:
            out.append(" ")
        else:
            out.append(ch)
    cleaned = "".join(out)
    if path_safe:
        cleaned = cleaned.translate(_BRACKETS)
    return _SPACES.sub(" ", cleaned).strip()


def _cap(text: str, max_chars: int, max_bytes: int) -> str:
    if len(text) > max_chars:
        cut = text[:max_chars]
        space = cut.rfind(" ")
        text = cut[:space] if space >= max_chars * 0.6 else cut
    while len(text.encode("utf-8")) > max_bytes:
        text = text[:-1]
    # A cut must not leave a dangling joiner, variation selector or combining mark.
    while text and (text[-1] in _TRAILING_JUNK or unicodedata.combining(text[-1])):
        text = text[:-1]
    return text


def _strip_edges(text: str) -> str:
    return text.lstrip(" .").rstrip(" .")


def sanitize_title(
    text: str,
    *,
    max_chars: int = TITLE_MAX_CHARS,
    max_bytes: int = TITLE_MAX_BYTES,
    fallback: str = "Untitled",
) -> str:
    """The user's scene text as a piece of a file name: one line, no separators or control
    characters, no ``[``/``]``, no leading/trailing dots, capped; letters of every script and
    emoji are kept. Empty results become `fallback`."""
    title = _cap(_strip_edges(_clean_chars(text, path_safe=True)), max_chars, max_bytes)
    title = _strip_edges(title)
    return title or fallback


def sanitize_folder(text: str | None, *, fallback: str) -> str:
    """A whole path component (a character or chat folder): like a title, plus names that
    Jellyfin ignores or treats as extras and Windows device names are suffixed with ``_``."""
    name = sanitize_title(
        text or "", max_chars=FOLDER_MAX_CHARS, max_bytes=FOLDER_MAX_BYTES, fallback=fallback
    )
    lowered = name.casefold()
    base = lowered.split(".", 1)[0].strip()
    if (
        lowered in RESERVED_FOLDER_NAMES
        or base in _WINDOWS_DEVICES
        or lowered.endswith(".trickplay")
    ):
        name = f"{name}_"
    return name


def display_title(text: str, *, fallback: str) -> str:
    """The title shown by Jellyfin (NFO ``<title>``): control characters removed, one line."""
    title = _cap(_clean_chars(text, path_safe=False), NFO_TITLE_MAX_CHARS, 4 * NFO_TITLE_MAX_CHARS)
    return title or fallback


def search_term(name: str) -> str:
    """A word of `name` to pass as Jellyfin's ``searchTerm``: the longest word, which is a
    substring of both the file name and the NFO title."""
    words: list[str] = _WORD.findall(name)
    if not words:
        return name
    return max(words, key=len)


def job_tag(job_id: str) -> str:
    """The first 8 letters/digits of the job id (``abcd1234`` for a UUID)."""
    tag = _JOB_CHARS.sub("", job_id.lower())[:8]
    if not tag:
        raise InvalidInput(f"job id {job_id!r} has no letters or digits")
    return tag


def _kind_fallback(kind: JobKind) -> str:
    return "Video" if kind is JobKind.VIDEO else "Image"


# --- names and paths -------------------------------------------------------------------------


def normalized_extension(suffix: str, kind: JobKind) -> str:
    """The file extension to use (lower case, with its dot) for a result of `kind`."""
    ext = suffix.lower()
    if ext and not ext.startswith("."):
        ext = f".{ext}"
    allowed = VIDEO_EXTENSIONS if kind is JobKind.VIDEO else IMAGE_EXTENSIONS
    if ext not in allowed:
        raise InvalidInput(
            f"extension {suffix!r} is not a {kind.value} extension",
            user_message="This file type cannot be filed in the library.",
        )
    return ext


def folder_name(meta: FilingMetadata, mode: LayoutMode) -> str:
    """The album folder: the first character's name (``character`` mode, when the result has a
    character) or the chat's title."""
    if mode == "character":
        for name in meta.characters:
            if name.strip():
                return sanitize_folder(name, fallback="Characters")
    return sanitize_folder(meta.chat_title, fallback="Chat")


def file_stem(meta: FilingMetadata) -> str:
    """``2026-11-25 1432 Sakura at the beach [abcd1234]`` (videos) or ``... [abcd1234-p1]``
    (images: never a prefix-match of a video's stem)."""
    stamp = meta.created_at.strftime("%Y-%m-%d %H%M")
    title = sanitize_title(meta.title, fallback=_kind_fallback(meta.kind))
    tag = job_tag(meta.job_id)
    if meta.kind is JobKind.VIDEO:
        suffix = tag if meta.position == 0 else f"{tag}-v{meta.position + 1}"
    else:
        suffix = f"{tag}-p{meta.position + 1}"
    return f"{stamp} {title} [{suffix}]"


def relative_path(meta: FilingMetadata, mode: LayoutMode, extension: str) -> PurePosixPath:
    """Path of the result inside the library root."""
    ext = normalized_extension(extension, meta.kind)
    return PurePosixPath(folder_name(meta, mode)) / f"{file_stem(meta)}{ext}"


def numbered(name: str, counter: int) -> str:
    """``X.mp4`` -> ``X (2).mp4``; counter 1 is the name itself."""
    if counter <= 1:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot:
        return f"{name} ({counter})"
    return f"{stem} ({counter}).{ext}"


def nfo_name(video_name: str) -> str:
    """The sidecar of ``X.mp4`` is ``X.nfo``."""
    stem, dot, _ext = video_name.rpartition(".")
    return f"{stem if dot else video_name}.nfo"


def is_artwork_name(file_name: str) -> bool:
    """True when Jellyfin would take an image named so as artwork, not as a photo."""
    stem = file_name.rsplit(".", 1)[0].casefold()
    return stem in ARTWORK_NAMES or stem.split("-")[-1] in ARTWORK_NAMES


def takes_as_artwork(image_name: str, video_names: Iterable[str]) -> bool:
    """True when `image_name` starts with the base name of one of `video_names`."""
    image = image_name.casefold()
    for video in video_names:
        stem = video.rsplit(".", 1)[0].casefold()
        if image.startswith(stem):
            return True
    return False


# --- NFO -------------------------------------------------------------------------------------


def _xml_safe(text: str) -> str:
    """Drop what XML 1.0 cannot carry (ElementTree would write it unescaped)."""
    return "".join(
        ch
        for ch in text
        if ch in "\t\n\r"
        or ("\x20" <= ch <= "\ud7ff")
        or ("\ue000" <= ch <= "\ufffd")
        or ("\U00010000" <= ch <= "\U0010ffff")
    )


def build_nfo(meta: FilingMetadata) -> bytes:
    """The ``<movie>`` sidecar of a video: title, plot (the prompt), one tag per character,
    genre, studio, premiered and dateadded. Escaping is ElementTree's."""
    root = ET.Element("movie")

    def add(tag: str, text: str) -> None:
        ET.SubElement(root, tag).text = _xml_safe(text)

    add("title", display_title(meta.title, fallback=_kind_fallback(meta.kind)))
    add("plot", meta.prompt.strip())
    seen: set[str] = set()
    for name in meta.characters:
        clean = display_title(name, fallback="")
        if clean and clean.casefold() not in seen:
            seen.add(clean.casefold())
            add("tag", clean)
    add("genre", GENRE)
    add("studio", STUDIO)
    add("premiered", meta.created_at.strftime("%Y-%m-%d"))
    add("year", meta.created_at.strftime("%Y"))
    add("dateadded", meta.created_at.strftime("%Y-%m-%d %H:%M:%S"))
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return ('<?xml version="1.0" encoding="utf-8" standalone="yes"?>\n' + body + "\n").encode()


# --- path mapping ----------------------------------------------------------------------------


def parse_path_map(spec: str | None) -> tuple[PathMapping, ...]:
    """``/data/library=/media/anime,/other=D:\\Media`` -> mappings (JELLYFIN_PATH_MAP)."""
    if not spec or not spec.strip():
        return ()
    mappings: list[PathMapping] = []
    for part in spec.split(","):
        if not part.strip():
            continue
        bot, sep, jelly = part.partition("=")
        bot, jelly = bot.strip(), jelly.strip()
        if not sep or not bot or not jelly:
            raise ConfigError(f"JELLYFIN_PATH_MAP entry {part.strip()!r} is not 'bot=jellyfin'")
        if not bot.startswith("/"):
            raise ConfigError(f"JELLYFIN_PATH_MAP bot path {bot!r} must be absolute")
        mappings.append(PathMapping(PurePosixPath(bot), jelly))
    return tuple(mappings)


def map_path(path: str | PurePosixPath | Path, mappings: Sequence[PathMapping]) -> str:
    """The path Jellyfin sees for a bot path: the longest matching prefix (whole components
    only: ``/data/library2`` does not match ``/data/library``) is rewritten; without a match
    the path is returned unchanged."""
    posix = PurePosixPath(str(path))
    best: PathMapping | None = None
    for mapping in mappings:
        if (posix == mapping.bot_prefix or mapping.bot_prefix in posix.parents) and (
            best is None or len(mapping.bot_prefix.parts) > len(best.bot_prefix.parts)
        ):
            best = mapping
    if best is None:
        return str(posix)
    rest = posix.relative_to(best.bot_prefix).parts
    prefix = best.jellyfin_prefix
    sep = "\\" if "\\" in prefix or re.match(r"^[A-Za-z]:$", prefix) else "/"
    if not rest:
        return prefix
    return prefix.rstrip("/\\") + sep + sep.join(rest)


# --- links -----------------------------------------------------------------------------------


def item_link(base_url: str, item_id: str, server_id: str) -> str:
    """``{base}/web/#/details?id=<ItemId>&serverId=<server Id>``."""
    return (
        f"{base_url.rstrip('/')}/web/#/details?id={quote(item_id, safe='')}"
        f"&serverId={quote(server_id, safe='')}"
    )
