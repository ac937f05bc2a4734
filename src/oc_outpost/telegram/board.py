"""The board: one pinned message in General showing every bound topic at a glance.

One row per bound topic (state, project linked to its topic, how long the turn runs, model,
session cost, approvals waiting) and a footer with the servers running and asleep. It is edited
silently at the Outbox's lowest priority, at most once every ``interval_s`` however many states
change; every ``refresh_s`` it looks again (running times move), and a board that would not
change costs no call. `/board` posts it anew; its message id is kept in the store, so a restart
edits the same message on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from telegram import Bot, Message
from telegram.error import BadRequest, TelegramError

from oc_outpost.core.topic_states import TopicState, TopicStatus
from oc_outpost.telegram.formatted import Formatted, Styled, fit, join, plain, styled
from oc_outpost.telegram.outbox import Outbox, OutboxClosed, Priority
from oc_outpost.telegram.service_cleanup import delete_quietly
from oc_outpost.telegram.view import NO_PREVIEW, _entities

log = logging.getLogger(__name__)

SYMBOLS: dict[TopicState, str] = {
    TopicState.RUNNING: "⚡",
    TopicState.NEEDS_YOU: "❗",
    TopicState.DONE: "✅",
    TopicState.FAILED: "❌",
    TopicState.ASLEEP: "💤",
    TopicState.IDLE: "▫️",
}
TITLE = "📋 Board"
EMPTY = "No topic is bound to a project yet."


class BoardPlace(Protocol):
    """Where the board's message id is kept across restarts."""

    async def message_id(self) -> int | None: ...

    async def set_message_id(self, message_id: int | None) -> None: ...


@dataclass(frozen=True)
class ServerCounts:
    running: int
    asleep: int


@dataclass(frozen=True)
class BoardConfig:
    interval_s: float = 20.0  # at most one edit per this many seconds
    refresh_s: float = 60.0  # while a turn runs, edit this often so its time moves


def topic_link(chat_id: int, topic_id: int) -> str:
    """https://t.me/c/<internal id>/<topic>: the internal id is the chat id without -100."""
    internal = str(chat_id).removeprefix("-100").removeprefix("-")
    return f"https://t.me/c/{internal}/{topic_id}"


