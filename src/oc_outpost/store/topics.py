"""Persistence of forum-topic bindings (topics database)."""

from __future__ import annotations

import sqlite3

from oc_outpost.model import TopicBinding
from oc_outpost.store.db import Clock, Database, system_clock
from oc_outpost.store.errors import NotFound, StoreError

_COLUMNS = (
    "chat_id, topic_id, project_path, session_id, instance_id, streaming_enabled, "
    "topic_name_updated, created_at, updated_at"
)
_KEY = "chat_id = :chat_id AND topic_id = :topic_id"


class TopicStore:
    def __init__(self, db: Database, now: Clock = system_clock) -> None:
        self._db = db
        self._now = now

    async def save(self, binding: TopicBinding) -> TopicBinding:
        """Insert or replace by (chat_id, topic_id); an existing row keeps its created_at."""
        row = await self._db.fetch_one(
            f"""
            INSERT INTO topic_mappings ({_COLUMNS})
            VALUES (:chat_id, :topic_id, :project_path, :session_id, :instance_id,
                    :streaming_enabled, :topic_name_updated, :created_at, :updated_at)
            ON CONFLICT (chat_id, topic_id) DO UPDATE SET
                project_path = excluded.project_path, session_id = excluded.session_id,
                instance_id = excluded.instance_id,
                streaming_enabled = excluded.streaming_enabled,
                topic_name_updated = excluded.topic_name_updated,
                updated_at = excluded.updated_at
            RETURNING {_COLUMNS}
            """,
            {
                "chat_id": binding.chat_id,
                "topic_id": binding.topic_id,
                "project_path": binding.project_path,
                "session_id": binding.session_id,
                "instance_id": binding.instance_id,
                "streaming_enabled": int(binding.streaming_enabled),
                "topic_name_updated": int(binding.topic_name_updated),
                "created_at": binding.created_at,
                "updated_at": self._now(),
            },
        )
        if row is None:
            raise StoreError("upsert returned no row")  # impossible with RETURNING
        return _to_binding(row)

    async def get(self, chat_id: int, topic_id: int) -> TopicBinding | None:
        row = await self._db.fetch_one(
            f"SELECT {_COLUMNS} FROM topic_mappings WHERE {_KEY}",
            {"chat_id": chat_id, "topic_id": topic_id},
        )
        return None if row is None else _to_binding(row)

    async def by_chat(self, chat_id: int) -> list[TopicBinding]:
        return await self._select_where("chat_id = ?", chat_id)

    async def by_session(self, session_id: str) -> list[TopicBinding]:
        return await self._select_where("session_id = ?", session_id)

    async def by_instance(self, instance_id: str) -> list[TopicBinding]:
        return await self._select_where("instance_id = ?", instance_id)

    async def delete(self, chat_id: int, topic_id: int) -> bool:
        """Remove the binding; returns whether it existed (deleting twice is harmless)."""
        changed = await self._db.execute(
            f"DELETE FROM topic_mappings WHERE {_KEY}",
            {"chat_id": chat_id, "topic_id": topic_id},
        )
        return changed > 0

    async def _select_where(self, condition: str, value: object) -> list[TopicBinding]:
        rows = await self._db.fetch_all(
            f"SELECT {_COLUMNS} FROM topic_mappings WHERE {condition} ORDER BY chat_id, topic_id",
            (value,),
        )
        return [_to_binding(row) for row in rows]

    async def _update(
        self, chat_id: int, topic_id: int, assignments: str, params: dict[str, object]
    ) -> TopicBinding:
        row = await self._db.fetch_one(
            f"""
            UPDATE topic_mappings SET {assignments}, updated_at = :updated_at
            WHERE {_KEY}
            RETURNING {_COLUMNS}
            """,
            {**params, "chat_id": chat_id, "topic_id": topic_id, "updated_at": self._now()},
        )
        if row is None:
            raise NotFound(f"no topic binding for chat {chat_id} topic {topic_id}")
        return _to_binding(row)


def _to_binding(row: sqlite3.Row) -> TopicBinding:
    return TopicBinding(
        chat_id=row["chat_id"],
        topic_id=row["topic_id"],
        project_path=row["project_path"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        session_id=row["session_id"],
        instance_id=row["instance_id"],
        streaming_enabled=bool(row["streaming_enabled"]),
        topic_name_updated=bool(row["topic_name_updated"]),
    )
