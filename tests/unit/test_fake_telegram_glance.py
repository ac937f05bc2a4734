"""Contract tests of the fake Bot API for topic icons, pinning and service-message deletion."""

from __future__ import annotations

import pytest
import telegram
from telegram.error import BadRequest

from tests.rig.fake_telegram import FORUM_ICONS, FakeTelegram
from tests.rig.telegram_fixtures import TEST_BOT_TOKEN, TEST_CHAT_ID, ptb_bot

CHAT = TEST_CHAT_ID


async def test_icon_stickers_and_icon_edits_leave_a_service_message(
    fake_telegram: FakeTelegram, fake_telegram_bot: telegram.Bot
) -> None:
    stickers = await fake_telegram_bot.get_forum_topic_icon_stickers()
    assert [(s.emoji, s.custom_emoji_id) for s in stickers] == list(FORUM_ICONS)
    icon = stickers[0].custom_emoji_id
    assert icon is not None
    topic = await fake_telegram_bot.create_forum_topic(CHAT, "proj")
    thread = topic.message_thread_id
    await fake_telegram_bot.get_updates(timeout=0)  # the creation message

    assert await fake_telegram_bot.edit_forum_topic(CHAT, thread, icon_custom_emoji_id=icon)
    (update,) = await fake_telegram_bot.get_updates(offset=-1, timeout=0)
    assert update.message is not None and update.message.forum_topic_edited is not None
    assert update.message.forum_topic_edited.icon_custom_emoji_id == icon
    assert update.message.from_user is not None
    assert update.message.from_user.id == fake_telegram_bot.id
    assert fake_telegram.topics[thread].icon_custom_emoji_id == icon

    with pytest.raises(BadRequest, match="TOPIC_NOT_MODIFIED"):
        await fake_telegram_bot.edit_forum_topic(CHAT, thread, icon_custom_emoji_id=icon)
    with pytest.raises(BadRequest, match="invalid custom emoji"):
        await fake_telegram_bot.edit_forum_topic(CHAT, thread, icon_custom_emoji_id="42")

    # the bot deletes its own "topic edited" message; the creation message never goes
    assert await fake_telegram_bot.delete_message(CHAT, update.message.message_id)
    with pytest.raises(BadRequest, match="can't be deleted"):
        await fake_telegram_bot.delete_message(CHAT, thread)


async def test_pin_posts_a_service_message_and_needs_the_right(
    fake_telegram: FakeTelegram, fake_telegram_bot: telegram.Bot
) -> None:
    board = await fake_telegram_bot.send_message(CHAT, "board", disable_notification=True)
    assert await fake_telegram_bot.pin_chat_message(
        CHAT, board.message_id, disable_notification=True
    )
    assert fake_telegram.pinned[CHAT] == board.message_id
    updates = await fake_telegram_bot.get_updates(timeout=0)
    notice = updates[-1].message
    assert notice is not None and notice.pinned_message is not None
    assert notice.pinned_message.message_id == board.message_id
    assert notice.message_thread_id is None  # in General, like the pinned message
    with pytest.raises(BadRequest, match="message to pin not found"):
        await fake_telegram_bot.pin_chat_message(CHAT, 9999)


async def test_without_rights_no_pin_and_no_service_deletion() -> None:
    fake = FakeTelegram(
        chat_id=CHAT, bot_token=TEST_BOT_TOKEN, can_pin_messages=False, can_delete_messages=False
    )
    async with fake, ptb_bot(fake) as bot:
        message = await bot.send_message(CHAT, "board")
        with pytest.raises(BadRequest, match="not enough rights"):
            await bot.pin_chat_message(CHAT, message.message_id)
        topic = await bot.create_forum_topic(CHAT, "proj")
        icon = FORUM_ICONS[0][1]
        await bot.edit_forum_topic(CHAT, topic.message_thread_id, icon_custom_emoji_id=icon)
        updates = await bot.get_updates(timeout=0)
        edited = updates[-1].message
        assert edited is not None and edited.forum_topic_edited is not None
        with pytest.raises(BadRequest, match="can't be deleted"):
            await bot.delete_message(CHAT, edited.message_id)
        assert await bot.delete_message(CHAT, message.message_id)  # its own plain message
