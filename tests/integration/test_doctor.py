"""`animebot doctor` against a real PostgreSQL and the fake ComfyUI, Jellyfin and Telegram.

Most cases call `core.doctor.run_checks` (or `doctor_command`, for the exit code) in-process;
one runs the installed console script as a subprocess against the same fakes.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.commands import doctor_command
from core.doctor import run_checks
from core.health import ComponentHealth, HealthState
from core.runtime import load_registry
from core.settings import Settings, load_settings
from core.workflows import registry as registry_mod
from tests.engine import install_models
from tests.fakes.comfyui import FakeComfyUI, load_object_info
from tests.fakes.jellyfin import API_KEY, FakeJellyfin
from tests.fakes.telegram import FakeTelegram

ROOT = Path(__file__).resolve().parents[2]
# Only the image-to-video workflow uses this node; txt2video_wan does not.
WAN_I2V_NODE = "WanImageToVideo"
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d")
pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def _no_inherited_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test passes counts: no setting from the developer's environment."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


def doctor_settings(tmp_path: Path, **values: Any) -> Settings:
    defaults: dict[str, Any] = {
        "_env_file": None,  # never read a developer's .env
        "data_dir": tmp_path / "data",
        "status_port": 0,
    }
    defaults.update(values)
    return load_settings(**defaults)


def by_name(results: list[ComponentHealth]) -> dict[str, ComponentHealth]:
    names = [r.name for r in results]
    assert len(names) == len(set(names)), f"duplicate doctor lines: {names}"
    return {r.name: r for r in results}


def workflow_names(settings: Settings) -> list[str]:
    return [f"workflow {w.name}" for w in load_registry(settings)]


async def refused_url() -> str:
    """The URL of a stopped fake ComfyUI: its port refuses connections."""
    server = FakeComfyUI()
    await server.start()
    url = server.base_url
    await server.close()
    return url


def make_library(tmp_path: Path, jellyfin: FakeJellyfin) -> Path:
    library = tmp_path / "library"
    library.mkdir()
    jellyfin.add_folder("Anime Studio", [str(library)])
    return library


def make_music(tmp_path: Path) -> Path:
    music = tmp_path / "music"
    music.mkdir()
    (music / "opening.mp3").write_bytes(b"ID3" + b"\0" * 64)
    (music / "ending.flac").write_bytes(b"fLaC" + b"\0" * 64)
    (music / "notes.txt").write_text("not audio")
    return music


def all_good_values(
    tmp_path: Path,
    dsn: str,
    comfy_urls: list[str],
    jellyfin: FakeJellyfin,
    telegram: FakeTelegram,
) -> dict[str, Any]:
    return {
        "database_url": dsn,
        "comfyui_urls": ",".join(comfy_urls),
        "jellyfin_url": jellyfin.url,
        "jellyfin_api_key": API_KEY,
        "jellyfin_library_dir": make_library(tmp_path, jellyfin),
        "telegram_bot_token": telegram.token,
        "telegram_api_base_url": telegram.api_url,
        "telegram_file_base_url": telegram.file_url,
        "music_dir": make_music(tmp_path),
        "itunes_enabled": True,
        "itunes_base_url": "http://127.0.0.1:9",
    }


async def two_backends(
    factory: Callable[[], Awaitable[FakeComfyUI]], settings: Settings
) -> tuple[FakeComfyUI, FakeComfyUI]:
    first, second = await factory(), await factory()
    install_models(first, settings)
    install_models(second, settings)
    return first, second


# ---------------------------------------------------------------------------- everything fine


async def test_everything_ok(
    tmp_path: Path,
    pg_dsn: str,
    fake_comfy_factory: Callable[[], Awaitable[FakeComfyUI]],
    fake_jellyfin: FakeJellyfin,
    fake_telegram: FakeTelegram,
    capsys: pytest.CaptureFixture[str],
) -> None:
    first, second = await two_backends(fake_comfy_factory, doctor_settings(tmp_path))
    urls = [first.base_url, second.base_url]
    settings = doctor_settings(
        tmp_path, **all_good_values(tmp_path, pg_dsn, urls, fake_jellyfin, fake_telegram)
    )

    results = await run_checks(settings)
    lines = by_name(results)

    expected = [
        "database",
        *(f"comfyui {url}" for url in urls),
        *workflow_names(settings),
        "jellyfin",
        "telegram",
        "ffmpeg",
        "music folder",
        "itunes previews",
    ]
    assert [r.name for r in results] == expected
    assert [r.name for r in results if r.state is not HealthState.OK] == []
    assert "schema up to date" in lines["database"].detail
    for url in urls:
        assert lines[f"comfyui {url}"].detail == "ComfyUI 0.3.64"
    for name in workflow_names(settings):
        assert lines[name].detail == "runs on 2 of 2 backend(s)"
    assert "API key accepted" in lines["jellyfin"].detail
    assert "@AnimeStudioTestBot" in lines["telegram"].detail
    version, _, where = lines["ffmpeg"].detail.partition(" (")
    assert re.search(r"\d+\.\d+", version), lines["ffmpeg"]
    assert Path(where.rstrip(")")).is_file()
    assert lines["music folder"].detail.startswith("2 audio files")

    assert await doctor_command(settings) == 0
    # (unconfigured structlog writes debug lines to stdout in-process; the CLI logs to stderr)
    printed = [line for line in capsys.readouterr().out.splitlines() if not LOG_LINE.match(line)]
    assert printed == [r.line() for r in results]
    assert all(": OK" in line for line in printed)
    assert fake_telegram.token not in "\n".join(printed)
    assert API_KEY not in "\n".join(printed)


async def test_doctor_console_script(
    tmp_path: Path,
    pg_dsn: str,
    fake_comfy: FakeComfyUI,
    fake_jellyfin: FakeJellyfin,
    fake_telegram: FakeTelegram,
) -> None:
    """The real `animebot doctor` process: every line OK, exit 0; then Jellyfin down: exit 1."""
    install_models(fake_comfy, doctor_settings(tmp_path))
    values = all_good_values(tmp_path, pg_dsn, [fake_comfy.base_url], fake_jellyfin, fake_telegram)
    env = {
        key: value for key, value in os.environ.items() if key.lower() not in Settings.model_fields
    }
    env.update({key.upper(): str(value) for key, value in values.items()})
    env["DATA_DIR"] = str(tmp_path / "data")
    cwd = tmp_path / "cwd"
    cwd.mkdir()

    async def doctor() -> tuple[int, list[str], str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.cli",
            "doctor",
            cwd=cwd,
            env={**env, "PYTHONPATH": str(ROOT)},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 45)
        assert process.returncode is not None
        return process.returncode, out.decode().splitlines(), err.decode()

    code, lines, err = await doctor()
    assert code == 0, (lines, err)
    assert lines[0].startswith("database: OK")
    assert f"comfyui {fake_comfy.base_url}: OK (ComfyUI 0.3.64)" in lines
    assert all(": OK" in line for line in lines), lines
    assert len(lines) == 7 + len(workflow_names(doctor_settings(tmp_path)))
    assert "Traceback" not in err

    await fake_jellyfin.stop()
    code, lines, err = await doctor()
    assert code == 1, (lines, err)
    (jellyfin,) = [line for line in lines if line.startswith("jellyfin:")]
    assert jellyfin.startswith("jellyfin: FAILED (")
    assert sum(": FAILED" in line for line in lines) == 1, lines
    assert "Traceback" not in err


# ---------------------------------------------------------------------------- database


async def test_database_not_migrated(
    tmp_path: Path, empty_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = doctor_settings(tmp_path, database_url=empty_dsn, comfyui_urls=await refused_url())
    line = by_name(await run_checks(settings))["database"]
    assert line.state is HealthState.FAILED
    assert "not migrated" in line.detail
    assert "0001_init.sql" in line.detail
    assert line.line().startswith("database: FAILED (PostgreSQL ")
    assert await doctor_command(settings) == 1
    assert "database: FAILED (" in capsys.readouterr().out


async def test_database_unreachable(tmp_path: Path) -> None:
    settings = doctor_settings(
        tmp_path,
        database_url="postgresql://animebot:s3cret-pw@127.0.0.1:9/animebot",
        comfyui_urls=await refused_url(),
    )
    line = by_name(await run_checks(settings))["database"]
    assert line.state is HealthState.FAILED
    assert "cannot connect to PostgreSQL" in line.detail
    assert "s3cret-pw" not in line.line()


# ---------------------------------------------------------------------------- ComfyUI


async def test_comfyui_down(
    tmp_path: Path,
    pg_dsn: str,
    fake_jellyfin: FakeJellyfin,
    fake_telegram: FakeTelegram,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = await refused_url()
    settings = doctor_settings(
        tmp_path, **all_good_values(tmp_path, pg_dsn, [url], fake_jellyfin, fake_telegram)
    )
    lines = by_name(await run_checks(settings))
    backend = lines[f"comfyui {url}"]
    assert backend.state is HealthState.FAILED
    assert "ClientConnectorError" in backend.detail or "connect" in backend.detail.lower()
    for name in workflow_names(settings):
        assert lines[name].state is HealthState.FAILED
        assert "no ComfyUI backend reachable" in lines[name].detail
    assert lines["database"].state is HealthState.OK
    assert lines["telegram"].state is HealthState.OK
    assert await doctor_command(settings) == 1
    capsys.readouterr()


async def test_workflows_that_do_not_load_do_not_stop_the_backend_checks(
    tmp_path: Path,
    pg_dsn: str,
    fake_comfy: FakeComfyUI,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A broken builtin workflow (a packaging mistake) is its own FAILED line; each backend is
    still checked (one reachable, one refusing), and only the per-workflow node checks, which
    need the workflows, are left out."""
    builtins = tmp_path / "templates"
    shutil.copytree(registry_mod.BUILTIN_DIR, builtins)
    manifest = sorted(builtins.glob("*.manifest.json"))[0]
    manifest.write_text("{ not json")
    monkeypatch.setattr(registry_mod, "BUILTIN_DIR", builtins)
    down = await refused_url()
    settings = doctor_settings(
        tmp_path, database_url=pg_dsn, comfyui_urls=f"{fake_comfy.base_url},{down}"
    )

    results = await run_checks(settings)
    lines = by_name(results)
    assert [r.name for r in results][:4] == [
        "database",
        f"comfyui {fake_comfy.base_url}",
        f"comfyui {down}",
        "workflows",
    ]
    assert lines[f"comfyui {fake_comfy.base_url}"] == ComponentHealth(
        f"comfyui {fake_comfy.base_url}", HealthState.OK, "ComfyUI 0.3.64"
    )
    assert lines[f"comfyui {down}"].state is HealthState.FAILED
    assert "connect" in lines[f"comfyui {down}"].detail.lower()
    assert lines["workflows"].state is HealthState.FAILED
    assert manifest.name in lines["workflows"].detail
    assert not any(name.startswith("workflow ") for name in lines)
    assert fake_comfy.count("GET", "/system_stats") == 1
    assert await doctor_command(settings) == 1
    out = capsys.readouterr().out
    assert f"comfyui {fake_comfy.base_url}: OK (ComfyUI 0.3.64)" in out
    assert "workflows: FAILED (" in out


