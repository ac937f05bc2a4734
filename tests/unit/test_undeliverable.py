"""When Telegram cannot be reached, what core is doing goes on: a final answer, a notice or an
approval prompt that cannot be delivered is logged and stays owed, and never stops a crash from
being handled, a server from being restarted or the turn tracker from seeing events (found by
the chaos soak: a server killed during a Bot API outage was never restarted)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from oc_outpost.core.bindings import Bindings
from oc_outpost.core.journal import TurnJournal
from oc_outpost.core.server_events import ServerEvents
from oc_outpost.core.tracker import TurnTracker
from oc_outpost.core.turn import TurnSnapshot
from oc_outpost.model import TopicBinding
from oc_outpost.opencode import events as ev
from oc_outpost.store.active_turns import ActiveTurnStore
from oc_outpost.store.db import Database
from oc_outpost.store.migrations import TOPIC_MIGRATIONS
from oc_outpost.store.topics import TopicStore


class Unreachable(Exception):
    """What the chat layer raises when the Bot API cannot be reached."""


class UnreachableChat:
    def show_progress(self, topic_id: int, turn: TurnSnapshot) -> None:
        return None

    async def show_final(self, topic_id: int, turn: TurnSnapshot, *, streaming: bool) -> None:
        raise Unreachable("httpx.ConnectError")

    async def notify(self, topic_id: int | None, text: str) -> None:
        raise Unreachable("httpx.ConnectError")


class UnreachableApprovals:
    async def on_event(self, instance_id: str, binding: TopicBinding, event: Any) -> None:
        raise Unreachable("httpx.ConnectError")


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with await Database.open(tmp_path / "topics.db", TOPIC_MIGRATIONS) as db:
        yield db


async def parts(db: Database) -> tuple[Bindings, TopicBinding, TurnTracker, ServerEvents]:
    bindings = Bindings(TopicStore(db), -100)
    binding = await bindings.bind(7, Path("/p/demo"), "ses_1", "inst_1")
    journal = TurnJournal(ActiveTurnStore(db))
    tracker = TurnTracker(UnreachableChat(), bindings, journal)  # type: ignore[arg-type]
    events = ServerEvents(
        chat=UnreachableChat(),  # type: ignore[arg-type]
        bindings=bindings,
        tracker=tracker,
        approvals=UnreachableApprovals(),  # type: ignore[arg-type]
        journal=journal,
        reconciler=None,  # type: ignore[arg-type]
    )
    return bindings, binding, tracker, events


async def test_a_crash_during_an_outage_ends_the_turn_and_keeps_its_answer_owed(
    db: Database,
) -> None:
    _, binding, tracker, events = await parts(db)
    tracker.begin(binding, object())  # type: ignore[arg-type]
    await tracker.mark_accepted(binding, object())  # type: ignore[arg-type]

    await events.instance_down(["inst_1"], "the process exited with code -9")  # raises nothing

    assert not tracker.is_busy("ses_1")
    owed = await TurnJournal(ActiveTurnStore(db)).load()
    assert [r.session_id for r in owed] == ["ses_1"]  # the next start settles it


async def test_an_approval_prompt_that_cannot_be_sent_does_not_hide_the_event_from_the_turn(
    db: Database,
) -> None:
    _, _, tracker, events = await parts(db)

    await events.on_event(
        "inst_1", object(), ev.SessionStatusChanged("ses_1", ev.SessionStatus("busy"))
    )  # type: ignore[arg-type]

    assert tracker.is_busy("ses_1")  # the turn (started elsewhere) is followed
