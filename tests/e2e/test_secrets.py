"""Secret scan: the bot token and the API key, given as real environment variables (as systemd,
docker or `export` give them), stay with the bot. The bot runs as its own process through the
`oc-outpost` command; a turn makes the agent run `env` in its shell. Neither secret may appear
in the agent's environment (what `env` printed, the server's /proc/<pid>/environ), in any log
line, in anything sent to the Bot API, or in any byte of any file written under the test's
directory (the bot's databases, OpenCode's storage)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.rig.bot_fixtures import bot_env
from tests.rig.bot_process import BotProcess
from tests.rig.fake_telegram import FakeTelegram
from tests.rig.mock_llm import MockLLM, ToolCall
from tests.rig.telegram_fixtures import ALLOWED_USER_ID, running_fake

pytestmark = pytest.mark.timeout(120)

TOKEN = "7357:AAScanTokenThatMustStayWithTheBot_x9"
API_KEY = "scan-api-key-that-must-stay-with-the-bot"
SECRETS = (TOKEN, API_KEY)
DONE = "Environment printed."
WAIT_S = 60.0


@pytest.fixture
async def scan_fake() -> AsyncIterator[FakeTelegram]:
    async with running_fake(TOKEN) as fake:
        yield fake


def leaks(data: bytes | str) -> list[str]:
    text = data if isinstance(data, str) else data.decode("latin-1")
    return [secret for secret in SECRETS if secret in text]


async def test_the_token_and_api_key_reach_no_child_log_message_or_file(
    scan_fake: FakeTelegram,
    opencode_bin: Path,
    opencode_env: dict[str, str],
    llm: MockLLM,
    tmp_path: Path,
) -> None:
    llm.when("SCAN_ENV", ToolCall("bash", {"command": "env", "description": "Env"}, then=DONE))
    env = os.environ | bot_env(scan_fake, opencode_bin, tmp_path) | {"API_KEY": API_KEY}
    assert env["TELEGRAM_BOT_TOKEN"] == TOKEN
    bot = await BotProcess.start(scan_fake, env, cwd=tmp_path, log=tmp_path / "bot.log")
    try:
        topic = await new_topic(scan_fake, "scan")
        await scan_fake.send_user_message("SCAN_ENV", user_id=ALLOWED_USER_ID, thread_id=topic)
        ask = await scan_fake.wait_for(
            lambda: next(
                (m for m in scan_fake.bot_messages(topic) if "permission: bash" in (m.text or "")),
                None,
            ),
            timeout=WAIT_S,
            what="the bash permission prompt",
        )
        await scan_fake.click(ask.message_id, label="✅ Allow once", user_id=ALLOWED_USER_ID)
        await scan_fake.wait_for(
            lambda: any(m.text == DONE for m in scan_fake.bot_messages(topic)),
            timeout=WAIT_S,
            what="the final answer",
        )

        printed = tool_output(llm)
        assert "HOME=" in printed and "OPENCODE_SERVER_PASSWORD=" in printed  # `env` ran
        assert "TELEGRAM_" not in printed and "API_KEY=" not in printed
        assert leaks(printed) == []

        servers = bot.opencode_children()
        assert servers, "the bot runs an OpenCode server for the topic"
        for server in servers:
            environ = environ_of(server.pid)
            assert b"OPENCODE_SERVER_PASSWORD=" in environ
            assert leaks(environ) == [], server.cmdline()

        await api_is_guarded_by_the_configured_key(int(env["API_PORT"]))
    finally:
        code = await bot.stop()
    assert code == 0, bot.output()[-3000:]

    assert "oc-outpost is running" in bot.output()  # the log was captured
    assert leaks(bot.output()) == []
    sent = [json.dumps(call.params) + json.dumps(call.result) for call in scan_fake.calls()]
    assert [leaks(text) for text in sent if leaks(text)] == []
    assert not (tmp_path / "data" / "api-key").exists()  # API_KEY was given
    scanned = files_under(tmp_path)
    assert {"topics.db", "orchestrator.db", "bot.log"} <= {path.name for path in scanned}
    assert [str(path) for path in scanned if leaks(path.read_bytes())] == []


def environ_of(pid: int) -> bytes:
    return Path(f"/proc/{pid}/environ").read_bytes()


def files_under(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file()]


async def new_topic(fake: FakeTelegram, name: str) -> int:
    await fake.send_user_message(f"/new {name}", user_id=ALLOWED_USER_ID)
    topic = await fake.wait_for(
        lambda: next((tid for tid, t in fake.topics.items() if t.name == name), None),
        timeout=WAIT_S,
        what=f"topic {name}",
    )
    await fake.wait_for(
        lambda: any("is ready" in (m.text or "") for m in fake.bot_messages(topic)),
        timeout=WAIT_S,
        what="the topic's welcome",
    )
    return int(topic)


def tool_output(llm: MockLLM) -> str:
    """Everything the agent's tools returned to the model (the output of `env`)."""
    return "\n".join(
        json.dumps(message.get("content"))
        for request in llm.agent_requests
        for message in request["messages"]
        if message.get("role") == "tool"
    )


async def api_is_guarded_by_the_configured_key(port: int) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        assert (await http.get("/api/health")).status_code == 401
        headers = {"Authorization": f"Bearer {API_KEY}"}
        assert (await http.get("/api/health", headers=headers)).status_code == 200
