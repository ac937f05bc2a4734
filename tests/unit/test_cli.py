"""The `oc-outpost` command as a user meets it first."""

from __future__ import annotations

import asyncio
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
