"""TelegramChat: the chat side of core's `Chat` port, writing through the Outbox.

Messages are sent as text + entities (never parse modes), with a plain-text fallback the
Outbox uses if Telegram still rejects the formatting.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from telegram import (
    Bot,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputFile,
    LinkPreviewOptions,
    Message,
    MessageEntity,
)
from telegram.constants import ChatAction
from telegram.error import BadRequest, TelegramError

from oc_outpost.core.chat import (
    ClosingProgress,
    GoneTopics,
    HistoryEntry,
    Menu,
    PermissionPrompt,
    ProgressLog,
    ProjectEntry,
    QuestionPrompt,
    TopicGone,
)
from oc_outpost.core.file_port import ListingPage
from oc_outpost.core.outputs import OutFile
from oc_outpost.core.turn import TurnSnapshot
from oc_outpost.metrics import Metrics
from oc_outpost.telegram import callbacks
from oc_outpost.telegram.files_view import listing_rows, listing_text
from oc_outpost.telegram.formatted import Formatted, Styled, fit, plain, split, styled
from oc_outpost.telegram.keyboards import final_rows, menu_rows
from oc_outpost.telegram.outbox import Outbox, Priority
from oc_outpost.telegram.render import (
    PICKER_TEXT,
    answered_message,
    final_parts,
    history_parts,
    permission_message,
    progress_text,
    question_message,
    summary_text,
)
from oc_outpost.telegram.uploads import Uploads

log = logging.getLogger(__name__)

CODE_INLINE_CHARS = 3500  # longer command output goes as a document
CAPTION_CHARS = 1024

Rows = list[list[InlineKeyboardButton]]
# What a progress message left by a killed bot says once the next start reduces it.
INTERRUPTED = "⏹ The bot restarted during this turn; its progress is no longer shown here."
PICKER_BUTTONS = 48  # Telegram allows 100 buttons; keep the picker readable
# Answers quote many links (docs, localhost ports): a preview card of the first one is noise.
NO_PREVIEW = LinkPreviewOptions(is_disabled=True)
TOPIC_NAME_LIMIT = 128


@dataclass
class _Progress:
    """A turn's live progress message. The newest snapshot is only kept here; it is drawn when
    the Outbox is about to send (at most one call queued or in flight at a time)."""

    topic_id: int
    turn: TurnSnapshot
    markup: InlineKeyboardMarkup  # the Stop button
    message_id: int | None = None
    sending: asyncio.Future[Any] | None = None  # the call that posts the message
    queued: bool = False  # a call is queued or in flight
    drawn: TurnSnapshot | None = None  # the snapshot the latest call showed
    shown: str = ""
    closed: bool = False  # the turn ended: its summary replaces the progress
    failure: BaseException | None = None  # the last edit failure logged
    recorded: asyncio.Task[None] | None = None  # writing the message into the journal

    def log_failure(self, future: asyncio.Future[Any]) -> None:
        # Queued edits of one message share a call, so they fail together: log that once.
        if future.cancelled() or future.exception() in (None, self.failure):
            return
        self.failure = future.exception()
        log.warning("progress update not delivered: %s", self.failure)


def _entities(part: Formatted) -> list[MessageEntity]:
    return [
        MessageEntity(e.type, e.offset, e.length, url=e.url, language=e.language)
        for e in part.entities
    ]


def _stop_data(markup: InlineKeyboardMarkup) -> str | None:
    return markup.inline_keyboard[0][0].callback_data  # type: ignore[return-value]


def _log_reduce_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("a progress message left by the last run stays: %s", future.exception())


def _not_modified(exc: BadRequest) -> bool:
    text = exc.message.lower()
    return "not_modified" in text or "not modified" in text


# What the topic methods answer for a topic that is gone: send methods say "message thread not
# found" (the Outbox makes that TopicGone); editForumTopic, closeForumTopic, reopenForumTopic and
# deleteForumTopic pass TDLib's raw errors through.
_TOPIC_GONE_ERRORS = (
    "message thread not found",
    "topic_id_invalid",
    "topic_deleted",
    "invalid forum topic identifier",
    "unknown forum topic identifier",
)


def _topic_gone(exc: BadRequest) -> bool:
    text = exc.message.lower()
    return any(error in text for error in _TOPIC_GONE_ERRORS)


class TelegramChat:
    def __init__(
        self,
        outbox: Outbox,
        chat_id: int,
        gone_topics: GoneTopics,
        progress_log: ProgressLog,
        *,
        clock: Callable[[], float] = time.monotonic,
        metrics: Metrics | None = None,
    ) -> None:
        self._outbox = outbox
        self._chat_id = chat_id
        self._gone_topics = gone_topics  # core unlinks the topics reported there
        self._progress_log = progress_log  # remembers progress messages across restarts
        self._tasks: set[asyncio.Task[None]] = set()
        self._clock = clock
        self._metrics = metrics or Metrics()
        self._progress: dict[int, _Progress] = {}  # by turn id
        self._uploads = Uploads(outbox, chat_id, self._report_gone)

    # --- topics and notices ---------------------------------------------------------------

    async def create_topic(self, name: str) -> int:
        topic = await self._outbox.submit(
            lambda bot: bot.create_forum_topic(self._chat_id, name[:TOPIC_NAME_LIMIT]),
            method="createForumTopic",
            chat_id=self._chat_id,
            priority=Priority.INTERACTIVE,
        )
        return int(topic.message_thread_id)

    async def delete_topic(self, topic_id: int) -> None:
        try:
            await self._outbox.submit(
                lambda bot: bot.delete_forum_topic(self._chat_id, topic_id),
                method="deleteForumTopic",
                chat_id=self._chat_id,
                priority=Priority.INTERACTIVE,
            )
        except BadRequest as exc:
            if _topic_gone(exc):
                raise TopicGone(f"topic {topic_id}: {exc.message}") from exc
            raise

    async def topic_exists(self, topic_id: int) -> bool:
        # Only send methods tell a deleted topic apart ("message thread not found"); a chat
        # action is the one send that leaves nothing behind.
        try:
            await self._outbox.submit(
                lambda bot: bot.send_chat_action(
                    self._chat_id, ChatAction.TYPING, message_thread_id=topic_id
                ),
                method="sendChatAction",
                chat_id=self._chat_id,
                priority=Priority.INTERACTIVE,
            )
        except TopicGone:
            return False
        return True

    async def close_topic(self, topic_id: int) -> None:
        await self._topic_call(
            topic_id, "closeForumTopic", lambda bot: bot.close_forum_topic(self._chat_id, topic_id)
        )

    async def reopen_topic(self, topic_id: int) -> None:
        await self._topic_call(
            topic_id,
            "reopenForumTopic",
            lambda bot: bot.reopen_forum_topic(self._chat_id, topic_id),
        )

    async def rename_topic(self, topic_id: int, name: str) -> None:
        await self._topic_call(
            topic_id,
            "editForumTopic",
            lambda bot: bot.edit_forum_topic(self._chat_id, topic_id, name=name[:TOPIC_NAME_LIMIT]),
        )

    async def _topic_call(self, topic_id: int, method: str, call: Callable[[Bot], Any]) -> None:
        try:
            await self._outbox.submit(
                call, method=method, chat_id=self._chat_id, priority=Priority.INTERACTIVE
            )
        except BadRequest as exc:
            if _topic_gone(exc):
                self._report_gone(topic_id)
                raise TopicGone(f"topic {topic_id}: {exc.message}") from exc
            if not _not_modified(exc):  # already closed / open / so named: nothing to do
                raise
        except TopicGone:
            self._report_gone(topic_id)
            raise

    def _report_gone(self, topic_id: int | None) -> None:
        """Tell core (once) that a topic no longer exists; the caller still gets TopicGone."""
        if topic_id is not None:
            self._gone_topics.report(topic_id)

    async def notify(self, topic_id: int | None, text: str) -> None:
        await self.send(topic_id, plain(text))

    async def send(
        self,
        topic_id: int | None,
        text: Styled | Sequence[Formatted],
        *,
        rows: Rows | None = None,
        priority: Priority = Priority.INTERACTIVE,
        silent: bool = False,
    ) -> Message:
        """Send formatted text (split to fit); buttons go on the last part. Returns it."""
        parts = split(text) if isinstance(text, Styled) else list(text)
        message: Message | None = None
        for index, part in enumerate(parts):
            markup = InlineKeyboardMarkup(rows) if rows and index == len(parts) - 1 else None
            message = await self._send_part(topic_id, part, priority, markup, silent)
        assert message is not None, "split() always yields at least one part"
        return message

    async def _send_part(
        self,
        topic_id: int | None,
        part: Formatted,
        priority: Priority,
        markup: InlineKeyboardMarkup | None = None,
        silent: bool = False,
    ) -> Message:
        try:
            message: Message = await self._outbox.submit(
                self._send_call(topic_id, part, markup, silent),
                method="sendMessage",
                chat_id=self._chat_id,
                priority=priority,
                fallback=self._send_call(topic_id, Formatted(part.text), markup, silent),
            )
        except TopicGone:
            self._report_gone(topic_id)
            raise
        return message

    def _send_call(
        self,
        topic_id: int | None,
        part: Formatted,
        markup: InlineKeyboardMarkup | None,
        silent: bool = False,
    ) -> Callable[[Bot], Any]:
        return lambda bot: bot.send_message(
            self._chat_id,
            part.text,
            message_thread_id=topic_id,
            reply_markup=markup,
            entities=_entities(part) or None,
            link_preview_options=NO_PREVIEW,
            disable_notification=silent or None,
        )

    def _edit_call(
        self, message_id: int, part: Formatted, markup: InlineKeyboardMarkup | None
    ) -> Callable[[Bot], Any]:
        return lambda bot: bot.edit_message_text(
            part.text,
            chat_id=self._chat_id,
            message_id=message_id,
            reply_markup=markup,
            entities=_entities(part) or None,
            link_preview_options=NO_PREVIEW,
        )

    async def edit(self, message_id: int, part: Formatted, rows: Rows | None = None) -> None:
        markup = InlineKeyboardMarkup(rows) if rows else None
        await self._outbox.submit(
            self._edit_call(message_id, part, markup),
            method="editMessageText",
            chat_id=self._chat_id,
            priority=Priority.INTERACTIVE,
            key=("edit", message_id),
            fallback=self._edit_call(message_id, Formatted(part.text), markup),
        )

    # --- turns ------------------------------------------------------------------------------

    def show_progress(self, topic_id: int, turn: TurnSnapshot) -> None:
        progress = self._progress.get(turn.turn_id)
        if progress is None:
            progress = _Progress(topic_id, turn, self._stop_markup(turn.session_id))
            self._progress[turn.turn_id] = progress
        progress.turn = turn
        if not progress.queued:
            self._queue_progress(progress)

    def adopt_progress(self, topic_id: int, turn: TurnSnapshot, message_id: int) -> None:
        markup = self._stop_markup(turn.session_id)
        self._progress[turn.turn_id] = _Progress(topic_id, turn, markup, message_id=message_id)

    def is_live_progress(self, message_id: int, stop_data: str) -> bool:
        """Whether ``message_id`` shows a running turn with exactly this Stop button: an old
        turn's button, or one forged onto another message, stops nothing."""
        return any(
            p.message_id == message_id and _stop_data(p.markup) == stop_data
            for p in self._progress.values()
        )

    def _queue_progress(self, progress: _Progress) -> None:
        """Queue the call that shows the newest snapshot: the first send, or an edit."""
        progress.queued = True
        turn_id = progress.turn.turn_id
        if progress.message_id is None:
            progress.sending = future = self._outbox.enqueue_rendered(
                lambda: self._draw_send(progress),
                method="sendMessage",
                chat_id=self._chat_id,
                priority=Priority.PROGRESS,
                key=("progress-send", turn_id),
            )
            future.add_done_callback(lambda done: self._progress_sent(progress, done))
        else:
            message_id = progress.message_id
            future = self._outbox.enqueue_rendered(
                lambda: self._draw_edit(progress, message_id),
                method="editMessageText",
                chat_id=self._chat_id,
                priority=Priority.PROGRESS,
                key=("progress-edit", message_id),
            )
            future.add_done_callback(lambda done: self._progress_edited(progress, done))

    def _draw(self, progress: _Progress) -> str | None:
        """The progress text of the newest snapshot, or None if it is what the message shows."""
        progress.drawn = progress.turn
        text = progress_text(progress.turn, self._clock())
        if text == progress.shown:
            return None
        progress.shown = text
        return text

    def _draw_send(self, progress: _Progress) -> Callable[[Bot], Any] | None:
        text = self._draw(progress)
        topic_id = progress.topic_id
        return None if text is None else self._send_call(topic_id, Formatted(text), progress.markup)

    def _draw_edit(self, progress: _Progress, message_id: int) -> Callable[[Bot], Any] | None:
        text = None if progress.closed else self._draw(progress)
        return (
            None if text is None else self._edit_call(message_id, Formatted(text), progress.markup)
        )

    def _progress_sent(self, progress: _Progress, future: asyncio.Future[Any]) -> None:
        progress.queued = False
        if future.cancelled():
            return
        if future.exception() is not None:
            log.warning("progress message not sent: %s", future.exception())
            progress.shown = ""
            if isinstance(future.exception(), TopicGone):
                self._report_gone(progress.topic_id)
            return
        message = future.result()
        if message is None:
            return  # nothing was drawn (the same text), so nothing was sent
        progress.message_id = message.message_id
        progress.recorded = self._spawn(self._record_shown(progress, message.message_id))
        self._catch_up(progress)

    async def _record_shown(self, progress: _Progress, message_id: int) -> None:
        """Into the journal: a bot killed before the turn reduces the message leaves it to
        the next start (its turn may not even be written down yet: then the prompt is handled
        again and shows another message), which reduces it to a note instead of "Working"."""
        await self._progress_log.progress_shown(progress.turn.session_id, message_id)
        await self._progress_log.progress_closing(
            ClosingProgress(message_id, progress.topic_id, INTERRUPTED)
        )

    def _progress_edited(self, progress: _Progress, future: asyncio.Future[Any]) -> None:
        progress.queued = False
        if not future.cancelled() and future.exception() is not None:
            progress.log_failure(future)
            progress.shown = ""  # not shown after all: the next event draws it again
            return
        self._catch_up(progress)

    def _catch_up(self, progress: _Progress) -> None:
        """Events that came while the call was on its way are shown by the next one."""
        if not progress.closed and progress.turn is not progress.drawn:
            self._queue_progress(progress)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._spawned_done)
        return task

    def _spawned_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("recording a progress message failed", exc_info=task.exception())

    @staticmethod
    def _stop_markup(session_id: str) -> InlineKeyboardMarkup:
        """A Stop button that only this progress message carries (see `is_live_progress`)."""
        data = callbacks.stop_data(session_id, secrets.token_hex(3))
        return InlineKeyboardMarkup([[InlineKeyboardButton("⏹ Stop", callback_data=data)]])

    async def show_final(self, topic_id: int, turn: TurnSnapshot, *, streaming: bool) -> None:
        # The turn's buttons (Diff, Undo, …) go on the summary line when the progress message
        # shows one.
        rows = final_rows(turn.output)
        shown = self._progress.get(turn.turn_id)
        on_summary = shown is not None and shown.message_id is not None
        parts = final_parts(turn)
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            markup = InlineKeyboardMarkup(rows) if rows and last and not on_summary else None
            await self._send_part(topic_id, part, Priority.FINAL, markup)
        self._metrics.final_delivered()
        await self._close_progress(turn, rows if on_summary else None)
        await self._uploads.send_images(topic_id, turn.output.images, priority=Priority.FINAL)

    async def _close_progress(self, turn: TurnSnapshot, rows: Rows | None) -> None:
        """Reduce the progress message to the turn's summary (with ``rows`` as its buttons)."""
        progress = self._progress.pop(turn.turn_id, None)
        if progress is None:
            return
        progress.closed = True
        if self._outbox.discard(("progress-send", turn.turn_id)):
            return  # never shown: nothing to reduce
        if progress.sending is not None:
            await asyncio.wait([progress.sending])
        if progress.message_id is None:
            return
        if progress.recorded is not None:  # its note must not overwrite the summary
            await asyncio.wait([progress.recorded])
        closing = ClosingProgress(
            progress.message_id, progress.topic_id, summary_text(turn, self._clock())
        )
        await self._progress_log.progress_closing(closing)
        future = self._reduce(closing, InlineKeyboardMarkup(rows) if rows else None)
        future.add_done_callback(progress.log_failure)

    def _reduce(
        self, closing: ClosingProgress, markup: InlineKeyboardMarkup | None = None
    ) -> asyncio.Future[Any]:
        """Edit a progress message to its summary; once Telegram took (or refused) the edit,
        the journal forgets it. Not made (the bot stopped first): the next start makes it."""
        future = self._outbox.enqueue(
            self._edit_call(closing.message_id, Formatted(closing.summary), markup),
            method="editMessageText",
            chat_id=self._chat_id,
            # the closing summary is part of the final answer, not paced like live progress
            priority=Priority.FINAL,
            key=("progress-edit", closing.message_id),
        )

        def settled(done: asyncio.Future[Any]) -> None:
            if not done.cancelled():
                self._spawn(self._progress_log.progress_closed(closing.message_id))

        future.add_done_callback(settled)
        return future

    def close_progress_left(self) -> None:
        """Reduce the progress messages a previous run had not finished reducing (a kill -9
        between an answer and its summary left them saying "Working" with a Stop button)."""
        self._spawn(self._close_left())

    async def _close_left(self) -> None:
        for closing in await self._progress_log.progress_left_closing():
            self._reduce(closing).add_done_callback(_log_reduce_failure)

    # --- approvals and questions ---------------------------------------------------------------

    async def ask_permission(self, topic_id: int, prompt: PermissionPrompt) -> int:
        buttons = [
            InlineKeyboardButton(label, callback_data=callbacks.permission_data(prompt.token, code))
            for label, code in (("✅ Allow once", "o"), ("♾ Always", "a"), ("❌ Reject", "r"))
        ]
        return await self._ask(topic_id, fit(permission_message(prompt)), [buttons])

    async def ask_question(self, topic_id: int, prompt: QuestionPrompt) -> int:
        rows = [
            [
                InlineKeyboardButton(
                    label[:64], callback_data=callbacks.question_data(prompt.token, i)
                )
            ]
            for i, label in enumerate(prompt.options)
        ]
        return await self._ask(topic_id, fit(question_message(prompt)), rows)

    async def _ask(self, topic_id: int, part: Formatted, rows: Rows) -> int:
        message = await self._send_part(
            topic_id, part, Priority.INTERACTIVE, InlineKeyboardMarkup(rows)
        )
        return message.message_id

    async def show_decision(self, topic_id: int, message_id: int, text: str) -> None:
        await self.edit(message_id, fit(plain(text)))

    async def show_answered(
        self,
        topic_id: int,
        message_id: int,
        prompt: PermissionPrompt | QuestionPrompt,
        decision: str,
    ) -> None:
        await self.edit(message_id, answered_message(prompt, decision))

    async def answer_callback(self, query_id: str, text: str) -> None:
        """Answer a button press. Telegram refuses late answers ("query is too old", e.g. for
        presses queued while the bot was down); the press still counts, so that is only logged."""
        try:
            await self._outbox.submit(
                lambda bot: bot.answer_callback_query(query_id, text=text[:200]),
                method="answerCallbackQuery",
                chat_id=None,
                priority=Priority.INTERACTIVE,
            )
        except TelegramError as exc:
            log.warning("button press %s not answered: %s", query_id, exc.message)

    # --- files (core/file_port.py) -----------------------------------------------------------

    async def send_file(self, topic_id: int, file: OutFile, caption: str = "") -> None:
        await self._uploads.send_file(topic_id, file, caption)

    async def show_listing(self, topic_id: int, page: ListingPage, message_id: int | None) -> int:
        text, rows = listing_text(page), listing_rows(page)
        if message_id is None:
            return (await self.send(topic_id, text, rows=rows)).message_id
        await self.edit(message_id, fit(text), rows)
        return message_id

    # --- command views ------------------------------------------------------------------------

    async def show_picker(self, topic_id: int, projects: Sequence[ProjectEntry]) -> int:
        shown = projects[:PICKER_BUTTONS]
        buttons = [
            InlineKeyboardButton(f"📁 {p.name[:40]}", callback_data=callbacks.link_data(p.key))
            for p in shown
        ]
        rows = [buttons[i : i + 2] for i in range(0, len(buttons), 2)]
        text = PICKER_TEXT
        if len(projects) > len(shown):
            text += f"\n({len(projects) - len(shown)} more: use /link <path>.)"
        message = await self.send(topic_id, plain(text), rows=rows)
        return message.message_id

    async def show_code(self, topic_id: int, title: str, code: str) -> None:
        if len(code) + len(title) < CODE_INLINE_CHARS:
            body = styled(code, "pre") if code.strip() else plain("(no output)")
            await self.send(topic_id, plain(f"{title}\n") + body)
            return
        await self._outbox.submit(
            lambda bot: bot.send_document(
                self._chat_id,
                InputFile(code.encode(), filename="output.txt"),
                caption=title[:CAPTION_CHARS],
                message_thread_id=topic_id,
            ),
            method="sendDocument",
            chat_id=self._chat_id,
            priority=Priority.INTERACTIVE,
        )

    async def update_menu(self, topic_id: int, message_id: int, menu: Menu) -> None:
        await self.edit(message_id, fit(plain(menu.text)), menu_rows(menu) or None)

    async def show_menu(self, topic_id: int, menu: Menu) -> int:
        rows = menu_rows(menu) or None
        message = await self.send(topic_id, plain(menu.text), rows=rows, silent=menu.silent)
        return message.message_id

    async def show_history(self, topic_id: int, history: Sequence[HistoryEntry]) -> None:
        await self.send(topic_id, history_parts(history))

    def budget(self) -> list[tuple[str, str]]:
        """Telegram rate budget use, for /status."""
        limits = self._outbox.limits
        stats = self._outbox.stats
        return [
            (
                "Telegram budget",
                f"{self._outbox.budget_used(self._chat_id)}/{limits.group_per_minute} "
                "calls in the last minute",
            ),
            (
                "Telegram calls",
                f"{stats.calls} made · {self._outbox.pending()} queued · "
                f"{stats.retry_after} rate-limit waits",
            ),
        ]
