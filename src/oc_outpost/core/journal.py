"""The turn journal: which sessions have a turn whose final answer is still owed to a topic.

A turn is written down when core starts tracking it and crossed out once its final answer has
been delivered (`TurnTracker`). After a bot restart the entries left are the turns that may have
finished while nobody listened, or whose answer could not be delivered; `Recovery.recover`
settles them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace

from oc_outpost.model import TopicBinding
from oc_outpost.store.active_turns import ActiveTurnRecord, ActiveTurnStore, ClosingProgress

log = logging.getLogger(__name__)


class TurnJournal:
    def __init__(
        self, store: ActiveTurnStore, *, now: Callable[[], int] = lambda: int(time.time())
    ) -> None:
        self._store = store
        self._now = now
        self._open: dict[str, ActiveTurnRecord] = {}
        self._shown_early: dict[str, int] = {}  # progress sent before the turn was written down

    async def load(self) -> list[ActiveTurnRecord]:
        """The turns left open by the previous run."""
        records = await self._store.all()
        self._open = {r.session_id: r for r in records}
        return records

    def progress_message(self, session_id: str) -> int | None:
        """The progress message of the session's open turn, if one was sent."""
        record = self._open.get(session_id)
        return record.progress_message_id if record is not None else None

    async def progress_shown(self, session_id: str, message_id: int) -> None:
        """The chat sent the turn's progress message: after a restart it is edited on (or
        closed), never left saying "Working"."""
        record = self._open.get(session_id)
        if record is None:
            self._shown_early[session_id] = message_id
            return
        if record.progress_message_id == message_id:
            return
        record = replace(record, progress_message_id=message_id)
        self._open[session_id] = record
        await self._store.put(record)

    async def progress_closing(self, closing: ClosingProgress) -> None:
        """The turn's answer was sent and its progress message is being reduced to the summary:
        a restart before that edit is confirmed makes it again (the turn itself is crossed out,
        its answer must not be sent twice)."""
        await self._store.put_closing(closing)

    async def progress_closed(self, message_id: int) -> None:
        await self._store.delete_closing(message_id)

    async def progress_left_closing(self) -> list[ClosingProgress]:
        """Progress messages the previous run was reducing when it stopped."""
        return await self._store.all_closing()

    def is_open(self, session_id: str) -> bool:
        return session_id in self._open

    async def started(self, binding: TopicBinding) -> None:
        session_id = binding.session_id
        if session_id is None or session_id in self._open:
            return
        record = ActiveTurnRecord(
            session_id=session_id,
            topic_id=binding.topic_id,
            instance_id=binding.instance_id,
            project_path=binding.project_path,
            started_at=self._now(),
            progress_message_id=self._shown_early.pop(session_id, None),
        )
        self._open[session_id] = record
        await self._store.put(record)

    async def finished(self, session_id: str) -> None:
        self._open.pop(session_id, None)
        self._shown_early.pop(session_id, None)
        await self._store.delete(session_id)
