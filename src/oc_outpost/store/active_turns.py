"""Turns in flight, persisted so that a bot restart can still deliver their final answers.

Stored in the topics database's `bot_state` table under keys `turn:<session id>` (no schema
change needed): one row per session whose turn has started and whose final answer has not been
handed to the chat yet. Keys `closing:<message id>`: progress messages of answered turns whose
reduction to the summary has not been confirmed yet.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from oc_outpost.store.db import Clock, Database, system_clock
from oc_outpost.store.errors import StoreError

_PREFIX = "turn:"
_CLOSING = "closing:"


@dataclass(frozen=True)
class ActiveTurnRecord:
    session_id: str
    topic_id: int
    instance_id: str | None
    project_path: str
    started_at: int  # UTC seconds
    progress_message_id: int | None = None  # the live progress message, once it was sent


@dataclass(frozen=True)
class ClosingProgress:
    """A progress message whose turn was answered, to be reduced to ``summary``."""

    message_id: int
    topic_id: int
    summary: str


class ActiveTurnStore:
    def __init__(self, db: Database, now: Clock = system_clock) -> None:
        self._db = db
        self._now = now

    async def put(self, record: ActiveTurnRecord) -> None:
        await self._db.execute(
            """
            INSERT INTO bot_state (key, value, updated_at) VALUES (?, ?, ?)
            ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at
            """,
            (_PREFIX + record.session_id, json.dumps(asdict(record)), self._now()),
        )

    async def delete(self, session_id: str) -> bool:
        changed = await self._db.execute(
            "DELETE FROM bot_state WHERE key = ?", (_PREFIX + session_id,)
        )
        return changed > 0

    async def all(self) -> list[ActiveTurnRecord]:
        rows = await self._db.fetch_all(
            "SELECT key, value FROM bot_state WHERE key LIKE ? ORDER BY updated_at, key",
            (_PREFIX + "%",),
        )
        return [_decode(row["key"], row["value"]) for row in rows]

    async def put_closing(self, closing: ClosingProgress) -> None:
        await self._db.execute(
            "INSERT OR REPLACE INTO bot_state (key, value, updated_at) VALUES (?, ?, ?)",
            (f"{_CLOSING}{closing.message_id}", json.dumps(asdict(closing)), self._now()),
        )

    async def delete_closing(self, message_id: int) -> None:
        await self._db.execute("DELETE FROM bot_state WHERE key = ?", (f"{_CLOSING}{message_id}",))

    async def all_closing(self) -> list[ClosingProgress]:
        rows = await self._db.fetch_all(
            "SELECT key, value FROM bot_state WHERE key LIKE ? ORDER BY key", (_CLOSING + "%",)
        )
        return [_decode_closing(row["key"], row["value"]) for row in rows]


def _decode(key: str, value: str) -> ActiveTurnRecord:
    try:
        data = json.loads(value)
        return ActiveTurnRecord(
            session_id=str(data["session_id"]),
            topic_id=int(data["topic_id"]),
            instance_id=data.get("instance_id"),
            project_path=str(data["project_path"]),
            started_at=int(data["started_at"]),
            progress_message_id=_optional_int(data.get("progress_message_id")),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"bot_state {key!r} is not an active turn record: {exc}") from exc


def _decode_closing(key: str, value: str) -> ClosingProgress:
    try:
        data = json.loads(value)
        return ClosingProgress(int(data["message_id"]), int(data["topic_id"]), str(data["summary"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"bot_state {key!r} is not a closing progress record: {exc}") from exc


def _optional_int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]
