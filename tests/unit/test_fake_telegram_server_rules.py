"""The fake Bot API behaves as the real server does where the docs say nothing (telegram.md §11):
entity checks, the 100-entity limit, link previews, topic errors, edits, albums, anonymous
senders, allowed_updates and expiring callback queries. The real PTB client talks to it."""

from __future__ import annotations

import pytest
import telegram
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, LinkPreviewOptions, MessageEntity
from telegram.error import BadRequest

from tests.rig.fake_telegram import (
    ANONYMOUS_ADMIN_ID,
    SERVICE_USER_ID,
    FakeTelegram,
    LinkError,
    check_link,
)
from tests.rig.telegram_fixtures import ALLOWED_USER_ID, TEST_CHAT_ID

CHAT = TEST_CHAT_ID


@pytest.mark.parametrize(
    ("url", "stored"),
    [
        ("https://example.org", "https://example.org/"),
        ("HTTP://Example.ORG/a b", "http://example.org/a%20b"),
        ("http://127.0.0.1:8080/x", "http://127.0.0.1:8080/x"),
        ("http://[::1]:3000/", "http://[::1]:3000/"),
        ("mailto:dev@example.org", "http://mailto:dev@example.org/"),
        ("tg://resolve?domain=x", "tg://resolve?domain=x"),
    ],
)
def test_links_the_server_keeps_and_how_it_stores_them(url: str, stored: str) -> None:
    assert check_link(url) == stored


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://localhost:3000", "Wrong HTTP URL"),
        ("https://intranet/wiki", "Wrong HTTP URL"),
        ("ftp://example.org", "Unsupported URL protocol"),
        ("http://example.org:99999", "Wrong port number specified in the URL"),
        ("http://", "URL host is empty"),
        ("http://exa<mple.org", "Disallowed character in URL host"),
    ],
)
def test_links_the_server_refuses(url: str, reason: str) -> None:
    with pytest.raises(LinkError, match=reason):
        check_link(url)


async def test_a_text_link_to_localhost_is_refused_with_the_servers_own_text(
    fake_telegram: FakeTelegram, fake_telegram_bot: telegram.Bot
) -> None:
    link = MessageEntity("text_link", 0, 7, url="http://localhost:3000")
    with pytest.raises(BadRequest) as caught:
        await fake_telegram_bot.send_message(CHAT, "open it", entities=[link])
    assert "can't parse entities" not in caught.value.message.lower()
    call = fake_telegram.calls("sendMessage")[-1]
    assert call.description == "entity URL 'http://localhost:3000' is invalid: Wrong HTTP URL"
    assert not fake_telegram.bot_messages()


async def test_only_100_formatting_entities_are_applied_the_rest_ignored(
    fake_telegram: FakeTelegram, fake_telegram_bot: telegram.Bot
) -> None:
    text = " ".join(f"w{i:03d}" for i in range(150))
    bold = [MessageEntity("bold", i * 5, 4) for i in range(100)]
    code = [MessageEntity("code", i * 5, 4) for i in range(100, 150)]
    sent = await fake_telegram_bot.send_message(CHAT, text, entities=bold + code)
    kept = fake_telegram.message(sent.message_id).entities
    assert len(kept) == 100
    # TDLib counts code/pre/links first, then bold and the like
    assert sum(1 for e in kept if e["type"] == "code") == 50
    assert sum(1 for e in kept if e["type"] == "bold") == 50


async def test_link_previews_unless_disabled(
    fake_telegram: FakeTelegram, fake_telegram_bot: telegram.Bot
) -> None:
    shown = await fake_telegram_bot.send_message(CHAT, "see https://example.org/docs now")
    assert fake_telegram.message(shown.message_id).link_preview == "https://example.org/docs"
    assert shown.link_preview_options is not None
    off = LinkPreviewOptions(is_disabled=True)
    hidden = await fake_telegram_bot.send_message(
        CHAT, "see https://example.org/docs now", link_preview_options=off
    )
    assert fake_telegram.message(hidden.message_id).link_preview is None
    await fake_telegram_bot.edit_message_text(
        "now https://example.com", chat_id=CHAT, message_id=hidden.message_id
    )
    assert fake_telegram.message(hidden.message_id).link_preview == "https://example.com"


