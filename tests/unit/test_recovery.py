"""Reconciliation: the cut-off rule (is the last turn's answer complete?), and a turn a restart
could not settle."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from oc_outpost.core.bindings import Bindings
from oc_outpost.core.journal import TurnJournal
from oc_outpost.core.recovery import (
    CUT_OFF,
    NO_ANSWER,
    Reconciler,
    StartupRecovery,
    cut_off_reason,
)
from oc_outpost.core.tracker import TurnTracker
from oc_outpost.core.turn import TurnSnapshot
from oc_outpost.model import InstanceInfo, InstanceKind, InstanceState
from oc_outpost.opencode import events as ev
from oc_outpost.opencode.errors import OpenCodeError
from oc_outpost.opencode.wire import MessageWithParts
from oc_outpost.servers.listener import RunningInstance
from oc_outpost.store.active_turns import ActiveTurnStore
from oc_outpost.store.db import Database
from oc_outpost.store.migrations import TOPIC_MIGRATIONS
from oc_outpost.store.topics import TopicStore


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


# --- a turn the restart could not settle is settled by the stream's first connection ----------


class IdleServer:
    """A server whose session finished its turn while nobody listened."""

    def __init__(self, answer: str) -> None:
        self.answer = answer

    async def session_status(self) -> dict[str, Any]:
        return {}

    async def messages(self, session_id: str, limit: int | None = None) -> list[MessageWithParts]:
        return [message("user"), answered(self.answer)]

    async def list_permissions(self) -> list[Any]:
        return []

    async def list_questions(self) -> list[Any]:
        return []


class StalledRegistry:
    """The server is there, its event stream does not connect in time."""

    async def connect(self, instance_id: str | None, path: Path, **_: Any) -> Any:
        raise TimeoutError


class Finals:
    def __init__(self) -> None:
        self.texts: list[str] = []
        self.notices: list[str] = []

    def show_progress(self, topic_id: int, turn: TurnSnapshot) -> None:
        return None

    async def show_final(self, topic_id: int, turn: TurnSnapshot, *, streaming: bool) -> None:
        self.texts.append(turn.answer or turn.error or "")

    async def notify(self, topic_id: int | None, text: str) -> None:
        self.notices.append(text)


def answered(text: str) -> MessageWithParts:
    done = message("assistant").model_dump(by_alias=True)
    done["parts"] = [{"id": "prt_1", "type": "text", "text": text}]
    return MessageWithParts.model_validate(done)


async def test_a_turn_owed_after_a_restart_is_delivered_once_its_stream_connects(
    tmp_path: Path,
) -> None:
    async with await Database.open(tmp_path / "topics.db", TOPIC_MIGRATIONS) as db:
        bindings = Bindings(TopicStore(db), -100)
        binding = await bindings.bind(7, tmp_path, "ses_1", "ext_1")
        await TurnJournal(ActiveTurnStore(db)).started(binding)  # the previous run's turn
        chat = Finals()
        journal = TurnJournal(ActiveTurnStore(db))
        tracker = TurnTracker(chat, bindings, journal)  # type: ignore[arg-type]
        reconciler = Reconciler(
            bindings=bindings,
            turns=tracker,
            approvals=None,  # type: ignore[arg-type]
            journal=journal,
        )
        recovery = StartupRecovery(
            reconciler=reconciler,
            registry=StalledRegistry(),  # type: ignore[arg-type]
            bindings=bindings,
            tracker=tracker,
            journal=journal,
        )

        await recovery.recover_open_turns()  # the stream is stalled: nothing can be settled
        assert chat.texts == [] and chat.notices == []  # no false "not available"

        server = IdleServer("the answer written during the stall")
        await reconciler.reconcile("ext_1", server)  # type: ignore[arg-type]  (it connected)
        await reconciler.reconcile("ext_1", server)  # type: ignore[arg-type]  (and again)
        await reconciler.settle("ext_1", server, [binding])  # type: ignore[arg-type]  (recovery)
        await tracker.stop()

        assert chat.texts == ["the answer written during the stall"]
        assert await TurnJournal(ActiveTurnStore(db)).load() == []


class ExternalRegistry:
    """One external server, registered again by the restarted bot, its stream connected."""

    def __init__(self, info: InstanceInfo) -> None:
        self.info = info

    def kind(self, instance_id: str | None) -> InstanceKind:
        return InstanceKind.EXTERNAL

    def client(self, instance_id: str | None) -> object:
        return object()

    async def connect(self, instance_id: str | None, path: Path, **_: Any) -> RunningInstance:
        return RunningInstance(self.info, object(), None)  # type: ignore[arg-type]


class RecordingReconciler:
    def __init__(self) -> None:
        self.reconciled: list[str] = []

    async def reconcile(self, instance_id: str, client: object) -> None:
        self.reconciled.append(instance_id)


async def test_a_restart_catches_up_with_external_servers_too(tmp_path: Path) -> None:
    """A permission asked (or a turn ended) on an external server while the bot was down is
    only seen if the restarted bot asks that server, as it does the managed ones."""
    async with await Database.open(tmp_path / "topics.db", TOPIC_MIGRATIONS) as db:
        bindings = Bindings(TopicStore(db), -100)
        await bindings.bind(7, tmp_path, "ses_1", "ext_1")
        info = InstanceInfo(
            "ext_1", InstanceKind.EXTERNAL, str(tmp_path), InstanceState.RUNNING, 0, 0
        )
        reconciler = RecordingReconciler()
        journal = TurnJournal(ActiveTurnStore(db))
        recovery = StartupRecovery(
            reconciler=reconciler,  # type: ignore[arg-type]
            registry=ExternalRegistry(info),  # type: ignore[arg-type]
            bindings=bindings,
            tracker=TurnTracker(Finals(), bindings, journal),  # type: ignore[arg-type]
            journal=journal,
        )

        await recovery.follow_running()

        assert reconciler.reconciled == ["ext_1"]


# --- a prompt still on its way when its server restarts -----------------------------------------


async def test_a_reconcile_before_the_prompt_was_accepted_does_not_end_its_turn(
    tmp_path: Path,
) -> None:
    """A server killed just as a prompt comes: the prompt waits for the restart, and the
    restart's reconcile finds the session idle with the previous turn's answer. That is not
    this turn's answer: the turn goes on, and ends with its own."""
    async with await Database.open(tmp_path / "topics.db", TOPIC_MIGRATIONS) as db:
        bindings = Bindings(TopicStore(db), -100)
        binding = await bindings.bind(7, tmp_path, "ses_1", "inst_1")
        chat = Finals()
        journal = TurnJournal(ActiveTurnStore(db))
        tracker = TurnTracker(chat, bindings, journal)  # type: ignore[arg-type]
        reconciler = Reconciler(
            bindings=bindings,
            turns=tracker,
            approvals=None,  # type: ignore[arg-type]
            journal=journal,
        )
        server = IdleServer("the previous turn's answer")
        tracker.begin(binding, server)  # type: ignore[arg-type]  (the prompt is on its way)

        await reconciler.reconcile("inst_1", server)  # type: ignore[arg-type]  (server back)
        await tracker.stop()

        assert chat.texts == []
        assert tracker.is_busy("ses_1")


