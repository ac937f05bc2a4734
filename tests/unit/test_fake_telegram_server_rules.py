"""The fake Bot API behaves as the real server does where the docs say nothing (telegram.md §11):
entity checks, the 100-entity limit, link previews, topic errors, edits, albums, anonymous
senders, allowed_updates and expiring callback queries. The real PTB client talks to it."""

from __future__ import annotations

import pytest
import telegram
from telegram import LinkPreviewOptions, MessageEntity
from telegram.error import BadRequest

from tests.rig.fake_telegram import FakeTelegram, LinkError, check_link
from tests.rig.telegram_fixtures import TEST_CHAT_ID

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