def elapsed(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes = seconds // 60
    return f"{minutes}m" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def board_row(chat_id: int, status: TopicStatus, now: float) -> Styled:
    row = plain(f"{SYMBOLS[status.state]} ") + styled(
        status.project, "text_link", url=topic_link(chat_id, status.topic_id)
    )
    details: list[str] = []
    if status.running_since is not None:
        details.append(f"running {elapsed(now - status.running_since)}")
    elif status.state != TopicState.IDLE:
        details.append(status.state.value.replace("_", " "))
    if status.model:
        details.append(status.model)
    if status.pending:
        details.append(f"{status.pending} waiting for you")
    if status.cost:
        details.append(f"${status.cost:.2f}")
    return row + plain("".join(f" · {d}" for d in details))


def board_text(
    chat_id: int, statuses: Sequence[TopicStatus], servers: ServerCounts, now: float
) -> Formatted:
    rows = [board_row(chat_id, s, now) for s in statuses] or [plain(EMPTY)]
    footer = plain(f"Servers: {servers.running} running · {servers.asleep} asleep")
    return fit(join([styled(TITLE, "bold"), join(rows, "\n"), footer]))


def _log_end(task: asyncio.Task[None]) -> None:
    """The board's loops run until stopped; anything else ending them is logged."""
    if not task.cancelled() and task.exception() is not None:
        log.error("the board stopped updating", exc_info=task.exception())


class Board:
    def __init__(
        self,
        outbox: Outbox,
        chat_id: int,
        store: BoardPlace,
        statuses: Callable[[], Sequence[TopicStatus]],
        servers: Callable[[], Awaitable[ServerCounts]],
        config: BoardConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._outbox = outbox
        self._chat_id = chat_id
        self._store = store
        self._statuses = statuses
        self._servers = servers
        self._config = config or BoardConfig()
        self._clock = clock
        self._sleep = sleep
        self._message_id: int | None = None
        self._shown: Formatted | None = None  # the text the board shows now
        self._wake = asyncio.Event()
        self._publishing = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self.edits = 0  # board calls made (for the benchmark)

    @property
    def message_id(self) -> int | None:
        return self._message_id

    def show_topic_state(self, status: TopicStatus) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._message_id = await self._store.message_id()
        self._wake.set()  # show what the bot knows now (e.g. after a restart)
        self._tasks = [
            asyncio.create_task(self._run(), name="board"),
            asyncio.create_task(self._tick(), name="board-clock"),
        ]
        for task in self._tasks:
            task.add_done_callback(_log_end)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def repost(self) -> None:
        """Post the board anew (someone unpinned or deleted it) and pin it; the old one goes."""
        async with self._publishing:
            old = self._message_id
            await self._post(Priority.INTERACTIVE)
            if old is not None and old != self._message_id:
                await self._delete(old)

    # --- the loop ---------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                async with self._publishing:
                    await self._publish()
            except (TelegramError, OutboxClosed) as exc:
                log.warning("the board was not updated: %s", exc)
            await self._sleep(self._config.interval_s)

    async def _tick(self) -> None:
        """Running times move, topics get bound, servers stop: look again now and then (an
        unchanged board costs no call)."""
        while True:
            await self._sleep(self._config.refresh_s)
            self._wake.set()

    async def _publish(self) -> None:
        if self._message_id is None:
            await self._post(Priority.BACKGROUND)
            return
        text = await self._text()
        if text == self._shown:
            return
        try:
            await self._outbox.submit(
                self._edit_call(self._message_id, text),
                method="editMessageText",
                chat_id=self._chat_id,
                priority=Priority.BACKGROUND,
                key=("board", self._message_id),
            )
        except BadRequest as exc:
            if "message to edit not found" not in exc.message.lower():
                raise
            log.info("the board was deleted; posting it anew")
            await self._post(Priority.BACKGROUND)
            return
        self._shown = text
        self.edits += 1

    async def _post(self, priority: Priority) -> None:
        text = await self._text()
        message: Message = await self._outbox.submit(
            self._send_call(text),
            method="sendMessage",
            chat_id=self._chat_id,
            priority=priority,
        )
        self.edits += 1
        self._shown = text
        self._message_id = message.message_id
        await self._store.set_message_id(message.message_id)
        await self._pin(message.message_id)

    async def _pin(self, message_id: int) -> None:
        try:
            await self._outbox.submit(
                lambda bot: bot.pin_chat_message(
                    self._chat_id, message_id, disable_notification=True
                ),
                method="pinChatMessage",
                chat_id=self._chat_id,
                priority=Priority.BACKGROUND,
            )
        except BadRequest as exc:  # e.g. no right to pin: the board still works unpinned
            log.warning("the board could not be pinned: %s", exc.message)
            return
        self.edits += 1

    async def _delete(self, message_id: int) -> None:
        try:
            await delete_quietly(self._outbox, self._chat_id, message_id)
        except BadRequest as exc:  # e.g. someone deleted it already
            log.info("the old board %d was not deleted: %s", message_id, exc.message)

    async def _text(self) -> Formatted:
        return board_text(self._chat_id, self._statuses(), await self._servers(), self._clock())

    def _send_call(self, text: Formatted) -> Callable[[Bot], Awaitable[Any]]:
        return lambda bot: bot.send_message(
            self._chat_id,
            text.text,
            entities=_entities(text) or None,
            link_preview_options=NO_PREVIEW,
            disable_notification=True,
        )

    def _edit_call(self, message_id: int, text: Formatted) -> Callable[[Bot], Awaitable[Any]]:
        return lambda bot: bot.edit_message_text(
            text.text,
            chat_id=self._chat_id,
            message_id=message_id,
            entities=_entities(text) or None,
            link_preview_options=NO_PREVIEW,
        )
