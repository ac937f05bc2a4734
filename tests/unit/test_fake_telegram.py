"""Contract tests: the real python-telegram-bot 22.8 client against the fake Bot API server."""

from __future__ import annotations

import asyncio
import datetime as dtm
import warnings
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
import telegram
from telegram import BotCommand, InlineKeyboardButton, InlineKeyboardMarkup, MessageEntity, Update
from telegram.error import BadRequest, Conflict, EndPointNotFound, InvalidToken, RetryAfter
from telegram.ext import (
    ApplicationBuilder,
    CallbackQueryHandler,
    ContextTypes,
    MessageHandler,
    filters,
)
from telegram.warnings import PTBDeprecationWarning

from tests.rig.fake_telegram import ANY, FakeTelegram, utf16_len
from tests.rig.telegram_fixtures import (
    ALLOWED_USER_ID,
    TEST_BOT_TOKEN,
    TEST_BOT_USERNAME,
    TEST_CHAT_ID,
    ptb_bot,
)

CHAT = TEST_CHAT_ID


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def retry_seconds(error: RetryAfter) -> float:
    with warnings.catch_warnings():  # PTB 22 deprecates the int form of retry_after
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = error.retry_after
    return value.total_seconds() if isinstance(value, dtm.timedelta) else float(value)


@pytest_asyncio.fixture
async def clocked() -> AsyncIterator[tuple[FakeTelegram, telegram.Bot, ManualClock]]:
    clock = ManualClock()
    fake = FakeTelegram(chat_id=CHAT, bot_token=TEST_BOT_TOKEN, clock=clock)
    async with fake, ptb_bot(fake) as bot:  # the fake is started before the bot is built
        yield fake, bot, clock


async def test_get_me_and_bad_token(fake_telegram: FakeTelegram, fake_telegram_bot: telegram.Bot):
    me = await fake_telegram_bot.get_me()
    assert me.is_bot and me.username == TEST_BOT_USERNAME and me.id == 123456
    assert me.can_join_groups is True
    with pytest.raises(InvalidToken):
        async with ptb_bot(fake_telegram, token="999:WRONG"):
            pass
    with pytest.raises(EndPointNotFound):
        await fake_telegram_bot.do_api_request("noSuchMethod")


async def test_get_chat_and_own_membership(
    fake_telegram: FakeTelegram, fake_telegram_bot: telegram.Bot
):
    chat = await fake_telegram_bot.get_chat(CHAT)
    assert chat.type == "supergroup" and chat.is_forum is True
    member = await fake_telegram_bot.get_chat_member(CHAT, fake_telegram_bot.id)
    assert member.status == "administrator"
    assert isinstance(member, telegram.ChatMemberAdministrator) and member.can_manage_topics
    fake_telegram.bot_status = "member"
    fake_telegram.chat.is_forum = False
    assert (await fake_telegram_bot.get_chat_member(CHAT, fake_telegram_bot.id)).status == "member"
    assert (await fake_telegram_bot.get_chat(CHAT)).is_forum is None
    with pytest.raises(BadRequest, match=r"(?i)not a forum"):
        await fake_telegram_bot.create_forum_topic(CHAT, "x")


async def test_send_into_topic_and_general(
    fake_telegram: FakeTelegram, fake_telegram_bot: telegram.Bot
):
    topic = await fake_telegram_bot.create_forum_topic(CHAT, "proj-a")
    in_topic = await fake_telegram_bot.send_message(
        CHAT, "hello topic", message_thread_id=topic.message_thread_id
    )
    in_general = await fake_telegram_bot.send_message(CHAT, "hello general")

    assert in_topic.message_thread_id == topic.message_thread_id
    assert in_topic.is_topic_message is True
    assert in_topic.reply_to_message.forum_topic_created.name == "proj-a"
    assert in_general.message_thread_id is None and not in_general.is_topic_message
    assert in_topic.message_id < in_general.message_id
    assert [m.text for m in fake_telegram.bot_messages(topic.message_thread_id)] == ["hello topic"]
    assert [m.text for m in fake_telegram.bot_messages(None)] == ["hello general"]
    assert len(fake_telegram.bot_messages(ANY)) == 2


