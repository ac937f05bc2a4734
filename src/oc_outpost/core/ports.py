"""What core needs from the chat layer. Telegram implements it; core never imports Telegram."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from oc_outpost.core.turn import TurnSnapshot


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


class ChatPort(Protocol):
    async def create_topic(self, name: str) -> int: ...

    async def delete_topic(self, topic_id: int) -> None: ...

    async def notify(self, topic_id: int | None, text: str) -> None:
        """A short message for the user (command replies, notices); ``None`` is General."""

    def show_progress(self, topic_id: int, turn: TurnSnapshot) -> None:
        """Create or update the turn's live progress message without waiting for the network."""

    async def show_final(self, topic_id: int, turn: TurnSnapshot, *, streaming: bool) -> None:
        """Deliver the final answer as new message(s) and reduce the progress message."""

    async def ask_permission(self, topic_id: int, prompt: PermissionPrompt) -> int:
        """Post the approval message with its buttons; returns its message id."""

    async def ask_question(self, topic_id: int, prompt: QuestionPrompt) -> int: ...

    async def show_decision(self, topic_id: int, message_id: int, text: str) -> None:
        """Replace an approval/question message by the decision, removing its buttons."""
