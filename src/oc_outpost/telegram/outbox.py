"""The Outbox: the one way the bot writes to the Bot API.

Every send, edit, delete and topic operation is queued here. One worker drains the queue in
priority order (interactive > final answers > progress edits) while honouring Telegram's flood
limits: a minimum gap per chat, a rolling per-group minute budget shared by every topic of the
supergroup, and a global per-second budget. A newer edit of the same message replaces the queued
one in place, so progress edits of many topics take turns fairly. A 429 pauses that chat for
``retry_after`` and the call is retried; finals and interactive messages are never dropped.
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

from oc_outpost.core.ports import TopicGone

log = logging.getLogger(__name__)

Call = Callable[[Bot], Awaitable[Any]]


class Priority(IntEnum):
    INTERACTIVE = 0
    FINAL = 1
    PROGRESS = 2


class OutboxClosed(Exception):
    """The Outbox was shut down before the call could be made."""


@dataclass(frozen=True)
class Limits:
    per_chat_interval_s: float = 1.0
    group_per_minute: int = 20
    global_per_second: int = 30
    # Budget kept free in every rolling minute for approvals, command replies and final answers.
    progress_reserve: int = 4
    network_retries: int = 3


@dataclass
class OutboxStats:
    calls: int = 0
    retry_after: int = 0
    not_modified: int = 0
    plain_fallbacks: int = 0
    dropped: int = 0
    by_priority: dict[Priority, int] = field(default_factory=lambda: dict.fromkeys(Priority, 0))


@dataclass
class _Job:
    priority: Priority
    seq: int
    chat_id: int | None
    key: Hashable | None
    call: Call
    fallback: Call | None
    futures: list[asyncio.Future[Any]]
    attempts: int = 0


def _retry_after_seconds(exc: RetryAfter) -> float:
    with warnings.catch_warnings():  # PTB warns that the int form will become a timedelta
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _is(exc: TelegramError, text: str) -> bool:
    return text in exc.message.lower()


class Outbox:
    def __init__(
        self,
        bot: Bot,
        limits: Limits | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bot = bot
        self.limits = limits or Limits()
        self._clock = clock
        self._seq = itertools.count()
        self._jobs: list[_Job] = []
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._closing = False
        self._paused_until: dict[int | None, float] = {}
        self._last_sent: dict[int, float] = {}
        self._minute: dict[int, deque[float]] = {}
        self._second: deque[float] = deque()
        self.stats = OutboxStats()

    # --- public API -------------------------------------------------------------------------

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name="outbox")

    async def submit(
        self,
        call: Call,
        *,
        chat_id: int | None,
        priority: Priority,
        key: Hashable | None = None,
        fallback: Call | None = None,
    ) -> Any:
        """Queue a Bot API call and wait for its result."""
        return await self.enqueue(
            call, chat_id=chat_id, priority=priority, key=key, fallback=fallback
        )

    def enqueue(
        self,
        call: Call,
        *,
        chat_id: int | None,
        priority: Priority,
        key: Hashable | None = None,
        fallback: Call | None = None,
    ) -> asyncio.Future[Any]:
        """Queue a Bot API call; the future resolves with its result.

        With a ``key``, a call still queued under the same key is replaced in place (its waiters
        get the newer call's outcome), so only the latest edit of a message is ever sent.
        """
        if self._closing:
            raise OutboxClosed("the outbox is shutting down")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        queued = self._find(key) if key is not None else None
        if queued is not None:
            queued.call, queued.fallback = call, fallback
            queued.futures.append(future)
        else:
            job = _Job(priority, next(self._seq), chat_id, key, call, fallback, [future])
            self._jobs.append(job)
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

    def budget_used(self, chat_id: int) -> int:
        """Calls made to ``chat_id`` in the last rolling minute."""
        return len(self._trim(self._minute.get(chat_id, deque()), 60.0))

    async def close(self, flush_timeout_s: float = 10.0) -> None:
        """Stop taking calls, flush finals and interactive calls (bounded), drop the rest."""
        self._closing = True
        deadline = self._clock() + flush_timeout_s
        while self._clock() < deadline and any(j.priority < Priority.PROGRESS for j in self._jobs):
            self._wakeup.set()
            await asyncio.sleep(0.05)
        for job in self._jobs:
            self._fail(job, OutboxClosed("the outbox shut down before this call was made"))
            self.stats.dropped += 1
        self._jobs.clear()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    # --- scheduling -------------------------------------------------------------------------

    def _find(self, key: Hashable) -> _Job | None:
        return next((j for j in self._jobs if j.key == key), None)

    async def _run(self) -> None:
        while True:
            job, wait_s = self._next_ready()
            if job is None:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout=wait_s)
                continue
            self._jobs.remove(job)
            await self._execute(job)

    def _next_ready(self) -> tuple[_Job | None, float | None]:
        now = self._clock()
        soonest: float | None = None
        for job in sorted(self._jobs, key=lambda j: (j.priority, j.seq)):
            ready_at = self._ready_at(job, now)
            if ready_at <= now:
                return job, None
            soonest = ready_at if soonest is None else min(soonest, ready_at)
        return None, None if soonest is None else max(soonest - now, 0.001)

    def _ready_at(self, job: _Job, now: float) -> float:
        ready = max(self._paused_until.get(job.chat_id, 0.0), self._paused_until.get(None, 0.0))
        second = self._trim(self._second, 1.0)
        if len(second) >= self.limits.global_per_second:
            ready = max(ready, second[0] + 1.0)
        if job.chat_id is None:
            return ready
        last = self._last_sent.get(job.chat_id)
        if last is not None:
            ready = max(ready, last + self.limits.per_chat_interval_s)
        minute = self._trim(self._minute.setdefault(job.chat_id, deque()), 60.0)
        allowed = self.limits.group_per_minute
        if job.priority == Priority.PROGRESS:
            allowed = max(1, allowed - self.limits.progress_reserve)
        if len(minute) >= allowed:
            ready = max(ready, minute[len(minute) - allowed] + 60.0)
        return ready

    def _trim(self, stamps: deque[float], window_s: float) -> deque[float]:
        horizon = self._clock() - window_s
        while stamps and stamps[0] <= horizon:
            stamps.popleft()
        return stamps

    def _record_call(self, job: _Job) -> None:
        now = self._clock()
        self.stats.calls += 1
        self.stats.by_priority[job.priority] += 1
        self._second.append(now)
        if job.chat_id is not None:
            self._last_sent[job.chat_id] = now
            self._minute.setdefault(job.chat_id, deque()).append(now)

    # --- execution --------------------------------------------------------------------------

    async def _execute(self, job: _Job) -> None:
        self._record_call(job)
        try:
            result = await job.call(self._bot)
        except RetryAfter as exc:
            self._on_retry_after(job, _retry_after_seconds(exc))
        except BadRequest as exc:
            await self._on_bad_request(job, exc)
        except (TimedOut, NetworkError) as exc:
            self._on_network_error(job, exc)
        except TelegramError as exc:
            log.warning("Bot API call failed: %s", exc.message)
            self._fail(job, exc)
        else:
            self._succeed(job, result)

    def _on_retry_after(self, job: _Job, seconds: float) -> None:
        self.stats.retry_after += 1
        log.warning(
            "Telegram asked to wait %.0f s (chat %s); the call will be retried",
            seconds,
            job.chat_id,
        )
        self._paused_until[job.chat_id] = self._clock() + seconds
        self._requeue(job)

    async def _on_bad_request(self, job: _Job, exc: BadRequest) -> None:
        if _is(exc, "message is not modified"):
            self.stats.not_modified += 1
            self._succeed(job, None)
        elif _is(exc, "message thread not found"):
            self._fail(job, TopicGone(f"message thread not found in chat {job.chat_id}"))
        elif _is(exc, "can't parse entities") and job.fallback is not None:
            log.warning("Bot API rejected formatting (%s); sending plain text", exc.message)
            self.stats.plain_fallbacks += 1
            job.call, job.fallback = job.fallback, None
            self._requeue(job)
        else:
            self._fail(job, exc)

    def _on_network_error(self, job: _Job, exc: TelegramError) -> None:
        job.attempts += 1
        if job.priority == Priority.PROGRESS or job.attempts > self.limits.network_retries:
            log.warning("Bot API call failed after %d attempt(s): %s", job.attempts, exc.message)
            self._fail(job, exc)
            return
        self._paused_until[job.chat_id] = self._clock() + float(job.attempts)
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
