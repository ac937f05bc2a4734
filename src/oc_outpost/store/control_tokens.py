"""Short tokens behind the control buttons (model and agent pickers, …) (topics database).

A button carries only `k:<token>`; the topic, the kind of press and its value live here, so a
press after a bot restart still works. `use` succeeds once per token, so a replayed press does
nothing twice.
"""

from __future__ import annotations

import secrets
import sqlite3
from dataclasses import dataclass
from typing import Final

from oc_outpost.store.db import Clock, Database, system_clock
from oc_outpost.store.errors import StoreError

TOKEN_BYTES: Final = 6  # 48 random bits -> 8 url-safe characters
_CREATE_ATTEMPTS: Final = 5
_COLUMNS = "token, topic_id, kind, value, used_by, created_at"


@dataclass(frozen=True)
class ControlToken:
    token: str
    topic_id: int
    kind: str
    value: str
    used_by: str | None
    created_at: int


class ControlTokenStore:
    def __init__(self, db: Database, now: Clock = system_clock) -> None:
        self._db = db
        self._now = now

    async def create(self, topic_id: int, kind: str, value: str) -> ControlToken:
        for _ in range(_CREATE_ATTEMPTS):
            row = await self._db.fetch_one(
                f"""
                INSERT INTO control_tokens ({_COLUMNS}) VALUES (?, ?, ?, ?, NULL, ?)
                ON CONFLICT (token) DO NOTHING
                RETURNING {_COLUMNS}
                """,
                (secrets.token_urlsafe(TOKEN_BYTES), topic_id, kind, value, self._now()),
            )
            if row is not None:
                return _to_token(row)
        raise StoreError(f"could not allocate a unique token in {_CREATE_ATTEMPTS} attempts")

    async def get(self, token: str) -> ControlToken | None:
        row = await self._db.fetch_one(
            f"SELECT {_COLUMNS} FROM control_tokens WHERE token = ?", (token,)
        )
        return None if row is None else _to_token(row)

    async def use(self, token: str, who: str) -> bool:
        """Mark the token used; True exactly once (a replayed press gets False)."""
        changed = await self._db.execute(
            "UPDATE control_tokens SET used_by = ? WHERE token = ? AND used_by IS NULL",
            (who, token),
        )
        return changed == 1


def _to_token(row: sqlite3.Row) -> ControlToken:
    return ControlToken(
        token=row["token"],
        topic_id=row["topic_id"],
        kind=row["kind"],
        value=row["value"],
        used_by=row["used_by"],
        created_at=row["created_at"],
    )