async def test_user_workflows_that_do_not_load_are_reported_as_skipped(
    tmp_path: Path, pg_dsn: str, fake_comfy: FakeComfyUI, capsys: pytest.CaptureFixture[str]
) -> None:
    """A user workflow in WORKFLOWS_DIR that does not load is skipped by the bot (it runs with
    the others): the doctor names it and why, as one FAILED line, and exits 1."""
    mine = tmp_path / "my-workflows"
    mine.mkdir()
    (mine / "watercolor.json").write_text("{}")
    (mine / "watercolor.manifest.json").write_text("{ not json")
    settings = doctor_settings(
        tmp_path, database_url=pg_dsn, comfyui_urls=fake_comfy.base_url, workflows_dir=mine
    )

    lines = by_name(await run_checks(settings))

    skipped = lines["workflows_dir"]
    assert skipped.state is HealthState.FAILED
    assert skipped.detail.startswith("1 skipped: ") and "watercolor.manifest.json" in skipped.detail
    assert "workflow txt2img_sd15" in lines  # the builtins are checked as usual
    assert await doctor_command(settings) == 1
    assert "workflows_dir: FAILED (1 skipped: " in capsys.readouterr().out


async def test_backend_without_wan_nodes(
    tmp_path: Path, pg_dsn: str, fake_comfy: FakeComfyUI
) -> None:
    settings = doctor_settings(tmp_path, database_url=pg_dsn, comfyui_urls=fake_comfy.base_url)
    install_models(fake_comfy, settings)
    fake_comfy.available_nodes = set(load_object_info()) - {WAN_I2V_NODE}

    lines = by_name(await run_checks(settings))
    assert lines[f"comfyui {fake_comfy.base_url}"].state is HealthState.OK
    i2v = lines["workflow img2video_wan"]
    assert i2v.state is HealthState.FAILED
    assert f"not on {fake_comfy.base_url}:" in i2v.detail
    assert f"({WAN_I2V_NODE}): node class is not installed on the backend" in i2v.detail
    # the workflows that do not use the node are fine
    assert lines["workflow txt2video_wan"].state is HealthState.OK
    assert lines["workflow txt2img_sd15"].detail == "runs on 1 of 1 backend(s)"


