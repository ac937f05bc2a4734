"""The one linking flow with a chat fake and a fake registry: one intent gives one topic, and a
failing step leaves nothing behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from oc_outpost.core.bindings import Bindings
from oc_outpost.core.errors import Conflict, Unavailable
from oc_outpost.core.linking import Linker, LinkRequest
from oc_outpost.model import InstanceInfo, InstanceKind, InstanceState, TopicBinding
from oc_outpost.opencode.errors import OpenCodeUnavailable
from oc_outpost.servers.listener import RunningInstance
from oc_outpost.store.db import Database
from oc_outpost.store.migrations import TOPIC_MIGRATIONS
from oc_outpost.store.topics import TopicStore

CHAT = -100


@dataclass
class FakeSession:
    id: str


@dataclass
class FakeClient:
    fail_sessions: bool = False
    created: list[str] = field(default_factory=list)

    async def create_session(self) -> FakeSession:
        await asyncio.sleep(0.01)  # lets a concurrent request run meanwhile
        if self.fail_sessions:
            raise OpenCodeUnavailable("POST /session: connection refused")
        self.created.append(f"ses_{len(self.created) + 1}")
        return FakeSession(self.created[-1])


class FakeRegistry:
    def __init__(self, client: FakeClient) -> None:
        self.client = client
        self.connects = 0
        self.released: list[str] = []

    async def connect(self, instance_id: str | None, path: Path, **_: Any) -> RunningInstance:
        self.connects += 1
        await asyncio.sleep(0)
        info = InstanceInfo("inst_1", InstanceKind.MANAGED, str(path), InstanceState.RUNNING, 0, 0)
        return RunningInstance(info, self.client, None)  # type: ignore[arg-type]

    async def release(self, instance_id: str) -> None:
        self.released.append(instance_id)


class FakeChat:
    def __init__(self) -> None:
        self.topics: list[str] = []
        self.deleted: list[int] = []
        self.notices: list[tuple[int | None, str]] = []

    async def create_topic(self, name: str) -> int:
        self.topics.append(name)
        return 100 + len(self.topics)

    async def delete_topic(self, topic_id: int) -> None:
        self.deleted.append(topic_id)

    async def notify(self, topic_id: int | None, text: str) -> None:
        self.notices.append((topic_id, text))


@dataclass
class Rig:
    linker: Linker
    bindings: Bindings
    chat: FakeChat
    registry: FakeRegistry
    client: FakeClient


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with await Database.open(tmp_path / "topics.db", TOPIC_MIGRATIONS) as db:
        bindings = Bindings(TopicStore(db), CHAT)
        client, chat = FakeClient(), FakeChat()
        registry = FakeRegistry(client)
        linker = Linker(registry, bindings, chat)  # type: ignore[arg-type]
        yield Rig(linker, bindings, chat, registry, client)


def new_project(path: Path) -> LinkRequest:
    return LinkRequest(
        path, path.name, lambda b: f"ready: {b.session_id}", one_topic_per_project=True
    )


async def test_two_concurrent_new_of_one_project_create_one_topic(rig: Rig, tmp_path: Path) -> None:
    path = tmp_path / "demo"
    results = await asyncio.gather(
        rig.linker.link(new_project(path)),
        rig.linker.link(new_project(path)),
        return_exceptions=True,
    )

    bound = [r for r in results if isinstance(r, TopicBinding)]
    refused = [r for r in results if isinstance(r, Conflict)]
    assert len(bound) == 1 and len(refused) == 1
    assert rig.chat.topics == ["demo"] and rig.client.created == ["ses_1"]
    assert "already has a topic" in str(refused[0])
    assert [b.topic_id for b in rig.bindings.by_path(path)] == [bound[0].topic_id]


async def test_two_concurrent_connects_of_one_session_bind_it_once(
    rig: Rig, tmp_path: Path
) -> None:
    def connect(name: str) -> LinkRequest:
        return LinkRequest(tmp_path / name, name, lambda b: "connected", session_id="ses_x")

    results = await asyncio.gather(
        rig.linker.link(connect("a")), rig.linker.link(connect("b")), return_exceptions=True
    )

    assert sum(isinstance(r, TopicBinding) for r in results) == 1
    assert sum(isinstance(r, Conflict) for r in results) == 1
    assert len(rig.chat.topics) == 1 and rig.client.created == []


async def test_a_failing_session_leaves_no_topic_binding_or_server(
    rig: Rig, tmp_path: Path
) -> None:
    rig.client.fail_sessions = True

    with pytest.raises(Unavailable, match="connection refused"):
        await rig.linker.link(new_project(tmp_path / "demo"))

    assert rig.bindings.all() == []
    assert rig.chat.topics == [] and rig.chat.deleted == []  # the topic was never created
    assert rig.registry.released == ["inst_1"]  # the server started for it is stopped


async def test_a_failing_greeting_rolls_back_the_topic_and_the_binding(
    rig: Rig, tmp_path: Path
) -> None:
    async def gone(topic_id: int | None, text: str) -> None:
        raise OSError("network down")

    rig.chat.notify = gone  # type: ignore[method-assign]

    with pytest.raises(Unavailable):
        await rig.linker.link(new_project(tmp_path / "demo"))

    assert rig.bindings.all() == []
    assert rig.chat.deleted == [101]


async def test_an_existing_topic_that_is_linked_already_is_refused(
    rig: Rig, tmp_path: Path
) -> None:
    request = LinkRequest(tmp_path / "demo", "demo", lambda b: "linked", topic_id=7)
    await rig.linker.link(request)

    with pytest.raises(Conflict, match="already linked"):
        await rig.linker.link(request)
    assert rig.chat.topics == []  # an existing topic is used, never a new one
