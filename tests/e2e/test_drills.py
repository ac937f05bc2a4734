"""Drills: the claims "no answer lost, nothing run twice, nobody else can drive it" tried the hard
way, end to end (real OpenCode, the mock LLM, the fake Bot API). Where a kill is involved the bot
is its own `oc-outpost` process (tests/rig/process_bot.py) and is killed with SIGKILL: no
shutdown code runs.

Each final answer here is a text no other message contains, so counting the Bot API calls that
sent it tells "delivered exactly once" from "lost" and "twice".
"""

from __future__ import annotations

import asyncio

import pytest

from tests.e2e.test_approvals import press_data
from tests.rig.bot_fixtures import WAIT_S, RunningBot
from tests.rig.counting import (
    SETTLE_S,
    asked_llm,
    error_posts,
    exactly_once,
    sent_times,
    snapshot,
    tool_results,
    unchanged,
    user_turns,
    when_asked_to_run,
)
from tests.rig.fake_telegram import ANY
from tests.rig.mock_llm import MockLLM, Text
from tests.rig.process_bot import ProcessBot
from tests.rig.telegram_fixtures import ALLOWED_USER_ID, OTHER_USER_ID

pytestmark = pytest.mark.timeout(120)

OUTAGE_S = 30.0


# --- kill -9 of the bot ------------------------------------------------------------------------


async def test_kill_9_of_the_bot_mid_turn_the_final_arrives_once_after_restart(
    process_bot: ProcessBot, llm: MockLLM
) -> None:
    bot = process_bot
    topic = await bot.new_topic("demo")
    answer = "Drill answer: the long job finished while the bot was being restarted."
    llm.when("long job", Text(answer, chunk_size=3, delay_s=0.12))  # about 3 s of streaming
    await bot.say("long job please", topic)
    await bot.fake.wait_for(lambda: asked_llm(llm, "long job please"), WAIT_S, "the prompt")

    await bot.kill()  # mid-turn: OpenCode keeps working, nobody listens
    await bot.start()

    await exactly_once(bot, topic, answer)
    assert user_turns(llm, "long job please") == 1  # not sent again by the restarted bot
    notes = [t for t in (m.text or "" for m in bot.fake.bot_messages(topic)) if "❌" in t]
    assert notes == []
    assert error_posts(bot.fake) == []
    assert await bot.terminate() == 0


# --- the Bot API misbehaves --------------------------------------------------------------------


async def test_a_30_s_bot_api_outage_while_a_final_is_due_the_final_arrives_after(
    process_bot: ProcessBot, llm: MockLLM
) -> None:
    bot = process_bot
    topic = await bot.new_topic("demo")
    answer = "Drill answer: written while Telegram could not be reached."
    llm.when("during the outage", Text(answer, chunk_size=8, delay_s=0.1))
    await bot.say("answer during the outage", topic)
    await bot.fake.wait_for(lambda: asked_llm(llm, "during the outage"), WAIT_S, "the prompt")

    bot.line.cut()  # every Bot API call fails at once with a connection error
    await asyncio.sleep(OUTAGE_S)  # the answer is ready within ~1 s; its final is due all along
    assert sent_times(bot.fake, answer) == 0
    bot.line.restore()

    await exactly_once(bot, topic, answer, within_s=2 * WAIT_S)
    assert await bot.terminate() == 0


async def test_a_429_storm_delays_finals_and_approvals_but_each_arrives_once(
    bot: RunningBot, llm: MockLLM
) -> None:
    topic = await bot.new_topic("demo")
    done = "Drill answer: the storm is over and the command ran."
    when_asked_to_run(llm, "storm job", "drill-storm", done)
    storm = [
        bot.fake.add_fault(method, 429, retry_after=1, times=4)
        for method in ("sendMessage", "editMessageText", "answerCallbackQuery")
    ]
    await bot.say("storm job", topic)
    ask = await bot.wait_message(topic, "permission: bash", within_s=2 * WAIT_S)
    await bot.fake.click(ask.message_id, label="✅ Allow once")

    await exactly_once(bot, topic, done, within_s=2 * WAIT_S)
    refused = [c for c in bot.fake.calls() if c.error_code == 429]
    assert len(refused) >= 8 and all(f.times == 0 for f in storm[:2]), "the storm happened"
    asks = [m for m in bot.fake.bot_messages(topic) if "permission: bash" in (m.text or "")]
    assert len(asks) == 1
    assert (bot.fake.message(ask.message_id).text or "").endswith("✅ Allowed once by Alice.")
    assert tool_results(llm, "drill-storm") == 1


