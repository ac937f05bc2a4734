"""`oc-outpost check` as a new user runs it: against the fake Bot API and the real binary."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from oc_outpost.cli.check import SUPPORTED_OPENCODE, Level, run_checks
from oc_outpost.config import load_settings
from tests.rig.fake_telegram import FakeTelegram
from tests.rig.telegram_fixtures import TEST_BOT_TOKEN, TEST_CHAT_ID

SCRIPT = Path(sys.executable).parent / "oc-outpost"
pytestmark = pytest.mark.timeout(90)


def check_env(fake: FakeTelegram, opencode_bin: Path, tmp_path: Path) -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL")
    return {k: v for k, v in os.environ.items() if k in keep} | {
        "TELEGRAM_BOT_TOKEN": TEST_BOT_TOKEN,
        "TELEGRAM_CHAT_ID": str(TEST_CHAT_ID),
        "TELEGRAM_API_URL": fake.url,
        "PROJECT_BASE_PATH": str(tmp_path),
        "OPENCODE_PATH": str(opencode_bin),
    }


async def run_check_command(env: dict[str, str], cwd: Path) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        str(SCRIPT),
        "check",
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_check_reports_a_chat_that_is_not_a_forum_and_a_bot_that_is_not_admin(
    fake_telegram: FakeTelegram, opencode_bin: Path, tmp_path: Path
) -> None:
    fake_telegram.chat.is_forum = False
    fake_telegram.bot_status = "member"
    code, out = await run_check_command(check_env(fake_telegram, opencode_bin, tmp_path), tmp_path)
    assert code == 1, out
    lines = out.splitlines()
    assert f"✅ OpenCode {SUPPORTED_OPENCODE} at {opencode_bin}" in lines
    assert any(
        line.startswith(f"❌ chat {TEST_CHAT_ID}")
        and "is not a forum — fix: " in line
        and "turn on Topics" in line
        for line in lines
    ), out
    assert any(
        line.startswith("❌ the bot is not an administrator of the chat (it is “member”) — fix: ")
        and "the rights “Manage topics”, “Delete messages” and “Pin messages”" in line
        for line in lines
    ), out
    assert any(
        line.startswith("❌ privacy mode is on: the bot sees only commands")
        and "/setprivacy" in line
        for line in lines
    ), out
    assert any(line.startswith("⚠️ TELEGRAM_ALLOWED_USERS is empty") for line in lines), out
    assert "3 problems to fix." in lines
    assert TEST_BOT_TOKEN not in out
    assert "Traceback" not in out


async def test_check_passes_on_a_ready_setup_and_names_a_missing_right(
    fake_telegram: FakeTelegram, opencode_bin: Path, tmp_path: Path
) -> None:
    settings = load_settings(check_env(fake_telegram, opencode_bin, tmp_path), env_file=None)
    findings = await run_checks(settings)
    assert all(f.ok for f in findings), [f.line() for f in findings]
    assert "✅ The bot is an administrator that may manage topics" in [f.line() for f in findings]

    warnings = [f.text for f in findings if f.level == Level.WARNING]
    assert warnings == [
        "TELEGRAM_ALLOWED_USERS is empty: everybody in the chat can drive the bot",
        "privacy mode is on: the bot sees plain messages only while it is an administrator",
    ]

    fake_telegram.can_manage_topics = False
    fake_telegram.can_delete_messages = False
    fake_telegram.can_pin_messages = False
    fake_telegram.privacy_mode = False
    findings = await run_checks(settings)
    [topics, delete] = [f for f in findings if not f.ok]
    assert topics.text == "the bot is an administrator but may not manage topics"
    assert "“Manage topics” right" in topics.fix
    assert delete.text.startswith("the bot may not delete messages")
    assert "turn on “Delete messages”" in delete.fix
    [pin] = [f for f in findings if f.level == Level.WARNING and "pin" in f.text]
    assert "turn on “Pin messages”" in pin.fix
    assert "✅ Privacy mode is off: the bot sees every message in the group" in [
        f.line() for f in findings
    ]


async def test_check_warns_about_an_opencode_outside_the_tested_range(
    fake_telegram: FakeTelegram, tmp_path: Path
) -> None:
    old = tmp_path / "opencode"
    old.write_text("#!/bin/sh\necho 1.0.220\n")  # what an old release prints
    old.chmod(0o755)
    env = check_env(fake_telegram, old, tmp_path)
    code, out = await run_check_command(env, tmp_path)
    assert code == 0, out  # a warning, never a refusal
    assert (
        "⚠️ OpenCode 1.0.220 is older than the tested range 1.1.65 – 1.18.33 — fix: for the "
        "version CI runs, install it with `npm install -g opencode-ai@1.18.33`"
    ) in out.splitlines()


async def test_check_names_a_bad_token_a_missing_binary_and_a_bad_config(
    fake_telegram: FakeTelegram, tmp_path: Path
) -> None:
    env = check_env(fake_telegram, tmp_path / "no-opencode", tmp_path)
    env["TELEGRAM_BOT_TOKEN"] = "999:WRONG"
    settings = load_settings(env, env_file=None)
    lines = [f.line() for f in await run_checks(settings)]
    assert any(
        line.startswith("❌ OpenCode binary") and "npm install -g opencode-ai@1.18.33" in line
        for line in lines
    )
    assert any(line.startswith("❌ Telegram rejected TELEGRAM_BOT_TOKEN — fix:") for line in lines)

    del env["TELEGRAM_CHAT_ID"]
    code, out = await run_check_command(env, tmp_path)
    assert code == 1
    assert "❌ TELEGRAM_CHAT_ID is required but not set — fix:" in out
    assert "WRONG" not in out
