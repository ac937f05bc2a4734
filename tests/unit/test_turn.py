"""Folding recorded OpenCode 1.18.33 event streams into turn snapshots."""

from __future__ import annotations

import json
from pathlib import Path

from oc_outpost.core import turn as turns
from oc_outpost.core.turn import TurnPhase, TurnSnapshot
from oc_outpost.opencode import events as ev
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


def delta(text: str, part_id: str = "prt_1") -> ev.PartDelta:
    return ev.PartDelta("ses_1", "msg_1", part_id, text)


def test_deltas_append_without_changing_earlier_snapshots() -> None:
    first = turns.fold(TurnSnapshot(1, "ses_1", 0.0), delta("Hello"))
    second = turns.fold(first, delta(", world"))
    branch = turns.fold(first, delta(" again"))  # an older snapshot stays a valid base
    assert (first.answer, second.answer, branch.answer) == ("Hello", "Hello, world", "Hello again")
    assert turns.fold(second, delta("!")).answer == "Hello, world!"
    assert first.answer == "Hello"


def test_a_streamed_part_keeps_its_place_among_the_others() -> None:
    snapshot = TurnSnapshot(1, "ses_1", 0.0)
    for event in (delta("one", "a"), delta("two", "b"), delta(" more", "a"), delta("!", "b")):
        snapshot = turns.fold(snapshot, event)
    assert [(pid, str(text)) for pid, text in snapshot.texts] == [("a", "one more"), ("b", "two!")]
    full = ev.PartUpdated("ses_1", "msg_1", ev.TextPart("a", "one more, final"))
    assert turns.fold(snapshot, full).answer == "one more, final\n\ntwo!"


def test_streamed_text_joins_long_chains_and_forgets_them() -> None:
    text = turns.StreamedText("")
    for index in range(50_000):  # far deeper than the recursion limit
        text += f"{index % 10}"
    assert str(text) == "0123456789" * 5_000
    longer = text + "tail"
    assert str(longer).endswith("789tail") and len(str(longer)) == 50_004
