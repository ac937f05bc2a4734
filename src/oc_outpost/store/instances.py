"""Persistence of OpenCode server instances (orchestrator database)."""

from __future__ import annotations

import sqlite3
from enum import Enum
from typing import Final, Literal

from oc_outpost.model import InstanceInfo, InstanceKind, InstanceState
from oc_outpost.store.db import Clock, Database, system_clock
from oc_outpost.store.errors import NotFound, StoreError


class _Keep(Enum):
    KEEP = "keep"


KEEP: Final = _Keep.KEEP
"""Passed as `pid` to `update_state` (the default) to leave the stored pid unchanged."""

_COLUMNS = (
    "id, kind, project_path, port, url, pid, state, session_id, password, created_at, updated_at"
)
# Several rows can share a port or a path (old stopped rows); the live one wins, then the newest.
_PREFERRED_FIRST = f"""
    ORDER BY CASE state WHEN '{InstanceState.RUNNING}' THEN 0
                        WHEN '{InstanceState.STARTING}' THEN 1
                        ELSE 2 END,
             updated_at DESC, created_at DESC, id
    LIMIT 1
"""


class InstanceStore:
    def __init__(self, db: Database, now: Clock = system_clock) -> None:
        self._db = db
        self._now = now

    async def save(self, info: InstanceInfo) -> InstanceInfo:
        """Insert or replace by id; an existing row keeps its created_at. Returns the stored row."""
        row = await self._db.fetch_one(
            f"""
            INSERT INTO instances ({_COLUMNS})
            VALUES (:id, :kind, :project_path, :port, :url, :pid, :state, :session_id, :password,
                    :created_at, :updated_at)
            ON CONFLICT (id) DO UPDATE SET
                kind = excluded.kind, project_path = excluded.project_path,
                port = excluded.port, url = excluded.url, pid = excluded.pid,
                state = excluded.state, session_id = excluded.session_id,
                password = excluded.password, updated_at = excluded.updated_at
            RETURNING {_COLUMNS}
            """,
            {
                "id": info.id,
                "kind": str(info.kind),
                "project_path": info.project_path,
                "port": info.port,
                "url": info.url,
                "pid": info.pid,
                "state": str(info.state),
                "session_id": info.session_id,
                "password": info.password,
                "created_at": info.created_at,
                "updated_at": self._now(),
            },
        )
        if row is None:
            raise StoreError("upsert returned no row")  # impossible with RETURNING
        return _to_instance(row)

    async def get(self, instance_id: str) -> InstanceInfo | None:
        row = await self._db.fetch_one(
            f"SELECT {_COLUMNS} FROM instances WHERE id = ?", (instance_id,)
        )
        return None if row is None else _to_instance(row)

    async def all(self) -> list[InstanceInfo]:
        rows = await self._db.fetch_all(f"SELECT {_COLUMNS} FROM instances ORDER BY created_at, id")
        return [_to_instance(row) for row in rows]

    async def update_state(
        self, instance_id: str, state: InstanceState, pid: int | Literal[_Keep.KEEP] | None = KEEP
    ) -> InstanceInfo:
        """Set the state (and the pid, when given; `None` clears it). Raises NotFound."""
        params: dict[str, object] = {
            "id": instance_id,
            "state": str(state),
            "updated_at": self._now(),
        }
        pid_assignment = ""
        if pid is not KEEP:
            pid_assignment = ", pid = :pid"
            params["pid"] = pid
        row = await self._db.fetch_one(
            f"""
            UPDATE instances SET state = :state, updated_at = :updated_at{pid_assignment}
            WHERE id = :id
            RETURNING {_COLUMNS}
            """,
            params,
        )
        if row is None:
            raise NotFound(f"no instance with id {instance_id!r}")
        return _to_instance(row)

    async def delete(self, instance_id: str) -> bool:
        """Remove the row; returns whether it existed (deleting twice is harmless)."""
        changed = await self._db.execute("DELETE FROM instances WHERE id = ?", (instance_id,))
        return changed > 0


def _to_instance(row: sqlite3.Row) -> InstanceInfo:
    return InstanceInfo(
        id=row["id"],
        kind=InstanceKind(row["kind"]),
        project_path=row["project_path"],
        state=InstanceState(row["state"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        port=row["port"],
        url=row["url"],
        pid=row["pid"],
        session_id=row["session_id"],
        password=row["password"],
    )
