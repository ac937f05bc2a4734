"""What the commands need from the chat layer beyond `ChatPort`, and the plain data they show.

Core never imports Telegram: it describes what to show (a project picker, a session's history,
a decided approval) and the chat layer renders it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from oc_outpost.core.ports import ChatPort, PermissionPrompt, QuestionPrompt


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
class Attachment:
    """A file the user sent with a prompt."""

    filename: str
    mime: str
    data: bytes


class Chat(ChatPort, Protocol):
    async def close_topic(self, topic_id: int) -> None: ...

    async def reopen_topic(self, topic_id: int) -> None: ...

    async def rename_topic(self, topic_id: int, name: str) -> None: ...

    async def show_picker(self, topic_id: int, projects: Sequence[ProjectEntry]) -> int:
        """Post the project picker in an unbound topic; returns its message id."""

    async def show_history(self, topic_id: int, history: Sequence[HistoryEntry]) -> None:
        """Post the tail of a session's conversation (on /connect)."""

    async def show_answered(
        self,
        topic_id: int,
        message_id: int,
        prompt: PermissionPrompt | QuestionPrompt,
        decision: str,
    ) -> None:
        """Replace an approval/question message by its prompt plus the decision, no buttons."""
