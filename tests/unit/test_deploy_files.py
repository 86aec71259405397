"""deploy/: what can be checked without Docker or a running systemd.

The compose file parses and wires the four services together; every variable it gives the bot,
and every name in the env example and the deployment guide, is a real setting; the Dockerfile
installs the package without dev dependencies and its HEALTHCHECK polls the status server's
`/healthz`; the systemd units start `animebot run` / `animebot worker`, stop them with SIGTERM,
do not restart them after a configuration error (exit status 2) and let them write only where
the guide says (checked by `systemd-analyze verify` when present).
"""

from __future__ import annotations

import configparser
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from bot.app import POLL_TIMEOUT_S
from core.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SETTINGS = {name.upper() for name in Settings.model_fields}
# Names in the guide that are not settings of the bot.
OTHER_NAMES = {"POSTGRES_PASSWORD", "POSTGRES_DB", "POSTGRES_USER"}


def compose() -> dict[str, Any]:
    data = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def service(name: str) -> dict[str, Any]:
    services = compose()["services"]
    assert name in services, f"compose.yaml has no {name!r} service"
    value: dict[str, Any] = services[name]
    return value


def mounts(name: str) -> dict[str, str]:
    """container path -> source (host path or volume name), `:ro` dropped."""
    found = {}
    for entry in service(name).get("volumes", []):
        source, target, *_ = str(entry).split(":")
        found[target] = source
    return found


def interpolated(value: str) -> str:
    """Compose's `${NAME}` / `${NAME:?message}` / `${NAME:-default}`, as a placeholder value."""
    return re.sub(r"\$\{(\w+)[^}]*\}", lambda m: f"value-of-{m.group(1)}", value)


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string((DEPLOY / name).read_text())
    return parser


def deploy_env() -> dict[str, str]:
    """deploy/animebot.env.example as systemd's EnvironmentFile reads it."""
    text = (DEPLOY / "animebot.env.example").read_text()
    return dict(re.findall(r"^([A-Za-z0-9_]+)=(.*)$", text, re.MULTILINE))


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", value.strip())
    assert match, f"unexpected time span {value!r}"
    return int(match.group(1)) * (60 if match.group(2) == "min" else 1)


# ---------------------------------------------------------------------------- compose.yaml


def test_compose_has_the_four_services_and_an_optional_worker() -> None:
    services = compose()["services"]
    assert {"postgres", "comfyui", "jellyfin", "bot"} <= set(services)
    assert "profiles" not in services["bot"]
    assert services["worker"]["profiles"] == ["worker"]
    for name, volumes in (("postgres", mounts("postgres")), ("bot", mounts("bot"))):
        for source in volumes.values():
            if not source.startswith((".", "/")):
                assert source in compose()["volumes"], f"{name}: undeclared volume {source}"


