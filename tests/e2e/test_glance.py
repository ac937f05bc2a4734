"""The control room at a glance, end to end: topic icons that follow each topic's state and the
pinned board in General (TOPIC_STATUS=icons, BOARD=on)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from oc_outpost.telegram.board import BoardConfig
from tests.rig.bot_fixtures import RunningBot, bot_settings, quick_options
from tests.rig.fake_telegram import FORUM_ICONS, FakeTelegram, StoredMessage
from tests.rig.mock_llm import BASH_COMMAND, HttpError, MockLLM, Text, ToolCall
from tests.rig.opencode_bin import MOCK_MODEL, MOCK_PROVIDER

pytestmark = pytest.mark.timeout(120)

EMOJI_OF = {icon_id: emoji.replace("\ufe0f", "") for emoji, icon_id in FORUM_ICONS}
RUNNING, NEEDS_YOU, DONE, FAILED, ASLEEP = "⚡", "❗", "✅", "❌", "💤"
GLANCE = {"TOPIC_STATUS": "icons", "BOARD": "on"}
FOLLOW_UP = "The greeting was printed, all went well and nothing else needs doing here. " * 2

MakeBot = Callable[..., Any]


@pytest.fixture
async def glance_bot(
    fake_telegram: FakeTelegram, opencode_bin: Path, opencode_env: dict[str, str], tmp_path: Path
) -> AsyncIterator[MakeBot]:
    started: list[RunningBot] = []

    async def make(**env: str) -> RunningBot:
        settings = bot_settings(fake_telegram, opencode_bin, tmp_path, **(GLANCE | env))
        options = quick_options(icon_settle_s=0.2, board=BoardConfig(interval_s=0.3, refresh_s=1.0))
        bot = RunningBot(fake_telegram, settings, options)
        await bot.start()
        started.append(bot)
        return bot

    yield make
    for bot in started:
        await bot.shutdown()


def icons(fake: FakeTelegram, topic: int) -> list[str]:
    """The icons the bot gave the topic, in order (successful calls only)."""
    return [
        EMOJI_OF[str(call.params["icon_custom_emoji_id"])]
        for call in fake.calls("editForumTopic")
        if call.ok
        and call.params.get("icon_custom_emoji_id")
        and int(call.params["message_thread_id"]) == topic
    ]


async def wait_icon(bot: RunningBot, topic: int, emoji: str) -> None:
    await bot.fake.wait_for(
        lambda: icons(bot.fake, topic)[-1:] == [emoji],
        timeout=30,
        what=f"icon {emoji} on topic {topic} (so far {icons(bot.fake, topic)})",
    )


def board(fake: FakeTelegram) -> StoredMessage | None:
    pinned = fake.pinned.get(fake.chat.id)
    return None if pinned is None else fake.message(pinned)


async def wait_board(bot: RunningBot, *parts: str) -> StoredMessage:
    def shown() -> StoredMessage | None:
        message = board(bot.fake)
        text = message.text or "" if message is not None else ""
        return message if message and all(p in text for p in parts) else None

    return await bot.fake.wait_for(
        shown, timeout=30, what=f"the board showing {parts} (now {board(bot.fake)})"
    )


def topic_edited_messages(fake: FakeTelegram, topic: int) -> list[StoredMessage]:
    return [
        m
        for m in fake.messages(topic, include_service=True, include_deleted=True)
        if m.from_bot and "forum_topic_edited" in (m.service or {})
    ]


async def test_icon_and_board_follow_a_turn_with_an_approval_and_survive_a_restart(
    glance_bot: MakeBot, llm: MockLLM
) -> None:
    llm.when(
        "slow bash",
        ToolCall(
            "bash",
            {"command": BASH_COMMAND, "description": "Print a greeting"},
            then=Text(FOLLOW_UP, chunk_size=8, delay_s=0.1),
            delay_s=1.5,
        ),
    )
    bot = await glance_bot()
    topic = await bot.new_topic("demo")

    await bot.say("please slow bash", topic)
    await wait_icon(bot, topic, RUNNING)
    await wait_board(bot, f"{RUNNING} demo", "running")
    ask = await bot.wait_message(topic, "permission: bash")
    await wait_icon(bot, topic, NEEDS_YOU)
    pinned = await wait_board(bot, f"{NEEDS_YOU} demo", "1 waiting for you")
    link = next(e for e in pinned.entities if e["type"] == "text_link")
    assert link["url"] == f"https://t.me/c/{str(bot.fake.chat.id)[4:]}/{topic}"
    assert pinned.thread_id is None  # in General

    await bot.fake.click(ask.message_id, label="✅ Allow once")
    await wait_icon(bot, topic, RUNNING)
    await bot.wait_message(topic, "nothing else needs doing")
    await wait_icon(bot, topic, DONE)
    await wait_board(
        bot, f"{DONE} demo · done · {MOCK_PROVIDER}/{MOCK_MODEL}", "Servers: 1 running"
    )
    assert icons(bot.fake, topic) == [RUNNING, NEEDS_YOU, RUNNING, DONE]

    # quiet: the board is one silent message, pinned silently; the icon changes leave nothing
    pin_calls = bot.fake.calls("pinChatMessage")
    assert len(pin_calls) == 1 and pin_calls[0].params.get("disable_notification") is True
    board_posts = [c for c in bot.fake.calls("sendMessage") if "Board" in c.params["text"]]
    assert [c.params.get("disable_notification") for c in board_posts] == [True]
    # one per icon change, one for the rename after the first turn
    assert len(topic_edited_messages(bot.fake, topic)) == 5
    await bot.fake.wait_for(
        lambda: all(m.deleted for m in topic_edited_messages(bot.fake, topic)),
        timeout=10,
        what="the topic-edited service messages deleted",
    )
    pinned_notices = [
        m for m in bot.fake.messages(None, include_service=True, include_deleted=True) if m.service
    ]
    assert len(pinned_notices) == 1 and pinned_notices[0].deleted  # "pinned a message" is gone

    # a restart edits the same board on
    before = board(bot.fake)
    assert before is not None
    edits_before = before.edit_count
    await bot.restart()
    await bot.fake.wait_for(
        lambda: bot.fake.message(before.message_id).edit_count > edits_before,
        timeout=30,
        what="the board edited after the restart",
    )
    assert board(bot.fake) is before  # still the pinned one, no new post
    await bot.say("/board")
    reposted = await bot.fake.wait_for(
        lambda: (b := board(bot.fake)) is not None and b.message_id != before.message_id and b,
        timeout=30,
        what="the board posted anew",
    )
    assert "demo" in (reposted.text or "")
    await bot.fake.wait_for(
        lambda: bot.fake.message(before.message_id).deleted, timeout=10, what="the old board gone"
    )
    assert len(bot.fake.calls("getForumTopicIconStickers")) <= 2  # once per bot run


async def test_a_failed_turn_shows_failed(glance_bot: MakeBot, llm: MockLLM) -> None:
    llm.when("break please", HttpError(400, "the model refused the request"))
    bot = await glance_bot()
    topic = await bot.new_topic("broken")
    await bot.say("break please", topic)
    await wait_icon(bot, topic, FAILED)
    await wait_board(bot, f"{FAILED} broken", "failed")


async def test_an_idle_stopped_server_shows_asleep(glance_bot: MakeBot) -> None:
    bot = await glance_bot(OPENCODE_IDLE_TIMEOUT_MS="1000", OPENCODE_HEALTH_CHECK_INTERVAL_MS="250")
    topic = await bot.new_topic("sleepy")
    await wait_icon(bot, topic, ASLEEP)
    await wait_board(bot, f"{ASLEEP} sleepy", "asleep")
