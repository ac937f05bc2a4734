"""Permissions and questions by button, end to end: restarts, replays, forgeries, strangers."""

from __future__ import annotations

import asyncio

import pytest

from tests.rig.bot_fixtures import RunningBot
from tests.rig.fake_telegram import CallbackQueryState, FakeTelegram
from tests.rig.mock_llm import BASH_COMMAND
from tests.rig.telegram_fixtures import ALLOWED_USER_ID, OTHER_USER_ID

pytestmark = pytest.mark.timeout(120)

ANSWERING = "Sending your answer…"  # a press is answered before its work is done


async def press_data(fake: FakeTelegram, message_id: int, data: str, user_id: int) -> str:
    """Deliver a callback query with arbitrary data for a message, as a replayed or forged
    update would arrive (the fake's click() only presses buttons that are still shown)."""
    query_id = f"forged-{message_id}-{len(fake.callback_answers)}-{data}"
    fake._callback_queries[query_id] = CallbackQueryState(
        query_id, (fake.chat.id, message_id), data, user_id, fake._clock()
    )
    message = fake._message_json(fake.message(message_id))
    await fake._push_update(
        "callback_query",
        {
            "id": query_id,
            "from": fake.user(user_id),
            "message": message,
            "chat_instance": "1",
            "data": data,
        },
    )
    return query_id


async def callback_answer(fake: FakeTelegram, query_id: str) -> str:
    answer = await fake.wait_for(
        lambda: next(
            (a for a in fake.callback_answers if a["callback_query_id"] == query_id), None
        ),
        what=f"answer to {query_id}",
    )
    return str(answer["text"])


@pytest.mark.bot_options(keep_servers_running=True)
async def test_questions_and_permissions_by_button_checked_and_restart_safe(
    bot: RunningBot,
) -> None:
    topic = await bot.new_topic("demo")

    # a question: one button per option; the message then shows the answer and who gave it
    await bot.say("please ASK_QUESTION", topic)
    ask = await bot.wait_message(topic, "Pick a color")
    assert ask.text.startswith("❓ Color")
    assert [b["text"] for b in ask.buttons] == ["Red", "Blue"]
    query = await bot.fake.click(ask.message_id, label="Blue")
    assert await callback_answer(bot.fake, query) == ANSWERING  # at once; the message tells
    await bot.wait_message(topic, "Tool finished; question done.")
    decided = bot.fake.message(ask.message_id)
    assert decided.text.endswith("✅ Alice answered: Blue")
    assert not decided.buttons

    # a permission
    await bot.say("please RUN_BASH", topic)
    ask = await bot.wait_message(topic, "permission: bash")
    assert BASH_COMMAND in ask.text
    allow = next(b["callback_data"] for b in ask.buttons if b["text"] == "✅ Allow once")

    # a member who is not allowed: refused, nothing changes
    stranger = await bot.fake.click(ask.message_id, label="✅ Allow once", user_id=OTHER_USER_ID)
    assert await callback_answer(bot.fake, stranger) == "You are not allowed."
    # a forged token: refused, nothing changes
    token = allow.split(":")[1]
    forged = await press_data(bot.fake, ask.message_id, f"p:{token[::-1]}:o", ALLOWED_USER_ID)
    assert await callback_answer(bot.fake, forged) == ANSWERING
    await asyncio.sleep(0.5)
    assert bot.fake.message(ask.message_id).edit_count == 0
    assert len(bot.fake.message(ask.message_id).buttons) == 3

    # the bot restarts (its OpenCode server keeps running); the old button still works
    await bot.restart()
    first, second = await asyncio.gather(
        bot.fake.click(ask.message_id, label="✅ Allow once"),
        press_data(bot.fake, ask.message_id, allow, ALLOWED_USER_ID),  # a replayed press
    )
    answers = [await callback_answer(bot.fake, first), await callback_answer(bot.fake, second)]
    assert answers == [ANSWERING, ANSWERING]
    await bot.wait_message(topic, "Tool finished; bash done.")
    decided = bot.fake.message(ask.message_id)
    assert "permission: bash" in decided.text and BASH_COMMAND in decided.text
    assert decided.text.endswith("✅ Allowed once by Alice.")
    assert not decided.buttons
    # replayed again later: still nothing
    late = await press_data(bot.fake, ask.message_id, allow, ALLOWED_USER_ID)
    assert await callback_answer(bot.fake, late) == ANSWERING
    await asyncio.sleep(0.5)
    assert bot.fake.message(ask.message_id).edit_count == decided.edit_count
