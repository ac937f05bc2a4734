"""Outbox scheduling with an in-process recording bot (the end-to-end tests use the HTTP fake)."""

from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta
from typing import Any

import pytest
from telegram.error import BadRequest, NetworkError, RetryAfter

from oc_outpost.core.chat import TopicGone
from oc_outpost.telegram.outbox import Clock, Limits, Outbox, OutboxClosed, Priority

CHAT = -100123

FAST = Limits(per_chat_interval_s=0.0, group_per_minute=1000, global_per_second=1000)


class RecordingBot:
    """Stands in for telegram.Bot: records which call ran, in order."""

    def __init__(self) -> None:
        self.log: list[str] = []

    def call(self, name: str, result: Any = None, error: Exception | None = None) -> Any:
        async def run(bot: Any) -> Any:
            assert bot is self
            self.log.append(name)
            if error is not None:
                raise error
            return result if result is not None else name

        return run


@pytest.fixture
async def bot_and_outbox() -> Any:
    bot = RecordingBot()
    outbox = Outbox(bot, FAST)  # type: ignore[arg-type]
    yield bot, outbox
    await outbox.close(0.5)


async def test_interactive_call_overtakes_queued_progress_edits(bot_and_outbox: Any) -> None:
    bot, outbox = bot_and_outbox
    edits = [
        outbox.enqueue(
            bot.call(f"edit{i}"), method="sendMessage", chat_id=CHAT, priority=Priority.PROGRESS
        )
        for i in range(20)
    ]
    approval = outbox.enqueue(
        bot.call("approval"), method="sendMessage", chat_id=CHAT, priority=Priority.INTERACTIVE
    )
    outbox.start()
    await asyncio.gather(approval, *edits)
    assert bot.log[0] == "approval"
    assert bot.log[1:] == [f"edit{i}" for i in range(20)]


async def test_final_answers_go_before_progress(bot_and_outbox: Any) -> None:
    bot, outbox = bot_and_outbox
    progress = outbox.enqueue(
        bot.call("progress"), method="sendMessage", chat_id=CHAT, priority=Priority.PROGRESS
    )
    final = outbox.enqueue(
        bot.call("final"), method="sendMessage", chat_id=CHAT, priority=Priority.FINAL
    )
    outbox.start()
    await asyncio.gather(progress, final)
    assert bot.log == ["final", "progress"]


async def test_newer_edit_replaces_queued_one_and_answers_both_waiters(bot_and_outbox: Any) -> None:
    bot, outbox = bot_and_outbox
    first = outbox.enqueue(
        bot.call("v1"), method="sendMessage", chat_id=CHAT, priority=Priority.PROGRESS, key="m1"
    )
    other = outbox.enqueue(
        bot.call("other"), method="sendMessage", chat_id=CHAT, priority=Priority.PROGRESS, key="m2"
    )
    second = outbox.enqueue(
        bot.call("v2"), method="sendMessage", chat_id=CHAT, priority=Priority.PROGRESS, key="m1"
    )
    outbox.start()
    assert await first == "v2"
    assert await second == "v2"
    await other
    assert bot.log == ["v2", "other"]  # v2 kept v1's place in the queue


async def test_retry_after_pauses_then_resends(bot_and_outbox: Any) -> None:
    _, outbox = bot_and_outbox
    attempts: list[float] = []

    async def flaky(_: Any) -> str:
        attempts.append(asyncio.get_running_loop().time())
        if len(attempts) == 1:
            raise RetryAfter(timedelta(seconds=0.2))
        return "sent"

    outbox.start()
    result = await outbox.submit(flaky, method="sendMessage", chat_id=CHAT, priority=Priority.FINAL)
    assert result == "sent"
    assert len(attempts) == 2
    assert attempts[1] - attempts[0] >= 0.19
    assert outbox.stats.retry_after == 1


async def test_not_modified_counts_as_success(bot_and_outbox: Any) -> None:
    bot, outbox = bot_and_outbox
    outbox.start()
    error = BadRequest("Message is not modified: specified new message content is the same")
    result = await outbox.submit(
        bot.call("edit", error=error),
        method="sendMessage",
        chat_id=CHAT,
        priority=Priority.PROGRESS,
    )
    assert result is None
    assert outbox.stats.not_modified == 1


