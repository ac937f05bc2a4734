"""End to end: the bot through its real entry point, the fake Bot API, real OpenCode, mock LLM."""

from __future__ import annotations

import asyncio

import pytest

from tests.rig.bot_fixtures import RunningBot, texts
from tests.rig.mock_llm import MockLLM, Text
from tests.rig.telegram_fixtures import ALLOWED_USER_ID, OTHER_USER_ID

pytestmark = pytest.mark.timeout(90)


async def test_new_creates_directory_topic_and_welcome(bot: RunningBot) -> None:
    topic = await bot.new_topic("demo")
    assert (bot.projects / "demo").is_dir()
    assert bot.fake.topics[topic].name == "demo"
    welcome = texts(bot.fake.bot_messages(topic))
    assert any("Project demo is ready" in t for t in welcome)
    commands = bot.fake.calls("setMyCommands")[0].params["commands"]
    assert {c["command"] for c in commands} >= {"new", "help"}


async def test_prompt_streams_and_answers_in_the_topic(bot: RunningBot, llm: MockLLM) -> None:
    answer = "Hello from mock! You said: hello"
    llm.when("hello", Text(answer, chunk_size=4, delay_s=0.25))  # slow enough to show progress
    topic = await bot.new_topic("demo")
    await bot.fake.send_user_message("hello", user_id=ALLOWED_USER_ID, thread_id=topic)
    # the final answer is a new message (the progress message shows its tail while streaming)
    final = await bot.fake.wait_for(
        lambda: next(
            (c for c in bot.fake.calls("sendMessage") if c.ok and c.params["text"] == answer),
            None,
        ),
        timeout=30,
    )
    assert final.params["message_thread_id"] == topic
    # the progress message was edited live and ends as a one-line summary
    progress = next(
        m for m in bot.fake.bot_messages(topic) if [*m.versions, m.text][0].startswith("⏳ Working")
    )
    await bot.fake.wait_for(lambda: progress.text.startswith("✅ Done in"), timeout=15)
    assert progress.edit_count >= 2  # at least one live update, then the summary
    assert progress.message_id < final.result["message_id"]
    general = texts(bot.fake.bot_messages(None))
    assert not any(answer in t for t in general)


async def test_bash_permission_allow_once_finishes_the_turn(bot: RunningBot) -> None:
    topic = await bot.new_topic("demo")
    await bot.fake.send_user_message("please RUN_BASH", user_id=ALLOWED_USER_ID, thread_id=topic)
    ask = await bot.fake.wait_for(
        lambda: next(
            (m for m in bot.fake.bot_messages(topic) if "permission: bash" in (m.text or "")),
            None,
        ),
        timeout=30,
    )
    labels = [b["text"] for b in ask.buttons]
    assert labels == ["✅ Allow once", "♾ Always", "❌ Reject"]
    assert "echo hello-from-bash" in ask.text
    assert all(len(b["callback_data"].encode()) <= 64 for b in ask.buttons)
    await bot.fake.click(ask.message_id, label="✅ Allow once", user_id=ALLOWED_USER_ID)
    await bot.fake.wait_for(
        lambda: any("Tool finished; bash done." in t for t in texts(bot.fake.bot_messages(topic))),
        timeout=30,
    )
    decided = next(m for m in bot.fake.bot_messages(topic) if m.message_id == ask.message_id)
    assert "Allowed once by" in decided.text
    assert not decided.buttons


async def test_user_not_allowed_gets_nothing_done(bot: RunningBot) -> None:
    before = len(bot.fake.calls())
    await bot.fake.send_user_message("/new intruder", user_id=OTHER_USER_ID)
    await bot.fake.send_user_message("/help", user_id=OTHER_USER_ID)
    # an allowed user's /help afterwards proves the bot processed the updates before it
    await bot.fake.send_user_message("/help", user_id=ALLOWED_USER_ID)
    await bot.fake.wait_for(lambda: len(bot.fake.bot_messages(None)) >= 1, timeout=15)
    await asyncio.sleep(0.5)
    assert not (bot.projects / "intruder").exists()
    assert not bot.fake.topics
    writes = [
        c.method
        for c in bot.fake.calls()[before:]
        if c.method not in ("getUpdates", "getMe", "deleteWebhook")
    ]
    assert writes == ["sendMessage"]  # only the allowed user's /help reply