async def test_backend_without_any_wan_node(
    tmp_path: Path, pg_dsn: str, fake_comfy: FakeComfyUI
) -> None:
    settings = doctor_settings(tmp_path, database_url=pg_dsn, comfyui_urls=fake_comfy.base_url)
    install_models(fake_comfy, settings)
    missing = {WAN_I2V_NODE, "EmptyHunyuanLatentVideo", "CreateVideo", "SaveVideo"}
    fake_comfy.available_nodes = set(load_object_info()) - missing

    lines = by_name(await run_checks(settings))
    for name in ("workflow img2video_wan", "workflow txt2video_wan"):
        assert lines[name].state is HealthState.FAILED, lines[name]
        assert f"not on {fake_comfy.base_url}:" in lines[name].detail
        assert "node class is not installed" in lines[name].detail
    assert "EmptyHunyuanLatentVideo" in lines["workflow txt2video_wan"].detail


async def test_two_backends_one_lacks_nodes(
    tmp_path: Path,
    pg_dsn: str,
    fake_comfy_factory: Callable[[], Awaitable[FakeComfyUI]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    full, partial = await two_backends(fake_comfy_factory, doctor_settings(tmp_path))
    partial.available_nodes = set(load_object_info()) - {WAN_I2V_NODE}
    settings = doctor_settings(
        tmp_path,
        database_url=pg_dsn,
        comfyui_urls=f"{full.base_url},{partial.base_url}",
    )
    lines = by_name(await run_checks(settings))
    i2v = lines["workflow img2video_wan"]
    assert i2v.state is HealthState.OK
    assert i2v.detail.startswith(f"runs on 1 of 2 backend(s); not on {partial.base_url}: ")
    assert WAN_I2V_NODE in i2v.detail
    assert full.base_url not in i2v.detail
    assert lines["workflow txt2img_sd15"].detail == "runs on 2 of 2 backend(s)"
    # a workflow that runs somewhere is not a failure; Telegram/Jellyfin are not configured
    assert await doctor_command(settings) == 0
    capsys.readouterr()


# ---------------------------------------------------------------------------- Jellyfin


async def test_jellyfin_bad_key(tmp_path: Path, pg_dsn: str, fake_jellyfin: FakeJellyfin) -> None:
    settings = doctor_settings(
        tmp_path,
        database_url=pg_dsn,
        comfyui_urls=await refused_url(),
        jellyfin_url=fake_jellyfin.url,
        jellyfin_api_key="wrong-key-0000",
        jellyfin_library_dir=make_library(tmp_path, fake_jellyfin),
    )
    line = by_name(await run_checks(settings))["jellyfin"]
    assert line.state is HealthState.FAILED
    assert "API key rejected" in line.detail
    assert "wrong-key-0000" not in line.line()


async def test_jellyfin_missing_library_folder(
    tmp_path: Path, pg_dsn: str, fake_jellyfin: FakeJellyfin
) -> None:
    settings = doctor_settings(
        tmp_path,
        database_url=pg_dsn,
        comfyui_urls=await refused_url(),
        jellyfin_url=fake_jellyfin.url,
        jellyfin_api_key=API_KEY,
        jellyfin_library_dir=tmp_path / "nowhere",
    )
    line = by_name(await run_checks(settings))["jellyfin"]
    assert line.state is HealthState.FAILED
    assert "missing or not writable" in line.detail


async def test_jellyfin_not_configured_is_not_a_failure(
    tmp_path: Path,
    pg_dsn: str,
    fake_comfy: FakeComfyUI,
    fake_jellyfin: FakeJellyfin,
    fake_telegram: FakeTelegram,
    capsys: pytest.CaptureFixture[str],
) -> None:
    values = all_good_values(tmp_path, pg_dsn, [fake_comfy.base_url], fake_jellyfin, fake_telegram)
    for key in ("jellyfin_url", "jellyfin_api_key", "jellyfin_library_dir"):
        del values[key]
    settings = doctor_settings(tmp_path, **values)
    install_models(fake_comfy, settings)

    results = await run_checks(settings)
    lines = by_name(results)
    assert lines["jellyfin"].state is HealthState.NOT_CONFIGURED
    assert lines["jellyfin"].line().startswith("jellyfin: NOT CONFIGURED")
    assert [r.name for r in results if r.state is not HealthState.OK] == ["jellyfin"]
    assert await doctor_command(settings) == 0
    assert "jellyfin: NOT CONFIGURED" in capsys.readouterr().out


# ---------------------------------------------------------------------------- Telegram, music


async def test_telegram_wrong_token(
    tmp_path: Path, pg_dsn: str, fake_telegram: FakeTelegram, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = "7000000001:AAWrongTokenForTests_zyxwvutsrqponmlk"
    settings = doctor_settings(
        tmp_path,
        database_url=pg_dsn,
        comfyui_urls=await refused_url(),
        telegram_bot_token=wrong,
        telegram_api_base_url=fake_telegram.api_url,
    )
    line = by_name(await run_checks(settings))["telegram"]
    assert line.state is HealthState.FAILED
    assert line.detail == "token rejected: Unauthorized"
    assert await doctor_command(settings) == 1
    out = capsys.readouterr().out
    assert "telegram: FAILED (token rejected: Unauthorized)" in out
    assert wrong not in out


async def test_telegram_not_configured(tmp_path: Path, pg_dsn: str) -> None:
    settings = doctor_settings(tmp_path, database_url=pg_dsn, comfyui_urls=await refused_url())
    line = by_name(await run_checks(settings))["telegram"]
    assert line.state is HealthState.NOT_CONFIGURED
    assert "TELEGRAM_BOT_TOKEN" in line.detail


async def test_music_folder_missing(tmp_path: Path, pg_dsn: str) -> None:
    settings = doctor_settings(
        tmp_path,
        database_url=pg_dsn,
        comfyui_urls=await refused_url(),
        music_dir=tmp_path / "no-music",
    )
    lines = by_name(await run_checks(settings))
    assert lines["music folder"].state is HealthState.FAILED
    assert "is not a folder" in lines["music folder"].detail
    assert lines["itunes previews"].state is HealthState.NOT_CONFIGURED


async def test_backend_without_the_configured_model_file(
    tmp_path: Path, pg_dsn: str, fake_comfy: FakeComfyUI
) -> None:
    settings = doctor_settings(
        tmp_path,
        database_url=pg_dsn,
        comfyui_urls=fake_comfy.base_url,
        checkpoint_name="not-downloaded.safetensors",
    )
    install_models(fake_comfy, doctor_settings(tmp_path))  # has the default checkpoint only
    lines = by_name(await run_checks(settings))
    line = lines["workflow txt2img_sd15"]
    assert line.state is HealthState.FAILED
    assert f"not on {fake_comfy.base_url}:" in line.detail
    assert "'not-downloaded.safetensors'" in line.detail
    assert "is not installed on the backend" in line.detail
    assert lines["workflow txt2video_wan"].state is HealthState.OK