async def test_thread_not_found(fake_telegram: FakeTelegram, fake_telegram_bot: telegram.Bot):
    plain = await fake_telegram_bot.send_message(CHAT, "not a topic root")
    topic = await fake_telegram_bot.create_forum_topic(CHAT, "doomed")
    await fake_telegram_bot.send_message(CHAT, "bye", message_thread_id=topic.message_thread_id)
    await fake_telegram_bot.delete_forum_topic(CHAT, topic.message_thread_id)

    for thread_id in (1, plain.message_id, topic.message_thread_id, 999_999):
        with pytest.raises(BadRequest, match=r"(?i)message thread not found"):
            await fake_telegram_bot.send_message(CHAT, "x", message_thread_id=thread_id)
    assert fake_telegram.topics[topic.message_thread_id].deleted
    assert fake_telegram.bot_messages(topic.message_thread_id) == []


async def test_length_limits_count_utf16(
    fake_telegram: FakeTelegram, fake_telegram_bot: telegram.Bot
):
    fits = "🚀" * 2048  # 2048 code points, 4096 UTF-16 units
    too_long = "🚀" * 2049  # len() == 2049 < 4096, but 4098 UTF-16 units
    assert utf16_len(fits) == 4096 and len(too_long) < 4096
    sent = await fake_telegram_bot.send_message(CHAT, fits)
    with pytest.raises(BadRequest, match=r"(?i)message is too long"):
        await fake_telegram_bot.send_message(CHAT, too_long)
    with pytest.raises(BadRequest, match=r"(?i)message_too_long"):
        await fake_telegram_bot.edit_message_text(too_long, CHAT, sent.message_id)
    with pytest.raises(BadRequest, match=r"(?i)caption is too long"):
        await fake_telegram_bot.send_document(CHAT, b"x", filename="a.txt", caption="é" * 1025)
    with pytest.raises(BadRequest, match=r"(?i)message text is empty"):
        await fake_telegram_bot.send_message(CHAT, "")
    with pytest.raises(BadRequest, match=r"(?i)text must be non-empty"):
        await fake_telegram_bot.edit_message_text("", CHAT, sent.message_id)


async def test_edit_not_modified_not_found_and_markup_removal(
    fake_telegram: FakeTelegram, fake_telegram_bot: telegram.Bot
):
    bot = fake_telegram_bot
    keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Stop", callback_data="stop:1")]])
    sent = await bot.send_message(CHAT, "working", reply_markup=keyboard)
    with pytest.raises(BadRequest, match=r"(?i)message is not modified"):
        await bot.edit_message_text("working", CHAT, sent.message_id, reply_markup=keyboard)
    # Omitting reply_markup in an edit removes the keyboard, so this is a modification.
    edited = await bot.edit_message_text("working", CHAT, sent.message_id)
    assert edited.reply_markup is None and edited.edit_date is not None
    await bot.edit_message_text("done", CHAT, sent.message_id)
    stored = fake_telegram.message(sent.message_id)
    assert stored.text == "done" and stored.versions == ["working", "working"]

    with pytest.raises(BadRequest, match=r"(?i)message to edit not found"):
        await bot.edit_message_text("x", CHAT, 424242)
    assert await bot.delete_message(CHAT, sent.message_id) is True
    with pytest.raises(BadRequest, match=r"(?i)message to edit not found"):
        await bot.edit_message_text("again", CHAT, sent.message_id)
    with pytest.raises(BadRequest, match=r"(?i)message to delete not found"):
        await bot.delete_message(CHAT, sent.message_id)
    assert fake_telegram.message(sent.message_id).deleted


