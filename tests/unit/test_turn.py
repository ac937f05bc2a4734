"""Folding recorded OpenCode 1.18.33 event streams into turn snapshots."""

from __future__ import annotations

import json
from pathlib import Path

from oc_outpost.core import turn as turns
from oc_outpost.core.turn import TurnPhase, TurnSnapshot
from oc_outpost.opencode.events import Event, parse_event

RECORDING = Path(__file__).parents[1] / "fixtures" / "opencode-1.18-events.jsonl"


def scenario(prefix: str, stream: str = "/event") -> list[Event]:
    events = []
    for line in RECORDING.read_text().splitlines():
        row = json.loads(line)
        if row["scenario"].startswith(prefix) and row["stream"] == stream:
            event = parse_event(row["data"])
            if event is not None:
                events.append(event)
    return events


def fold_all(events: list[Event]) -> TurnSnapshot:
    session_ids = {getattr(e, "session_id", None) for e in events} - {None}
    root = next(s for s in session_ids if isinstance(s, str))
    snapshot = TurnSnapshot(1, root, 0.0)
    for event in events:
        if getattr(event, "session_id", root) == root:
            snapshot = turns.fold(snapshot, event)
    return turns.finish(snapshot, 5.0)


def test_bash_turn_with_permission() -> None:
    events = scenario("prompt+bash-tool+permission-once")
    snapshot = fold_all(events)
    assert snapshot.phase == TurnPhase.DONE
    assert snapshot.steps == 2
    assert [(t.tool, t.status, t.detail) for t in snapshot.tools] == [
        ("bash", "completed", "echo hello-from-bash")
    ]
    assert "Tool finished" in snapshot.answer
    assert "RUN_BASH" not in snapshot.answer  # the user's own prompt is not part of the answer
    assert snapshot.first_user_message is not None


def test_waiting_phase_while_permission_is_open() -> None:
    events = scenario("prompt+bash-tool+permission-once")
    snapshot = TurnSnapshot(1, "ses_df05f9d93ffe4SIG5KC9otkKs1", 0.0)
    phases = []
    for event in events:
        snapshot = turns.fold(snapshot, event)
        phases.append(snapshot.phase)
    assert TurnPhase.WAITING in phases
    assert phases[-1] == TurnPhase.RUNNING


def test_reasoning_is_not_part_of_the_answer() -> None:
    snapshot = fold_all(scenario("reasoning+text streaming"))
    assert snapshot.answer
    for part_id in snapshot.reasoning_parts:
        assert part_id not in dict(snapshot.texts)


def test_provider_error_fails_the_turn_plainly() -> None:
    snapshot = fold_all(scenario("upstream-400"))
    assert snapshot.phase == TurnPhase.FAILED
    assert snapshot.error is not None and snapshot.error.startswith("APIError")


def test_abort_ends_as_aborted() -> None:
    snapshot = fold_all(scenario("abort-mid-stream"))
    assert snapshot.phase == TurnPhase.ABORTED


def test_retry_state_is_visible() -> None:
    events = scenario("upstream-500")
    snapshot = TurnSnapshot(1, "x", 0.0)
    notes = []
    for event in events:
        snapshot = turns.fold(snapshot, event)
        if snapshot.phase == TurnPhase.RETRYING:
            notes.append(snapshot.retry_note)
    assert notes and notes[0] is not None and notes[0].startswith("attempt 1")
