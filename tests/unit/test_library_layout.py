"""Library layout (pure): names, folders, NFO, path mapping, links."""

from __future__ import annotations

import unicodedata
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import pytest

from core.errors import ConfigError, InvalidInput
from core.library.layout import (
    FilingMetadata,
    PathMapping,
    build_nfo,
    file_stem,
    folder_name,
    is_artwork_name,
    item_link,
    job_tag,
    map_path,
    nfo_name,
    normalized_extension,
    numbered,
    parse_path_map,
    relative_path,
    sanitize_folder,
    sanitize_title,
    search_term,
    takes_as_artwork,
)
from core.models import JobKind

JOB = "abcd1234-5678-90ab-cdef-1234567890ab"
WHEN = datetime(2026, 11, 25, 14, 32, 7, tzinfo=UTC)


def meta(
    title: str = "Sakura at the beach",
    *,
    kind: JobKind = JobKind.VIDEO,
    characters: tuple[str, ...] = ("Sakura",),
    chat_title: str | None = "Anime Club",
    position: int = 0,
    prompt: str = "1girl, sakura, beach, sunset",
) -> FilingMetadata:
    return FilingMetadata(
        title=title,
        prompt=prompt,
        characters=characters,
        chat_title=chat_title,
        job_id=JOB,
        created_at=WHEN,
        kind=kind,
        position=position,
    )


def assert_safe_component(name: str) -> None:
    assert name
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert not name.startswith(".") and not name.startswith(" ")
    assert not name.endswith(".") and not name.endswith(" ")
    assert len(name.encode()) <= 255
    assert all(unicodedata.category(ch) not in ("Cc", "Cs") for ch in name)
    assert "\u202e" not in name


# --- names -----------------------------------------------------------------------------------


def test_video_name_is_date_title_and_job_tag() -> None:
    path = relative_path(meta(), "character", ".mp4")
    assert path == PurePosixPath("Sakura/2026-11-25 1432 Sakura at the beach [abcd1234].mp4")


def test_images_get_distinct_names_never_prefixed_by_the_video_name() -> None:
    video = relative_path(meta(), "character", ".mp4").name
    first = relative_path(meta(kind=JobKind.IMAGE), "character", ".png").name
    second = relative_path(meta(kind=JobKind.IMAGE, position=1), "character", ".PNG").name
    assert first == "2026-11-25 1432 Sakura at the beach [abcd1234-p1].png"
    assert second == "2026-11-25 1432 Sakura at the beach [abcd1234-p2].png"
    assert not takes_as_artwork(first, [video, numbered(video, 2)])
    assert not takes_as_artwork(second, [video])
    # The check itself works: `clip.jpg` beside `clip.mp4` is artwork.
    assert takes_as_artwork("clip.jpg", ["clip.mp4"])
    assert takes_as_artwork("clip-thumb.jpg", ["clip.mp4"])


def test_second_video_of_a_job_is_not_a_prefix_clash() -> None:
    first = file_stem(meta())
    second = file_stem(meta(position=1))
    assert second.endswith("[abcd1234-v2]")
    assert not second.startswith(first)


@pytest.mark.parametrize("title", ["poster", "folder", "thumb", "fanart", "cover", "logo"])
def test_artwork_words_never_make_an_artwork_name(title: str) -> None:
    name = relative_path(meta(title, kind=JobKind.IMAGE), "character", ".jpg").name
    assert not is_artwork_name(name)
    assert is_artwork_name(f"{title}.jpg")
    assert is_artwork_name(f"clip-{title}.jpg")


