"""Soundtracks for videos: search, pick, fetch.

Three sources: the configured local folder (MUSIC_DIR), 30-second iTunes previews (opt-in with
ITUNES_ENABLED, because Apple's terms restrict their use; always credited), and an audio file
the user sends. A choice is a small JSON-able value stored on the job; `fetch` turns it into a
local file when the video is post-processed. A choice that cannot be had any more by then
raises `SoundtrackUnavailable`, naming why (`MissingReason`): the video is then sent without
music, with that reason in its caption.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from core.errors import InvalidInput, MusicError
from core.logs import get_logger
from core.media.probe import probe
from core.music.itunes import ITunesClient, Track
from core.music.local import LocalMusicLibrary
from core.settings import Settings

log = get_logger(__name__)

Source = Literal["itunes", "local", "upload"]
# Why a video goes out without its soundtrack (the caption's note is chosen by it):
# gone: the file was deleted (the local file, the user's upload) or the folder is missing;
# source_off: MUSIC_DIR or ITUNES_ENABLED was turned off after the choice;
# download_failed: the iTunes preview could not be downloaded;
# unusable: the audio file cannot be read or has no sound (found when mixing).
MissingReason = Literal["gone", "source_off", "download_failed", "unusable"]
UPLOAD_MAX_BYTES = 20 * 1024 * 1024
_AUDIO_SUFFIXES = {".mp3", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".wav", ".flac"}


class SoundtrackUnavailable(MusicError):
    """The chosen soundtrack cannot be had (any more); `reason` says why."""

    def __init__(
        self, message: str, reason: MissingReason, *, user_message: str | None = None
    ) -> None:
        super().__init__(message, user_message=user_message)
        self.reason: MissingReason = reason


@dataclass(frozen=True)
class SoundtrackChoice:
    source: Source
    key: str  # iTunes track id, path relative to MUSIC_DIR, or the stored upload's file name
    title: str
    artist: str | None = None
    store_url: str | None = None
    preview_url: str | None = None

    def credit(self) -> str:
        line = f"♪ {self.title}" + (f" — {self.artist}" if self.artist else "")
        return f"{line}\n{self.store_url}" if self.store_url else line

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SoundtrackChoice:
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})  # type: ignore[arg-type]


def _from_track(track: Track) -> SoundtrackChoice:
    return SoundtrackChoice(
        "itunes", str(track.track_id), track.title, track.artist, track.store_url, track.preview_url
    )


class MusicService:
    def __init__(self, settings: Settings, itunes: ITunesClient | None = None) -> None:
        self.settings = settings
        self.dir = settings.data_dir / "music"
        self.itunes = itunes
        if self.itunes is None and settings.itunes_enabled:
            self.itunes = ITunesClient(
                settings.itunes_base_url,
                country=settings.itunes_country,
                calls=settings.itunes_calls_per_minute,
            )
        self.local = LocalMusicLibrary(settings.music_dir) if settings.music_dir else None

    @property
    def available(self) -> bool:
        return self.itunes is not None or self.local is not None

    async def close(self) -> None:
        if self.itunes is not None:
            await self.itunes.close()

    async def search(self, query: str, *, limit: int = 6) -> list[SoundtrackChoice]:
        """Local files first, then iTunes previews; raises MusicError when iTunes is busy and
        nothing local matched."""
        choices: list[SoundtrackChoice] = []
        if self.local is not None:
            tracks = await self.local.asearch(query, limit=limit)
            choices += [SoundtrackChoice("local", str(t.relative), t.title) for t in tracks]
        if self.itunes is not None and len(choices) < limit:
            try:
                found = await self.itunes.search(query)
            except MusicError:
                if not choices:
                    raise
                found = []
            choices += [_from_track(t) for t in found[: limit - len(choices)]]
        return choices

    async def store_upload(self, data: bytes, filename: str) -> SoundtrackChoice:
        """Keep an audio file a user sent; InvalidInput unless it really is audio."""
        if len(data) > UPLOAD_MAX_BYTES:
            raise InvalidInput(
                "audio too large",
                user_message="That audio file is too large "
                f"(at most {UPLOAD_MAX_BYTES // (1024 * 1024)} MB).",
            )
        suffix = Path(filename).suffix.lower()
        suffix = suffix if suffix in _AUDIO_SUFFIXES else ".bin"
        name = f"{uuid.uuid4().hex}{suffix}"
        dest = self.dir / "uploads" / name
        await asyncio.to_thread(dest.parent.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(dest.write_bytes, data)
        try:
            info = await probe(dest, count_frames=False)
        except Exception:
            info = None
        if info is None or not info.has_audio or info.kind not in ("audio", "video"):
            await asyncio.to_thread(dest.unlink, missing_ok=True)
            raise InvalidInput(
                "not audio",
                user_message="That file is not an audio file I can "
                "use. Send an mp3, m4a, ogg or wav file, or a voice message.",
            )
        title = Path(filename).stem[:80] or "your audio"
        return SoundtrackChoice("upload", name, title)

    async def fetch(self, choice: SoundtrackChoice) -> Path:
        """A local audio file for the choice (downloads and caches iTunes previews).
        `SoundtrackUnavailable` when it cannot be had any more (see `MissingReason`)."""
        if choice.source == "local":
            if self.local is None:
                raise SoundtrackUnavailable("MUSIC_DIR is not set any more", "source_off")
            try:
                return (await self.local.aresolve(choice.key)).path
            except (InvalidInput, MusicError) as error:  # deleted, or the folder is missing
                raise SoundtrackUnavailable(
                    f"local soundtrack unavailable: {error}",
                    "gone",
                    user_message=error.user_message,
                ) from error
        if choice.source == "upload":
            path = self.dir / "uploads" / Path(choice.key).name
            if not path.is_file():
                raise SoundtrackUnavailable(f"uploaded soundtrack {choice.key} is gone", "gone")
            return path
        cached = self.dir / "itunes" / f"{int(choice.key)}.m4a"
        if cached.is_file():
            return cached
        if self.itunes is None:
            raise SoundtrackUnavailable("iTunes previews are not enabled", "source_off")
        if not choice.preview_url:
            raise SoundtrackUnavailable(f"iTunes track {choice.key} has no preview", "gone")
        await asyncio.to_thread(cached.parent.mkdir, parents=True, exist_ok=True)
        try:
            return await self.itunes.download_preview(choice.preview_url, cached)
        except MusicError as error:
            raise SoundtrackUnavailable(
                str(error), "download_failed", user_message=error.user_message
            ) from error
