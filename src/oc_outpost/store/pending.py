"""Permission requests and questions waiting for a button press (topics database).

A Telegram button carries only the short token; everything else lives here, so a press after a
bot restart still works and a replayed press is answered only once.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from oc_outpost.store.db import Clock, Database, system_clock
from oc_outpost.store.errors import NotFound, StoreError

TOKEN_BYTES: Final = 9  # 72 random bits -> 12 url-safe characters
_CREATE_ATTEMPTS: Final = 5

_COLUMNS = (
    "token, kind, request_id, session_id, instance_id, chat_id, topic_id, message_id, payload, "
    "status, decision, answered_by, created_at, updated_at"
)


class PendingKind(StrEnum):
    PERMISSION = "permission"
    QUESTION = "question"


class PendingStatus(StrEnum):
    PENDING = "pending"
    ANSWERED = "answered"
    EXPIRED = "expired"


@dataclass(frozen=True)
class PendingRequest:
    """A stored request shown with buttons. Times are UTC seconds."""

    token: str
    kind: PendingKind
    request_id: str
    session_id: str
    instance_id: str | None
    chat_id: int
    topic_id: int
    message_id: int | None
    payload: Mapping[str, Any]
    status: PendingStatus
    decision: str | None
    answered_by: str | None
    created_at: int
    updated_at: int


def new_token() -> str:
    """A short random token made of [A-Za-z0-9_-] (never ':', so it fits `p:<token>:o`)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


class PendingStore:
    def __init__(self, db: Database, now: Clock = system_clock) -> None:
        self._db = db
        self._now = now

    async def create(
        self,
        kind: PendingKind | str,
        request_id: str,
        session_id: str,
        instance_id: str | None,
        chat_id: int,
        topic_id: int,
        payload: Mapping[str, Any],
    ) -> PendingRequest:
        """Store a new pending request under a fresh token. `kind` is a PendingKind value."""
        pending_kind = PendingKind(kind)
        payload_json = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        for _ in range(_CREATE_ATTEMPTS):
            row = await self._insert_with_fresh_token(
                pending_kind,
                request_id,
                session_id,
                instance_id,
                chat_id,
                topic_id,
                payload_json,
            )
            if row is not None:
                return _to_request(row)
        raise StoreError(f"could not allocate a unique token in {_CREATE_ATTEMPTS} attempts")

    async def get(self, token: str) -> PendingRequest | None:
        row = await self._db.fetch_one(
            f"SELECT {_COLUMNS} FROM pending_requests WHERE token = ?", (token,)
        )
        return None if row is None else _to_request(row)

    async def get_by_request_id(self, request_id: str) -> PendingRequest | None:
        """The newest row for an OpenCode request id."""
        row = await self._db.fetch_one(
            f"""
            SELECT {_COLUMNS} FROM pending_requests WHERE request_id = ?
            ORDER BY created_at DESC, rowid DESC LIMIT 1
            """,
            (request_id,),
        )
        return None if row is None else _to_request(row)

    async def set_message_id(self, token: str, message_id: int) -> PendingRequest:
        """Remember which Telegram message shows the buttons. Raises NotFound."""
        row = await self._db.fetch_one(
            f"""
            UPDATE pending_requests SET message_id = ?, updated_at = ? WHERE token = ?
            RETURNING {_COLUMNS}
            """,
            (message_id, self._now(), token),
        )
        if row is None:
            raise NotFound(f"no pending request with token {token!r}")
        return _to_request(row)

    async def resolve(self, token: str, decision: str, answered_by: str) -> bool:
        """Answer a pending request. True exactly once per token; False if it was already
        answered, expired or never existed (so a replayed press does nothing)."""
        changed = await self._db.execute(
            """
            UPDATE pending_requests
            SET status = ?, decision = ?, answered_by = ?, updated_at = ?
            WHERE token = ? AND status = ?
            """,
            (
                PendingStatus.ANSWERED.value,
                decision,
                answered_by,
                self._now(),
                token,
                PendingStatus.PENDING.value,
            ),
        )
        return changed == 1

    async def reopen(self, token: str) -> bool:
        """Make an answered request pending again (its answer did not reach OpenCode)."""
        changed = await self._db.execute(
            """
            UPDATE pending_requests
            SET status = ?, decision = NULL, answered_by = NULL, updated_at = ?
            WHERE token = ? AND status = ?
            """,
            (PendingStatus.PENDING.value, self._now(), token, PendingStatus.ANSWERED.value),
        )
        return changed == 1

    async def expire_for_session(self, session_id: str) -> int:
        """Mark every still-pending request of the session expired; returns how many."""
        return await self._db.execute(
            "UPDATE pending_requests SET status = ?, updated_at = ? "
            "WHERE session_id = ? AND status = ?",
            (PendingStatus.EXPIRED.value, self._now(), session_id, PendingStatus.PENDING.value),
        )

    async def pending_for_session(self, session_id: str) -> list[PendingRequest]:
        rows = await self._db.fetch_all(
            f"""
            SELECT {_COLUMNS} FROM pending_requests WHERE session_id = ? AND status = ?
            ORDER BY created_at, rowid
            """,
            (session_id, PendingStatus.PENDING.value),
        )
        return [_to_request(row) for row in rows]

    async def count_pending(self) -> int:
        row = await self._db.fetch_one(
            "SELECT COUNT(*) FROM pending_requests WHERE status = ?",
            (PendingStatus.PENDING.value,),
        )
        return 0 if row is None else int(row[0])

    async def _insert_with_fresh_token(
        self,
        kind: PendingKind,
        request_id: str,
        session_id: str,
        instance_id: str | None,
        chat_id: int,
        topic_id: int,
        payload_json: str,
    ) -> sqlite3.Row | None:
        """Insert under a new token; None if that token already exists (try again)."""
        now = self._now()
        return await self._db.fetch_one(
            f"""
            INSERT INTO pending_requests ({_COLUMNS})
            VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, NULL, NULL, ?, ?)
            ON CONFLICT (token) DO NOTHING
            RETURNING {_COLUMNS}
            """,
            (
                new_token(),
                kind.value,
                request_id,
                session_id,
                instance_id,
                chat_id,
                topic_id,
                payload_json,
                PendingStatus.PENDING.value,
                now,
                now,
            ),
        )


def _to_request(row: sqlite3.Row) -> PendingRequest:
    payload = json.loads(row["payload"])
    if not isinstance(payload, dict):
        raise StoreError(f"pending request {row['token']!r}: payload is not a JSON object")
    return PendingRequest(
        token=row["token"],
        kind=PendingKind(row["kind"]),
        request_id=row["request_id"],
        session_id=row["session_id"],
        instance_id=row["instance_id"],
        chat_id=row["chat_id"],
        topic_id=row["topic_id"],
        message_id=row["message_id"],
        payload=payload,
        status=PendingStatus(row["status"]),
        decision=row["decision"],
        answered_by=row["answered_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
