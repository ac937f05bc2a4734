"""The `oc-outpost` command as a user meets it first."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from oc_outpost.cli.main import _Redact

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


def test_log_lines_never_show_the_bot_token() -> None:
    url = "/bot123:SECRET/x"
    record = logging.LogRecord("httpx", logging.INFO, "x", 1, "POST %s", (url,), None)
    assert _Redact("123:SECRET").filter(record)
    assert record.getMessage() == "POST /bot***/x"