async def test_parse_error_falls_back_to_plain_text(bot_and_outbox: Any) -> None:
    bot, outbox = bot_and_outbox
    outbox.start()
    error = BadRequest("Can't parse entities: unsupported start tag")
    result = await outbox.submit(
        bot.call("fancy", error=error),
        method="sendMessage",
        chat_id=CHAT,
        priority=Priority.FINAL,
        fallback=bot.call("plain"),
    )
    assert result == "plain"
    assert bot.log == ["fancy", "plain"]


@pytest.mark.parametrize(
    "refusal",
    [
        "Entity url 'http://localhost:3000' is invalid: wrong http url",  # as PTB shows it
        "Entities_too_long",
        "Entity beginning at utf-16 offset 3 ends in a middle of a utf-16 symbol at byte offset 5",
    ],
)
async def test_any_refusal_of_a_formatted_message_falls_back_to_plain_text(
    bot_and_outbox: Any, refusal: str
) -> None:
    bot, outbox = bot_and_outbox
    outbox.start()
    result = await outbox.submit(
        bot.call("fancy", error=BadRequest(refusal)),
        method="sendMessage",
        chat_id=CHAT,
        priority=Priority.FINAL,
        fallback=bot.call("plain"),
    )
    assert result == "plain"
    assert bot.log == ["fancy", "plain"]


async def test_an_error_plain_text_would_get_too_is_not_retried_as_plain(
    bot_and_outbox: Any,
) -> None:
    bot, outbox = bot_and_outbox
    outbox.start()
    with pytest.raises(BadRequest):
        await outbox.submit(
            bot.call("edit", error=BadRequest("Message to edit not found")),
            method="sendMessage",
            chat_id=CHAT,
            priority=Priority.INTERACTIVE,
            fallback=bot.call("plain"),
        )
    assert bot.log == ["edit"]


async def test_thread_not_found_raises_topic_gone(bot_and_outbox: Any) -> None:
    bot, outbox = bot_and_outbox
    outbox.start()
    with pytest.raises(TopicGone):
        await outbox.submit(
            bot.call("send", error=BadRequest("Message thread not found")),
            method="sendMessage",
            chat_id=CHAT,
            priority=Priority.FINAL,
        )


async def test_group_minute_budget_holds_calls_back() -> None:
    bot = RecordingBot()
    limits = Limits(
        per_chat_interval_s=0.0, group_per_minute=2, global_per_second=100, progress_reserve=0
    )
    outbox = Outbox(bot, limits)  # type: ignore[arg-type]
    outbox.start()
    futures = [
        outbox.enqueue(
            bot.call(f"m{i}"), method="sendMessage", chat_id=CHAT, priority=Priority.FINAL
        )
        for i in range(3)
    ]
    await asyncio.gather(*futures[:2])
    await asyncio.sleep(0.1)
    assert bot.log == ["m0", "m1"]
    assert outbox.pending() == 1
    assert outbox.budget_used(CHAT) == 2
    await outbox.close(0.1)
    with pytest.raises(OutboxClosed):
        await futures[2]


async def test_progress_keeps_reserve_for_finals() -> None:
    bot = RecordingBot()
    limits = Limits(
        per_chat_interval_s=0.0, group_per_minute=3, global_per_second=100, progress_reserve=1
    )
    outbox = Outbox(bot, limits)  # type: ignore[arg-type]
    outbox.start()
    progress = [
        outbox.enqueue(
            bot.call(f"p{i}"), method="sendMessage", chat_id=CHAT, priority=Priority.PROGRESS
        )
        for i in range(3)
    ]
    await asyncio.sleep(0.1)
    assert bot.log == ["p0", "p1"]  # the third slot of the minute is kept back
    final = await outbox.submit(
        bot.call("final"), method="sendMessage", chat_id=CHAT, priority=Priority.FINAL
    )
    assert final == "final"
    await outbox.close(0.1)
    assert progress[2].done()


async def test_close_flushes_finals_and_drops_progress() -> None:
    bot = RecordingBot()
    outbox = Outbox(bot, Limits(per_chat_interval_s=0.05))  # type: ignore[arg-type]
    progress = outbox.enqueue(
        bot.call("progress"), method="sendMessage", chat_id=CHAT, priority=Priority.PROGRESS
    )
    finals = [
        outbox.enqueue(
            bot.call(f"final{i}"), method="sendMessage", chat_id=CHAT, priority=Priority.FINAL
        )
        for i in range(3)
    ]
    outbox.start()
    await outbox.close(5.0)
    assert [await f for f in finals] == ["final0", "final1", "final2"]
    assert "progress" not in bot.log
    assert progress.done()
    with pytest.raises(OutboxClosed):
        outbox.enqueue(
            bot.call("late"), method="sendMessage", chat_id=CHAT, priority=Priority.FINAL
        )