async def test_formatting_parse_errors_and_entities(
    fake_telegram: FakeTelegram, fake_telegram_bot: telegram.Bot
):
    bot = fake_telegram_bot
    html = await bot.send_message(CHAT, "<b>bold</b> &lt;x&gt; <i>it</i>", parse_mode="HTML")
    assert html.text == "bold <x> it"
    assert [(e.type, e.offset, e.length) for e in html.entities] == [
        ("bold", 0, 4),
        ("italic", 9, 2),
    ]
    for bad in ("<b>unclosed", "<blink>x</blink>", "<b><i>x</b></i>"):
        with pytest.raises(BadRequest, match=r"(?i)can't parse entities"):
            await bot.send_message(CHAT, bad, parse_mode="HTML")

    with pytest.raises(BadRequest, match=r"(?i)can't parse entities: character '\.' is reserved"):
        await bot.send_message(CHAT, "version 1.2", parse_mode="MarkdownV2")
    md = await bot.send_message(CHAT, "*v* 1\\.2 `a.b`", parse_mode="MarkdownV2")
    assert md.text == "v 1.2 a.b"
    assert [(e.type, e.offset, e.length) for e in md.entities] == [("bold", 0, 1), ("code", 6, 3)]

    ok = await bot.send_message(CHAT, "🚀 hi", entities=[MessageEntity("bold", 3, 2)])
    assert ok.entities[0].offset == 3
    with pytest.raises(BadRequest, match=r"(?i)ends after the end of the text"):
        await bot.send_message(CHAT, "🚀 hi", entities=[MessageEntity("bold", 3, 3)])


async def test_fault_429_maps_to_retry_after(
    fake_telegram: FakeTelegram, fake_telegram_bot: telegram.Bot
):
    fake_telegram.add_fault("sendMessage", 429, retry_after=7, match={"chat_id": CHAT})
    with pytest.raises(RetryAfter) as caught:
        await fake_telegram_bot.send_message(CHAT, "one")
    assert retry_seconds(caught.value) == 7
    assert (await fake_telegram_bot.send_message(CHAT, "two")).text == "two"
    failed = fake_telegram.calls("sendMessage")[0]
    assert (failed.ok, failed.error_code, failed.description) == (
        False,
        429,
        "Too Many Requests: retry after 7",
    )
    assert failed.params["text"] == "one" and failed.params["chat_id"] == CHAT


async def test_flood_per_chat_gap(clocked: tuple[FakeTelegram, telegram.Bot, ManualClock]):
    fake, bot, clock = clocked
    fake.flood(per_chat_interval=1.0, per_group_per_minute=20, global_per_second=30)
    first = await bot.send_message(CHAT, "a")
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(CHAT, "b")
    assert retry_seconds(caught.value) == 1
    clock.now += 0.4
    with pytest.raises(RetryAfter):  # edits count like sends
        await bot.edit_message_text("a2", CHAT, first.message_id)
    clock.now += 0.6
    assert (await bot.send_message(CHAT, "c")).text == "c"
    rejected = [c for c in fake.calls() if c.error_code == 429]
    assert len(rejected) == 2 and rejected[0].parameters == {"retry_after": 1}


async def test_flood_group_budget_shared_by_topics(
    clocked: tuple[FakeTelegram, telegram.Bot, ManualClock],
):
    fake, bot, clock = clocked
    topic_a = (await bot.create_forum_topic(CHAT, "a")).message_thread_id
    topic_b = (await bot.create_forum_topic(CHAT, "b")).message_thread_id
    fake.flood(per_chat_interval=1.0, per_group_per_minute=20)
    start = clock.now
    for i in range(20):
        await bot.send_message(CHAT, f"m{i}", message_thread_id=(topic_a, topic_b)[i % 2])
        clock.now += 1.0
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(CHAT, "over budget", message_thread_id=topic_b)
    assert retry_seconds(caught.value) == 40  # first send at t=0, now t=20
    with pytest.raises(RetryAfter):
        await bot.send_message(CHAT, "General shares the budget too")
    clock.now = start + 60.0
    assert (await bot.send_message(CHAT, "ok again", message_thread_id=topic_b)).text == "ok again"


