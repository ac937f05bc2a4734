"""`oc-outpost setup` as a new user meets it: an empty directory, a bot token, a group.

The command runs in a thread (typer's CliRunner feeds its prompts) while this test's event loop
serves the fake Bot API and plays the user in Telegram; the binary is the real OpenCode.
"""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from oc_outpost.cli.envfile import read_env
from oc_outpost.cli.main import cli
from tests.rig.fake_telegram import FakeTelegram
from tests.rig.telegram_fixtures import ALLOWED_USER_ID, TEST_BOT_TOKEN, TEST_CHAT_ID

SCRIPT = Path(sys.executable).parent / "oc-outpost"
pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, opencode_bin: Path) -> Path:
    """An empty working directory, with `opencode` on PATH as npm would put it there."""
    work = tmp_path / "outpost"
    work.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "opencode").symlink_to(opencode_bin)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for name in ("OPENCODE_PATH", "TELEGRAM_BOT_TOKEN", "TELEGRAM_CHAT_ID", "TELEGRAM_API_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(work)
    return work


async def run_setup(*args: str, answers: str = "") -> Result:
    runner = CliRunner()
    return await asyncio.to_thread(
        runner.invoke, cli, ["setup", *args], input=answers, catch_exceptions=False
    )


def answers(*lines: str) -> str:
    return "".join(f"{line}\n" for line in lines)


def check_in(directory: Path) -> subprocess.CompletedProcess[str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL")
    env = {k: v for k, v in os.environ.items() if k in keep}
    return subprocess.run(
        [str(SCRIPT), "check"], cwd=directory, env=env, capture_output=True, text=True, timeout=60
    )


async def test_setup_goes_from_an_empty_directory_to_a_checked_env(
    fake_telegram: FakeTelegram, home: Path
) -> None:
    await fake_telegram.send_user_message("hello bot", user_id=ALLOWED_USER_ID)
    projects = home / "projects"

    result = await run_setup(
        "--api-url", fake_telegram.url, answers=answers(TEST_BOT_TOKEN, str(projects))
    )

    out = result.output
    assert result.exit_code == 0, out
    assert "✅ Bot @outpost_test_bot (id 123456)" in out
    assert f"✅ Message from @alice (user id {ALLOWED_USER_ID})" in out
    assert f"(chat id {TEST_CHAT_ID})" in out
    assert "⚠️ privacy mode is on" in out  # the fake's default, as BotFather's
    assert f"✅ Created {projects}" in out
    assert "is in the tested range 1.1.65 – 1.18.33" in out
    assert "All good" in out
    assert TEST_BOT_TOKEN not in out
    env_file = home / ".env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert read_env(env_file) == {
        "TELEGRAM_BOT_TOKEN": TEST_BOT_TOKEN,
        "TELEGRAM_API_URL": fake_telegram.url,
        "TELEGRAM_CHAT_ID": str(TEST_CHAT_ID),
        "TELEGRAM_ALLOWED_USERS": str(ALLOWED_USER_ID),
        "PROJECT_BASE_PATH": str(projects),
        "OPENCODE_PATH": str(home.parent / "bin" / "opencode"),
    }
    assert projects.is_dir()
    assert fake_telegram.pending_updates == []  # the bot will not answer the setup message

    checked = await asyncio.to_thread(check_in, home)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "All good" in checked.stdout


async def test_an_anonymous_admin_is_told_to_turn_off_remain_anonymous(
    fake_telegram: FakeTelegram, home: Path
) -> None:
    await fake_telegram.send_anonymous_admin_message("hello")
    await fake_telegram.send_user_message("hello again", user_id=ALLOWED_USER_ID)

    result = await run_setup(
        "--api-url", fake_telegram.url, answers=answers(TEST_BOT_TOKEN, str(home / "p"))
    )

    out = result.output
    assert result.exit_code == 0, out
    assert "❌ That message was sent anonymously" in out
    assert "fix: turn off Remain anonymous" in out
    assert read_env(home / ".env")["TELEGRAM_ALLOWED_USERS"] == str(ALLOWED_USER_ID)


async def test_a_group_without_topics_gets_its_fix_and_the_next_message_checks_again(
    fake_telegram: FakeTelegram, home: Path
) -> None:
    fake_telegram.chat.is_forum = False
    await fake_telegram.send_user_message("hello", user_id=ALLOWED_USER_ID)
    running = asyncio.create_task(
        run_setup("--api-url", fake_telegram.url, answers=answers(TEST_BOT_TOKEN, str(home / "p")))
    )
    await fake_telegram.wait_for(lambda: fake_telegram.calls("getChatMember"), timeout=30)
    fake_telegram.chat.is_forum = True  # the user turns on Topics...
    await fake_telegram.send_user_message("done", user_id=ALLOWED_USER_ID)  # ...and says so

    result = await asyncio.wait_for(running, 60)

    out = result.output
    assert result.exit_code == 0, out
    assert f"❌ chat {TEST_CHAT_ID} (Outpost Test) is not a forum — fix: " in out
    assert "turn on Topics" in out
    assert "send another message in the group" in out
    assert "✅ Chat “Outpost Test” is a forum supergroup" in out
    assert len(fake_telegram.calls("getChat")) == 3  # first look, second look, the last check


async def test_scripted_setup_asks_nothing_and_reports_missing_rights(
    fake_telegram: FakeTelegram, home: Path, opencode_bin: Path
) -> None:
    token_file = home.parent / "token"
    token_file.write_text(f"{TEST_BOT_TOKEN}\n")
    fake_telegram.can_delete_messages = False
    fake_telegram.can_pin_messages = False
    flags = [
        "--non-interactive",
        "--api-url", fake_telegram.url,
        "--token-file", str(token_file),
        "--chat-id", str(TEST_CHAT_ID),
        "--user-id", "1001",
        "--user-id", "1002",
        "--project-base", str(home / "work"),
        "--opencode", str(opencode_bin),
    ]  # fmt: skip

    result = await run_setup(*flags)

    out = result.output
    assert result.exit_code == 1, out  # the final check finds the missing right
    assert not fake_telegram.calls("getUpdates")  # nothing was waited for
    assert "❌ the bot may not delete messages" in out
    assert "turn on “Delete messages”" in out
    assert "⚠️ the bot may not pin messages" in out
    assert "1 problem to fix." in out
    env = read_env(home / ".env")
    assert env["TELEGRAM_ALLOWED_USERS"] == "1001,1002"
    assert env["OPENCODE_PATH"] == str(opencode_bin)

    # Fixed in Telegram, setup runs again: it keeps the saved answers and the user's own lines.
    fake_telegram.can_delete_messages = True
    with (home / ".env").open("a") as handle:
        handle.write("# mine\nLOG_LEVEL=DEBUG\n")
    again = await run_setup("--non-interactive", "--api-url", fake_telegram.url)
    assert again.exit_code == 0, again.output
    assert "All good (2 warnings above)" in again.output
    text = (home / ".env").read_text()
    assert "# mine\nLOG_LEVEL=DEBUG\n" in text
    assert read_env(home / ".env") == env | {"LOG_LEVEL": "DEBUG"}


async def test_a_rejected_token_and_a_missing_opencode_are_explained(
    fake_telegram: FakeTelegram, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no opencode anywhere
    bad = await run_setup("--api-url", fake_telegram.url, answers=answers("999:WRONG") * 3)
    assert bad.exit_code == 1
    assert bad.output.count("❌ Telegram rejected this token — fix: copy it again") == 3
    assert "WRONG" not in bad.output
    assert not (home / ".env").exists()

    await fake_telegram.send_user_message("hi", user_id=ALLOWED_USER_ID)
    result = await run_setup(
        "--api-url", fake_telegram.url, answers=answers(TEST_BOT_TOKEN, str(home / "p"))
    )
    assert result.exit_code == 1, result.output
    assert "❌ OpenCode (opencode) was not found — fix: install it with" in result.output
    assert "    npm install -g opencode-ai@1.18.33\n" in result.output
    assert "OPENCODE_PATH" not in read_env(home / ".env")


async def test_an_unreachable_bot_api_is_a_clear_error(home: Path) -> None:
    result = await run_setup("--api-url", "http://127.0.0.1:9", answers=answers(TEST_BOT_TOKEN))
    assert result.exit_code == 1
    assert "the Bot API at http://127.0.0.1:9 is not reachable" in result.output
    assert "Traceback" not in result.output
    assert TEST_BOT_TOKEN not in result.output
