"""The `oc-outpost` command as a user meets it first."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import subprocess
import sys
from asyncio.subprocess import PIPE
from pathlib import Path

import pytest

from tests.rig.fake_telegram import FakeTelegram

SCRIPT = Path(sys.executable).parent / "oc-outpost"


def run_cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def clean_env() -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "SYSTEMROOT")
    return {k: v for k, v in os.environ.items() if k in keep}


def test_without_configuration_every_missing_variable_is_named(tmp_path: Path) -> None:
    result = run_cli(cwd=tmp_path, env=clean_env())
    assert result.returncode == 2
    for name in ("TELEGRAM_BOT_TOKEN", "TELEGRAM_CHAT_ID", "PROJECT_BASE_PATH"):
        assert name in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_invalid_values_are_reported_together_without_secrets(tmp_path: Path) -> None:
    env = clean_env() | {
        "TELEGRAM_BOT_TOKEN": "123:very-secret-token",
        "TELEGRAM_CHAT_ID": "abc",
        "PROJECT_BASE_PATH": str(tmp_path),
        "API_PORT": "70000",
    }
    result = run_cli("run", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert "TELEGRAM_CHAT_ID must be an integer, got 'abc'" in result.stderr
    assert "API_PORT" in result.stderr
    assert "very-secret-token" not in result.stderr + result.stdout


def test_help_lists_the_run_command(tmp_path: Path) -> None:
    result = run_cli("--help", cwd=tmp_path, env=clean_env())
    assert result.returncode == 0
    assert "run" in result.stdout


async def test_a_rejected_token_is_one_clear_line_without_the_token(
    tmp_path: Path, fake_telegram: FakeTelegram
) -> None:
    wrong = "987654:AAWrongTokenThatMustNeverBePrinted"
    env = clean_env() | {
        "TELEGRAM_BOT_TOKEN": wrong,
        "TELEGRAM_CHAT_ID": "-1001",
        "TELEGRAM_API_URL": fake_telegram.url,
        "PROJECT_BASE_PATH": str(tmp_path),
        "ORCHESTRATOR_DB_PATH": str(tmp_path / "data" / "orchestrator.db"),
        "TOPIC_DB_PATH": str(tmp_path / "data" / "topics.db"),
    }
    process = await asyncio.create_subprocess_exec(
        str(SCRIPT), "run", cwd=tmp_path, env=env, stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    output = (out + err).decode()
    assert process.returncode == 2, output
    assert "could not start: Telegram refused the bot token" in output
    assert wrong not in output and wrong.split(":")[1] not in output
    assert "Traceback" not in output


async def test_a_start_that_fails_early_reports_its_own_error(tmp_path: Path) -> None:
    from oc_outpost.app import serve
    from oc_outpost.config import load_settings
    from oc_outpost.store.db import MigrationError

    (tmp_path / "data").mkdir()
    not_a_db = tmp_path / "data" / "orchestrator.db"
    not_a_db.write_text("this is not SQLite")
    settings = load_settings(
        {
            "TELEGRAM_BOT_TOKEN": "123:abc",
            "TELEGRAM_CHAT_ID": "-1001",
            "PROJECT_BASE_PATH": str(tmp_path),
            "TELEGRAM_API_URL": "http://127.0.0.1:9",
            "ORCHESTRATOR_DB_PATH": str(not_a_db),
            "TOPIC_DB_PATH": str(tmp_path / "data" / "topics.db"),
        },
        env_file=None,
    )
    with pytest.raises(Exception) as raised:
        await serve(settings, asyncio.Event())
    assert not isinstance(raised.value, AttributeError)
    assert isinstance(raised.value, MigrationError | sqlite3.DatabaseError)


def test_version_is_printed() -> None:
    from oc_outpost import __version__

    result = run_cli("--version", cwd=Path.cwd(), env=clean_env())
    assert result.returncode == 0
    assert result.stdout.strip() == f"oc-outpost {__version__}"


def _log_through(log_format: str, secrets: list[str]) -> str:
    import io

    from oc_outpost.cli.logs import formatter_for
    from oc_outpost.logs import RedactSecrets, hide

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter_for(log_format))
    hide(*secrets)
    handler.addFilter(RedactSecrets())
    logger = logging.getLogger(f"test.{log_format}")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.warning("GET %s", "https://api.telegram.org/bot123:SECRET/getMe")
        try:
            raise RuntimeError("key was api-KEY-1")
        except RuntimeError:
            logger.exception("failed with %s", "123:SECRET")
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_both_log_formats_mask_secrets_in_messages_and_tracebacks(log_format: str) -> None:
    out = _log_through(log_format, ["123:SECRET", "api-KEY-1"])
    assert "SECRET" not in out
    assert "KEY-1" not in out
    if log_format == "json":
        import json

        first, second = (json.loads(line) for line in out.splitlines() if line.startswith("{"))
        assert first["level"] == "WARNING"
        assert first["message"] == "GET https://api.telegram.org/bot***/getMe"
        assert first["logger"] == "test.json"
        assert "RuntimeError: key was ***" in second["exception"]
    else:
        assert "WARNING test.text: GET https://api.telegram.org/bot***/getMe" in out
        assert "RuntimeError: key was ***" in out


def test_log_settings_are_validated() -> None:
    from oc_outpost.config import ConfigError, load_settings

    base = {"TELEGRAM_BOT_TOKEN": "1:x", "TELEGRAM_CHAT_ID": "-1", "PROJECT_BASE_PATH": "/tmp"}
    settings = load_settings(base | {"LOG_FORMAT": "JSON", "LOG_LEVEL": "debug"}, env_file=None)
    assert (settings.log_format, settings.log_level) == ("json", "DEBUG")
    assert (load_settings(base, env_file=None).log_format, "INFO") == ("text", "INFO")
    with pytest.raises(ConfigError) as raised:
        load_settings(base | {"LOG_FORMAT": "xml", "LOG_LEVEL": "loud"}, env_file=None)
    assert raised.value.problems == [
        "LOG_FORMAT must be text or json, got 'xml'",
        "LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'loud'",
    ]


async def test_the_running_bot_logs_json_at_the_configured_level(
    tmp_path: Path, fake_telegram: FakeTelegram
) -> None:
    import json

    env = clean_env() | {
        "TELEGRAM_BOT_TOKEN": "123:very-secret-token",  # not the fake's: start-up fails, logged
        "TELEGRAM_CHAT_ID": "-1001",
        "PROJECT_BASE_PATH": str(tmp_path),
        "TELEGRAM_API_URL": fake_telegram.url,
        "OPENCODE_PATH": str(tmp_path / "no-opencode"),
        "API_PORT": "1",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "DEBUG",
    }
    process = await asyncio.create_subprocess_exec(
        str(SCRIPT), "run", cwd=tmp_path, env=env, stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    stderr = err.decode()
    assert process.returncode != 0
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert lines, stderr
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    assert any(line["level"] == "DEBUG" for line in lines)
    assert "very-secret-token" not in stderr + out.decode()


@pytest.mark.parametrize(
    ("printed", "expected"),
    [
        ("1.18.33", "OpenCode 1.18.33 is in the tested range 1.1.65 – 1.18.33"),
        ("1.0.220", "OpenCode 1.0.220 is older than the tested range 1.1.65 – 1.18.33"),
        ("2.0.0", "OpenCode 2.0.0 is newer than the tested range 1.1.65 – 1.18.33"),
    ],
)
async def test_the_start_up_log_names_the_opencode_version_and_the_tested_range(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, printed: str, expected: str
) -> None:
    from oc_outpost.app import log_opencode_version

    binary = tmp_path / "opencode"
    binary.write_text(f"#!/bin/sh\necho {printed}\n")
    binary.chmod(0o755)
    with caplog.at_level(logging.INFO, logger="oc_outpost.app"):
        await log_opencode_version(str(binary))
        await log_opencode_version(str(tmp_path / "missing"))
    tested, missing = caplog.records
    assert tested.getMessage().startswith(expected)
    assert tested.levelno == (logging.INFO if printed == "1.18.33" else logging.WARNING)
    assert "was not found; install it with `npm install -g opencode-ai@1.18.33`" in (
        missing.getMessage()
    )