async def test_create_forum_topic_emits_service_update(
    fake_telegram: FakeTelegram, fake_telegram_bot: telegram.Bot
):
    topic = await fake_telegram_bot.create_forum_topic(CHAT, "proj", icon_color=0xFFD67E)
    updates = await fake_telegram_bot.get_updates(timeout=0)
    assert len(updates) == 1
    service = updates[0].message
    assert service.forum_topic_created.name == "proj"
    assert service.forum_topic_created.icon_color == 0xFFD67E
    assert service.message_id == service.message_thread_id == topic.message_thread_id
    assert service.is_topic_message is True and service.from_user.id == fake_telegram_bot.id
    assert fake_telegram.topics[topic.message_thread_id].name == "proj"


async def test_closed_topic_rejects_sends(
    fake_telegram: FakeTelegram, fake_telegram_bot: telegram.Bot
):
    thread = (await fake_telegram_bot.create_forum_topic(CHAT, "t")).message_thread_id
    await fake_telegram_bot.close_forum_topic(CHAT, thread)
    with pytest.raises(BadRequest, match=r"(?i)topic_closed"):
        await fake_telegram_bot.send_message(CHAT, "x", message_thread_id=thread)
    with pytest.raises(BadRequest, match=r"(?i)topic_not_modified"):
        await fake_telegram_bot.close_forum_topic(CHAT, thread)
    await fake_telegram_bot.reopen_forum_topic(CHAT, thread)
    await fake_telegram_bot.edit_forum_topic(CHAT, thread, name="renamed")
    assert (await fake_telegram_bot.send_message(CHAT, "y", message_thread_id=thread)).text == "y"
    services = [
        m.service for m in fake_telegram.messages(thread, include_service=True) if m.service
    ]
    assert [next(iter(s)) for s in services] == [
        "forum_topic_created",
        "forum_topic_closed",
        "forum_topic_reopened",
        "forum_topic_edited",
    ]


async def test_callback_data_limit_and_click(
    fake_telegram: FakeTelegram, fake_telegram_bot: telegram.Bot
):
    def keyboard(data: str) -> InlineKeyboardMarkup:
        return InlineKeyboardMarkup([[InlineKeyboardButton("Go", callback_data=data)]])

    with pytest.raises(BadRequest, match=r"(?i)button_data_invalid"):
        await fake_telegram_bot.send_message(CHAT, "x", reply_markup=keyboard("é" * 33))  # 66 B
    sent = await fake_telegram_bot.send_message(CHAT, "x", reply_markup=keyboard("é" * 32))
    query_id = await fake_telegram.click(sent.message_id, label="Go")
    updates = await fake_telegram_bot.get_updates(timeout=0)
    query = updates[-1].callback_query
    assert query.id == query_id and query.data == "é" * 32 and query.chat_instance
    assert query.from_user.id == ALLOWED_USER_ID and query.message.message_id == sent.message_id
    assert await query.answer("ok") is True
    with pytest.raises(BadRequest, match=r"(?i)query is too old"):
        await query.answer("twice")
    assert fake_telegram.callback_answers[0]["text"] == "ok"
    await fake_telegram_bot.edit_message_reply_markup(CHAT, sent.message_id, reply_markup=None)
    assert fake_telegram.message(sent.message_id).reply_markup is None
    with pytest.raises(BadRequest, match=r"(?i)message is not modified"):
        await fake_telegram_bot.edit_message_reply_markup(CHAT, sent.message_id)
    with pytest.raises(LookupError):
        await fake_telegram.click(sent.message_id, label="Go")


