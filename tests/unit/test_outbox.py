"""Outbox scheduling with an in-process recording bot (the end-to-end tests use the HTTP fake)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from telegram.error import BadRequest, RetryAfter

from oc_outpost.core.ports import TopicGone
from oc_outpost.telegram.outbox import Limits, Outbox, OutboxClosed, Priority

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
        outbox.enqueue(bot.call(f"edit{i}"), chat_id=CHAT, priority=Priority.PROGRESS)
        for i in range(20)
    ]
    approval = outbox.enqueue(bot.call("approval"), chat_id=CHAT, priority=Priority.INTERACTIVE)
    outbox.start()
    await asyncio.gather(approval, *edits)
    assert bot.log[0] == "approval"
    assert bot.log[1:] == [f"edit{i}" for i in range(20)]


async def test_final_answers_go_before_progress(bot_and_outbox: Any) -> None:
    bot, outbox = bot_and_outbox
    progress = outbox.enqueue(bot.call("progress"), chat_id=CHAT, priority=Priority.PROGRESS)
    final = outbox.enqueue(bot.call("final"), chat_id=CHAT, priority=Priority.FINAL)
    outbox.start()
    await asyncio.gather(progress, final)
    assert bot.log == ["final", "progress"]


async def test_newer_edit_replaces_queued_one_and_answers_both_waiters(bot_and_outbox: Any) -> None:
    bot, outbox = bot_and_outbox
    first = outbox.enqueue(bot.call("v1"), chat_id=CHAT, priority=Priority.PROGRESS, key="m1")
    other = outbox.enqueue(bot.call("other"), chat_id=CHAT, priority=Priority.PROGRESS, key="m2")
    second = outbox.enqueue(bot.call("v2"), chat_id=CHAT, priority=Priority.PROGRESS, key="m1")
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
    result = await outbox.submit(flaky, chat_id=CHAT, priority=Priority.FINAL)
    assert result == "sent"
    assert len(attempts) == 2
    assert attempts[1] - attempts[0] >= 0.19
    assert outbox.stats.retry_after == 1


async def test_not_modified_counts_as_success(bot_and_outbox: Any) -> None:
    bot, outbox = bot_and_outbox
    outbox.start()
    error = BadRequest("Message is not modified: specified new message content is the same")
    result = await outbox.submit(
        bot.call("edit", error=error), chat_id=CHAT, priority=Priority.PROGRESS
    )
    assert result is None
    assert outbox.stats.not_modified == 1


async def test_parse_error_falls_back_to_plain_text(bot_and_outbox: Any) -> None:
    bot, outbox = bot_and_outbox
    outbox.start()
    error = BadRequest("Can't parse entities: unsupported start tag")
    result = await outbox.submit(
        bot.call("fancy", error=error),
        chat_id=CHAT,
        priority=Priority.FINAL,
        fallback=bot.call("plain"),
    )
    assert result == "plain"
    assert bot.log == ["fancy", "plain"]


async def test_thread_not_found_raises_topic_gone(bot_and_outbox: Any) -> None:
    bot, outbox = bot_and_outbox
    outbox.start()
    with pytest.raises(TopicGone):
        await outbox.submit(
            bot.call("send", error=BadRequest("Message thread not found")),
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
        outbox.enqueue(bot.call(f"m{i}"), chat_id=CHAT, priority=Priority.FINAL) for i in range(3)
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
        outbox.enqueue(bot.call(f"p{i}"), chat_id=CHAT, priority=Priority.PROGRESS)
        for i in range(3)
    ]
    await asyncio.sleep(0.1)
    assert bot.log == ["p0", "p1"]  # the third slot of the minute is kept back
    final = await outbox.submit(bot.call("final"), chat_id=CHAT, priority=Priority.FINAL)
    assert final == "final"
    await outbox.close(0.1)
    assert progress[2].done()


async def test_close_flushes_finals_and_drops_progress() -> None:
    bot = RecordingBot()
    outbox = Outbox(bot, Limits(per_chat_interval_s=0.05))  # type: ignore[arg-type]
    progress = outbox.enqueue(bot.call("progress"), chat_id=CHAT, priority=Priority.PROGRESS)
    finals = [
        outbox.enqueue(bot.call(f"final{i}"), chat_id=CHAT, priority=Priority.FINAL)
        for i in range(3)
    ]
    outbox.start()
    await outbox.close(5.0)
    assert [await f for f in finals] == ["final0", "final1", "final2"]
    assert "progress" not in bot.log
    assert progress.done()
    with pytest.raises(OutboxClosed):
        outbox.enqueue(bot.call("late"), chat_id=CHAT, priority=Priority.FINAL)


async def test_discard_withdraws_a_queued_call(bot_and_outbox: Any) -> None:
    bot, outbox = bot_and_outbox
    future = outbox.enqueue(bot.call("send"), chat_id=CHAT, priority=Priority.PROGRESS, key="k")
    assert outbox.discard("k") is True
    assert outbox.discard("k") is False
    outbox.start()
    await asyncio.sleep(0.05)
    assert future.cancelled()
    assert bot.log == []
