"""Drills on input as Telegram really delivers it (edits, albums, links the server refuses, presses
that are too old to be answered), end to end. The fake Bot API models each of these the way the
real server does; the first step of a drill that relies on such a model checks that the fake
does model it, so a drill never passes against a fake that is kinder than Telegram.
"""

from __future__ import annotations

import asyncio
import base64

import pytest
import telegram
from telegram import MessageEntity

from tests.rig.bot_fixtures import WAIT_S, RunningBot
from tests.rig.counting import (
    SETTLE_S,
    asked_llm,
    error_posts,
    exactly_once,
    sent_times,
    snapshot,
    tool_results,
    user_turns,
    when_asked_to_run,
)
from tests.rig.fake_telegram import FakeTelegram
from tests.rig.mock_llm import MockLLM, Text
from tests.rig.process_bot import ProcessBot
from tests.rig.telegram_fixtures import ALLOWED_USER_ID, TEST_CHAT_ID, ptb_bot

pytestmark = pytest.mark.timeout(120)

PRESS_TTL_S = 1.0  # how long the fake lets a press be answered in the drill below
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


async def test_an_edited_message_runs_nothing_again(bot: RunningBot, llm: MockLLM) -> None:
    topic = await bot.new_topic("demo")
    answer = "Drill answer: the prompt ran once."
    llm.when("run me once", Text(answer))
    sent = await bot.say("run me once", topic)
    await exactly_once(bot, topic, answer)

    await bot.fake.edit_user_message(sent["message_id"], "run me once, edited")
    await asyncio.sleep(2 * SETTLE_S)
    assert not asked_llm(llm, "edited")
    assert user_turns(llm, "run me once") == 1
    assert sent_times(bot.fake, answer) == 1


async def test_an_album_is_one_prompt(bot: RunningBot, llm: MockLLM) -> None:
    topic = await bot.new_topic("demo")
    answer = "Drill answer: two pictures, one prompt."
    llm.when("these pictures", Text(answer))
    await bot.fake.send_album([PNG, PNG], caption="describe these pictures", thread_id=topic)

    await exactly_once(bot, topic, answer)
    await asyncio.sleep(SETTLE_S)
    (request,) = [r for r in llm.agent_requests if "these pictures" in str(r["messages"])]
    users = [m for m in request["messages"] if m.get("role") == "user"]
    assert len(users) == 1, "the album reached OpenCode as one prompt"
    assert str(users[0]).count("photo") >= 2, "with both pictures"
    assert user_turns(llm, "these pictures") == 1


async def test_an_answer_with_a_localhost_link_is_delivered(bot: RunningBot, llm: MockLLM) -> None:
    topic = await bot.new_topic("demo")
    await the_fake_refuses_a_localhost_text_link(bot.fake, topic)
    llm.when(
        "where is it",
        Text("The app runs; [open it](http://localhost:3000) and check the **dashboard**."),
    )
    await bot.say("where is it running", topic)

    final = await bot.wait_message(
        topic, lambda m: "check the dashboard" in (m.text or "") and not m.buttons
    )
    assert "open it" in (final.text or "")
    assert "localhost:3000" in (final.text or "") + str(final.entities), "the link is not lost"
    await asyncio.sleep(SETTLE_S)
    finals = [m for m in bot.fake.bot_messages(topic) if "check the dashboard" in (m.text or "")]
    assert len([m for m in finals if not m.buttons]) == 1


async def the_fake_refuses_a_localhost_text_link(fake: FakeTelegram, topic: int) -> None:
    """Telegram refuses a text_link whose host has no dot ("Wrong HTTP URL")."""
    async with ptb_bot(fake) as bot:
        link = MessageEntity(MessageEntity.TEXT_LINK, 0, 4, url="http://localhost:3000")
        with pytest.raises(telegram.error.BadRequest, match=r"(?i)url"):
            await bot.send_message(TEST_CHAT_ID, "open", message_thread_id=topic, entities=[link])


async def test_kill_9_with_an_approval_pending_the_press_after_restart_is_honoured_once(
    process_bot: ProcessBot, llm: MockLLM
) -> None:
    bot = process_bot
    topic = await bot.new_topic("demo")
    done = "Drill answer: deployed after the bot came back."
    when_asked_to_run(llm, "deploy it", "drill-deployed", done)
    await bot.say("deploy it", topic)
    ask = snapshot(await bot.wait_message(topic, "permission: bash"))

    await bot.kill()
    # Pressed while the bot is down: Telegram keeps the press until the bot polls again, and
    # by then it is too old to be answered (the real server refuses such answers); the press
    # itself must still count, and its outcome show in the message, not as an error post.
    bot.fake.callback_query_ttl = PRESS_TTL_S
    await bot.fake.click(ask.message_id, label="✅ Allow once", user_id=ALLOWED_USER_ID)
    await asyncio.sleep(PRESS_TTL_S)
    await bot.start()

    await exactly_once(bot, topic, done, within_s=WAIT_S)
    decided = bot.fake.message(ask.message_id)
    assert (decided.text or "").endswith("✅ Allowed once by Alice.")
    assert not decided.buttons
    assert tool_results(llm, "drill-deployed") == 1
    assert sent_times(bot.fake, ask.text or "") == 1  # the request was not asked again
    assert error_posts(bot.fake) == []
    assert await bot.terminate() == 0