async def test_topic_methods_pass_the_raw_error_for_a_deleted_topic(
    fake_telegram: FakeTelegram, fake_telegram_bot: telegram.Bot
) -> None:
    topic = await fake_telegram.create_topic_by_user("demo")
    await fake_telegram.delete_topic_by_user(topic)
    with pytest.raises(BadRequest, match=r"(?i)topic_id_invalid"):
        await fake_telegram_bot.close_forum_topic(CHAT, topic)
    fake_telegram.deleted_topic_error = "TOPIC_DELETED"
    with pytest.raises(BadRequest, match=r"(?i)topic_deleted"):
        await fake_telegram_bot.edit_forum_topic(CHAT, topic, name="x")
    with pytest.raises(BadRequest, match=r"(?i)message thread not found"):
        await fake_telegram_bot.send_message(CHAT, "hi", message_thread_id=topic)


async def test_an_edit_by_a_person_is_an_edited_message_update(
    fake_telegram: FakeTelegram, fake_telegram_bot: telegram.Bot
) -> None:
    sent = await fake_telegram.send_user_message("helo", ALLOWED_USER_ID)
    await fake_telegram.edit_user_message(sent["message_id"], "hello")
    updates = await fake_telegram_bot.get_updates(timeout=0)
    assert updates[0].message is not None and updates[0].message.text == "helo"
    edited = updates[1].edited_message
    assert edited is not None and edited.text == "hello" and edited.edit_date is not None
    assert edited.message_id == sent["message_id"] and updates[1].message is None


async def test_an_album_and_a_long_paste_arrive_as_several_messages(
    fake_telegram: FakeTelegram, fake_telegram_bot: telegram.Bot
) -> None:
    topic = await fake_telegram.create_topic_by_user("demo")
    await fake_telegram.send_album([b"one", b"two", b"three"], "look", thread_id=topic)
    await fake_telegram.send_long_text("x" * 9000, thread_id=topic)
    updates = await fake_telegram_bot.get_updates(timeout=0)
    album = [u.message for u in updates if u.message and u.message.media_group_id]
    assert len(album) == 3 and len({m.media_group_id for m in album}) == 1
    assert [m.caption for m in album] == ["look", None, None]
    assert all(m.photo and m.is_topic_message for m in album)
    texts = [u.message.text for u in updates if u.message and u.message.text]
    assert [len(t) for t in texts] == [4096, 4096, 808]


async def test_anonymous_admins_and_channel_forwards_look_as_on_telegram(
    fake_telegram: FakeTelegram, fake_telegram_bot: telegram.Bot
) -> None:
    await fake_telegram.send_anonymous_admin_message("/new x")
    await fake_telegram.send_channel_auto_forward("news")
    anonymous, forward = (u.message for u in await fake_telegram_bot.get_updates(timeout=0))
    assert anonymous is not None and forward is not None
    assert anonymous.from_user is not None and anonymous.from_user.id == ANONYMOUS_ADMIN_ID
    assert anonymous.sender_chat is not None and anonymous.sender_chat.id == CHAT
    assert forward.from_user is not None and forward.from_user.id == SERVICE_USER_ID
    assert forward.is_automatic_forward and forward.sender_chat.type == "channel"
    assert not fake_telegram.bot_messages()


async def test_allowed_updates_are_remembered_by_the_server(
    fake_telegram: FakeTelegram, fake_telegram_bot: telegram.Bot
) -> None:
    await fake_telegram_bot.get_updates(timeout=0, allowed_updates=["callback_query"])
    await fake_telegram.send_user_message("lost", ALLOWED_USER_ID)
    assert await fake_telegram_bot.get_updates(timeout=0) == ()  # the old list still applies
    await fake_telegram_bot.get_updates(timeout=0, allowed_updates=[])  # back to the default
    await fake_telegram.send_user_message("seen", ALLOWED_USER_ID)
    [update] = await fake_telegram_bot.get_updates(timeout=0)
    assert update.message is not None and update.message.text == "seen"


async def test_a_callback_query_expires() -> None:
    clock = [0.0]
    fake = FakeTelegram(chat_id=CHAT, clock=lambda: clock[0])
    async with fake:
        bot = telegram.Bot(fake.bot_token, base_url=f"{fake.url}/bot")
        async with bot:
            button = InlineKeyboardButton("Go", callback_data="go")
            sent = await bot.send_message(CHAT, "x", reply_markup=InlineKeyboardMarkup([[button]]))
            late = await fake.click(sent.message_id, data="go")
            early = await fake.click(sent.message_id, data="go")
            assert await bot.answer_callback_query(early) is True
            clock[0] += 16.0
            with pytest.raises(BadRequest, match=r"(?i)query is too old"):
                await bot.answer_callback_query(late)