# --- a late busy event of a turn being delivered ------------------------------------------------


class TitledIdleServer(IdleServer):
    async def get_session(self, session_id: str) -> Any:
        raise OpenCodeError("no title here")


class HeldFinals(Finals):
    """Finals wait for `release`; every progress drawn is counted."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.progress_turns: set[int] = set()

    def show_progress(self, topic_id: int, turn: TurnSnapshot) -> None:
        self.progress_turns.add(turn.turn_id)

    async def show_final(self, topic_id: int, turn: TurnSnapshot, *, streaming: bool) -> None:
        await self.release.wait()
        await super().show_final(topic_id, turn, streaming=streaming)


async def test_a_busy_event_arriving_while_its_turn_is_delivered_starts_no_new_turn(
    tmp_path: Path,
) -> None:
    """After a restart the reconcile ends a turn from the session's status; the stream may
    still bring that turn's own `busy` then. It is not a new turn (one begun for it showed a
    second progress message, left "Working" with a Stop button for good)."""
    async with await Database.open(tmp_path / "topics.db", TOPIC_MIGRATIONS) as db:
        bindings = Bindings(TopicStore(db), -100)
        binding = await bindings.bind(7, tmp_path, "ses_1", "inst_1")
        chat = HeldFinals()
        tracker = TurnTracker(chat, bindings, TurnJournal(ActiveTurnStore(db)))  # type: ignore[arg-type]
        server = TitledIdleServer("the answer")
        tracker.begin(binding, server)  # type: ignore[arg-type]
        await tracker.mark_accepted(binding, server)  # type: ignore[arg-type]

        tracker.reconcile(binding, server, busy=False)  # type: ignore[arg-type]  (ended unseen)
        busy = ev.SessionStatusChanged("ses_1", ev.SessionStatus("busy"))
        await tracker.on_event(server, busy)  # type: ignore[arg-type]  (late, from the stream)
        assert not tracker.is_busy("ses_1")
        chat.release.set()
        await tracker.stop()

        assert chat.texts == ["the answer"]
        assert len(chat.progress_turns) == 1
