"""Local music folder: listing, search, and refusal of anything outside the folder."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pytest

from core.errors import InvalidInput, MusicError
from core.music.local import LocalMusicLibrary


@pytest.fixture
def music(tmp_path: Path) -> Path:
    root = tmp_path / "music"
    (root / "Anime OST" / ".cache").mkdir(parents=True)
    (root / "Anime OST" / "Sakura Theme.MP3").write_bytes(b"ID3" + b"\x00" * 100)
    (root / "Anime OST" / "Battle Theme.flac").write_bytes(b"fLaC" + b"\x00" * 10)
    (root / "Anime OST" / ".cache" / "hidden.ogg").write_bytes(b"OggS")
    (root / "sakura.m4a").write_bytes(b"\x00\x00\x00\x18ftypM4A ")
    (root / "notes.txt").write_text("not audio")
    (root / ".secret.mp3").write_bytes(b"ID3")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "private.mp3").write_bytes(b"ID3 private")
    (outside / "song.wav").write_bytes(b"RIFF")
    os.symlink(outside / "private.mp3", root / "escape.mp3")
    os.symlink(outside, root / "linked dir")
    os.symlink(root / "sakura.m4a", root / "alias.opus.m4a")
    os.symlink(root / "notes.txt", root / "fake.mp3")
    return root


def names(tracks: list) -> list[str]:  # type: ignore[type-arg]
    return [str(t.relative) for t in tracks]


def test_lists_audio_files_inside_the_folder_only(music: Path) -> None:
    tracks = LocalMusicLibrary(music).list_tracks()
    assert names(tracks) == [
        "alias.opus.m4a",
        "sakura.m4a",
        "Anime OST/Battle Theme.flac",
        "Anime OST/Sakura Theme.MP3",
    ]
    for track in tracks:
        assert track.path.is_relative_to(music.resolve())
        assert track.size > 0
    assert tracks[1].title == "sakura" and tracks[1].credit() == "♪ sakura"
    assert tracks[0].path == (music / "sakura.m4a").resolve()


def test_search_by_name(music: Path) -> None:
    library = LocalMusicLibrary(music)
    assert names(library.search("SAKURA")) == [
        "sakura.m4a",
        "Anime OST/Sakura Theme.MP3",
    ]
    # Neither title starts with the query: the shorter name first.
    assert names(library.search("theme ost")) == [
        "Anime OST/Sakura Theme.MP3",
        "Anime OST/Battle Theme.flac",
    ]
    assert names(library.search("battle theme")) == ["Anime OST/Battle Theme.flac"]
    assert names(library.search("ｓａｋｕｒａ ｔｈｅｍｅ")) == ["Anime OST/Sakura Theme.MP3"]
    assert library.search("private") == []
    assert library.search("hidden") == []
    assert len(library.search("", limit=2)) == 2


@pytest.mark.parametrize(
    "name",
    [
        "../outside/private.mp3",
        "Anime OST/../../outside/song.wav",
        "..\\outside\\private.mp3",
        "/etc/passwd",
        str(Path("/") / "tmp" / "x.mp3"),
        "escape.mp3",
        "linked dir/song.wav",
        "notes.txt",
        "fake.mp3",
        ".secret.mp3",
        "Anime OST/.cache/hidden.ogg",
        "missing.mp3",
        "",
        "a\x00.mp3",
    ],
)
def test_resolve_refuses_anything_outside_or_not_audio(music: Path, name: str) -> None:
    with pytest.raises(InvalidInput):
        LocalMusicLibrary(music).resolve(name)


def test_resolve_accepts_listed_names(music: Path) -> None:
    library = LocalMusicLibrary(music)
    for track in library.list_tracks():
        assert library.resolve(str(track.relative)) == track
    assert library.resolve("Anime OST\\Sakura Theme.MP3").relative == PurePosixPath(
        "Anime OST/Sakura Theme.MP3"
    )


def test_depth_and_count_limits(music: Path) -> None:
    assert names(LocalMusicLibrary(music, max_depth=0).list_tracks()) == [
        "alias.opus.m4a",
        "sakura.m4a",
    ]
    assert len(LocalMusicLibrary(music, max_files=3).list_tracks()) == 3


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(MusicError):
        LocalMusicLibrary(tmp_path / "nope").list_tracks()
    (tmp_path / "file").write_text("x")
    with pytest.raises(MusicError):
        LocalMusicLibrary(tmp_path / "file").search("x")


async def test_async_wrappers(music: Path) -> None:
    library = LocalMusicLibrary(music)
    assert names(await library.asearch("battle")) == ["Anime OST/Battle Theme.flac"]
    assert len(await library.alist_tracks()) == 4
    assert (await library.aresolve("sakura.m4a")).title == "sakura"