async def test_an_allow_press_runs_the_command_while_its_acknowledgement_is_held_by_429s(
    bot: RunningBot, llm: MockLLM
) -> None:
    topic = await bot.new_topic("demo")
    done = "Drill answer: allowed while the spinner could not be stopped."
    when_asked_to_run(llm, "held job", "drill-held", done)
    await bot.say("held job", topic)
    ask = await bot.wait_message(topic, "permission: bash")
    held = bot.fake.add_fault("answerCallbackQuery", 429, retry_after=5, times=6)  # ~30 s
    await bot.fake.click(ask.message_id, label="✅ Allow once")

    await bot.fake.wait_for(lambda: tool_results(llm, "drill-held") == 1, WAIT_S, "the command")
    acknowledged = [c for c in bot.fake.calls("answerCallbackQuery") if c.ok]
    assert held.times > 0 and acknowledged == []  # the press's work did not wait for it
    await exactly_once(bot, topic, done, within_s=3 * WAIT_S)


# --- presses that must change nothing -----------------------------------------------------------


async def test_replayed_forged_and_intruder_presses_on_an_approval_change_nothing(
    bot: RunningBot, llm: MockLLM
) -> None:
    topic = await bot.new_topic("demo")
    done = "Drill answer: approved once, by the right person."
    when_asked_to_run(llm, "guarded job", "drill-guarded", done)
    await bot.say("guarded job", topic)
    ask = snapshot(await bot.wait_message(topic, "permission: bash"))
    allow = next(b["callback_data"] for b in ask.buttons if b["text"] == "✅ Allow once")
    token = allow.split(":")[1]

    # a member who is not allowed presses the real button; a forged token; a forged choice
    await bot.fake.click(ask.message_id, label="❌ Reject", user_id=OTHER_USER_ID)
    await press_data(bot.fake, ask.message_id, f"p:{token[::-1]}:o", ALLOWED_USER_ID)
    await press_data(bot.fake, ask.message_id, f"p:{token}:z", ALLOWED_USER_ID)
    await asyncio.sleep(SETTLE_S)
    assert unchanged(bot.fake.message(ask.message_id), ask)
    assert tool_results(llm, "drill-guarded") == 0  # OpenCode still waits

    await bot.fake.click(ask.message_id, label="✅ Allow once")
    await exactly_once(bot, topic, done)
    decided = snapshot(bot.fake.message(ask.message_id))
    # the same press delivered again (a replayed update) and a stranger's replay
    await press_data(bot.fake, ask.message_id, allow, ALLOWED_USER_ID)
    await press_data(bot.fake, ask.message_id, f"p:{token}:r", OTHER_USER_ID)
    await asyncio.sleep(SETTLE_S)
    assert unchanged(bot.fake.message(ask.message_id), decided)
    assert tool_results(llm, "drill-guarded") == 1
    assert sent_times(bot.fake, done) == 1
    assert error_posts(bot.fake) == []


async def test_old_forged_and_intruder_stop_presses_stop_nothing(
    bot: RunningBot, llm: MockLLM
) -> None:
    demo = await bot.new_topic("demo")
    other = await bot.new_topic("other")
    first = "Drill answer: the first turn, stopped by nobody."
    llm.when("first turn", Text(first, chunk_size=3, delay_s=0.05))
    await bot.say("first turn", demo)
    progress = await bot.wait_message(demo, lambda m: bool(m.buttons))
    old_stop = progress.buttons[0]["callback_data"]
    await exactly_once(bot, demo, first)

    second = "Drill answer: the second turn ran to its end."
    llm.when("second turn", Text(second, chunk_size=2, delay_s=0.1))
    elsewhere = "Drill answer: the other topic's turn ran to its end."
    llm.when("other turn", Text(elsewhere, chunk_size=2, delay_s=0.1))
    before = len(bot.fake.bot_messages(demo))
    await bot.say("second turn", demo)
    await bot.say("other turn", other)
    live = await bot.wait_message(demo, lambda m: bool(m.buttons), after=before)
    other_live = await bot.wait_message(other, lambda m: bool(m.buttons))
    other_stop = other_live.buttons[0]["callback_data"]

    # the first turn's Stop, replayed; the other topic's Stop forged onto this topic's message;
    # a stranger pressing the live Stop button
    await press_data(bot.fake, live.message_id, old_stop, ALLOWED_USER_ID)
    await press_data(bot.fake, live.message_id, other_stop, ALLOWED_USER_ID)
    await bot.fake.click(
        live.message_id, data=live.buttons[0]["callback_data"], user_id=OTHER_USER_ID
    )

    await exactly_once(bot, demo, second)
    await exactly_once(bot, other, elsewhere)
    stopped = [m.text for m in bot.fake.bot_messages(ANY) if "⏹ Stopped" in (m.text or "")]
    assert stopped == []


# --- shutdown ------------------------------------------------------------------------------------


async def test_sigterm_exits_0_and_leaves_no_opencode_server_even_after_a_kill_9(
    process_bot: ProcessBot,
) -> None:
    bot = process_bot
    await bot.new_topic("demo")
    await bot.new_topic("other")
    assert len(bot.opencode_servers()) == 2
    await bot.kill()  # its servers survive; the next bot adopts them (they are not its children)
    await bot.start()
    assert len(bot.opencode_servers()) == 2

    assert await bot.terminate() == 0
    assert bot.opencode_servers() == []
    assert "oc-outpost stopped" in bot.output()