async def test_set_my_commands_validation(
    fake_telegram: FakeTelegram, fake_telegram_bot: telegram.Bot
):
    with pytest.raises(BadRequest, match=r"(?i)bot_command_invalid"):
        await fake_telegram_bot.set_my_commands([BotCommand("Bad-Name", "nope")])
    commands = [BotCommand("new", "Start a session"), BotCommand("stop_all", "Stop")]
    assert await fake_telegram_bot.set_my_commands(commands) is True
    assert tuple(await fake_telegram_bot.get_my_commands()) == tuple(commands)
    assert [c["command"] for c in fake_telegram.commands["default"]] == ["new", "stop_all"]


async def test_get_updates_long_poll_and_offset(
    fake_telegram: FakeTelegram, fake_telegram_bot: telegram.Bot
):
    loop = asyncio.get_running_loop()
    poll = asyncio.create_task(fake_telegram_bot.get_updates(timeout=5))
    await asyncio.sleep(0.1)
    assert not poll.done()
    started = loop.time()
    await fake_telegram.send_user_message(f"/status@{TEST_BOT_USERNAME} now", ALLOWED_USER_ID)
    updates = await asyncio.wait_for(poll, 2)
    assert loop.time() - started < 1.0
    message = updates[0].message
    assert message.text.startswith("/status") and message.message_thread_id is None
    assert message.entities[0].type == "bot_command" and message.entities[0].length == 24
    confirmed = await fake_telegram_bot.get_updates(offset=updates[-1].update_id + 1, timeout=0)
    assert confirmed == () and fake_telegram.pending_updates == []


async def test_second_poller_gets_conflict(fake_telegram: FakeTelegram):
    url = f"{fake_telegram.url}/bot{TEST_BOT_TOKEN}/getUpdates"
    async with httpx.AsyncClient(timeout=5) as client:
        first = asyncio.create_task(client.post(url, data={"timeout": "3"}))
        await asyncio.sleep(0.1)
        second = await client.post(url, data={"timeout": "0"})
        superseded = await asyncio.wait_for(first, 1)
    assert second.status_code == 200
    assert superseded.status_code == 409
    assert "terminated by other getUpdates" in superseded.json()["description"]
    fake_telegram.webhook_url = "https://example.invalid/hook"
    async with ptb_bot(fake_telegram) as bot:
        with pytest.raises(Conflict):
            await bot.get_updates(timeout=0)
        assert await bot.delete_webhook() is True
        assert await bot.get_updates(timeout=0) == ()


async def test_document_upload_and_download(
    fake_telegram: FakeTelegram, fake_telegram_bot: telegram.Bot
):
    thread = (await fake_telegram_bot.create_forum_topic(CHAT, "files")).message_thread_id
    sent = await fake_telegram_bot.send_document(
        CHAT,
        b"log line\n",
        filename="run.log",
        caption="<b>log</b>",
        parse_mode="HTML",
        message_thread_id=thread,
    )
    assert sent.document.file_name == "run.log" and sent.caption == "log"
    assert sent.message_thread_id == thread
    file = await fake_telegram_bot.get_file(sent.document.file_id)
    assert bytes(await file.download_as_bytearray()) == b"log line\n"
    photo = await fake_telegram_bot.send_photo(CHAT, b"\x89PNG\r\n\x1a\n" + b"\0" * 16)
    assert photo.photo[-1].file_size == 24
    with pytest.raises(BadRequest, match=r"(?i)invalid file_id"):
        await fake_telegram_bot.get_file("nope")

    await fake_telegram.send_user_message(
        "see attached", ALLOWED_USER_ID, thread, document=("notes.md", b"# notes")
    )
    incoming = (await fake_telegram_bot.get_updates(timeout=0))[-1].message
    assert incoming.caption == "see attached" and incoming.document.file_name == "notes.md"
    user_file = await incoming.document.get_file()
    assert bytes(await user_file.download_as_bytearray()) == b"# notes"


