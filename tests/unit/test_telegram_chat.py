"""TelegramChat and the Outbox on the real PTB client against the fake Bot API, which refuses
and ignores what the real server does (telegram.md §11)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import telegram

from oc_outpost.core.chat import GoneTopics, TopicGone
from oc_outpost.telegram.formatted import Entity, Formatted, join, styled
from oc_outpost.telegram.markdown import markdown_to_styled
from oc_outpost.telegram.outbox import Limits, Outbox
from oc_outpost.telegram.view import TelegramChat
from tests.rig.fake_telegram import FakeTelegram
from tests.rig.telegram_fixtures import TEST_CHAT_ID
from tests.unit.test_view import NoProgressLog

FAST = Limits(per_chat_interval_s=0.0, group_per_minute=1000, global_per_second=1000)


@pytest.fixture
async def chat(fake_telegram_bot: telegram.Bot) -> AsyncIterator[TelegramChat]:
    outbox = Outbox(fake_telegram_bot, FAST)
    outbox.start()
    try:
        yield TelegramChat(outbox, TEST_CHAT_ID, GoneTopics(), NoProgressLog())
    finally:
        await outbox.close(1.0)


async def test_a_part_whose_entities_telegram_refuses_is_delivered_as_plain_text(
    fake_telegram: FakeTelegram, chat: TelegramChat
) -> None:
    topic = await fake_telegram.create_topic_by_user("demo")
    refused = Formatted("open it", (Entity("text_link", 0, 7, url="http://localhost:3000"),))
    await chat.send(topic, [refused, Formatted("part two")])
    assert [m.text for m in fake_telegram.bot_messages(topic)] == ["open it", "part two"]
    errors = [c.description for c in fake_telegram.calls("sendMessage") if not c.ok]
    assert errors == ["entity URL 'http://localhost:3000' is invalid: Wrong HTTP URL"]


async def test_a_localhost_link_in_markdown_is_sent_as_label_and_url_in_one_call(
    fake_telegram: FakeTelegram, chat: TelegramChat
) -> None:
    topic = await fake_telegram.create_topic_by_user("demo")
    await chat.send(topic, markdown_to_styled("Done: [open it](http://localhost:3000)"))
    [message] = fake_telegram.bot_messages(topic)
    assert message.text == "Done: open it (http://localhost:3000)"
    assert all(c.ok for c in fake_telegram.calls("sendMessage"))


async def test_messages_are_sent_and_edited_without_link_previews(
    fake_telegram: FakeTelegram, chat: TelegramChat
) -> None:
    topic = await fake_telegram.create_topic_by_user("demo")
    sent = await chat.send(topic, markdown_to_styled("See https://example.org/docs"))
    assert fake_telegram.message(sent.message_id).link_preview is None
    await chat.edit(sent.message_id, Formatted("Now https://example.com"))
    assert fake_telegram.message(sent.message_id).text == "Now https://example.com"
    assert fake_telegram.message(sent.message_id).link_preview is None


async def test_past_100_entities_the_text_goes_in_more_parts_and_telegram_keeps_them_all(
    fake_telegram: FakeTelegram, chat: TelegramChat
) -> None:
    topic = await fake_telegram.create_topic_by_user("demo")
    await chat.send(topic, join([styled(f"file_{i}.py", "code") for i in range(150)], ", "))
    stored = fake_telegram.bot_messages(topic)
    assert sum(len(m.entities) for m in stored) == 150
    assert "".join(m.text or "" for m in stored).count("file_") == 150


@pytest.mark.parametrize("error", ["TOPIC_ID_INVALID", "TOPIC_DELETED"])
async def test_topic_methods_on_a_deleted_topic_mean_topic_gone(
    fake_telegram: FakeTelegram, chat: TelegramChat, error: str
) -> None:
    topic = await fake_telegram.create_topic_by_user("demo")
    await fake_telegram.delete_topic_by_user(topic)
    fake_telegram.deleted_topic_error = error
    for call in (
        lambda: chat.rename_topic(topic, "new name"),
        lambda: chat.close_topic(topic),
        lambda: chat.reopen_topic(topic),
        lambda: chat.delete_topic(topic),
    ):
        with pytest.raises(TopicGone):
            await call()
    assert {c.description for c in fake_telegram.calls() if not c.ok} == {error}