async def test_discard_withdraws_a_queued_call(bot_and_outbox: Any) -> None:
    bot, outbox = bot_and_outbox
    future = outbox.enqueue(
        bot.call("send"), method="sendMessage", chat_id=CHAT, priority=Priority.PROGRESS, key="k"
    )
    assert outbox.discard("k") is True
    assert outbox.discard("k") is False
    outbox.start()
    await asyncio.sleep(0.05)
    assert future.cancelled()
    assert bot.log == []


# --- sharing the group budget between progress streams ---------------------------------------


class TimedBot:
    """Stands in for telegram.Bot: records (name, Telegram time) of every call it makes."""

    def __init__(self, clock: Clock, duration_s: float = 0.0) -> None:
        self.clock = clock
        self.duration_s = duration_s
        self.log: list[tuple[str, float]] = []

    def call(self, name: str) -> Any:
        async def run(bot: Any) -> str:
            if self.duration_s:
                await self.clock.sleep(self.duration_s)
            self.log.append((name, self.clock.now()))
            return name

        return run

    def times(self, name: str) -> list[float]:
        return [at for logged, at in self.log if logged == name]


async def stream_forever(outbox: Outbox, bot: TimedBot, name: str) -> None:
    """A topic streaming non-stop: its next progress edit is queued as soon as one is sent."""
    while True:
        await outbox.enqueue(
            bot.call(name),
            method="sendMessage",
            chat_id=CHAT,
            priority=Priority.PROGRESS,
            key=("edit", name),
        )


async def run_streams(outbox: Outbox, bot: TimedBot, names: list[str], seconds: float) -> None:
    outbox.start()
    tasks = [asyncio.create_task(stream_forever(outbox, bot, name)) for name in names]
    await outbox.clock.sleep(seconds)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def queue_progress(outbox: Outbox, bot: TimedBot, streams: int) -> None:
    for i in range(streams):
        outbox.enqueue(
            bot.call(f"s{i}"), method="sendMessage", chat_id=CHAT, priority=Priority.PROGRESS, key=i
        )


@pytest.mark.parametrize(
    ("streams", "per_minute", "interval_s"),
    [(1, 16, 3.75), (4, 16, 15.0), (10, 10, 60.0), (15, 10, 90.0)],
)
async def test_progress_share_adapts_to_the_streams_in_flight(
    streams: int, per_minute: int, interval_s: float
) -> None:
    outbox = Outbox(TimedBot(Clock()), Limits())  # type: ignore[arg-type]
    queue_progress(outbox, TimedBot(Clock()), streams)
    policy = outbox.progress_policy()
    assert (policy.streams, policy.per_minute) == (streams, per_minute)
    assert policy.edit_interval_s == pytest.approx(interval_s)
    await outbox.close(0.1)


async def test_progress_streams_take_turns_fairly() -> None:
    clock = Clock(speedup=120)
    bot = TimedBot(clock)
    outbox = Outbox(bot, Limits(), clock=clock)  # type: ignore[arg-type]
    names = ["a", "b", "c", "d"]
    await run_streams(outbox, bot, names, seconds=180)
    await outbox.close(0.1)
    counts = [len(bot.times(name)) for name in names]
    assert max(counts) - min(counts) <= 1, counts
    assert sum(counts) <= 3 * 16 + 1  # 4 streams: 4 calls of every minute stay in reserve
    assert min(counts) >= 8  # every topic refreshed about every 15 s
    for name in names:
        stamps = bot.times(name)
        assert all(b - a >= 15.0 - 1e-6 for a, b in itertools.pairwise(stamps)), stamps


async def test_a_topic_alone_is_refreshed_evenly_not_in_bursts() -> None:
    clock = Clock(speedup=30)
    bot = TimedBot(clock)
    outbox = Outbox(bot, Limits(), clock=clock)  # type: ignore[arg-type]
    await run_streams(outbox, bot, ["solo"], seconds=75)
    await outbox.close(0.1)
    gaps = [b - a for a, b in itertools.pairwise(bot.times("solo"))]
    assert len(gaps) >= 16  # 16 edits a minute, spread out...
    assert min(gaps) >= 3.75 - 1e-6  # ...never faster than the budget allows...
    assert max(gaps) < 3.75 + 3.0  # ...and never frozen until the minute rolls over


