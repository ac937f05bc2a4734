"""The turn journal: which sessions have a turn whose final answer is still owed to a topic.

A turn is written down when core starts tracking it and crossed out once its final answer has
been handed to the chat (`JournaledChat.show_final`). After a bot restart the entries left are
the turns that may have finished while nobody listened; `Reconciler.recover` delivers them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from oc_outpost.core.ports import ChatPort
from oc_outpost.core.turn import TurnSnapshot
from oc_outpost.core.types import TopicBinding
from oc_outpost.store.active_turns import ActiveTurnRecord, ActiveTurnStore

log = logging.getLogger(__name__)


class TurnJournal:
    def __init__(
        self, store: ActiveTurnStore, *, now: Callable[[], int] = lambda: int(time.time())
    ) -> None:
        self._store = store
        self._now = now
        self._open: set[str] = set()

    async def load(self) -> list[ActiveTurnRecord]:
        """The turns left open by the previous run."""
        records = await self._store.all()
        self._open = {r.session_id for r in records}
        return records

    def is_open(self, session_id: str) -> bool:
        return session_id in self._open

    async def started(self, binding: TopicBinding) -> None:
        session_id = binding.session_id
        if session_id is None or session_id in self._open:
            return
        self._open.add(session_id)
        record = ActiveTurnRecord(
            session_id=session_id,
            topic_id=binding.topic_id,
            instance_id=binding.instance_id,
            project_path=binding.project_path,
            started_at=self._now(),
        )
        await self._store.put(record)

    async def finished(self, session_id: str) -> None:
        self._open.discard(session_id)
        await self._store.delete(session_id)

    def wrap(self, chat: ChatPort) -> JournaledChat:
        """The chat port core should use, so that delivered finals close their journal entry."""
        return JournaledChat(chat, self)


class JournaledChat:
    """A ChatPort that forwards everything and closes the journal entry of each final answer."""

    def __init__(self, chat: ChatPort, journal: TurnJournal) -> None:
        self._chat = chat
        self._journal = journal

    async def show_final(self, topic_id: int, turn: TurnSnapshot, *, streaming: bool) -> None:
        try:
            await self._chat.show_final(topic_id, turn, streaming=streaming)
        finally:
            # Also when delivery failed: a restart must not retry a final forever.
            await self._journal.finished(turn.session_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._chat, name)
