"""TelegramChat: the chat side of core's ChatPort, writing through the Outbox."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Message

from oc_outpost.core.ports import PermissionPrompt, QuestionPrompt
from oc_outpost.core.turn import TurnSnapshot
from oc_outpost.telegram import callbacks
from oc_outpost.telegram.outbox import Outbox, Priority
from oc_outpost.telegram.render import (
    final_texts,
    permission_text,
    progress_text,
    question_text,
    split_text,
    summary_text,
)

log = logging.getLogger(__name__)


@dataclass
class _Progress:
    topic_id: int
    session_id: str
    message_id: int | None = None
    sending: asyncio.Future[Any] | None = None
    latest: str = ""
    shown: str = ""


def _log_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("progress update not delivered: %s", future.exception())


class TelegramChat:
    def __init__(
        self, outbox: Outbox, chat_id: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._outbox = outbox
        self._chat_id = chat_id
        self._clock = clock
        self._progress: dict[int, _Progress] = {}  # by turn id
        self._asked: dict[int, str] = {}  # approval message id -> its text

    # --- topics and notices ---------------------------------------------------------------

    async def create_topic(self, name: str) -> int:
        topic = await self._outbox.submit(
            lambda bot: bot.create_forum_topic(self._chat_id, name[:128]),
            chat_id=self._chat_id,
            priority=Priority.INTERACTIVE,
        )
        return int(topic.message_thread_id)

    async def delete_topic(self, topic_id: int) -> None:
        await self._outbox.submit(
            lambda bot: bot.delete_forum_topic(self._chat_id, topic_id),
            chat_id=self._chat_id,
            priority=Priority.INTERACTIVE,
        )

    async def notify(self, topic_id: int | None, text: str) -> None:
        for part in split_text(text):
            await self._send(topic_id, part, Priority.INTERACTIVE)

    async def _send(
        self,
        topic_id: int | None,
        text: str,
        priority: Priority,
        markup: InlineKeyboardMarkup | None = None,
    ) -> Message:
        message: Message = await self._outbox.submit(
            self._send_call(topic_id, text, markup), chat_id=self._chat_id, priority=priority
        )
        return message

    def _send_call(
        self, topic_id: int | None, text: str, markup: InlineKeyboardMarkup | None
    ) -> Callable[[Bot], Any]:
        return lambda bot: bot.send_message(
            self._chat_id, text, message_thread_id=topic_id, reply_markup=markup
        )

    def _edit_call(
        self, message_id: int, text: str, markup: InlineKeyboardMarkup | None
    ) -> Callable[[Bot], Any]:
        return lambda bot: bot.edit_message_text(
            text, chat_id=self._chat_id, message_id=message_id, reply_markup=markup
        )

    # --- turns ------------------------------------------------------------------------------

    def show_progress(self, topic_id: int, turn: TurnSnapshot) -> None:
        progress = self._progress.setdefault(turn.turn_id, _Progress(topic_id, turn.session_id))
        progress.latest = progress_text(turn, self._clock())
        if progress.message_id is not None:
            self._edit_progress(progress)
        elif progress.sending is None:
            progress.sending = self._outbox.enqueue(
                self._send_call(topic_id, progress.latest, self._stop_markup(progress)),
                chat_id=self._chat_id,
                priority=Priority.PROGRESS,
                key=("progress-send", turn.turn_id),
            )
            sent_text = progress.latest
            progress.sending.add_done_callback(
                lambda future: self._progress_sent(progress, future, sent_text)
            )

    def _progress_sent(self, progress: _Progress, future: asyncio.Future[Any], text: str) -> None:
        if future.cancelled():
            return
        if future.exception() is not None:
            log.warning("progress message not sent: %s", future.exception())
            return
        progress.message_id = future.result().message_id
        progress.shown = text
        if progress.latest != progress.shown:
            self._edit_progress(progress)

    def _edit_progress(self, progress: _Progress, *, final: bool = False) -> None:
        assert progress.message_id is not None
        if progress.latest == progress.shown:
            return
        markup = None if final else self._stop_markup(progress)
        text = progress.latest
        future = self._outbox.enqueue(
            self._edit_call(progress.message_id, text, markup),
            chat_id=self._chat_id,
            priority=Priority.PROGRESS,
            key=("progress-edit", progress.message_id),
        )
        progress.shown = text
        future.add_done_callback(_log_failure)

    @staticmethod
    def _stop_markup(progress: _Progress) -> InlineKeyboardMarkup:
        button = InlineKeyboardButton(
            "⏹ Stop", callback_data=callbacks.stop_data(progress.session_id)
        )
        return InlineKeyboardMarkup([[button]])

    async def show_final(self, topic_id: int, turn: TurnSnapshot, *, streaming: bool) -> None:
        for part in final_texts(turn):
            await self._send(topic_id, part, Priority.FINAL)
        progress = self._progress.pop(turn.turn_id, None)
        if progress is None or self._outbox.discard(("progress-send", turn.turn_id)):
            return
        if progress.sending is not None:
            await asyncio.wait([progress.sending])
        if progress.message_id is None:
            return
        progress.latest = summary_text(turn, self._clock())
        self._edit_progress(progress, final=True)

    # --- approvals and questions ---------------------------------------------------------------

    async def ask_permission(self, topic_id: int, prompt: PermissionPrompt) -> int:
        buttons = [
            InlineKeyboardButton(label, callback_data=callbacks.permission_data(prompt.token, code))
            for label, code in (("✅ Allow once", "o"), ("♾ Always", "a"), ("❌ Reject", "r"))
        ]
        return await self._ask(topic_id, permission_text(prompt), [buttons])

    async def ask_question(self, topic_id: int, prompt: QuestionPrompt) -> int:
        rows = [
            [
                InlineKeyboardButton(
                    label[:64], callback_data=callbacks.question_data(prompt.token, i)
                )
            ]
            for i, label in enumerate(prompt.options)
        ]
        return await self._ask(topic_id, question_text(prompt), rows)

    async def _ask(self, topic_id: int, text: str, rows: list[list[InlineKeyboardButton]]) -> int:
        text = split_text(text)[0]
        message = await self._send(topic_id, text, Priority.INTERACTIVE, InlineKeyboardMarkup(rows))
        self._asked[message.message_id] = text
        return message.message_id

    async def show_decision(self, topic_id: int, message_id: int, text: str) -> None:
        asked = self._asked.pop(message_id, None)
        body = split_text(f"{asked}\n\n{text}" if asked else text)[0]
        await self._outbox.submit(
            self._edit_call(message_id, body, None),
            chat_id=self._chat_id,
            priority=Priority.INTERACTIVE,
            key=("edit", message_id),
        )

    async def answer_callback(self, query_id: str, text: str) -> None:
        await self._outbox.submit(
            lambda bot: bot.answer_callback_query(query_id, text=text[:200]),
            chat_id=None,
            priority=Priority.INTERACTIVE,
        )