def test_brackets_in_titles_cannot_fake_a_job_suffix() -> None:
    stem = file_stem(meta("Sakura [abcd1234] take 2"))
    assert stem.count("[") == 1
    assert stem == "2026-11-25 1432 Sakura (abcd1234) take 2 [abcd1234]"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("桜 ビーチで夕焼け", "桜 ビーチで夕焼け"),
        ("🌸 Sakura & 👩‍👩‍👧 family", "🌸 Sakura & 👩‍👩‍👧 family"),
        ("ساكورا على الشاطئ", "ساكورا على الشاطئ"),
        ("שלום עולם", "שלום עולם"),
        ("evil\u202egnp.exe", "evilgnp.exe"),
        ("line one\nline two\ttab", "line one line two tab"),
        ("bell\x07 and nul\x00 and del\x7f", "bell and nul and del"),
        ("../../etc/passwd", "etc passwd"),
        ("..\\..\\windows\\system32", "windows system32"),
        ('a<b>c:d"e|f?g*h', "a b c d e f g h"),
        ("...hidden", "hidden"),
        ("trailing dots...", "trailing dots"),
        ("  spaced   out  ", "spaced out"),
        ("Cafe\u0301", "Café"),
    ],
)
def test_title_sanitizing(text: str, expected: str) -> None:
    title = sanitize_title(text)
    assert title == expected
    assert_safe_component(title)


@pytest.mark.parametrize("text", ["", "   ", "...", "/", "\x00\x01", "\u202e\u200b", "../.."])
def test_empty_titles_fall_back_to_the_kind(text: str) -> None:
    assert file_stem(meta(text)) == "2026-11-25 1432 Video [abcd1234]"
    assert file_stem(meta(text, kind=JobKind.IMAGE)) == "2026-11-25 1432 Image [abcd1234-p1]"


def test_path_traversal_stays_one_component() -> None:
    path = relative_path(meta("../../etc/passwd", characters=("../../root",)), "character", ".mp4")
    assert len(path.parts) == 2
    assert ".." not in path.parts
    for part in path.parts:
        assert_safe_component(part)
    assert path.parts[0] == "root"


def test_very_long_titles_are_capped_on_a_word() -> None:
    words = "Sakura walks along the endless beach at sunset " * 20
    title = sanitize_title(words)
    assert len(title) <= 80
    assert words.startswith(title)
    assert not title.endswith(" ")
    assert words[len(title)] == " "  # cut between words


def test_long_multibyte_titles_fit_the_byte_limit() -> None:
    for text in ["桜" * 300, "👩‍👩‍👧" * 100, "ش" * 400, "x" * 1000]:
        name = relative_path(meta(text), "character", ".mp4").name
        assert len(name.encode()) <= 200
        assert_safe_component(name)
        title = sanitize_title(text)
        assert not title.endswith("\u200d")
        assert len(nfo_name(numbered(name, 999)).encode()) <= 255


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Extras", "Extras_"),
        ("metadata", "metadata_"),
        ("Sample", "Sample_"),
        ("Behind The Scenes", "Behind The Scenes_"),
        ("CON", "CON_"),
        ("nul.txt", "nul.txt_"),
        ("LPT1", "LPT1_"),
        ("Sakura", "Sakura"),
        ("Console", "Console"),
        (".Hidden", "Hidden"),
        ("x.trickplay", "x.trickplay_"),
    ],
)
def test_reserved_folder_names_are_avoided(name: str, expected: str) -> None:
    assert sanitize_folder(name, fallback="Chat") == expected


def test_folder_per_character_or_chat() -> None:
    assert folder_name(meta(characters=("Sakura", "Hinata")), "character") == "Sakura"
    assert folder_name(meta(characters=()), "character") == "Anime Club"
    assert folder_name(meta(characters=("  ",)), "character") == "Anime Club"
    assert folder_name(meta(), "chat") == "Anime Club"
    assert folder_name(meta(characters=(), chat_title=None), "character") == "Chat"
    assert folder_name(meta(chat_title="a/b: c"), "chat") == "a b c"


def test_job_tag_and_extensions() -> None:
    assert job_tag(JOB) == "abcd1234"
    assert job_tag("AB-cd_12") == "abcd12"
    with pytest.raises(InvalidInput):
        job_tag("--__--")
    assert normalized_extension(".MP4", JobKind.VIDEO) == ".mp4"
    assert normalized_extension("png", JobKind.IMAGE) == ".png"
    with pytest.raises(InvalidInput):
        normalized_extension(".png", JobKind.VIDEO)
    with pytest.raises(InvalidInput):
        normalized_extension(".exe", JobKind.IMAGE)


