"""Messages typed while their session was busy, held by the bot until it is idle (topics
database), so they survive a restart. Each leaves `held` once: sent or dropped."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Literal

from oc_outpost.store.db import Clock, Database, system_clock

_COLUMNS = "id, topic_id, session_id, text, status, urgent, message_id, source_id, created_at"
_ORDER = "ORDER BY urgent DESC, id"


@dataclass(frozen=True)
class HeldMessage:
    id: int
    topic_id: int
    session_id: str
    text: str
    status: str
    urgent: bool
    message_id: int | None  # our "⏳ Queued" reply
    source_id: int | None  # the person's message it came from
    created_at: int


class HeldMessageStore:
    def __init__(self, db: Database, now: Clock = system_clock) -> None:
        self._db = db
        self._now = now

    async def hold(
        self, topic_id: int, session_id: str, text: str, source_id: int | None = None
    ) -> HeldMessage:
        row = await self._db.fetch_one(
            f"""
            INSERT INTO held_messages (topic_id, session_id, text, source_id, created_at)
            VALUES (?, ?, ?, ?, ?) RETURNING {_COLUMNS}
            """,
            (topic_id, session_id, text, source_id, self._now()),
        )
        assert row is not None  # RETURNING always gives the row
        return _to_held(row)

    async def copy_of(self, topic_id: int, source_id: int) -> HeldMessage | None:
        """The held copy of a person's message, whatever became of it since."""
        row = await self._db.fetch_one(
            f"SELECT {_COLUMNS} FROM held_messages WHERE topic_id = ? AND source_id = ?",
            (topic_id, source_id),
        )
        return None if row is None else _to_held(row)

    async def set_message(self, held_id: int, message_id: int) -> None:
        await self._db.execute(
            "UPDATE held_messages SET message_id = ? WHERE id = ?", (message_id, held_id)
        )

    async def get(self, held_id: int) -> HeldMessage | None:
        row = await self._db.fetch_one(
            f"SELECT {_COLUMNS} FROM held_messages WHERE id = ?", (held_id,)
        )
        return None if row is None else _to_held(row)

    async def waiting(self, session_id: str) -> list[HeldMessage]:
        """The session's held messages in the order they go out."""
        rows = await self._db.fetch_all(
            f"SELECT {_COLUMNS} FROM held_messages WHERE session_id = ? AND status = 'held' "
            + _ORDER,
            (session_id,),
        )
        return [_to_held(row) for row in rows]

    async def sessions_waiting(self) -> list[str]:
        rows = await self._db.fetch_all(
            "SELECT DISTINCT session_id FROM held_messages WHERE status = 'held'"
        )
        return [str(row[0]) for row in rows]

    async def edit(self, topic_id: int, source_id: int, text: str) -> HeldMessage | None:
        """Replace the text of the held copy of a person's message (None: nothing held)."""
        row = await self._db.fetch_one(
            f"""
            UPDATE held_messages SET text = ?
            WHERE topic_id = ? AND source_id = ? AND status = 'held'
            RETURNING {_COLUMNS}
            """,
            (text, topic_id, source_id),
        )
        return None if row is None else _to_held(row)

    async def make_urgent(self, held_id: int) -> bool:
        changed = await self._db.execute(
            "UPDATE held_messages SET urgent = 1 WHERE id = ? AND status = 'held'", (held_id,)
        )
        return changed == 1

    async def release(self, held_id: int, status: Literal["sent", "dropped"]) -> bool:
        """Take it out of the queue; True exactly once (a replayed press gets False)."""
        changed = await self._db.execute(
            "UPDATE held_messages SET status = ? WHERE id = ? AND status = 'held'",
            (status, held_id),
        )
        return changed == 1


def _to_held(row: sqlite3.Row) -> HeldMessage:
    return HeldMessage(
        id=row["id"],
        topic_id=row["topic_id"],
        session_id=row["session_id"],
        text=row["text"],
        status=row["status"],
        urgent=bool(row["urgent"]),
        message_id=row["message_id"],
        source_id=row["source_id"],
        created_at=row["created_at"],
    )
