"""`animebot doctor`: one honest line per component (OK / FAILED with the reason / NOT CONFIGURED).

Database (reachable and migrated), each ComfyUI backend (`/system_stats`) and each workflow's
node check against the backends' `/object_info`, Jellyfin (version, key, library, path),
Telegram (`getMe`), ffmpeg, and the music sources.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable

import aiohttp

from core.comfy.client import ComfyClient
from core.db.pool import open_database
from core.errors import AnimeBotError, describe
from core.health import (
    ComponentHealth,
    check_database,
    check_telegram,
    failed,
    guarded,
    not_configured,
    ok,
)
from core.library.jellyfin import JellyfinClient
from core.library.layout import map_path, parse_path_map
from core.media.ffmpeg_bin import ffmpeg_version, locate_ffmpeg
from core.music.local import LocalMusicLibrary
from core.runtime import load_registry
from core.settings import Settings
from core.workflows.registry import Registry, check_against_object_info


async def run_checks(settings: Settings) -> list[ComponentHealth]:
    results: list[ComponentHealth] = [await guarded("database", lambda: _database(settings))]
    results.extend(await comfy_checks(settings))
    results.append(await guarded("jellyfin", lambda: jellyfin_check(settings)))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        token = (
            settings.telegram_bot_token.get_secret_value() if settings.telegram_bot_token else None
        )
        results.append(
            await guarded(
                "telegram", lambda: check_telegram(session, settings.telegram_api_base_url, token)
            )
        )
    results.append(await guarded("ffmpeg", ffmpeg_check))
    results.extend(music_checks(settings))
    return results


async def _database(settings: Settings) -> ComponentHealth:
    database = await open_database(
        settings.database_url.get_secret_value() if settings.database_url else None,
        settings.data_dir,
        max_size=2,
    )
    try:
        return await check_database(database)
    finally:
        await database.close()


async def comfy_checks(settings: Settings) -> list[ComponentHealth]:
    """One line per backend (reachable, its version), then one per workflow (which backends
    have its nodes and models), and one for the user workflows (WORKFLOWS_DIR) skipped because
    they do not load, if any. Builtin workflows that do not load are one FAILED `workflows`
    line instead of the per-workflow lines; the backends are checked all the same."""
    loaded: Registry | ComponentHealth
    try:
        loaded = load_registry(settings)
    except Exception as error:  # a broken builtin workflow: say so, don't crash the doctor
        reason = str(error) if isinstance(error, AnimeBotError) else describe(error)
        loaded = failed("workflows", reason)
    infos: dict[str, dict[str, object] | None] = {}
    lines: list[ComponentHealth] = []
    async with aiohttp.ClientSession() as session:
        for url in settings.comfyui_urls:
            client = ComfyClient(url, session, timeout_s=min(settings.comfyui_timeout_s, 10))
            lines.append(await guarded(f"comfyui {url}", _backend_check(client, infos)))
    if isinstance(loaded, Registry):
        lines.extend(workflow_lines(loaded, infos))
        if loaded.problems:  # user workflows that did not load: the bot runs without them
            reasons = "; ".join(str(problem) for problem in loaded.problems)
            lines.append(failed("workflows_dir", f"{len(loaded.problems)} skipped: {reasons}"))
    else:  # only the node and model checks need the workflows
        lines.append(loaded)
    return lines


def _backend_check(
    client: ComfyClient, infos: dict[str, dict[str, object] | None]
) -> Callable[[], Awaitable[ComponentHealth]]:
    return lambda: _backend(client, infos)


async def _backend(
    client: ComfyClient, infos: dict[str, dict[str, object] | None]
) -> ComponentHealth:
    name = f"comfyui {client.base_url}"
    infos[client.base_url] = None
    stats = await client.system_stats()
    system = stats.get("system", {}) if isinstance(stats, dict) else {}
    version = (
        system.get("comfyui_version", "unknown version")
        if isinstance(system, dict)
        else "unknown version"
    )
    infos[client.base_url] = await client.object_info()
    return ok(name, f"ComfyUI {version}")


def workflow_lines(
    registry: Registry, infos: dict[str, dict[str, object] | None]
) -> list[ComponentHealth]:
    """One line per workflow: on which backends it can run, and why not elsewhere."""
    lines = []
    reachable = {url: info for url, info in infos.items() if info is not None}
    for workflow in registry:
        name = f"workflow {workflow.name}"
        if not reachable:
            lines.append(failed(name, "no ComfyUI backend reachable to check its nodes"))
            continue
        problems = {  # the configured model files (*_NAME settings) must be there too
            url: check_against_object_info(workflow, info, check_models=True)
            for url, info in reachable.items()
        }
        good = [url for url, found in problems.items() if not found]
        bad = {url: found for url, found in problems.items() if found}
        detail = "; ".join(f"not on {url}: {', '.join(found[:3])}" for url, found in bad.items())
        if not good:
            lines.append(failed(name, detail))
        else:
            where = f"runs on {len(good)} of {len(reachable)} backend(s)"
            lines.append(ok(name, f"{where}; {detail}" if detail else where))
    return lines


async def jellyfin_check(settings: Settings) -> ComponentHealth:
    if not settings.jellyfin_url or settings.jellyfin_api_key is None:
        return not_configured("jellyfin", "JELLYFIN_URL and JELLYFIN_API_KEY are not set")
    if settings.jellyfin_library_dir is None:
        return failed("jellyfin", "JELLYFIN_LIBRARY_DIR is not set")
    library_dir = settings.jellyfin_library_dir
    if not library_dir.is_dir() or not os.access(library_dir, os.W_OK):
        return failed("jellyfin", f"library folder {library_dir} is missing or not writable")
    async with JellyfinClient(
        settings.jellyfin_url,
        settings.jellyfin_api_key.get_secret_value(),
        public_url=settings.jellyfin_public_url,
    ) as client:
        info = await client.public_info()
        await client.check_key()
        seen_as = map_path(str(library_dir), parse_path_map(settings.jellyfin_path_map or ""))
        folder = await client.ensure_library(
            settings.jellyfin_library_name, seen_as, create=settings.jellyfin_create_library
        )
    return ok(
        "jellyfin",
        f"Jellyfin {info.version}, API key accepted, library {folder.name!r} sees {seen_as}",
    )


async def ffmpeg_check() -> ComponentHealth:
    exe = await asyncio.to_thread(locate_ffmpeg)
    version = await ffmpeg_version(exe)
    return ok("ffmpeg", f"{version} ({exe})")


def music_checks(settings: Settings) -> list[ComponentHealth]:
    lines = []
    if settings.music_dir is None:
        lines.append(not_configured("music folder", "MUSIC_DIR is not set"))
    elif not settings.music_dir.is_dir():
        lines.append(failed("music folder", f"{settings.music_dir} is not a folder"))
    else:
        count = len(LocalMusicLibrary(settings.music_dir).list_tracks())
        lines.append(ok("music folder", f"{count} audio files in {settings.music_dir}"))
    if settings.itunes_enabled:
        lines.append(
            ok(
                "itunes previews",
                f"enabled ({settings.itunes_base_url}); opt-in, credited in captions",
            )
        )
    else:
        lines.append(not_configured("itunes previews", "ITUNES_ENABLED is off"))
    return lines