async def test_finals_of_every_stream_go_out_back_to_back() -> None:
    """Ten topics streaming go idle at once: the reserve holds a call for each final."""
    clock = Clock(speedup=100)
    bot = TimedBot(clock)
    outbox = Outbox(bot, Limits(), clock=clock)  # type: ignore[arg-type]
    names = [f"t{i}" for i in range(10)]
    streams = [asyncio.create_task(stream_forever(outbox, bot, name)) for name in names]
    outbox.start()
    # wait until the rolling minute is as full as progress may make it
    while outbox.budget_used(CHAT) < outbox.progress_policy().per_minute:
        await clock.sleep(0.5)
    assert outbox.progress_policy().per_minute == 10
    assert outbox.budget_used(CHAT) <= 10  # ten calls of the minute are still free
    idle_at = clock.now()
    finals = [
        outbox.enqueue(
            bot.call(f"final-{name}"), method="sendMessage", chat_id=CHAT, priority=Priority.FINAL
        )
        for name in names
    ]
    await asyncio.gather(*finals)
    for task in streams:
        task.cancel()
    await asyncio.gather(*streams, return_exceptions=True)
    await outbox.close(0.1)
    sent = sorted(at for name, at in bot.log if name.startswith("final-"))
    assert sent[-1] - idle_at < 9 * 1.0 + 1.0 + 10.0  # nine chat gaps, one in flight, slack
    between = [name for name, at in bot.log if sent[0] <= at <= sent[-1]]
    assert all(name.startswith("final-") for name in between)


async def test_call_is_stamped_when_its_answer_arrives() -> None:
    """Telegram counts a call somewhere between request and answer: gaps start at the answer."""
    clock = Clock(speedup=20)
    bot = TimedBot(clock, duration_s=2.0)
    outbox = Outbox(bot, Limits(), clock=clock)  # type: ignore[arg-type]
    outbox.start()
    first = outbox.enqueue(
        bot.call("one"), method="sendMessage", chat_id=CHAT, priority=Priority.FINAL
    )
    second = outbox.enqueue(
        bot.call("two"), method="sendMessage", chat_id=CHAT, priority=Priority.FINAL
    )
    await asyncio.gather(first, second)
    await outbox.close(0.1)
    (one,), (two,) = bot.times("one"), bot.times("two")
    assert two - one >= 1.0 + 2.0 - 1e-6  # the chat gap after the first answer, then the call


async def test_retry_after_is_in_telegram_seconds() -> None:
    clock = Clock(speedup=100)
    outbox = Outbox(RecordingBot(), Limits(), clock=clock)  # type: ignore[arg-type]
    attempts: list[float] = []

    async def flaky(_: Any) -> str:
        attempts.append(clock.now())
        if len(attempts) == 1:
            raise RetryAfter(timedelta(seconds=30))
        return "sent"

    outbox.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert (
        await outbox.submit(flaky, method="sendMessage", chat_id=CHAT, priority=Priority.FINAL)
        == "sent"
    )
    assert attempts[1] - attempts[0] >= 30.0 - 1e-6
    assert loop.time() - started < 2.0  # 30 Telegram seconds are 0.3 wall seconds here
    await outbox.close(0.1)


async def test_close_fails_a_call_still_in_flight_after_the_flush_timeout() -> None:
    started = asyncio.Event()

    async def hangs(_: Any) -> str:
        started.set()
        await asyncio.sleep(3600)
        return "never"

    outbox = Outbox(RecordingBot(), FAST)  # type: ignore[arg-type]
    outbox.start()
    future = outbox.enqueue(hangs, method="sendMessage", chat_id=CHAT, priority=Priority.FINAL)
    await started.wait()
    await outbox.close(0.05)
    with pytest.raises(OutboxClosed):
        await future
    assert outbox.stats.dropped == 1


async def test_an_unexpected_error_fails_that_call_and_the_worker_goes_on(
    bot_and_outbox: Any,
) -> None:
    bot, outbox = bot_and_outbox
    outbox.start()
    with pytest.raises(ValueError, match="bug"):
        await outbox.submit(
            bot.call("broken", error=ValueError("bug")),
            method="sendMessage",
            chat_id=CHAT,
            priority=Priority.FINAL,
        )
    assert (
        await outbox.submit(
            bot.call("next"), method="sendMessage", chat_id=CHAT, priority=Priority.FINAL
        )
        == "next"
    )


