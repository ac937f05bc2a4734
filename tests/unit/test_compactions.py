"""Compactions OpenCode reports: a `/compact` waits for its own; one OpenCode did by itself is
told in the topic (the agent goes on from a summary)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from oc_outpost.core.approvals import Approvals
from oc_outpost.core.bindings import Bindings
from oc_outpost.core.compactions import Compactions
from oc_outpost.core.context import SELF_COMPACTED, ContextWatch
from oc_outpost.core.journal import TurnJournal
from oc_outpost.core.server_events import ServerEvents
from oc_outpost.core.tracker import TurnTracker
from oc_outpost.core.turn import TurnSnapshot
from oc_outpost.opencode import events as ev
from oc_outpost.store.active_turns import ActiveTurnStore
from oc_outpost.store.db import Database
from oc_outpost.store.migrations import TOPIC_MIGRATIONS
from oc_outpost.store.pending import PendingStore
from oc_outpost.store.topics import TopicStore


class RecordingChat:
    def __init__(self) -> None:
        self.notices: list[tuple[int | None, str]] = []

    def show_progress(self, topic_id: int, turn: TurnSnapshot) -> None:
        return None

    async def notify(self, topic_id: int | None, text: str) -> None:
        self.notices.append((topic_id, text))


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with await Database.open(tmp_path / "topics.db", TOPIC_MIGRATIONS) as db:
        yield db


def test_the_event_is_parsed() -> None:
    frame = b'{"type":"session.compacted","properties":{"sessionID":"ses_1"}}'
    assert ev.parse_event_json(frame, envelope=False) == ev.SessionCompacted(session_id="ses_1")


async def test_an_expected_compaction_resolves_its_waiter_and_is_not_told() -> None:
    compactions = Compactions()
    reported = compactions.expect("ses_1")
    compactions.compacted("ses_1")
    await asyncio.wait_for(reported, 1)
    compactions.forget("ses_1")
    compactions.compacted("ses_1")  # nobody waits any more: OpenCode did this one by itself
    assert await asyncio.wait_for(compactions.next_unasked(), 1) == "ses_1"


async def test_a_compaction_opencode_did_by_itself_is_told_in_the_topic(db: Database) -> None:
    chat = RecordingChat()
    bindings = Bindings(TopicStore(db), -100)
    await bindings.bind(7, Path("/p/demo"), "ses_1", "inst_1")
    journal = TurnJournal(ActiveTurnStore(db))
    tracker = TurnTracker(chat, bindings, journal)  # type: ignore[arg-type]
    compactions = Compactions()
    events = ServerEvents(
        chat=chat,  # type: ignore[arg-type]
        bindings=bindings,
        tracker=tracker,
        approvals=Approvals(chat, PendingStore(db)),  # type: ignore[arg-type]
        journal=journal,
        reconciler=None,  # type: ignore[arg-type]
        compactions=compactions,
    )
    unused: Any = None
    context = ContextWatch(bindings, unused, unused, tracker, unused, chat, compactions, unused)  # type: ignore[arg-type]

    await events.on_event("inst_1", unused, ev.SessionCompacted(session_id="ses_1"))
    await context.compacted_by_opencode(await asyncio.wait_for(compactions.next_unasked(), 1))

    assert chat.notices == [(7, SELF_COMPACTED)]
