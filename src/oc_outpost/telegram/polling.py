"""Getting updates from Telegram so that each is handled exactly once, across kill -9.

python-telegram-bot's Updater acknowledges a batch (the next getUpdates offset) right after
queueing it: a bot killed while handling loses those updates for good. This poller instead

1. fetches a batch, naming the update types it wants (the server would keep an old list),
2. stores the new updates in the inbox together with the offset after them, in one write,
3. only then polls again, which acknowledges the batch to Telegram, while the updates are
   handled concurrently (a slow one never holds back a Stop press),
4. removes an update from the inbox once it is handled: its handlers ran and the work they
   started finished.

At start, updates left in the inbox (received, not handled when the bot stopped or died) are
handled first, and polling resumes at the stored offset; Telegram drops everything below it,
so what was stored never comes twice. Killed after getUpdates answered but before the write,
the batch was not acknowledged and Telegram sends it again. The one remaining window: killed
after an update was handled but before its row is deleted (one database write), it is handled
again at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from telegram import Bot, Update
from telegram.error import Conflict, InvalidToken, RetryAfter, TelegramError

from oc_outpost.model import ReceivedUpdate
from oc_outpost.telegram.outbox import retry_after_seconds

log = logging.getLogger(__name__)

# Only what the handlers serve; edits, reactions and member updates stay on Telegram's side.
ALLOWED_UPDATES = ("message", "callback_query")

Sleep = Callable[[float], Awaitable[None]]
Handle = Callable[[Update], Awaitable[None]]


class Inbox(Protocol):
    async def offset(self) -> int | None: ...

    async def receive(self, updates: Sequence[ReceivedUpdate], next_offset: int) -> None: ...

    async def handled(self, update_id: int) -> None: ...

    async def pending(self) -> list[ReceivedUpdate]: ...


@dataclass(frozen=True)
class PollingConfig:
    timeout_s: int = 10  # long-poll duration
    allowed_updates: tuple[str, ...] = ALLOWED_UPDATES
    first_retry_s: float = 1.0  # after a failed poll; doubles up to max_retry_s
    max_retry_s: float = 30.0


class UpdatePoller:
    def __init__(
        self,
        bot: Bot,
        inbox: Inbox,
        handle: Handle,
        config: PollingConfig | None = None,
        *,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._bot = bot
        self._inbox = inbox
        self._handle = handle
        self._config = config or PollingConfig()
        self._sleep = sleep
        self._offset: int | None = None
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._loop: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Handle what the last run left unhandled, then poll from the stored offset."""
        self._offset = await self._inbox.offset()
        left = await self._inbox.pending()
        if left:
            log.info("handling %d Telegram update(s) left from the last run", len(left))
        for received in left:
            try:
                update = Update.de_json(json.loads(received.data), self._bot)
            except (ValueError, TypeError, KeyError):
                log.exception("update %s in the inbox is unreadable; dropped", received.update_id)
                await self._inbox.handled(received.update_id)
                continue
            self._spawn(update)
        self._loop = asyncio.create_task(self._poll_forever(), name="telegram-poller")

    async def stop(self) -> None:
        """Stop polling; wait for the updates being handled (their work included)."""
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None
        if self._inflight:
            await asyncio.wait(list(self._inflight.values()))

    @property
    def running(self) -> bool:
        return self._loop is not None and not self._loop.done()

    # --- polling ----------------------------------------------------------------------------

    async def _poll_forever(self) -> None:
        delay = self._config.first_retry_s
        while True:
            try:
                await self._poll_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a failed poll is retried, never fatal
                wait = self._wait_after(exc, delay)
                delay = min(delay * 2, self._config.max_retry_s)
                await self._sleep(wait)
            else:
                delay = self._config.first_retry_s

    def _wait_after(self, exc: Exception, delay: float) -> float:
        if isinstance(exc, RetryAfter):
            wait = retry_after_seconds(exc)
            log.warning("getUpdates: Telegram asked to wait %.0f s", wait)
            return wait
        if isinstance(exc, InvalidToken):
            log.critical("getUpdates: Telegram refused the bot token (revoked?); retrying")
            return self._config.max_retry_s
        if isinstance(exc, Conflict):
            log.error("getUpdates refused: %s (is another copy of the bot running?)", exc.message)
        elif isinstance(exc, TelegramError):
            log.warning("getUpdates failed: %s; retrying in %.1f s", exc.message, delay)
        else:  # e.g. the inbox could not be written: the batch is not acknowledged, it comes again
            log.error("receiving updates failed; retrying in %.1f s", delay, exc_info=exc)
        return delay

    async def _poll_once(self) -> None:
        updates = await self._bot.get_updates(
            offset=self._offset,
            timeout=self._config.timeout_s,
            allowed_updates=list(self._config.allowed_updates),
        )
        if not updates:
            return
        next_offset = max(u.update_id for u in updates) + 1
        fresh = [u for u in updates if self._is_new(u.update_id)]
        await self._inbox.receive(
            [ReceivedUpdate(u.update_id, json.dumps(u.to_dict())) for u in fresh], next_offset
        )
        self._offset = next_offset  # the next poll acknowledges this batch
        for update in fresh:
            self._spawn(update)

    def _is_new(self, update_id: int) -> bool:
        below = self._offset is not None and update_id < self._offset
        return not below and update_id not in self._inflight

    # --- handling ---------------------------------------------------------------------------

    def _spawn(self, update: Update) -> None:
        task = asyncio.create_task(self._handle_once(update), name=f"update-{update.update_id}")
        self._inflight[update.update_id] = task
        task.add_done_callback(lambda _: self._inflight.pop(update.update_id, None))

    async def _handle_once(self, update: Update) -> None:
        try:
            await self._handle(update)
        except Exception:  # handled once means once, even when it failed
            log.exception("handling update %s failed", update.update_id)
        try:
            await self._inbox.handled(update.update_id)
        except Exception:  # the update was handled; only the record is missing
            log.exception("update %s was handled but not recorded so", update.update_id)
