"""Input as Telegram really delivers it (telegram.md §11), end to end: edits, albums and long
pastes, anonymous admins and channel forwards, button presses answered too late, a flood wait
at start, and updates handled exactly once across kill -9 of the bot process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from telegram import Update

from tests.rig.app_bot import AppBot
from tests.rig.bot_fixtures import RunningBot, bot_env, bot_settings, quick_options, texts
from tests.rig.fake_telegram import QUERY_TOO_OLD, FakeTelegram
from tests.rig.mock_llm import MockLLM, content_text, last_user_index
from tests.rig.serve_process import BotProcess
from tests.rig.telegram_fixtures import ALLOWED_USER_ID, OTHER_USER_ID

pytestmark = pytest.mark.timeout(150)


def prompts(llm: MockLLM) -> list[str]:
    """The prompt of each model request (its last user message); a turn starts with one."""
    found = []
    for body in llm.agent_requests:
        messages = body["messages"]
        at = last_user_index(messages)
        found.append("" if at is None else content_text(messages[at].get("content")))
    return found


async def test_an_edit_never_runs_again_and_an_album_or_a_long_paste_is_one_prompt(
    bot: RunningBot, llm: MockLLM
) -> None:
    topic = await bot.new_topic("demo")
    sent = await bot.say("first prompt", topic)
    await bot.wait_message(topic, "You said: first prompt")

    # editing the message in Telegram does not send it again
    await bot.fake.edit_user_message(sent["message_id"], "first prompt, edited")
    # an album: three files in three messages, the caption on the first
    before = len(llm.agent_requests)
    await bot.fake.send_album(
        [b"alpha-1\n", b"beta-2\n", b"gamma-3\n"],
        "compare these files",
        thread_id=topic,
        as_documents=True,
    )
    await bot.wait_message(topic, "You said: compare these files")
    album = [p for p in prompts(llm)[before:] if "compare these files" in p]
    assert len(album) == 1, prompts(llm)[before:]
    request = str(llm.agent_requests[-1]["messages"])
    assert request.index("alpha-1") < request.index("beta-2") < request.index("gamma-3")

    # a paste over 4096 characters arrives as three messages: one prompt, in order
    paste = " ".join(f"word{i:05d}" for i in range(1100)) + " END-OF-PASTE"
    before = len(llm.agent_requests)
    await bot.fake.send_long_text(paste, thread_id=topic)
    await bot.wait_message(topic, "END-OF-PASTE")
    [prompt] = [p for p in prompts(llm)[before:] if "word00000" in p]
    assert prompt.replace("\n\n", "") == paste

    assert not any("edited" in p for p in prompts(llm))
    finals = [t for t in texts(bot.fake.bot_messages(topic)) if "You said: first prompt" in t]
    assert len(finals) == 1


@pytest.fixture
async def app_bot(
    fake_telegram: FakeTelegram, opencode_bin: Path, opencode_env: dict[str, str], tmp_path: Path
) -> AsyncIterator[AppBot]:
    bot = AppBot(fake_telegram, bot_settings(fake_telegram, opencode_bin, tmp_path))
    await bot.start()
    try:
        yield bot
    finally:
        await bot.stop()


async def test_the_handlers_ignore_an_edit_even_when_telegram_delivers_one(
    app_bot: AppBot,
) -> None:
    fake = app_bot.fake
    topic = await fake.create_topic_by_user("scratch", ALLOWED_USER_ID)
    await app_bot.wait_message(topic, "not linked to a project")  # offered when it was created
    sent = await fake.send_user_message("hello", ALLOWED_USER_ID, thread_id=topic)
    await app_bot.wait_message(topic, "not linked to a project", after=1)
    shown = len(fake.bot_messages(topic))
    # delivered past allowed_updates, straight to the application, as an older bot's list would
    edited = await fake.edit_user_message(sent["message_id"], "hello again")
    app = app_bot.running_app
    update = Update.de_json({"update_id": 10_000, "edited_message": edited}, app.application.bot)
    await app.application.process_update(update)
    await app.handlers.work_done(10_000)
    await asyncio.sleep(0.5)
    assert len(fake.bot_messages(topic)) == shown


async def test_anonymous_admins_and_channel_forwards_are_never_served(
    bot: RunningBot, fake_telegram: FakeTelegram, opencode_bin: Path, tmp_path: Path
) -> None:
    # with an allowlist: an anonymous admin is told how to be recognised
    await fake_telegram.send_anonymous_admin_message("/new secret")
    await bot.wait_message(None, 'Turn off "Remain anonymous"')
    await fake_telegram.send_channel_auto_forward("/new channel")
    await bot.say("/help")
    await bot.wait_message(None, "/new")
    assert not fake_telegram.topics
    assert len(fake_telegram.bot_messages(None)) == 2  # the advice and the help

    # without an allowlist everyone in the group may use the bot, but not as the group itself
    await bot.stop()
    open_settings = bot_settings(
        fake_telegram, opencode_bin, tmp_path / "open", TELEGRAM_ALLOWED_USERS=""
    )
    open_bot = RunningBot(fake_telegram, open_settings, quick_options())
    await open_bot.start()
    try:
        await fake_telegram.send_anonymous_admin_message("/new secret")
        await fake_telegram.send_channel_auto_forward("/new channel")
        await open_bot.say("/help", user=OTHER_USER_ID)
        await open_bot.wait_message(None, "/new", after=2)
        await asyncio.sleep(0.5)
        assert not fake_telegram.topics
        assert len(fake_telegram.bot_messages(None)) == 3
    finally:
        await open_bot.stop()


@pytest.mark.bot_options(keep_servers_running=True)
async def test_a_press_made_while_the_bot_was_down_is_done_without_an_error_post(
    bot: RunningBot,
) -> None:
    topic = await bot.new_topic("demo")
    await bot.say("please RUN_BASH", topic)
    ask = await bot.wait_message(topic, "permission: bash")
    await bot.stop()
    bot.fake.callback_query_ttl = 0.5
    query = await bot.fake.click(ask.message_id, label="✅ Allow once")
    await asyncio.sleep(0.6)  # the press expires before the bot is back
    bot.options = replace(bot.options, keep_servers_running=False)
    await bot.start()
    await bot.wait_message(topic, "Tool finished; bash done.")
    assert bot.fake.message(ask.message_id).text.endswith("✅ Allowed once by Alice.")
    answers = [
        c for c in bot.fake.calls("answerCallbackQuery") if c.params["callback_query_id"] == query
    ]
    assert [c.description for c in answers] == [QUERY_TOO_OLD.removeprefix("Bad Request: ")]
    assert not any("⚠️" in t or "went wrong" in t for t in texts(bot.fake.bot_messages(topic)))


async def test_the_bot_starts_through_429s_and_an_outage_of_its_first_calls(
    fake_telegram: FakeTelegram, opencode_bin: Path, opencode_env: dict[str, str], tmp_path: Path
) -> None:
    fake_telegram.add_fault("getMe", 429, retry_after=1, times=2)
    fake_telegram.add_fault("getMe", 502, times=1)
    fake_telegram.add_fault("setMyCommands", 429, retry_after=1)
    fake_telegram.add_fault("deleteWebhook", 502)
    bot = RunningBot(fake_telegram, bot_settings(fake_telegram, opencode_bin, tmp_path))
    await bot.start()
    try:
        await bot.say("/help")
        await bot.wait_message(None, "/new")
        assert [c.ok for c in fake_telegram.calls("getMe")] == [False, False, False, True]
        assert [c.ok for c in fake_telegram.calls("deleteWebhook")] == [False, True]
    finally:
        await bot.stop()


async def test_updates_are_handled_exactly_once_across_kill_9_of_the_bot(
    fake_telegram: FakeTelegram,
    opencode_bin: Path,
    opencode_env: dict[str, str],
    llm: MockLLM,
    tmp_path: Path,
) -> None:
    fake = fake_telegram
    env = bot_env(fake, opencode_bin, tmp_path)
    # a long prompt window: the kill lands after Telegram was told the update is received
    # (the next poll acknowledged it) and before the prompt reached OpenCode
    options = {"poll_timeout_s": 1, "coalesce_window_s": 3.0}
    bot = BotProcess(fake, env, tmp_path / "bot.log", options)
    await bot.start()
    try:
        await fake.send_user_message("/new demo", ALLOWED_USER_ID)
        topic = await fake.wait_for(lambda: next(iter(fake.topics), None), timeout=30)
        await fake.wait_for(lambda: any("is ready" in t for t in texts(fake.bot_messages(topic))))

        # killed after acknowledging, before handling: handled after the restart
        await fake.send_user_message("first message", ALLOWED_USER_ID, thread_id=topic)
        await fake.wait_for(lambda: not fake.pending_updates, what="acknowledged")
        bot.kill()
        assert not any("first message" in p for p in prompts(llm))
        await bot.start()
        await fake.wait_for(
            lambda: any("You said: first message" in t for t in texts(fake.bot_messages(topic))),
            timeout=30,
        )

        # killed after handling, before acknowledging: not handled again after the restart
        second = fake.next_update_id
        fake.keep_unacknowledged(second)
        await fake.send_user_message("second message", ALLOWED_USER_ID, thread_id=topic)
        await fake.wait_for(
            lambda: any("You said: second message" in t for t in texts(fake.bot_messages(topic))),
            timeout=30,
        )
        await asyncio.sleep(0.3)  # the handled update's row is deleted right after
        bot.kill()
        assert second in [u["update_id"] for u in fake.pending_updates]
        fake.keep_unacknowledged(None)
        await bot.start()
        await fake.send_user_message("third message", ALLOWED_USER_ID, thread_id=topic)
        await fake.wait_for(
            lambda: any("You said: third message" in t for t in texts(fake.bot_messages(topic))),
            timeout=30,
        )
        assert await bot.stop() == 0
    finally:
        bot.kill()
    for word in ("first", "second", "third"):
        said = [t for t in texts(fake.bot_messages(topic)) if f"You said: {word} message" in t]
        assert len(said) == 1, (word, said, bot.tail())
        assert sum(1 for p in prompts(llm) if f"{word} message" in p) == 1
