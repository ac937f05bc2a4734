"""Counting what reached whom, for tests that prove "exactly once": the Bot API calls that sent
a text (the fake's call log), the prompts and tool results OpenCode passed to the mock LLM."""

from __future__ import annotations

import asyncio
import copy
import json

from tests.rig.bot_fixtures import WAIT_S, RunningBot
from tests.rig.fake_telegram import ANY, FakeTelegram, StoredMessage
from tests.rig.mock_llm import MockLLM, ToolCall

SETTLE_S = 1.5  # after a message arrived: time for a duplicate to show up, if there is one
ERROR_POST = "Something went wrong"


def sent_times(fake: FakeTelegram, text: str) -> int:
    """How many messages with exactly this text the bot sent (each accepted sendMessage)."""
    return sum(1 for call in fake.calls("sendMessage") if call.ok and call.params["text"] == text)


async def exactly_once(bot: RunningBot, topic: int, text: str, within_s: float = WAIT_S) -> None:
    """Wait for a bot message with exactly ``text`` in the topic; it must be the only one."""
    await bot.wait_message(topic, lambda m: m.text == text, within_s=within_s)
    await asyncio.sleep(SETTLE_S)
    assert sent_times(bot.fake, text) == 1, bot.fake.dump_calls()


def when_asked_to_run(llm: MockLLM, prompt: str, output: str, done: str) -> None:
    """The model answers ``prompt`` by running `echo <output>` in bash (which asks for
    permission), then with ``done``."""
    command = {"command": f"echo {output}", "description": "Drill"}
    llm.when(prompt, ToolCall("bash", command, then=done))


def asked_llm(llm: MockLLM, text: str) -> bool:
    """OpenCode passed a prompt containing ``text`` to the model."""
    return any(text in json.dumps(body["messages"][-1]) for body in llm.agent_requests)


def user_turns(llm: MockLLM, text: str) -> int:
    """How many user messages containing ``text`` the session's latest request to the model
    carries: the number of times OpenCode got that prompt."""
    requests = [b for b in llm.agent_requests if text in json.dumps(b["messages"])]
    if not requests:
        return 0
    messages = requests[-1]["messages"]
    return sum(1 for m in messages if m.get("role") == "user" and text in json.dumps(m))


def tool_results(llm: MockLLM, output: str) -> int:
    """How many tool results containing ``output`` the latest request to the model carries."""
    if not llm.agent_requests:
        return 0
    messages = llm.agent_requests[-1]["messages"]
    return sum(1 for m in messages if m.get("role") == "tool" and output in json.dumps(m))


def error_posts(fake: FakeTelegram) -> list[str]:
    """The bot's "⚠️ Something went wrong" posts, anywhere."""
    return [m.text or "" for m in fake.bot_messages(ANY) if ERROR_POST in (m.text or "")]


def snapshot(message: StoredMessage) -> StoredMessage:
    """The message as it is now (the fake's messages change in place when edited)."""
    return copy.deepcopy(message)


def unchanged(now: StoredMessage, before: StoredMessage) -> bool:
    return (
        now.edit_count == before.edit_count
        and now.text == before.text
        and now.buttons == before.buttons
    )
