"""The shared Telegram budget through the bot's real Telegram path, with the flood rule on.

TelegramChat (the ChatPort implementation) → Outbox → a real PTB Bot → HTTP → the fake Bot API,
which answers 429 with retry_after like Telegram when a limit is exceeded (1 s per chat, 20 per
rolling minute per group, 30 per second). Turns are driven through the ChatPort methods with
synthetic TurnSnapshots. The fake and the Outbox share one Clock running SPEEDUP times faster
than the wall clock, so Telegram's real limits apply in Telegram seconds and a 90 s scenario
takes about two wall seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import pytest

from oc_outpost.core.chat import ClosingProgress, GoneTopics, PermissionPrompt
from oc_outpost.core.turn import TurnPhase, TurnSnapshot
from oc_outpost.telegram.outbox import Clock, Limits, Outbox
from oc_outpost.telegram.view import TelegramChat
from tests.rig.fake_telegram import Call, FakeTelegram
from tests.rig.telegram_fixtures import TEST_BOT_TOKEN, TEST_CHAT_ID, ptb_bot

SPEEDUP = 50.0
EVENT_EVERY_S = 0.5  # Telegram seconds between two OpenCode events of a turn

pytestmark = pytest.mark.timeout(60)


class NoProgressLog:
    """Progress messages need not survive a restart here."""

    async def progress_shown(self, session_id: str, message_id: int) -> None:
        return None

    async def progress_closing(self, closing: ClosingProgress) -> None:
        return None

    async def progress_closed(self, message_id: int) -> None:
        return None

    async def progress_left_closing(self) -> list[ClosingProgress]:
        return []


@dataclass
class Rig:
    fake: FakeTelegram
    clock: Clock
    outbox: Outbox
    chat: TelegramChat

    def calls(self, method: str | None = None, since: float = 0.0) -> list[Call]:
        return [c for c in self.fake.calls(method) if c.at >= since]

    def refused(self) -> list[Call]:
        return [c for c in self.fake.calls() if c.error_code == 429]


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    clock = Clock(speedup=SPEEDUP)
    fake = FakeTelegram(TEST_CHAT_ID, TEST_BOT_TOKEN, clock=clock.now)
    await fake.start()
    bot = ptb_bot(fake)
    await bot.initialize()
    fake.flood()  # Telegram's limits, in Telegram seconds
    outbox = Outbox(bot, Limits(), clock=clock)
    outbox.start()
    try:
        chat = TelegramChat(outbox, TEST_CHAT_ID, GoneTopics(), NoProgressLog(), clock=clock.now)
        yield Rig(fake, clock, outbox, chat)
    finally:
        await outbox.close(2.0)
        await bot.shutdown()
        await fake.stop()


def answer(topic: int) -> str:
    body = " ".join(f"Line {i} of the answer for topic {topic}." for i in range(60))
    return f"{body}\nEnd of answer {topic}."


class Turn:
    """A synthetic turn in a topic: its answer grows by one word per event."""

    def __init__(self, rig: Rig, topic: int, turn_id: int) -> None:
        self.rig = rig
        self.topic = topic
        self.words = answer(topic).split(" ")
        self.snapshot = TurnSnapshot(turn_id, f"ses_{turn_id}", rig.clock.now())
        self.events = 0

    def event(self) -> None:
        self.events += 1
        text = " ".join(self.words[: self.events * 4])
        self.snapshot = replace(self.snapshot, texts=(("text", text),), steps=self.events // 10)
        self.rig.chat.show_progress(self.topic, self.snapshot)

    async def stream_until(self, idle: asyncio.Event) -> None:
        self.rig.chat.show_progress(self.topic, self.snapshot)
        while not idle.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(idle.wait(), self.rig.clock.to_wall(EVENT_EVERY_S))
            if not idle.is_set():
                self.event()

    async def finish(self) -> None:
        done = replace(
            self.snapshot,
            texts=(("text", answer(self.topic)),),
            phase=TurnPhase.DONE,
            finished_at=self.rig.clock.now(),
        )
        await self.rig.chat.show_final(self.topic, done, streaming=True)


async def topics(rig: Rig, count: int) -> list[int]:
    """Topics the users opened earlier (creating them is not what these tests measure)."""
    return [await rig.fake.create_topic_by_user(f"project-{i}") for i in range(count)]


def final_arrival(rig: Rig, topic: int) -> float:
    """When the final answer of ``topic`` arrived in full (it fits in one message)."""
    finals = [
        c
        for c in rig.calls("sendMessage")
        if c.ok
        and c.params.get("message_thread_id") == topic
        and c.params["text"].endswith(f"End of answer {topic}.")
    ]
    assert len(finals) == 1, f"topic {topic}: {len(finals)} final answer(s)"
    return finals[0].at


def progress_updates(rig: Rig, topic: int, until: float) -> int:
    """Progress message sends and edits that reached ``topic`` while its turn streamed."""
    return sum(
        1
        for c in rig.calls()
        if c.ok
        and c.at < until
        and "reply_markup" in c.params  # the Stop button: only progress messages carry it
        and _thread_of(rig, c) == topic
    )


def _thread_of(rig: Rig, call: Call) -> int | None:
    if call.method == "editMessageText":
        return rig.fake.message(int(call.params["message_id"])).thread_id
    return call.params.get("message_thread_id")


async def test_ten_topics_streaming_at_once_get_no_429_and_every_final(rig: Rig) -> None:
    threads = await topics(rig, 10)
    turns = [Turn(rig, topic, i + 1) for i, topic in enumerate(threads)]
    idle = asyncio.Event()
    streams = [asyncio.create_task(turn.stream_until(idle)) for turn in turns]
    await rig.clock.sleep(130.0)  # past two rolling minutes: progress spends its share
    # every session goes idle at once, when progress has used all the minute it may use
    while rig.outbox.budget_used(TEST_CHAT_ID) < rig.outbox.progress_policy().per_minute:
        await rig.clock.sleep(0.25)
    idle.set()
    idle_at = rig.clock.now()
    free_at_idle = Limits().group_per_minute - rig.outbox.budget_used(TEST_CHAT_ID)
    await asyncio.gather(*streams)
    await asyncio.gather(*(turn.finish() for turn in turns))

    assert rig.refused() == []
    arrivals = sorted(final_arrival(rig, topic) - idle_at for topic in threads)
    # the budget kept a call free for every final, so they leave one per chat gap instead of
    # one per call that leaves the rolling minute (that would take up to a minute)
    assert free_at_idle >= 10
    assert arrivals[-1] < 30.0, arrivals
    for topic in threads:
        texts = [m.text for m in rig.fake.bot_messages(topic)]
        assert answer(topic) in texts
    # fair shares: every topic's progress was shown and refreshed as often as the others'
    shown = [progress_updates(rig, topic, idle_at) for topic in threads]
    assert min(shown) >= 2, shown
    assert max(shown) - min(shown) <= 1, shown


async def test_injected_429_delays_but_never_loses_a_final_or_an_approval(rig: Rig) -> None:
    (topic,) = await topics(rig, 1)
    turn = Turn(rig, topic, 1)
    for _ in range(5):
        turn.event()
        await rig.clock.sleep(EVENT_EVERY_S)
    in_topic = {"message_thread_id": topic}

    rig.fake.add_fault("sendMessage", 429, retry_after=4, times=1, match=in_topic)
    await turn.finish()
    refused, delivered = _refused_then_delivered(rig, topic)
    assert len(refused) == 1
    assert delivered.params["text"] == refused[0].params["text"] == answer(topic)
    assert delivered.at - refused[0].at >= 4.0

    asked_at = rig.clock.now()
    rig.fake.add_fault("sendMessage", 429, retry_after=3, times=2, match=in_topic)
    prompt = PermissionPrompt("tok123", "bash", ("rm *",), "rm -rf build")
    message_id = await rig.chat.ask_permission(topic, prompt)
    refused, delivered = _refused_then_delivered(rig, topic, since=asked_at)
    assert len(refused) == 2
    assert delivered.result["message_id"] == message_id
    assert delivered.at - refused[0].at >= 3.0 + 3.0
    asked = rig.fake.message(message_id)
    assert "rm -rf build" in (asked.text or "")
    assert [b["text"] for b in asked.buttons] == ["✅ Allow once", "♾ Always", "❌ Reject"]
    assert len(rig.refused()) == 3  # only the injected ones: the flood rule never fired


def _refused_then_delivered(rig: Rig, topic: int, since: float = 0.0) -> tuple[list[Call], Call]:
    sends = [
        c for c in rig.calls("sendMessage", since) if c.params.get("message_thread_id") == topic
    ]
    refused = [c for c in sends if c.error_code == 429]
    delivered = [c for c in sends if c.ok and c.at > refused[-1].at]
    assert refused and delivered, [(c.error_code, c.params["text"][:30]) for c in sends]
    return refused, delivered[0]


async def test_approval_queued_behind_20_progress_edits_is_sent_first(rig: Rig) -> None:
    threads = await topics(rig, 20)
    turns = [Turn(rig, topic, i + 1) for i, topic in enumerate(threads)]
    for turn in turns:
        turn.event()  # each turn's progress message is sent...
    await rig.fake.wait_for(lambda: len(rig.calls("sendMessage")) == 20, timeout=20)
    await rig.clock.sleep(61.0)  # ...and a rolling minute later the budget is free again

    await rig.chat.notify(threads[0], "checkpoint")  # the chat's 1 s gap starts now
    checkpoint = rig.calls("sendMessage")[-1].at
    for turn in turns:
        turn.event()  # 20 progress edits queued, every one allowed once the gap is over
    assert rig.outbox.pending() == 20
    prompt = PermissionPrompt("tok456", "edit", ("src/*",), "--- a/x\n+++ b/x")
    approval = asyncio.create_task(rig.chat.ask_permission(threads[5], prompt))
    message_id = await approval

    after = [c for c in rig.calls(since=checkpoint) if c.method != "getUpdates"][1:]
    assert after[0].method == "sendMessage"
    assert after[0].result["message_id"] == message_id
    assert after[0].at - checkpoint < 10.0  # the 1 s gap, then the approval at once
    await rig.fake.wait_for(lambda: len(rig.calls("editMessageText", checkpoint)) >= 2)
    assert rig.calls("editMessageText", checkpoint)[0].at > after[0].at
    assert rig.refused() == []