def test_numbered_and_nfo_names() -> None:
    assert numbered("X.mp4", 1) == "X.mp4"
    assert numbered("X.mp4", 2) == "X (2).mp4"
    assert numbered("X", 3) == "X (3)"
    assert nfo_name("X (2).mp4") == "X (2).nfo"
    assert nfo_name("a.b.mp4") == "a.b.nfo"


def test_search_term_is_the_longest_word() -> None:
    assert search_term("Sakura at the beach") == "Sakura"
    assert search_term("2026-11-25 1432 Sakura [abcd1234-p1]") == "abcd1234"
    assert search_term("🌸") == "🌸"


# --- NFO -------------------------------------------------------------------------------------


def test_nfo_contents_are_escaped_and_complete() -> None:
    prompt = 'masterpiece, <lora:x:0.8> & "quotes" \x00\x1b end'
    data = build_nfo(
        meta(
            "Sakura & Hinata <3 / beach",
            characters=("Sakura", "Hinata", "sakura", "A&B <c>"),
            prompt=prompt,
        )
    )
    assert data.startswith(b'<?xml version="1.0" encoding="utf-8"')
    root = ET.fromstring(data)
    assert root.tag == "movie"
    assert root.findtext("title") == "Sakura & Hinata <3 / beach"
    assert root.findtext("plot") == 'masterpiece, <lora:x:0.8> & "quotes"  end'
    assert [t.text for t in root.findall("tag")] == ["Sakura", "Hinata", "A&B <c>"]
    assert root.findtext("genre") == "Anime"
    assert root.findtext("studio") == "Anime Studio Bot"
    assert root.findtext("premiered") == "2026-11-25"
    assert root.findtext("dateadded") == "2026-11-25 14:32:07"
    assert b"&amp;" in data and b"&lt;lora" in data


def test_nfo_keeps_unicode_and_drops_bidi_controls() -> None:
    root = ET.fromstring(build_nfo(meta("桜 🌸 \u202eevil", characters=("ساكورا",))))
    assert root.findtext("title") == "桜 🌸 evil"
    assert root.findtext("tag") == "ساكورا"


# --- path mapping ------------------------------------------------------------------------------


def test_path_map_parsing() -> None:
    assert parse_path_map(None) == ()
    assert parse_path_map(" ") == ()
    mappings = parse_path_map("/data/library=/media/anime, /data=/srv ")
    assert mappings == (
        PathMapping(PurePosixPath("/data/library"), "/media/anime"),
        PathMapping(PurePosixPath("/data"), "/srv"),
    )
    for bad in ["/data/library", "=/x", "/a=", "relative=/x"]:
        with pytest.raises(ConfigError):
            parse_path_map(bad)


def test_path_mapping_longest_whole_component_prefix() -> None:
    mappings = parse_path_map("/data=/srv,/data/library=/media/anime")
    assert map_path("/data/library/Sakura/x.mp4", mappings) == "/media/anime/Sakura/x.mp4"
    assert map_path(Path("/data/library"), mappings) == "/media/anime"
    assert map_path("/data/library2/x.mp4", mappings) == "/srv/library2/x.mp4"
    assert map_path("/elsewhere/x.mp4", mappings) == "/elsewhere/x.mp4"
    assert map_path("/data/library/x.mp4", ()) == "/data/library/x.mp4"


def test_path_mapping_to_a_windows_server() -> None:
    mappings = parse_path_map("/data/library=D:\\Media\\Anime")
    assert map_path("/data/library/Sakura/x.mp4", mappings) == "D:\\Media\\Anime\\Sakura\\x.mp4"


# --- links -----------------------------------------------------------------------------------


def test_item_link() -> None:
    assert (
        item_link("https://jf.example.org/", "0123abcd", "f00d")
        == "https://jf.example.org/web/#/details?id=0123abcd&serverId=f00d"
    )
    assert item_link("http://h:8096/jellyfin", "a b", "s&x").endswith("id=a%20b&serverId=s%26x")
