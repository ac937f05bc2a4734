"""The Outbox: the one way the bot writes to the Bot API.

Every send, edit, delete and topic operation is queued here. One worker drains the queue in
priority order (interactive > final answers > progress edits) while honouring Telegram's flood
limits: a minimum gap per chat, a rolling per-group minute budget shared by every topic of the
supergroup, and a global per-second budget. A 429 pauses that chat for ``retry_after`` and the
call is retried; finals and interactive messages are never dropped.

Progress edits get what the group budget leaves after a reserve for what matters more:

* **Reserve.** In every rolling minute, progress may not use the last ``reserve`` calls, where the
  reserve grows with the number of progress streams in flight (each will soon need its final
  answer). When every turn goes idle at once, their finals find free calls and go out back to
  back instead of waiting for old progress edits to leave the window.
* **Round-robin.** A newer edit of the same message replaces the queued one in place, and a
  message edited just now re-enters at the back of the queue, so FIFO order takes the streams in
  turn: with N streams each gets 1/N of the progress budget.
* **Pacing.** Two edits of one progress message are at least ``60 s × streams / progress budget``
  apart (never less than ``min_edit_interval_s``), so the edits of each message are spread evenly
  over the minute instead of bursting until the budget is gone and then freezing.

A call can also be queued as a *render* (:meth:`Outbox.enqueue_rendered`): a function that builds
the call only when it is about to be made, from the newest state, or returns None when there is
nothing new to send. A live progress message is queued once and drawn once per edit, however many
events arrived in between.

Time is Telegram time (:class:`Clock`), which tests and the benchmark may run faster than the
wall clock; every limit and ``retry_after`` then scales by the same factor.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import warnings
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from datetime import timedelta
from enum import IntEnum
from typing import Any

from telegram import Bot
from telegram.error import BadRequest, NetworkError, RetryAfter, TelegramError, TimedOut
from telegram.warnings import PTBDeprecationWarning

from oc_outpost.core.chat import TopicGone
from oc_outpost.metrics import Metrics

log = logging.getLogger(__name__)

Call = Callable[[Bot], Awaitable[Any]]
Render = Callable[[], Call | None]

MINUTE_S = 60.0
SECOND_S = 1.0
_KEY_MEMORY_S = 600.0  # how long the time of a message's last edit is remembered
_KEY_MEMORY_SIZE = 512  # prune those memories once there are this many
# 400s that plain text would get just the same: no point in the plain-text fallback for these.
# Any other 400 on a call with a fallback may be about its entities: Telegram refuses a bad
# entity with its own text (e.g. "entity URL '…' is invalid: Wrong HTTP URL", ENTITIES_TOO_LONG),
# not only with "can't parse entities".
_NOT_ABOUT_FORMATTING = (
    "message to edit not found",
    "message can't be edited",
    "message is too long",
    "message_too_long",
    "chat not found",
    "topic_closed",
    "not enough rights",
)


class Priority(IntEnum):
    INTERACTIVE = 0
    FINAL = 1
    PROGRESS = 2
    # Glance views (topic icons, the board in General): after everything else, even progress,
    # in the progress share of the budget, dropped on network errors like progress.
    BACKGROUND = 3


class OutboxClosed(Exception):
    """The Outbox was shut down before the call could be made."""


@dataclass(frozen=True)
class Clock:
    """Telegram time as the Outbox budgets it: limits and ``retry_after`` are in its seconds.

    ``speedup`` > 1 compresses time for tests and the benchmark: a Telegram second then lasts
    1/speedup of a wall second, so every limit scales down by the same factor. A fake Bot API
    must then count with the same ``now``.
    """

    speedup: float = 1.0

    def now(self) -> float:
        return time.monotonic() * self.speedup

    def to_wall(self, seconds: float) -> float:
        return seconds / self.speedup

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(self.to_wall(seconds))


@dataclass(frozen=True)
class Limits:
    per_chat_interval_s: float = 1.0
    group_per_minute: int = 20
    global_per_second: int = 30
    # Calls of every rolling minute that progress edits may not use: this many, or one per
    # progress stream in flight if that is more (each stream will need a call for its final
    # answer), but never more than half the minute, so progress always moves.
    progress_reserve: int = 4
    # Floor for the pause between two edits of the same progress message.
    min_edit_interval_s: float = 2.0
    # Network errors: a final answer or an interactive message is retried until it is delivered
    # (pausing 1, 2, 4 … s, at most this long); a progress edit is dropped (a newer one follows).
    network_backoff_cap_s: float = 30.0


@dataclass
class OutboxStats:
    calls: int = 0
    retry_after: int = 0
    not_modified: int = 0
    plain_fallbacks: int = 0
    dropped: int = 0
    by_priority: dict[Priority, int] = field(default_factory=lambda: dict.fromkeys(Priority, 0))


@dataclass(frozen=True)
class ProgressPolicy:
    """How progress edits may use the budget right now (derived from the streams in flight)."""

    streams: int
    per_minute: int  # progress calls allowed in a chat's rolling minute
    edit_interval_s: float  # minimum pause between two calls for the same message


@dataclass
class _Job:
    priority: Priority
    seq: int
    chat_id: int | None
    method: str  # the Bot API method, for the metrics
    key: Hashable | None
    call: Call | None
    render: Render | None  # builds the call when it is made (then `call` is None)
    fallback: Call | None
    futures: list[asyncio.Future[Any]]
    attempts: int = 0

    def update(self, call: Call | None, render: Render | None, fallback: Call | None) -> None:
        self.call, self.render, self.fallback = call, render, fallback


def retry_after_seconds(exc: RetryAfter) -> float:
    with warnings.catch_warnings():  # PTB warns that the int form will become a timedelta
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _is(exc: TelegramError, text: str) -> bool:
    return text in exc.message.lower()


def _trim(stamps: deque[float], now: float, window_s: float) -> deque[float]:
    while stamps and stamps[0] <= now - window_s:
        stamps.popleft()
    return stamps


class Outbox:
    def __init__(
        self,
        bot: Bot,
        limits: Limits | None = None,
        *,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._bot = bot
        self.limits = limits or Limits()
        self.clock = clock or Clock()
        self._seq = itertools.count()
        self._jobs: list[_Job] = []
        self._inflight: _Job | None = None
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._closing = False
        self._paused_until: dict[int | None, float] = {}
        self._last_sent: dict[int, float] = {}
        self._minute: dict[int, deque[float]] = {}
        self._second: deque[float] = deque()
        self._key_sent: dict[Hashable, float] = {}
        # (time, progress calls queued) samples, kept only while they can be the minute's peak.
        self._stream_peaks: deque[tuple[float, int]] = deque()
        self.stats = OutboxStats()
        self._metrics = metrics or Metrics()
        for priority in Priority:
            self._metrics.watch_queue_depth(priority.name.lower(), self._depth_of(priority))

    # --- public API -------------------------------------------------------------------------

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name="outbox")

    async def submit(
        self,
        call: Call,
        *,
        method: str,
        chat_id: int | None,
        priority: Priority,
        key: Hashable | None = None,
        fallback: Call | None = None,
    ) -> Any:
        """Queue a Bot API call (``method`` names it) and wait for its result."""
        return await self.enqueue(
            call, method=method, chat_id=chat_id, priority=priority, key=key, fallback=fallback
        )

    def enqueue(
        self,
        call: Call,
        *,
        method: str,
        chat_id: int | None,
        priority: Priority,
        key: Hashable | None = None,
        fallback: Call | None = None,
    ) -> asyncio.Future[Any]:
        """Queue a Bot API call (``method`` names it); the future resolves with its result.

        With a ``key``, a call still queued under the same key is replaced in place (its waiters
        get the newer call's outcome), so only the latest edit of a message is ever sent. If the
        newer call is more urgent, the job moves to the back of that more urgent class instead.
        """
        return self._enqueue(call, None, method, chat_id, priority, key, fallback)

    def enqueue_rendered(
        self,
        render: Render,
        *,
        method: str,
        chat_id: int | None,
        priority: Priority,
        key: Hashable | None = None,
    ) -> asyncio.Future[Any]:
        """Queue a call that ``render`` builds just before it is made (again for a retry), so
        it carries the newest state; if ``render`` returns None, no call is made and the future
        resolves with None. Keys replace queued calls as for :meth:`enqueue`."""
        return self._enqueue(None, render, method, chat_id, priority, key, None)

    def _enqueue(
        self,
        call: Call | None,
        render: Render | None,
        method: str,
        chat_id: int | None,
        priority: Priority,
        key: Hashable | None,
        fallback: Call | None,
    ) -> asyncio.Future[Any]:
        if self._closing:
            raise OutboxClosed("the outbox is shutting down")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        queued = self._find(key) if key is not None else None
        if queued is not None:
            queued.update(call, render, fallback)
            queued.futures.append(future)
            if priority < queued.priority:  # e.g. a progress message's closing summary
                queued.priority, queued.seq = priority, next(self._seq)
        else:
            job = _Job(
                priority, next(self._seq), chat_id, method, key, call, render, fallback, [future]
            )
            self._jobs.append(job)
            if priority == Priority.PROGRESS:
                self._note_streams()
        self._wakeup.set()
        return future

    def discard(self, key: Hashable) -> bool:
        """Withdraw the call queued under ``key``; True if one was still waiting."""
        job = self._find(key)
        if job is None:
            return False
        self._jobs.remove(job)
        for future in job.futures:
            future.cancel()
        return True

    def pending(self) -> int:
        return len(self._jobs)

    def _depth_of(self, priority: Priority) -> Callable[[], int]:
        return lambda: sum(1 for job in self._jobs if job.priority == priority)

    def budget_used(self, chat_id: int) -> int:
        """Calls made to ``chat_id`` in the last rolling minute."""
        return len(_trim(self._minute.get(chat_id, deque()), self.clock.now(), MINUTE_S))

    def progress_policy(self) -> ProgressPolicy:
        """The current share of progress edits (for /status and tests)."""
        return self._progress_policy(self.clock.now())

    async def close(self, flush_timeout_s: float = 10.0) -> None:
        """Stop taking calls, flush finals and interactive calls, drop the rest.

        The flush is bounded by ``flush_timeout_s`` of wall time: shutting down must not wait
        out a long ``retry_after``.
        """
        self._closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + flush_timeout_s
        while self._worker is not None and loop.time() < deadline and self._must_flush():
            self._wakeup.set()
            await asyncio.sleep(0.01)
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        unsent = [*self._jobs, *([self._inflight] if self._inflight else [])]
        for job in unsent:
            self._fail(job, OutboxClosed("the outbox shut down before this call was made"))
            self.stats.dropped += 1
        self._jobs.clear()
        self._inflight = None

    def _must_flush(self) -> bool:
        urgent = any(j.priority < Priority.PROGRESS for j in self._jobs)
        return urgent or self._inflight is not None

    # --- scheduling -------------------------------------------------------------------------

    def _find(self, key: Hashable) -> _Job | None:
        return next((j for j in self._jobs if j.key == key), None)

    async def _run(self) -> None:
        while True:
            job, wait_s = self._next_ready()
            if job is None:
                self._wakeup.clear()
                timeout = None if wait_s is None else self.clock.to_wall(wait_s)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout=timeout)
                continue
            self._jobs.remove(job)
            self._inflight = job
            await self._execute(job)
            self._inflight = None

    def _next_ready(self) -> tuple[_Job | None, float | None]:
        """The first job in (priority, arrival) order that the limits allow now, or how long
        to wait until one might be allowed."""
        now = self.clock.now()
        policy = self._progress_policy(now)
        soonest: float | None = None
        for job in sorted(self._jobs, key=lambda j: (j.priority, j.seq)):
            ready_at = self._ready_at(job, now, policy)
            if ready_at <= now:
                return job, None
            soonest = ready_at if soonest is None else min(soonest, ready_at)
        return None, None if soonest is None else max(soonest - now, 0.001)

    def _ready_at(self, job: _Job, now: float, policy: ProgressPolicy) -> float:
        ready = max(self._pause_end(job.chat_id), self._global_slot(now))
        if job.chat_id is None:
            return ready
        ready = max(ready, self._chat_gap_end(job.chat_id))
        if job.priority < Priority.PROGRESS:
            return max(ready, self._minute_slot(job.chat_id, now, self.limits.group_per_minute))
        ready = max(ready, self._minute_slot(job.chat_id, now, policy.per_minute))
        return max(ready, self._edit_interval_end(job.key, policy))

    def _pause_end(self, chat_id: int | None) -> float:
        return max(self._paused_until.get(chat_id, 0.0), self._paused_until.get(None, 0.0))

    def _global_slot(self, now: float) -> float:
        second = _trim(self._second, now, SECOND_S)
        if len(second) < self.limits.global_per_second:
            return 0.0
        return second[len(second) - self.limits.global_per_second] + SECOND_S

    def _chat_gap_end(self, chat_id: int) -> float:
        last = self._last_sent.get(chat_id)
        return 0.0 if last is None else last + self.limits.per_chat_interval_s

    def _minute_slot(self, chat_id: int, now: float, allowed: int) -> float:
        """When the rolling minute has room for one more call if ``allowed`` may be in it."""
        minute = _trim(self._minute.setdefault(chat_id, deque()), now, MINUTE_S)
        if len(minute) < allowed:
            return 0.0
        return minute[len(minute) - allowed] + MINUTE_S

    def _edit_interval_end(self, key: Hashable | None, policy: ProgressPolicy) -> float:
        last = self._key_sent.get(key) if key is not None else None
        return 0.0 if last is None else last + policy.edit_interval_s

    # --- progress share ---------------------------------------------------------------------

    def _note_streams(self) -> None:
        """Sample how many progress calls are queued (one per stream wanting a refresh)."""
        now = self.clock.now()
        count = sum(1 for j in self._jobs if j.priority == Priority.PROGRESS)
        peaks = self._stream_peaks
        while peaks and peaks[-1][1] <= count:  # a smaller older sample can never be the peak
            peaks.pop()
        peaks.append((now, count))

    def _streams(self, now: float) -> int:
        """Progress streams in flight: the most progress calls queued at once this minute.

        A stream whose edit was just sent has nothing queued until its next event; the peak
        over a minute keeps the estimate (and so the reserve) from dipping in that moment.
        """
        peaks = self._stream_peaks
        while peaks and peaks[0][0] <= now - MINUTE_S:
            peaks.popleft()
        return max(1, peaks[0][1]) if peaks else 1

    def _progress_policy(self, now: float) -> ProgressPolicy:
        limits = self.limits
        streams = self._streams(now)
        reserve = max(limits.progress_reserve, min(streams, limits.group_per_minute // 2))
        per_minute = max(1, limits.group_per_minute - reserve)
        interval = max(limits.min_edit_interval_s, MINUTE_S * streams / per_minute)
        return ProgressPolicy(streams, per_minute, interval)

    # --- execution --------------------------------------------------------------------------

    async def _execute(self, job: _Job) -> None:
        call = self._call_of(job)
        if call is None:
            return
        try:
            result = await call(self._bot)
        except Exception as exc:  # noqa: BLE001 - handled per kind below; the worker must go on
            self._record_call(job)
            self._on_error(job, exc)
        else:
            self._record_call(job)
            self._succeed(job, result)

    def _call_of(self, job: _Job) -> Call | None:
        """The job's call, rendered now if it is a render; None when the job is settled
        without a call (nothing to send, or the render failed)."""
        if job.render is None:
            return job.call
        try:
            call = job.render()
        except Exception as exc:  # a faulty render fails its own job only, not the worker
            log.error("building a Bot API call failed (chat %s)", job.chat_id, exc_info=exc)
            self._fail(job, exc)
            return None
        if call is None:
            self._succeed(job, None)  # nothing new to show: no call, no budget used
        return call

    def _on_error(self, job: _Job, exc: Exception) -> None:
        match exc:  # most specific first: RetryAfter and BadRequest are NetworkErrors in PTB
            case RetryAfter():
                self._on_retry_after(job, retry_after_seconds(exc))
            case BadRequest():
                self._on_bad_request(job, exc)
            case TimedOut() | NetworkError():
                self._on_network_error(job, exc)
            case TelegramError():
                log.warning("Bot API call failed: %s", exc.message)
                self._fail(job, exc)
            case _:
                log.error("Bot API call raised unexpectedly (chat %s)", job.chat_id, exc_info=exc)
                self._fail(job, exc)

    def _record_call(self, job: _Job) -> None:
        """Count a finished call against the limits.

        The stamp is taken when the answer arrives, not when the request left: Telegram counted
        the call somewhere in between, so gaps measured from the answer are never shorter on
        Telegram's side, however the network delay varies.
        """
        now = self.clock.now()
        self.stats.calls += 1
        self.stats.by_priority[job.priority] += 1
        self._metrics.bot_api_call(job.method)
        self._second.append(now)
        if job.chat_id is not None:
            self._last_sent[job.chat_id] = now
            self._minute.setdefault(job.chat_id, deque()).append(now)
        if job.key is not None and job.priority == Priority.PROGRESS:
            self._remember_edit(job.key, now)

    def _remember_edit(self, key: Hashable, now: float) -> None:
        self._key_sent[key] = now
        if len(self._key_sent) > _KEY_MEMORY_SIZE:
            horizon = now - _KEY_MEMORY_S
            self._key_sent = {k: t for k, t in self._key_sent.items() if t > horizon}

    def _on_retry_after(self, job: _Job, seconds: float) -> None:
        self.stats.retry_after += 1
        self._metrics.bot_api_retry_after(job.method)
        log.warning(
            "Telegram asked to wait %.0f s (chat %s); the call will be retried",
            seconds,
            job.chat_id,
        )
        self._paused_until[job.chat_id] = self.clock.now() + seconds
        self._requeue(job)

    def _on_bad_request(self, job: _Job, exc: BadRequest) -> None:
        if _is(exc, "message is not modified"):
            self.stats.not_modified += 1
            self._succeed(job, None)
        elif _is(exc, "message thread not found"):
            self._fail(job, TopicGone(f"message thread not found in chat {job.chat_id}"))
        elif job.fallback is not None and not any(_is(exc, t) for t in _NOT_ABOUT_FORMATTING):
            log.warning("Bot API refused the message (%s); sending it as plain text", exc.message)
            self.stats.plain_fallbacks += 1
            job.update(job.fallback, None, None)
            self._requeue(job)
        else:
            self._fail(job, exc)

    def _on_network_error(self, job: _Job, exc: TelegramError) -> None:
        job.attempts += 1
        if job.priority >= Priority.PROGRESS:
            log.warning("progress update not sent: %s", exc.message)
            self._fail(job, exc)
            return
        pause = min(2.0 ** (job.attempts - 1), self.limits.network_backoff_cap_s)
        log.warning(
            "Bot API unreachable (%s, attempt %d); retrying in %.0f s",
            exc.message,
            job.attempts,
            pause,
        )
        self._paused_until[job.chat_id] = self.clock.now() + pause
        self._requeue(job)

    def _requeue(self, job: _Job) -> None:
        newer = self._find(job.key) if job.key is not None else None
        if newer is not None:  # a newer edit arrived meanwhile; it answers our waiters too
            newer.futures.extend(job.futures)
        else:
            self._jobs.append(job)
        self._wakeup.set()

    @staticmethod
    def _succeed(job: _Job, result: Any) -> None:
        for future in job.futures:
            if not future.done():
                future.set_result(result)

    @staticmethod
    def _fail(job: _Job, exc: BaseException) -> None:
        for future in job.futures:
            if not future.done():
                future.set_exception(exc)
