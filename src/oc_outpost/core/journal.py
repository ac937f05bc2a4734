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

from oc_outpost.model import TopicBinding
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
