"""What core needs from the chat layer (`ChatPort`), and the plain data it asks it to show.

Core never imports Telegram: it describes what to show (a progress snapshot, a final answer, an
approval, a project picker, a session's history) and the chat layer renders it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from oc_outpost.core.turn import TurnSnapshot

# re-exported: the chat layer reads the journal's records through this port
from oc_outpost.store.active_turns import ClosingProgress as ClosingProgress


class TopicGone(Exception):
    """The forum topic no longer exists (deleted in the app, or never existed)."""


@dataclass(frozen=True)
class PermissionPrompt:
    token: str
    permission: str
    patterns: tuple[str, ...]
    detail: str  # the command, or an excerpt of the diff


@dataclass(frozen=True)
class QuestionPrompt:
    token: str
    question: str
    header: str
    options: tuple[str, ...]


@dataclass(frozen=True)
class ProjectEntry:
    """A directory under PROJECT_BASE_PATH; `key` is a short stable id for buttons."""

    name: str
    key: str
    topic_id: int | None = None


@dataclass(frozen=True)
class HistoryEntry:
    role: Literal["user", "assistant"]
    text: str


@dataclass(frozen=True)
class Button:
    """A control button; `token` names its stored press (core/control_buttons.py)."""

    label: str
    token: str


@dataclass(frozen=True)
class Menu:
    text: str
    rows: tuple[tuple[Button, ...], ...]
    silent: bool = False  # posted without a notification (a reply nobody needs to hear)


@dataclass(frozen=True)
class Attachment:
    """A file the user sent with a prompt."""

    filename: str
    mime: str
    data: bytes


class GoneTopics:
    """Topics the chat layer found deleted while sending in the background (a progress edit):
    the chat reports them here, core's controller unlinks them. Each topic is reported once."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        self._seen: set[int] = set()

    def report(self, topic_id: int) -> None:
        if topic_id not in self._seen:
            self._seen.add(topic_id)
            self._queue.put_nowait(topic_id)

    async def next(self) -> int:
        return await self._queue.get()


class ProgressLog(Protocol):
    """Where the chat reports the message it shows a turn's progress in (the turn journal)."""

    async def progress_shown(self, session_id: str, message_id: int) -> None: ...

    async def progress_closing(self, closing: ClosingProgress) -> None:
        """The turn was answered; its progress message is being reduced to its summary."""

    async def progress_closed(self, message_id: int) -> None: ...

    async def progress_left_closing(self) -> list[ClosingProgress]:
        """What a previous run was still reducing when it stopped (to be reduced now)."""


class ChatPort(Protocol):
    async def update_menu(self, topic_id: int, message_id: int, menu: Menu) -> None:
        """Replace a message's text and control buttons."""

    async def show_code(self, topic_id: int, title: str, code: str) -> None:
        """Post `code` under `title` as a code block (long: as a text document)."""

    async def show_menu(self, topic_id: int, menu: Menu) -> int:
        """Post text with control buttons; returns the message id."""

    async def create_topic(self, name: str) -> int: ...

    async def delete_topic(self, topic_id: int) -> None: ...

    async def topic_exists(self, topic_id: int) -> bool:
        """Whether the topic is still there (Telegram sends no update when one is deleted)."""

    async def close_topic(self, topic_id: int) -> None: ...

    async def reopen_topic(self, topic_id: int) -> None: ...

    async def rename_topic(self, topic_id: int, name: str) -> None: ...

    async def notify(self, topic_id: int | None, text: str) -> None:
        """A short message for the user (command replies, notices); ``None`` is General."""

    def show_progress(self, topic_id: int, turn: TurnSnapshot) -> None:
        """Create or update the turn's live progress message without waiting for the network."""

    def adopt_progress(self, topic_id: int, turn: TurnSnapshot, message_id: int) -> None:
        """The turn's progress is shown in ``message_id`` already (sent before a bot restart):
        edit that one on, and reduce it to the summary at the end."""

    async def show_final(self, topic_id: int, turn: TurnSnapshot, *, streaming: bool) -> None:
        """Deliver the final answer as new message(s) and reduce the progress message."""

    async def ask_permission(self, topic_id: int, prompt: PermissionPrompt) -> int:
        """Post the approval message with its buttons; returns its message id."""

    async def ask_question(self, topic_id: int, prompt: QuestionPrompt) -> int: ...

    async def show_decision(self, topic_id: int, message_id: int, text: str) -> None:
        """Replace a message (approval, picker) by the decision, removing its buttons."""

    async def show_answered(
        self,
        topic_id: int,
        message_id: int,
        prompt: PermissionPrompt | QuestionPrompt,
        decision: str,
    ) -> None:
        """Replace an approval/question message by its prompt plus the decision, no buttons."""

    async def show_picker(self, topic_id: int, projects: Sequence[ProjectEntry]) -> int:
        """Post the project picker in an unbound topic; returns its message id."""

    async def show_history(self, topic_id: int, history: Sequence[HistoryEntry]) -> None:
        """Post the tail of a session's conversation (on /connect)."""
