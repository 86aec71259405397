"""A local music folder (MUSIC_DIR): list and search audio files, never leaving the folder.

Safety: directory symlinks are not followed; a file symlink is used only when its target is a
regular file inside the folder; names given by a user are resolved and refused when they point
outside (``..``, absolute paths, symlink escapes). Hidden files and folders are skipped.
"""

from __future__ import annotations

import asyncio
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from core.errors import InvalidInput, MusicError

AUDIO_EXTENSIONS = frozenset({".mp3", ".m4a", ".aac", ".ogg", ".opus", ".wav", ".flac"})


@dataclass(frozen=True)
class LocalTrack:
    """One audio file: `path` is resolved (inside the folder), `relative` is its name there."""

    path: Path
    relative: PurePosixPath
    size: int

    @property
    def title(self) -> str:
        return self.relative.stem

    def credit(self) -> str:
        return f"♪ {self.title}"


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


class LocalMusicLibrary:
    """The audio files under `root` (at most `max_files`, `max_depth` folders deep)."""

    def __init__(self, root: Path, *, max_depth: int = 8, max_files: int = 10_000) -> None:
        self.root = root
        self.max_depth = max_depth
        self.max_files = max_files

    def _root(self) -> Path:
        try:
            root = self.root.resolve(strict=True)
        except OSError:
            raise MusicError(
                f"music folder {self.root} does not exist",
                user_message="The local music folder is not available.",
            ) from None
        if not root.is_dir():
            raise MusicError(
                f"music folder {self.root} is not a folder",
                user_message="The local music folder is not available.",
            )
        return root

    @staticmethod
    def _entry(root: Path, candidate: Path) -> LocalTrack | None:
        """The track for `candidate` when it is a regular audio file inside `root`."""
        if candidate.suffix.lower() not in AUDIO_EXTENSIONS:
            return None
        try:
            resolved = candidate.resolve(strict=True)
            stat = resolved.stat()
        except (OSError, RuntimeError):
            return None
        if not resolved.is_relative_to(root) or not resolved.is_file():
            return None
        if resolved.suffix.lower() not in AUDIO_EXTENSIONS:
            return None
        relative = PurePosixPath(*candidate.relative_to(root).parts)
        return LocalTrack(path=resolved, relative=relative, size=stat.st_size)

    def list_tracks(self) -> list[LocalTrack]:
        """Every audio file, sorted by name (blocking: use `alist_tracks` from async code)."""
        root = self._root()
        tracks: list[LocalTrack] = []
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            here = Path(dirpath)
            depth = len(here.relative_to(root).parts)
            dirnames[:] = sorted(
                d for d in dirnames if not d.startswith(".") and depth < self.max_depth
            )
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                track = self._entry(root, here / name)
                if track is not None:
                    tracks.append(track)
                    if len(tracks) >= self.max_files:
                        return tracks
        return tracks

    def search(self, query: str, *, limit: int = 10) -> list[LocalTrack]:
        """Tracks whose relative path contains every word of `query` (case/width-insensitive),
        best first: name starts with the query, then shorter names."""
        words = _fold(query).split()
        if not words:
            return self.list_tracks()[:limit]
        needle = " ".join(words)
        hits: list[tuple[int, int, str, LocalTrack]] = []
        for track in self.list_tracks():
            haystack = _fold(str(track.relative))
            if all(word in haystack for word in words):
                rank = 0 if _fold(track.title).startswith(needle) else 1
                hits.append((rank, len(haystack), haystack, track))
        hits.sort(key=lambda hit: hit[:3])
        return [hit[3] for hit in hits[:limit]]

    def resolve(self, name: str) -> LocalTrack:
        """The track called `name` (a path relative to the folder, as `LocalTrack.relative`);
        InvalidInput for anything outside the folder or not an audio file."""
        root = self._root()
        refused = InvalidInput(
            f"music file {name!r} refused", user_message="That music file cannot be used."
        )
        if not name or "\x00" in name:
            raise refused
        relative = PurePosixPath(name.replace("\\", "/"))
        if (
            relative.is_absolute()
            or ".." in relative.parts
            or any(part.startswith(".") for part in relative.parts)
        ):
            raise refused
        track = self._entry(root, root.joinpath(*relative.parts))
        if track is None:
            raise refused
        return track

    async def alist_tracks(self) -> list[LocalTrack]:
        return await asyncio.to_thread(self.list_tracks)

    async def asearch(self, query: str, *, limit: int = 10) -> list[LocalTrack]:
        return await asyncio.to_thread(self.search, query, limit=limit)

    async def aresolve(self, name: str) -> LocalTrack:
        return await asyncio.to_thread(self.resolve, name)