async def test_http_test_control(fake_telegram: FakeTelegram, fake_telegram_bot: telegram.Bot):
    thread = await fake_telegram.create_topic_by_user("human topic", ALLOWED_USER_ID)
    async with httpx.AsyncClient(base_url=fake_telegram.url, timeout=5) as client:
        reply = await client.post(
            "/_test/message", json={"text": "hi", "user_id": ALLOWED_USER_ID, "thread_id": thread}
        )
        message = reply.json()["result"]
        assert message["message_thread_id"] == thread and message["is_topic_message"] is True
        fault = {"method": "sendMessage", "error_code": 403, "description": "Forbidden: x"}
        assert (await client.post("/_test/fault", json=fault)).json()["ok"] is True
        with pytest.raises(telegram.error.Forbidden):
            await fake_telegram_bot.send_message(CHAT, "blocked", message_thread_id=thread)
        markup = InlineKeyboardMarkup([[InlineKeyboardButton("Yes", callback_data="y")]])
        prompt = await fake_telegram_bot.send_message(CHAT, "ok?", reply_markup=markup)
        click = await client.post(
            "/_test/click", json={"message_id": prompt.message_id, "data": "y"}
        )
        assert click.json()["ok"] is True
        bad_click = await client.post(
            "/_test/click", json={"message_id": prompt.message_id, "data": "n"}
        )
        assert bad_click.status_code == 400
        calls = (await client.get("/_test/calls", params={"method": "sendMessage"})).json()[
            "result"
        ]
        state = (await client.get("/_test/state")).json()["result"]
    assert [c["ok"] for c in calls] == [False, True]
    assert state["topics"][str(thread)]["name"] == "human topic"
    kinds = [next(k for k in u if k != "update_id") for u in state["pending_updates"]]
    assert kinds == ["message", "message", "callback_query"]


async def test_wait_for_times_out_with_call_dump(
    fake_telegram: FakeTelegram, fake_telegram_bot: telegram.Bot
):
    await fake_telegram_bot.send_message(CHAT, "visible in the dump")
    assert await fake_telegram.wait_for(lambda: fake_telegram.bot_messages(), timeout=1)
    with pytest.raises(AssertionError, match="visible in the dump"):
        await fake_telegram.wait_for(lambda: None, timeout=0.05)


async def test_real_application_polling_round_trip(fake_telegram: FakeTelegram):
    async def on_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        markup = InlineKeyboardMarkup([[InlineKeyboardButton("Stop", callback_data="stop")]])
        await update.effective_message.reply_text(
            f"echo: {update.effective_message.text}", reply_markup=markup
        )

    async def on_click(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.callback_query is not None
        await update.callback_query.answer("stopping")

    app = (
        ApplicationBuilder()
        .token(TEST_BOT_TOKEN)
        .base_url(f"{fake_telegram.url}/bot")
        .base_file_url(f"{fake_telegram.url}/file/bot")
        .concurrent_updates(True)
        .build()
    )
    app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, on_text))
    app.add_handler(CallbackQueryHandler(on_click))
    await app.initialize()
    await app.start()
    assert app.updater is not None
    await app.updater.start_polling(timeout=1, poll_interval=0)
    try:
        thread = await fake_telegram.create_topic_by_user("proj", ALLOWED_USER_ID)
        user_message = await fake_telegram.send_user_message("hello", ALLOWED_USER_ID, thread)
        replies = await fake_telegram.wait_for(lambda: fake_telegram.bot_messages(thread))
        assert replies[0].text == "echo: hello"
        assert replies[0].reply_to_message_id == user_message["message_id"]
        await fake_telegram.click(replies[0].message_id, data="stop", user_id=ALLOWED_USER_ID)
        answers = await fake_telegram.wait_for(lambda: fake_telegram.callback_answers)
        assert answers[0]["text"] == "stopping"
    finally:
        await app.updater.stop()
        await app.stop()
        await app.shutdown()
    assert fake_telegram.calls("deleteWebhook") and not fake_telegram.pending_updates
