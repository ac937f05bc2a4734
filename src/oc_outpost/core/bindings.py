"""Topic bindings: the SQLite store plus an in-memory index by topic and by session."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from oc_outpost.model import TopicBinding
from oc_outpost.store.topics import TopicStore


class Bindings:
    def __init__(
        self, store: TopicStore, chat_id: int, *, now: Callable[[], int] = lambda: int(time.time())
    ) -> None:
        self._store = store
        self._chat_id = chat_id
        self._now = now
        self._by_topic: dict[int, TopicBinding] = {}

    async def load(self) -> None:
        self._by_topic = {b.topic_id: b for b in await self._store.by_chat(self._chat_id)}

    def all(self) -> list[TopicBinding]:
        return list(self._by_topic.values())

    def by_topic(self, topic_id: int) -> TopicBinding | None:
        return self._by_topic.get(topic_id)

    def by_session(self, session_id: str) -> TopicBinding | None:
        return next((b for b in self._by_topic.values() if b.session_id == session_id), None)

    def by_path(self, path: Path | str) -> list[TopicBinding]:
        return [b for b in self._by_topic.values() if b.project_path == str(path)]

    def by_instance(self, instance_id: str) -> list[TopicBinding]:
        return [b for b in self._by_topic.values() if b.instance_id == instance_id]

    async def bind(
        self, topic_id: int, path: Path, session_id: str | None, instance_id: str | None
    ) -> TopicBinding:
        now = self._now()
        binding = TopicBinding(
            chat_id=self._chat_id,
            topic_id=topic_id,
            project_path=str(path),
            session_id=session_id,
            instance_id=instance_id,
            streaming_enabled=True,
            created_at=now,
            updated_at=now,
        )
        return await self.save(binding)

    async def save(self, binding: TopicBinding) -> TopicBinding:
        saved = await self._store.save(replace(binding, updated_at=self._now()))
        self._by_topic[saved.topic_id] = saved
        return saved

    async def unbind(self, topic_id: int) -> TopicBinding | None:
        binding = self._by_topic.pop(topic_id, None)
        await self._store.delete(self._chat_id, topic_id)
        return binding
