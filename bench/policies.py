"""The two baselines the benchmark compares the Outbox with.

Both plug into ``TelegramChat`` where the Outbox does (same ``enqueue``/``submit``/``discard``),
so every policy drives the same view code, the same PTB ``Bot`` and the same fake Bot API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Hashable
from dataclasses import dataclass, field
from typing import Any

from telegram import Bot
from telegram.error import BadRequest, RetryAfter, TelegramError

from oc_outpost.telegram.outbox import (
    Call,
    Clock,
    Limits,
    Outbox,
    OutboxClosed,
    Priority,
    retry_after_seconds,
)

log = logging.getLogger(__name__)


class GaveUp(Exception):
    """A call still refused with 429 after every retry: the message is lost."""


class GlobalQueueOutbox(Outbox):
    """ "One global queue, 1 call per 3 s": every call in arrival order, no priorities.

    A newer edit of a queued message still replaces it in place (without that the queue grows
    without bound). 20 calls a minute is exactly Telegram's group budget, so it never floods.
    """

    def __init__(self, bot: Bot, *, clock: Clock, interval_s: float = 3.0) -> None:
        unlimited = 10**9
        limits = Limits(
            per_chat_interval_s=interval_s,
            group_per_minute=unlimited,
            global_per_second=unlimited,
            progress_reserve=0,
            min_edit_interval_s=0.0,
        )
        super().__init__(bot, limits, clock=clock)

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
        # One class for everything: the queue is served strictly in arrival order.
        return super().enqueue(
            call,
            method=method,
            chat_id=chat_id,
            priority=Priority.FINAL,
            key=key,
            fallback=fallback,
        )


@dataclass
class _Latest:
    call: Call
    futures: list[asyncio.Future[Any]] = field(default_factory=list)


class FixedIntervalOutbox(Outbox):
    """ "Fixed 2 s edits per topic, no shared budget": what earlier streaming bots did.

    Each progress message has its own timer: its latest text is sent at once, then at most
    every ``edit_interval_s``. Everything else is sent immediately and concurrently. Nothing is
    shared between topics; ``retry_after`` is honoured only after a 429 was received (that
    message's timer, or that call, waits it out; a final is retried ``retries`` times).
    """

    def __init__(
        self, bot: Bot, *, clock: Clock, edit_interval_s: float = 2.0, retries: int = 3
    ) -> None:
        super().__init__(bot, clock=clock)
        self._edit_interval_s = edit_interval_s
        self._retries = retries
        self._latest: dict[Hashable, _Latest] = {}
        self._tickers: dict[Hashable, asyncio.Task[None]] = {}
        self._urgent: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Nothing to start: every call runs in its own task."""

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
        if self._closing:
            raise OutboxClosed("the outbox is shutting down")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if priority == Priority.PROGRESS and key is not None:
            latest = self._latest.setdefault(key, _Latest(call))
            latest.call = call
            latest.futures.append(future)
            if key not in self._tickers:
                self._tickers[key] = asyncio.create_task(self._tick(key))
        else:
            self._spawn_urgent(self._send_with_retries(call, future))
        return future

    def discard(self, key: Hashable) -> bool:
        latest = self._latest.pop(key, None)
        if latest is None:
            return False
        for future in latest.futures:
            future.cancel()
        return True

    def pending(self) -> int:
        return len(self._latest) + len(self._urgent)

    async def close(self, flush_timeout_s: float = 10.0) -> None:
        self._closing = True
        if self._urgent:
            await asyncio.wait(list(self._urgent), timeout=flush_timeout_s)
        tasks = [*self._urgent, *self._tickers.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for latest in self._latest.values():
            for future in latest.futures:
                if not future.done():
                    future.set_exception(OutboxClosed("closed"))
        self._latest.clear()

    def _spawn_urgent(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._urgent.add(task)
        task.add_done_callback(self._urgent.discard)

    async def _tick(self, key: Hashable) -> None:
        try:
            while (latest := self._latest.pop(key, None)) is not None:
                wait_s = await self._attempt(latest.call, latest.futures)
                if wait_s is not None and key not in self._latest:
                    self._latest[key] = latest  # nothing newer: this text is still to be shown
                await self.clock.sleep(max(self._edit_interval_s, wait_s or 0.0))
        finally:
            self._tickers.pop(key, None)

    async def _send_with_retries(self, call: Call, future: asyncio.Future[Any]) -> None:
        for _ in range(1 + self._retries):
            wait_s = await self._attempt(call, [future])
            if wait_s is None:
                return
            await self.clock.sleep(wait_s)
        if not future.done():
            future.set_exception(GaveUp(f"still 429 after {self._retries} retries"))

    async def _attempt(self, call: Call, futures: list[asyncio.Future[Any]]) -> float | None:
        """Make the call once; resolve the futures unless a 429 says when to try again."""
        try:
            result = await call(self._bot)
        except RetryAfter as exc:
            self.stats.retry_after += 1
            return retry_after_seconds(exc)
        except BadRequest as exc:
            result = None
            if "not modified" not in exc.message.lower():
                _settle(futures, error=exc)
                return None
        except TelegramError as exc:
            _settle(futures, error=exc)
            return None
        finally:
            self.stats.calls += 1
        _settle(futures, result=result)
        return None


def _settle(
    futures: list[asyncio.Future[Any]], *, result: Any = None, error: Exception | None = None
) -> None:
    for future in futures:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