async def test_a_more_urgent_newer_call_joins_the_back_of_its_class(bot_and_outbox: Any) -> None:
    bot, outbox = bot_and_outbox
    outbox.enqueue(
        bot.call("edit v1"),
        method="sendMessage",
        chat_id=CHAT,
        priority=Priority.PROGRESS,
        key="m1",
    )
    final = outbox.enqueue(
        bot.call("final"), method="sendMessage", chat_id=CHAT, priority=Priority.FINAL
    )
    progress = outbox.enqueue(
        bot.call("other"), method="sendMessage", chat_id=CHAT, priority=Priority.PROGRESS
    )
    summary = outbox.enqueue(
        bot.call("summary"), method="sendMessage", chat_id=CHAT, priority=Priority.FINAL, key="m1"
    )
    outbox.start()
    await asyncio.gather(final, progress, summary)
    assert bot.log == ["final", "summary", "other"]


async def test_a_final_is_retried_through_a_long_outage_and_progress_is_not() -> None:
    clock = Clock(speedup=100)
    outbox = Outbox(RecordingBot(), FAST, clock=clock)  # type: ignore[arg-type]
    attempts: list[float] = []

    async def down_for_a_minute(_: Any) -> str:
        attempts.append(clock.now())
        if attempts[-1] - attempts[0] < 60.0:
            raise NetworkError("connection refused")
        return "delivered"

    async def progress(_: Any) -> str:
        raise NetworkError("connection refused")

    outbox.start()
    edit = outbox.enqueue(progress, method="sendMessage", chat_id=CHAT, priority=Priority.PROGRESS)
    assert await outbox.submit(
        down_for_a_minute, method="sendMessage", chat_id=CHAT, priority=Priority.FINAL
    ) == ("delivered")
    with pytest.raises(NetworkError):
        await edit
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert len(attempts) >= 6  # the old limit gave up after 4 attempts
    assert max(gaps) <= 30.0 + 1.0  # capped backoff
    await outbox.close(0.1)


async def test_a_rendered_call_is_built_when_it_goes_out_from_the_newest_state(
    bot_and_outbox: Any,
) -> None:
    bot, outbox = bot_and_outbox
    state = {"text": "v1"}
    renders: list[str] = []

    def render() -> Any:
        renders.append(state["text"])
        return bot.call(state["text"])

    done = outbox.enqueue_rendered(
        render, method="sendMessage", chat_id=CHAT, priority=Priority.PROGRESS, key="m"
    )
    state["text"] = "v3"  # changed after queueing, before sending
    outbox.start()
    assert await done == "v3"
    assert renders == ["v3"] and bot.log == ["v3"]


async def test_a_render_with_nothing_to_send_makes_no_call_and_uses_no_budget() -> None:
    bot = RecordingBot()
    outbox = Outbox(bot, Limits(per_chat_interval_s=0.0, group_per_minute=2))  # type: ignore[arg-type]
    outbox.start()
    try:
        for _ in range(5):
            skipped = outbox.enqueue_rendered(
                lambda: None, method="sendMessage", chat_id=CHAT, priority=Priority.FINAL
            )
            assert await skipped is None
        sent = [
            outbox.enqueue(
                bot.call(f"m{i}"), method="sendMessage", chat_id=CHAT, priority=Priority.FINAL
            )
            for i in (1, 2)
        ]
        await asyncio.wait_for(asyncio.gather(*sent), 1.0)
    finally:
        await outbox.close(0.5)
    assert bot.log == ["m1", "m2"]
    assert outbox.stats.calls == 2


async def test_a_failing_render_fails_only_its_own_call(bot_and_outbox: Any) -> None:
    bot, outbox = bot_and_outbox

    def broken() -> Any:
        raise RuntimeError("render bug")

    bad = outbox.enqueue_rendered(
        broken, method="sendMessage", chat_id=CHAT, priority=Priority.INTERACTIVE
    )
    good = outbox.enqueue(
        bot.call("next"), method="sendMessage", chat_id=CHAT, priority=Priority.INTERACTIVE
    )
    outbox.start()
    with pytest.raises(RuntimeError, match="render bug"):
        await bad
    assert await good == "next"
    assert outbox.stats.calls == 1
