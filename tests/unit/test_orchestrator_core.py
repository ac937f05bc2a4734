"""Core's side of orchestration without OpenCode: the turn journal, the cut-off rule of
reconciliation and the wake-up notice (the rest runs against the real binary in
tests/e2e/test_orchestration*.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from oc_outpost.core.journal import TurnJournal
from oc_outpost.core.reconcile import CUT_OFF, NO_ANSWER, cut_off_reason
from oc_outpost.core.turn import TurnSnapshot
from oc_outpost.core.types import TopicBinding
from oc_outpost.core.waking import with_notice
from oc_outpost.opencode.wire import MessageWithParts
from oc_outpost.store.active_turns import ActiveTurnRecord, ActiveTurnStore
from oc_outpost.store.db import Database
from oc_outpost.store.migrations import TOPIC_MIGRATIONS


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ActiveTurnStore]:
    async with await Database.open(tmp_path / "topics.db", TOPIC_MIGRATIONS) as db:
        yield ActiveTurnStore(db, now=lambda: 1000)


def binding(session_id: str = "ses_1", topic_id: int = 7) -> TopicBinding:
    return TopicBinding(
        chat_id=-100,
        topic_id=topic_id,
        project_path="/p/demo",
        created_at=1,
        updated_at=1,
        session_id=session_id,
        instance_id="inst_1",
    )


class RecordingChat:
    def __init__(self, fail: bool = False) -> None:
        self.finals: list[str] = []
        self.notices: list[tuple[int | None, str]] = []
        self.fail = fail

    async def show_final(self, topic_id: int, turn: TurnSnapshot, *, streaming: bool) -> None:
        if self.fail:
            raise RuntimeError("telegram is down")
        self.finals.append(turn.session_id)

    async def notify(self, topic_id: int | None, text: str) -> None:
        self.notices.append((topic_id, text))


# --- the journal ------------------------------------------------------------------------------


async def test_active_turns_are_stored_listed_and_deleted(store: ActiveTurnStore) -> None:
    record = ActiveTurnRecord("ses_1", 7, "inst_1", "/p/demo", 1000)
    await store.put(record)
    await store.put(ActiveTurnRecord("ses_2", 8, None, "/p/other", 1000))

    assert await store.delete("ses_2") is True
    assert await store.delete("ses_2") is False
    assert await store.all() == [record]


async def test_a_final_handed_to_the_chat_closes_the_journal_entry(
    store: ActiveTurnStore,
) -> None:
    journal = TurnJournal(store)
    await journal.started(binding())
    await journal.started(binding())  # once per turn
    inner = RecordingChat()
    chat: Any = journal.wrap(inner)  # type: ignore[arg-type]

    await chat.notify(7, "forwarded")
    assert journal.is_open("ses_1") and len(await store.all()) == 1
    await chat.show_final(7, TurnSnapshot(1, "ses_1", 0.0), streaming=True)

    assert inner.finals == ["ses_1"] and inner.notices == [(7, "forwarded")]
    assert not journal.is_open("ses_1")
    assert await store.all() == []


async def test_a_failed_delivery_still_closes_the_entry(store: ActiveTurnStore) -> None:
    journal = TurnJournal(store)
    await journal.started(binding())
    chat = journal.wrap(RecordingChat(fail=True))  # type: ignore[arg-type]

    with pytest.raises(RuntimeError):
        await chat.show_final(7, TurnSnapshot(1, "ses_1", 0.0), streaming=False)

    assert await journal.load() == []


async def test_load_returns_what_a_previous_run_left_open(store: ActiveTurnStore) -> None:
    await TurnJournal(store).started(binding("ses_9", 3))

    journal = TurnJournal(store)
    (record,) = await journal.load()

    assert (record.session_id, record.topic_id, record.instance_id) == ("ses_9", 3, "inst_1")
    assert journal.is_open("ses_9")


# --- reconciliation: is the last turn's answer complete? -------------------------------------


def message(role: str, *, completed: bool = True, error: str | None = None) -> MessageWithParts:
    info: dict[str, Any] = {
        "id": f"msg_{role}",
        "sessionID": "ses_1",
        "role": role,
        "time": {"created": 1, **({"completed": 2} if completed else {})},
    }
    if error:
        info["error"] = {"name": error, "data": {"message": "boom"}}
    return MessageWithParts.model_validate({"info": info, "parts": []})


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([message("user"), message("assistant")], None),
        ([message("user"), message("assistant", completed=False)], CUT_OFF),
        ([message("user"), message("assistant", completed=False, error="APIError")], None),
        ([message("user")], NO_ANSWER),
        ([], NO_ANSWER),
        ([message("user"), message("assistant"), message("user")], NO_ANSWER),
    ],
)
def test_cut_off_reason(messages: list[MessageWithParts], expected: str | None) -> None:
    assert cut_off_reason(messages) == expected


# --- the wake-up notice -----------------------------------------------------------------------


async def test_a_slow_wake_up_is_announced_once_and_still_returns() -> None:
    notices: list[str] = []

    async def notice() -> None:
        notices.append("waking")

    async def slow_start() -> str:
        await asyncio.sleep(0.1)
        return "running"

    assert await with_notice(slow_start(), notice, after_s=0.02) == "running"
    assert notices == ["waking"]


async def test_a_quick_wake_up_is_not_announced() -> None:
    notices: list[str] = []

    async def notice() -> None:
        notices.append("waking")

    async def quick_start() -> str:
        return "running"

    assert await with_notice(quick_start(), notice, after_s=1.0) == "running"
    assert notices == []


async def test_a_failed_wake_up_raises_its_error() -> None:
    async def failing_start() -> str:
        raise RuntimeError("no server")

    async def notice() -> None:
        raise AssertionError("not slow, must not be announced")

    with pytest.raises(RuntimeError, match="no server"):
        await with_notice(failing_start(), notice, after_s=1.0)