def test_postgres_16_with_a_volume_and_a_healthcheck() -> None:
    postgres = service("postgres")
    assert postgres["image"].startswith("postgres:16")
    assert "/var/lib/postgresql/data" in mounts("postgres")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert service("bot")["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_comfyui_reserves_an_nvidia_gpu_and_mounts_models() -> None:
    comfy = service("comfyui")
    (device,) = comfy["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert "gpu" in device["capabilities"]
    assert any(target.endswith("/models") for target in mounts("comfyui"))


def test_bot_and_jellyfin_see_the_library_under_the_same_path() -> None:
    env = service("bot")["environment"]
    library = env["JELLYFIN_LIBRARY_DIR"]
    path_map = env.get("JELLYFIN_PATH_MAP")
    host = mounts("bot")[library]
    jellyfin = {source: target for target, source in mounts("jellyfin").items()}
    assert host in jellyfin, "the library folder is not mounted into Jellyfin"
    seen_by_jellyfin = jellyfin[host]
    assert seen_by_jellyfin == library or path_map == f"{library}={seen_by_jellyfin}"


def test_bot_environment_names_are_settings_and_point_at_the_services() -> None:
    for name in ("bot", "worker"):
        env = service(name)["environment"]
        assert set(env) <= SETTINGS, f"{name}: not settings: {set(env) - SETTINGS}"
    env = service("bot")["environment"]
    postgres = service("postgres")["environment"]
    database = urlsplit(interpolated(env["DATABASE_URL"]))
    assert database.password == "value-of-POSTGRES_PASSWORD"
    assert "POSTGRES_PASSWORD" in postgres["POSTGRES_PASSWORD"]
    assert database.hostname == "postgres"
    assert database.username == postgres["POSTGRES_USER"]
    assert database.path == "/" + postgres["POSTGRES_DB"]
    assert urlsplit(env["COMFYUI_URLS"]).hostname == "comfyui"
    assert urlsplit(env["JELLYFIN_URL"]).hostname == "jellyfin"
    assert env["DATA_DIR"] in mounts("bot")
    assert mounts("bot")[env["DATA_DIR"]] == mounts("worker")[env["DATA_DIR"]], (
        "the worker writes results the bot delivers: they need the same DATA_DIR"
    )


def test_bot_and_worker_commands_and_build() -> None:
    bot, worker = service("bot"), service("worker")
    assert bot["command"] == ["animebot", "run"]
    assert worker["command"] == ["animebot", "worker"]
    context = (DEPLOY / bot["build"]["context"]).resolve()  # relative to the compose file
    assert context == DEPLOY.parent
    assert (context / bot["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    for item in (bot, worker):
        assert item["stop_signal"] == "SIGTERM"
        assert seconds(item["stop_grace_period"]) > POLL_TIMEOUT_S
        assert (DEPLOY / f"{item['env_file']}.example").is_file()


def test_env_example_names_are_settings() -> None:
    text = (DEPLOY / "animebot.env.example").read_text()
    names = re.findall(r"^([A-Za-z0-9_]+)=", text, re.MULTILINE)
    assert names, "no settings in deploy/animebot.env.example"
    assert set(names) <= SETTINGS, set(names) - SETTINGS
    assert len(names) == len(set(names)), "a setting is listed twice"
    for line in text.splitlines():  # systemd's EnvironmentFile: no `export`, no inline comments
        if line and not line.startswith("#"):
            assert not line.startswith("export ")
            assert " #" not in line


# ---------------------------------------------------------------------------- Dockerfile


def test_dockerfile_installs_the_package_without_dev_dependencies() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.12-slim\b", text, re.MULTILINE)
    assert re.search(r"pip install \.(\s|$)", text)
    assert "[test]" not in text
    assert "COPY sql" in text  # the migrations (see the comment in the Dockerfile)
    assert re.search(r"^USER (?!root)\w+", text, re.MULTILINE)
    assert 'CMD ["animebot", "run"]' in text


def healthcheck() -> tuple[str, list[str]]:
    """The Dockerfile's HEALTHCHECK: its options and its exec-form command."""
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    found = re.findall(r"^HEALTHCHECK (.*?)\bCMD (\[.*\])\s*$", text, re.MULTILINE)
    assert len(found) == 1, "the Dockerfile has no (or more than one) HEALTHCHECK ... CMD [...]"
    options, command = found[0]
    parsed = json.loads(command)
    assert isinstance(parsed, list) and all(isinstance(part, str) for part in parsed)
    return options, parsed


@dataclass
class StatusStub:
    """Stands in for the status server: answers `status` and records the paths asked for."""

    port: int = 0
    status: int = 200
    paths: list[str] = field(default_factory=list)


@pytest.fixture
def status_stub() -> Iterator[StatusStub]:
    stub = StatusStub()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            stub.paths.append(self.path)
            self.send_response(stub.status)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    stub.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield stub
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_dockerfile_healthcheck_polls_healthz_of_the_status_server(
    status_stub: StatusStub,
) -> None:
    """The image's HEALTHCHECK polls `/healthz` on 127.0.0.1 at STATUS_PORT (default 8765): the
    status server's defaults, which the image does not change. Its command is run here against
    a stand-in server: healthy on 200, unhealthy on an error status or with nothing listening."""
    options, command = healthcheck()
    assert "--interval=" in options and "--timeout=" in options
    assert command[0] == "python"  # the image's Python, which has the standard library
    code = " ".join(command[1:])
    defaults = Settings.model_fields
    assert defaults["status_host"].default == "127.0.0.1"
    assert f"http://{defaults['status_host'].default}:" in code
    assert f"'STATUS_PORT', '{defaults['status_port'].default}'" in code
    text = (DEPLOY / "Dockerfile").read_text()
    assert not re.search(r"^ENV\b[^\n]*\bSTATUS_(HOST|PORT)=", text, re.MULTILINE)
    assert "EXPOSE 8765" in text

    def check(port: int) -> int:
        env = {**os.environ, "STATUS_PORT": str(port)}
        run = [sys.executable, *command[1:]]
        return subprocess.run(run, env=env, capture_output=True, timeout=30, check=False).returncode

    assert check(status_stub.port) == 0
    assert status_stub.paths == ["/healthz"]
    status_stub.status = 503
    assert check(status_stub.port) != 0
    assert status_stub.paths == ["/healthz", "/healthz"]
    with socket.socket() as bound:  # bound, not listening: the connection is refused
        bound.bind(("127.0.0.1", 0))
        assert check(bound.getsockname()[1]) != 0


# ---------------------------------------------------------------------------- systemd units


@pytest.mark.parametrize(
    ("name", "command"),
    [("animebot.service", "run"), ("animebot-worker.service", "worker")],
)
def test_systemd_unit(name: str, command: str) -> None:
    service_section = unit(name)["Service"]
    exec_start = service_section["ExecStart"].split()
    assert Path(exec_start[0]).name == "animebot"
    assert exec_start[1:] == [command]
    assert service_section["Restart"] == "on-failure"
    # configuration errors exit 2 (tests/integration/test_cli.py): not restarted in a loop
    assert service_section["RestartPreventExitStatus"].split() == ["2"]
    assert service_section["EnvironmentFile"].startswith("/etc/animebot/")
    assert service_section["User"] not in ("", "root")
    assert service_section["KillSignal"] == "SIGTERM"
    assert seconds(service_section["TimeoutStopSec"]) > POLL_TIMEOUT_S
    assert unit(name)["Install"]["WantedBy"] == "multi-user.target"


WRITE_DIRECTIVES = (
    "ReadWritePaths",
    "StateDirectory",
    "CacheDirectory",
    "LogsDirectory",
    "RuntimeDirectory",
    "ConfigurationDirectory",
    "ProtectSystem",
    "DynamicUser",
)


def writable_paths(name: str) -> set[str]:
    """Where the unit may write: its state directory and ReadWritePaths, the rest of the file
    system being read-only (ProtectSystem=strict)."""
    service_section = unit(name)["Service"]
    assert service_section["ProtectSystem"] == "strict"
    given = {key for key in WRITE_DIRECTIVES if key in service_section}
    assert given == {"ProtectSystem", "StateDirectory", "ReadWritePaths"}, given
    paths = {"/var/lib/" + state for state in service_section["StateDirectory"].split()}
    paths |= {path.removeprefix("-") for path in service_section["ReadWritePaths"].split()}
    return paths


def test_bot_unit_writes_only_to_its_state_directory_and_the_library() -> None:
    """deploy/README: "The unit allows writes only to /var/lib/animebot and
    /srv/media/anime-studio" (JELLYFIN_LIBRARY_DIR of the env example), and DATA_DIR, with the
    embedded database in DATA_DIR/pgdata, is that state directory."""
    assert writable_paths("animebot.service") == {"/var/lib/animebot", "/srv/media/anime-studio"}
    service_section = unit("animebot.service")["Service"]
    assert service_section["WorkingDirectory"] == "/var/lib/animebot"
    env = deploy_env()
    assert env["JELLYFIN_LIBRARY_DIR"] == "/srv/media/anime-studio"
    assert env["DATA_DIR"] == "/var/lib/animebot"


def test_worker_unit_read_write_paths_is_the_shared_data_dir() -> None:
    """deploy/README: set the worker unit's ReadWritePaths= to the shared DATA_DIR; the unit
    gives one such path, outside its state directory, with a comment saying so."""
    paths = writable_paths("animebot-worker.service") - {"/var/lib/animebot"}
    assert len(paths) == 1, paths
    (shared,) = paths
    assert shared.startswith("/") and not shared.startswith("/var/lib/animebot")
    lines = (DEPLOY / "animebot-worker.service").read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith("ReadWritePaths="))
    assert lines[index - 1].startswith("#") and "DATA_DIR" in lines[index - 1]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    """The units as systemd reads them, with ExecStart pointed at this venv's animebot."""
    script = Path(sys.executable).with_name("animebot")
    if not script.exists():
        pytest.skip("the animebot console script is not installed next to this Python")
    copies = []
    for name in ("animebot.service", "animebot-worker.service"):
        text = (DEPLOY / name).read_text().replace("/opt/animebot/venv/bin/animebot", str(script))
        copy = tmp_path / name
        copy.write_text(text)
        copies.append(str(copy))
    result = subprocess.run(
        ["systemd-analyze", "verify", *copies],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "animebot" not in result.stderr, result.stderr


# ---------------------------------------------------------------------------- README


def test_guide_names_only_real_settings_and_files() -> None:
    text = (DEPLOY / "README.md").read_text()
    names = set(re.findall(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b", text))
    assert names - SETTINGS - OTHER_NAMES == set()
    for file in re.findall(r"`((?:deploy/)?[\w.-]+\.(?:yaml|service|example))`", text):
        assert (DEPLOY / Path(file).name).is_file(), file
    for heading in ("BotFather", "Jellyfin", "worker", "Webhook", "Backups", "Upgrades"):
        assert heading in text
