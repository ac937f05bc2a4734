"""Prompting with a chat fake and a fake registry: a prompt refused by a server that died
moments before is sent again to the restarted server, once, without failing its turn."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from oc_outpost.core.bindings import Bindings
from oc_outpost.core.compactions import Compactions
from oc_outpost.core.journal import TurnJournal
from oc_outpost.core.prompting import Prompter
from oc_outpost.core.server_events import ServerEvents
from oc_outpost.core.tracker import TurnTracker
from oc_outpost.core.turn import TurnSnapshot
from oc_outpost.model import InstanceInfo, InstanceKind, InstanceState, TopicBinding
from oc_outpost.opencode import events as ev
from oc_outpost.opencode.errors import OpenCodeUnavailable
from oc_outpost.opencode.wire import MessageWithParts
from oc_outpost.servers.listener import RunningInstance
from oc_outpost.store.active_turns import ActiveTurnStore
from oc_outpost.store.db import Database
from oc_outpost.store.migrations import TOPIC_MIGRATIONS
from oc_outpost.store.topics import TopicStore


class FakeClient:
    def __init__(self, refuse: int = 0) -> None:
        self.refuse = refuse
        self.prompts: list[str] = []

    async def prompt_async(self, session_id: str, parts: list[Any], **choice: Any) -> None:
        if self.refuse:
            self.refuse -= 1
            raise OpenCodeUnavailable("POST /session/ses_1/prompt_async: connection refused")
        self.prompts.append(parts[0].text)


class FakeRegistry:
    """Hands out the clients in order: the dead server's, then the restarted one's."""

    def __init__(self, *clients: FakeClient) -> None:
        self.clients = list(clients)
        self.connects = 0

    async def connect(self, instance_id: str | None, path: Path, **_: Any) -> RunningInstance:
        client = self.clients[min(self.connects, len(self.clients) - 1)]
        self.connects += 1
        info = InstanceInfo("inst_1", InstanceKind.MANAGED, str(path), InstanceState.RUNNING, 0, 0)
        return RunningInstance(info, client, None)  # type: ignore[arg-type]


class FakeChat:
    def __init__(self) -> None:
        self.finals: list[TurnSnapshot] = []
        self.notices: list[str] = []

    def show_progress(self, topic_id: int, turn: TurnSnapshot) -> None:
        return None

    async def show_final(self, topic_id: int, turn: TurnSnapshot, *, streaming: bool) -> None:
        self.finals.append(turn)

    async def notify(self, topic_id: int | None, text: str) -> None:
        self.notices.append(text)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with await Database.open(tmp_path / "topics.db", TOPIC_MIGRATIONS) as db:
        yield db


async def bound(db: Database) -> tuple[Bindings, TopicBinding]:
    bindings = Bindings(TopicStore(db), -100)
    binding = await bindings.bind(7, Path("/p/demo"), "ses_1", "inst_1")
    return bindings, binding


async def test_a_refused_prompt_is_sent_again_to_the_restarted_server(db: Database) -> None:
    dead, restarted = FakeClient(refuse=1), FakeClient()
    registry, chat = FakeRegistry(dead, restarted), FakeChat()
    bindings, binding = await bound(db)
    tracker = TurnTracker(chat, bindings, TurnJournal(ActiveTurnStore(db)))  # type: ignore[arg-type]
    prompter = Prompter(registry, tracker, chat)  # type: ignore[arg-type]

    await prompter.send(binding, "hello", ())

    assert restarted.prompts == ["hello"] and registry.connects == 2
    assert tracker.is_busy("ses_1") and tracker.is_accepted("ses_1")
    assert chat.finals == []  # nothing was refused


async def test_an_accepted_prompt_is_owed_after_a_kill_even_before_any_event(
    db: Database,
) -> None:
    """The bot dies right after OpenCode took the prompt, before any event of the turn came
    (its stream stalled, or the kill was quick): the next start must still know the turn."""
    registry, chat = FakeRegistry(FakeClient()), FakeChat()
    bindings, binding = await bound(db)
    tracker = TurnTracker(chat, bindings, TurnJournal(ActiveTurnStore(db)))  # type: ignore[arg-type]
    prompter = Prompter(registry, tracker, chat)  # type: ignore[arg-type]

    await prompter.send(binding, "hello", ())

    restarted = TurnJournal(ActiveTurnStore(db))  # what the next start reads
    assert [r.session_id for r in await restarted.load()] == ["ses_1"]


async def test_a_prompt_refused_twice_fails_its_turn_clearly(db: Database) -> None:
    registry, chat = FakeRegistry(FakeClient(refuse=2)), FakeChat()
    bindings, binding = await bound(db)
    tracker = TurnTracker(chat, bindings, TurnJournal(ActiveTurnStore(db)))  # type: ignore[arg-type]
    prompter = Prompter(registry, tracker, chat)  # type: ignore[arg-type]

    await prompter.send(binding, "hello", ())

    (final,) = chat.finals
    assert final.error is not None and "connection refused" in final.error
    assert not tracker.is_busy("ses_1")


async def test_a_server_crash_ends_accepted_turns_but_not_a_prompt_on_its_way(
    db: Database,
) -> None:
    chat = FakeChat()
    bindings, binding = await bound(db)
    other = await bindings.bind(8, Path("/p/other"), "ses_2", "inst_1")
    tracker = TurnTracker(chat, bindings, TurnJournal(ActiveTurnStore(db)))  # type: ignore[arg-type]
    events = ServerEvents(
        chat=chat,  # type: ignore[arg-type]
        bindings=bindings,
        tracker=tracker,
        approvals=None,  # type: ignore[arg-type]
        journal=TurnJournal(ActiveTurnStore(db)),
        reconciler=None,  # type: ignore[arg-type]
        compactions=Compactions(),
    )
    tracker.begin(binding, FakeClient())  # type: ignore[arg-type]  (prompt not sent yet)
    tracker.begin(other, FakeClient())  # type: ignore[arg-type]
    await tracker.mark_accepted(other, FakeClient())  # type: ignore[arg-type]

    await events.instance_down(["inst_1"], "the process exited with code -9")

    assert [f.session_id for f in chat.finals] == ["ses_2"]
    assert tracker.is_busy("ses_1") and not tracker.is_busy("ses_2")


async def test_a_prompt_for_a_busy_session_waits_until_the_running_prompt_is_written(
    db: Database,
) -> None:
    """OpenCode writes an accepted prompt down in the background and answers only the newest
    user message: a second prompt that overtook the first would never be answered."""
    client = FakeClient()
    registry, chat = FakeRegistry(client), FakeChat()
    bindings, binding = await bound(db)
    tracker = TurnTracker(chat, bindings, TurnJournal(ActiveTurnStore(db)))  # type: ignore[arg-type]
    prompter = Prompter(registry, tracker, chat)  # type: ignore[arg-type]
    await prompter.send(binding, "first", ())

    second = asyncio.create_task(prompter.send(binding, "second", ()))
    for _ in range(20):
        await asyncio.sleep(0)
    assert client.prompts == ["first"]  # held back: OpenCode has not written "first" down yet

    written = ev.MessageUpdated("ses_1", ev.Message(id="msg_1", role="user"))
    await tracker.on_event(client, written)  # type: ignore[arg-type]
    await asyncio.wait_for(second, 1)
    assert client.prompts == ["first", "second"]


class ClientWithHistory(FakeClient):
    """A server that already has a user message "hello", written at `written_ms`."""

    def __init__(self, written_ms: float) -> None:
        super().__init__()
        self.written_ms = written_ms

    async def messages(self, session_id: str, limit: int | None = None) -> list[Any]:
        info = ev.Message("msg_1", "user", created_at=self.written_ms)
        return [MessageWithParts(info=info, parts=(ev.TextPart("prt_1", "hello"),))]


async def test_a_message_opencode_has_from_after_it_was_sent_counts_as_sent(
    db: Database,
) -> None:
    """The bot died after sending a prompt and before crossing its update out: Telegram's
    update comes again at the next start, and OpenCode already has it."""
    client = ClientWithHistory(written_ms=1_000_000_500)
    registry, chat = FakeRegistry(client), FakeChat()
    bindings, binding = await bound(db)
    tracker = TurnTracker(chat, bindings, TurnJournal(ActiveTurnStore(db)))  # type: ignore[arg-type]
    prompter = Prompter(registry, tracker, chat)  # type: ignore[arg-type]

    assert await prompter.already_sent(binding, "hello", (), sent_at=1_000_000.0)
    # the same words sent again later are a new prompt; other words are not this one
    assert not await prompter.already_sent(binding, "hello", (), sent_at=1_000_001.0)
    assert not await prompter.already_sent(binding, "hello there", (), sent_at=1_000_000.0)
