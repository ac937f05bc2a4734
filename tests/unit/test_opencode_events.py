"""parse_event against the 174 recorded 1.18.33 frames, edge cases, and a fuzz test."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from oc_outpost.opencode import events as ev
from oc_outpost.opencode.errors import EventParseError
from oc_outpost.opencode.events import parse_event, parse_event_json

RECORDING = Path(__file__).parents[1] / "fixtures" / "opencode-1.18-events.jsonl"

PERMISSION = "prompt+bash-tool+permission-once"
GLOBAL = "same run seen on /global/event (first lines only)"
REASONING = "reasoning+text streaming"
REJECT = "edit(write)-tool+permission-reject via legacy endpoint"
QUESTION = "question-tool+POST /question/:id/reply"
ABORT = "abort-mid-stream"
UPSTREAM_500 = "upstream-500 -> retry loop -> abort"
UPSTREAM_400 = "upstream-400 -> session.error"
SUBAGENT = "todowrite + task subagent (child session)"

# Recorded types that nothing in the bot consumes, so they are not modeled.
UNMODELED_TYPES = {"sync", "session.diff", "session.deleted", "todo.updated"}


@cache
def records() -> tuple[dict[str, Any], ...]:
    lines = RECORDING.read_text().splitlines()
    return tuple(json.loads(line) for line in lines if line.strip())


def frames(scenario: str) -> list[dict[str, Any]]:
    found = [record["data"] for record in records() if record["scenario"] == scenario]
    assert found, f"no frames for scenario {scenario!r}"
    return found


def parsed(scenario: str) -> list[ev.Event]:
    return [event for frame in frames(scenario) if (event := parse_event(frame)) is not None]


T = TypeVar("T")


def of_type(events: list[ev.Event], kind: type[T]) -> list[T]:
    return [event for event in events if isinstance(event, kind)]


def inner_type(frame: dict[str, Any]) -> str:
    return str(frame.get("payload", frame)["type"])


# --- the recording as a whole --------------------------------------------------------------------


def test_recording_has_all_174_frames() -> None:
    assert len(records()) == 174


def test_every_recorded_frame_parses_and_only_unmodeled_types_give_none() -> None:
    for record in records():
        frame = record["data"]
        event = parse_event(frame)
        if inner_type(frame) in UNMODELED_TYPES:
            assert event is None, frame
        else:
            assert event is not None, frame


def test_global_envelope_frames_parse_to_the_same_events_as_event_frames() -> None:
    global_events = parsed(GLOBAL)
    event_events = parsed(PERMISSION)
    assert len(global_events) >= 15
    assert global_events == event_events[: len(global_events)]


def test_wrapping_any_event_frame_in_a_global_envelope_changes_nothing() -> None:
    for record in records():
        frame = record["data"]
        if record["stream"] != "/event":
            continue
        wrapped = {"directory": "/x", "project": "global", "payload": frame}
        assert parse_event(wrapped) == parse_event(frame)


def test_parsing_straight_from_json_gives_the_same_events() -> None:
    for record in records():
        frame = record["data"]
        data = json.dumps(frame).encode()
        envelope = record["stream"] == "/global/event"
        assert parse_event_json(data, envelope=envelope) == parse_event(frame)


def test_a_listed_request_is_the_request_of_its_asked_event() -> None:
    """GET /permission and GET /question list the same objects the asked events carry."""
    permission_frame = next(f for f in frames(PERMISSION) if f["type"] == "permission.asked")
    question_frame = next(f for f in frames(QUESTION) if f["type"] == "question.asked")
    listed_permission = TypeAdapter(ev.PermissionRequest).validate_python(
        permission_frame["properties"]
    )
    listed_question = TypeAdapter(ev.QuestionRequest).validate_python(question_frame["properties"])
    assert ev.PermissionAsked(listed_permission) == parse_event(permission_frame)
    assert ev.QuestionAsked(listed_question) == parse_event(question_frame)
    assert ev.QuestionAsked(listed_question).session_id == listed_question.session_id


# --- per scenario --------------------------------------------------------------------------------


def test_permission_scenario() -> None:
    events = parsed(PERMISSION)
    assert isinstance(events[0], ev.ServerConnected)
    assert isinstance(events[-1], ev.ServerHeartbeat)

    created = of_type(events, ev.SessionCreated)[0]
    session_id = created.session_id
    assert created.parent_id is None
    assert created.title.startswith("New session - ")
    assert "Mock session title" in [e.title for e in of_type(events, ev.SessionUpdated)]

    (asked,) = of_type(events, ev.PermissionAsked)
    request = asked.request
    assert asked.session_id == request.session_id == session_id
    assert asked.request_id == request.id and request.id.startswith("per_")
    assert request.permission == "bash"
    assert request.patterns == ("echo hello-from-bash",)
    assert request.metadata["command"] == "echo hello-from-bash"
    assert request.always == ("echo *",)
    assert request.call_id == "call_6832516e"
    assert request.message_id is not None and request.message_id.startswith("msg_")

    (replied,) = of_type(events, ev.PermissionReplied)
    assert (replied.request_id, replied.reply) == (asked.request_id, "once")

    tools = [e.part for e in of_type(events, ev.PartUpdated) if isinstance(e.part, ev.ToolPart)]
    assert [t.status for t in tools] == ["pending", "running", "running", "running", "completed"]
    assert tools[0].input == {}
    assert tools[2].metadata["output"] == ""
    assert tools[3].metadata["output"] == "hello-from-bash\n"
    done = tools[-1]
    assert (done.tool, done.call_id) == ("bash", request.call_id)
    assert done.title == "echo hello-from-bash"
    assert done.output == "hello-from-bash\n"
    assert done.input["command"] == "echo hello-from-bash"

    parts = [e.part for e in of_type(events, ev.PartUpdated)]
    assert [p.type for p in parts if isinstance(p, ev.OtherPart)] == ["step-finish"] * 2
    assert len([p for p in parts if isinstance(p, ev.StepStart)]) == 2

    texts = [p for p in parts if isinstance(p, ev.TextPart)]
    assert texts[0].text == "Please RUN_BASH then summarize"
    assert not texts[0].ended and not texts[-1].synthetic
    assert (texts[-1].text, texts[-1].ended) == ("Tool finished; bash done.", True)
    deltas = [d for d in of_type(events, ev.PartDelta) if d.part_id == texts[-1].id]
    assert "".join(d.delta for d in deltas) == "Tool finished; bash done."

    messages = [e.info for e in of_type(events, ev.MessageUpdated)]
    assistant = [m for m in messages if m.role == "assistant"]
    assert not assistant[0].completed
    assert [m.finish for m in assistant if m.completed] == ["tool-calls"] * 2 + ["stop"] * 2
    assert assistant[-1].tokens == ev.TokenUsage(input=11, output=7)
    assert (assistant[-1].provider_id, assistant[-1].model_id) == ("mock", "mock-model")
    assert all(m.parent_id == assistant[0].parent_id for m in assistant)
    users = [m for m in messages if m.role == "user"]
    assert users and all(m.completed for m in users)

    assert of_type(events, ev.SessionIdle) == [ev.SessionIdle(session_id)]
    statuses = [e.status.type for e in of_type(events, ev.SessionStatusChanged)]
    assert statuses[-1] == "idle" and set(statuses[:-1]) == {"busy"}


def test_reasoning_scenario_has_a_delta_for_a_part_never_announced() -> None:
    events = parsed(REASONING)
    announced = {e.part.id for e in of_type(events, ev.PartUpdated)}
    deltas = of_type(events, ev.PartDelta)
    unannounced = [d for d in deltas if d.part_id not in announced]
    assert unannounced
    assert {d.field for d in deltas} == {"text"}
    assert "".join(d.delta for d in unannounced) == "Hello from mock! You said: REASON please"

    reasoning = [
        e.part for e in of_type(events, ev.PartUpdated) if isinstance(e.part, ev.ReasoningPart)
    ]
    assert reasoning[-1].text == "Let me think." and reasoning[-1].ended
    assert not reasoning[0].ended
    reasoning_deltas = [d.delta for d in deltas if d.part_id == reasoning[0].id]
    assert "".join(reasoning_deltas) == "Let me think."


def test_question_scenario() -> None:
    events = parsed(QUESTION)
    (asked,) = of_type(events, ev.QuestionAsked)
    assert asked.request_id.startswith("que_")
    assert asked.request.call_id == "call_7d254835"
    (question,) = asked.request.questions
    assert question == ev.Question(
        question="Which color?",
        header="Color",
        options=(ev.QuestionOption("Red", "warm"), ev.QuestionOption("Blue", "cool")),
        multiple=False,
        custom=True,
    )
    (replied,) = of_type(events, ev.QuestionReplied)
    assert replied.request_id == asked.request_id
    assert replied.answers == (("Blue",),)
    tool = [e.part for e in of_type(events, ev.PartUpdated) if isinstance(e.part, ev.ToolPart)]
    assert tool[-1].status == "completed" and "Blue" in (tool[-1].output or "")


def test_permission_reject_scenario() -> None:
    events = parsed(REJECT)
    (asked,) = of_type(events, ev.PermissionAsked)
    assert asked.request.permission == "edit"
    assert asked.request.patterns == ("new.txt",)
    assert asked.request.metadata["filepath"] == "/projects/demo/new.txt"
    assert "+written by mock" in asked.request.metadata["diff"]
    (replied,) = of_type(events, ev.PermissionReplied)
    assert replied.reply == "reject"
    tool = [e.part for e in of_type(events, ev.PartUpdated) if isinstance(e.part, ev.ToolPart)]
    assert tool[-1].status == "error"
    assert tool[-1].error == "The user rejected permission to use this specific tool call."
    assert isinstance(events[-1], ev.SessionIdle)


def test_upstream_400_gives_session_error_with_the_provider_message() -> None:
    events = parsed(UPSTREAM_400)
    (error,) = of_type(events, ev.SessionError)
    assert error.name == "APIError"
    assert error.message == "mock bad request"
    assert error.session_id == "ses_df0644430ffeOBzeq7Rex3Ioxp"
    failed = [e.info for e in of_type(events, ev.MessageUpdated) if e.info.error]
    assert failed[-1].completed and failed[-1].error is not None
    assert (failed[-1].error.name, failed[-1].error.message) == ("APIError", "mock bad request")
    assert len(of_type(events, ev.SessionIdle)) == 2


def test_upstream_500_gives_retry_statuses_with_attempts() -> None:
    events = parsed(UPSTREAM_500)
    statuses = [e.status for e in of_type(events, ev.SessionStatusChanged)]
    retries = [s for s in statuses if s.type == "retry"]
    assert [r.attempt for r in retries] == [1, 2, 3]
    assert {r.message for r in retries} == {"mock upstream exploded"}
    assert retries[0].next == 1795558262217
    assert not of_type(events, ev.SessionError)
    assert isinstance(events[-1], ev.SessionIdle)


def test_abort_scenario() -> None:
    events = parsed(ABORT)
    (error,) = of_type(events, ev.SessionError)
    assert (error.name, error.message) == ("MessageAbortedError", "Aborted")
    aborted = [e.info for e in of_type(events, ev.MessageUpdated) if e.info.error]
    assert aborted[0].error is not None and aborted[0].completed
    assert aborted[0].error.name == "MessageAbortedError"
    late_text = [e.part for e in of_type(events, ev.PartUpdated) if isinstance(e.part, ev.TextPart)]
    assert late_text[-1].text == "slow slow slow slow" and late_text[-1].ended
    assert len(of_type(events, ev.SessionIdle)) == 2


def test_subagent_child_session_has_parent_id() -> None:
    events = parsed(SUBAGENT)
    (child,) = of_type(events, ev.SessionCreated)
    assert child.title == "Sub job (@general subagent)"
    task = [
        e
        for e in of_type(events, ev.PartUpdated)
        if isinstance(e.part, ev.ToolPart) and e.part.tool == "task"
    ]
    parent_id = task[0].session_id
    assert child.parent_id == parent_id
    assert isinstance(task[0].part, ev.ToolPart)
    assert task[0].part.metadata["sessionId"] == child.session_id
    idle = [e.session_id for e in of_type(events, ev.SessionIdle)]
    assert idle[-2:] == [child.session_id, parent_id]


# --- edge cases ----------------------------------------------------------------------------------


def test_unknown_types_give_none() -> None:
    assert parse_event({"id": "evt_1", "type": "plugin.added", "properties": {"id": "x"}}) is None
    assert parse_event({"type": "session.next.step", "properties": {}}) is None
    assert parse_event({"directory": "/p", "payload": {"type": "lsp.updated"}}) is None


def test_sync_frames_are_ignored() -> None:
    sync = [f for f in frames(GLOBAL) if inner_type(f) == "sync"]
    assert sync
    assert all(parse_event(frame) is None for frame in sync)


def test_project_updated_on_global_stream_is_ignored() -> None:
    frame = {"directory": "global", "project": "global", "payload": {"type": "project.updated"}}
    assert parse_event(frame) is None


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "session.idle", "properties": {}},
        {"type": "session.idle", "properties": []},
        {"type": "message.part.delta", "properties": {"sessionID": "ses_1", "partID": "p"}},
        {"type": "message.part.updated", "properties": {"sessionID": "ses_1", "part": {}}},
        {
            "type": "message.part.updated",
            "properties": {
                "sessionID": "ses_1",
                "part": {"id": "p", "messageID": "m", "type": "tool", "tool": "bash"},
            },
        },
        {"type": "message.updated", "properties": {"sessionID": "ses_1", "info": {"id": "m"}}},
        {"type": "permission.asked", "properties": {"id": "per_1", "sessionID": "ses_1"}},
        {"type": "question.asked", "properties": {"id": "que_1", "sessionID": "ses_1"}},
        {"type": "question.replied", "properties": {"sessionID": "s", "answers": "Blue"}},
        {"type": "session.status", "properties": {"sessionID": "ses_1", "status": "busy"}},
        {"properties": {}},
        {"payload": "nope"},
        {"type": 7},
    ],
)
def test_malformed_known_frames_raise_event_parse_error(frame: dict[str, Any]) -> None:
    with pytest.raises(EventParseError):
        parse_event(frame)


def test_unknown_part_type_becomes_other_part() -> None:
    frame = {
        "type": "message.part.updated",
        "properties": {
            "sessionID": "ses_1",
            "part": {"id": "prt_1", "messageID": "msg_1", "type": "patch", "hash": "abc"},
        },
    }
    assert parse_event(frame) == ev.PartUpdated("ses_1", "msg_1", ev.OtherPart("prt_1", "patch"))


def test_a_newer_session_status_type_is_kept_as_it_is() -> None:
    frame = {
        "type": "session.status",
        "properties": {"sessionID": "ses_1", "status": {"type": "compacting"}},
    }
    assert parse_event(frame) == ev.SessionStatusChanged("ses_1", ev.SessionStatus("compacting"))


def test_session_id_fallbacks_of_older_servers() -> None:
    part = {"id": "prt_1", "messageID": "msg_1", "sessionID": "ses_p", "type": "step-start"}
    assert parse_event(
        {"type": "message.part.updated", "properties": {"part": part}}
    ) == ev.PartUpdated("ses_p", "msg_1", ev.StepStart("prt_1"))
    info = {"id": "msg_1", "sessionID": "ses_i", "role": "user", "time": {"created": 1}}
    updated = parse_event({"type": "message.updated", "properties": {"info": info}})
    assert isinstance(updated, ev.MessageUpdated) and updated.session_id == "ses_i"
    session = {"id": "ses_s", "title": "t", "parentID": "ses_parent"}
    assert parse_event({"type": "session.updated", "properties": {"info": session}}) == (
        ev.SessionUpdated("ses_s", "t", "ses_parent")
    )


def test_legacy_permission_replied_shape() -> None:
    frame = {
        "type": "permission.replied",
        "properties": {"sessionID": "ses_1", "permissionID": "per_1", "response": "always"},
    }
    assert parse_event(frame) == ev.PermissionReplied("ses_1", "per_1", "always")


def test_session_error_without_session_or_error() -> None:
    error = parse_event({"type": "session.error", "properties": {}})
    assert error == ev.SessionError(None, "UnknownError", None)


def test_small_events() -> None:
    assert parse_event(
        {"type": "question.rejected", "properties": {"sessionID": "s", "requestID": "que_1"}}
    ) == ev.QuestionRejected("s", "que_1")
    file_part = {"id": "p", "messageID": "m", "type": "file", "mime": "text/plain", "url": "u"}
    assert parse_event(
        {"type": "message.part.updated", "properties": {"sessionID": "s", "part": file_part}}
    ) == ev.PartUpdated("s", "m", ev.OtherPart("p", "file"))
    for unmodeled in ("server.instance.disposed", "message.removed", "message.part.removed"):
        assert parse_event({"type": unmodeled, "properties": {"sessionID": "s"}}) is None


def test_frames_that_are_not_json_raise_event_parse_error() -> None:
    with pytest.raises(EventParseError, match="JSON"):
        parse_event_json(b"not json", envelope=False)
    with pytest.raises(EventParseError):
        parse_event_json(b'{"type": "session.idle"}', envelope=True)  # no payload


def test_events_are_frozen() -> None:
    event = ev.SessionIdle("ses_1")
    with pytest.raises(AttributeError):
        event.session_id = "other"  # type: ignore[misc]


# --- fuzzing -------------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=6)
    | st.sampled_from(["ses_1", "msg_1", "prt_1", "text", "tool", "busy", "retry", "user"])
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)
KNOWN_TYPES = [*sorted(ev.EVENT_TYPES), "sync", "unknown.type"]
PROPERTY_KEYS = [
    "sessionID", "info", "part", "status", "error", "id", "messageID", "partID", "delta",
    "field", "permission", "patterns", "metadata", "always", "tool", "questions", "requestID",
    "reply", "answers", "todos", "directory", "title", "parentID", "role", "time", "type",
]  # fmt: skip


@st.composite
def synthetic_frames(draw: st.DrawFn) -> Any:
    properties = draw(
        st.dictionaries(st.sampled_from(PROPERTY_KEYS), json_values, max_size=6) | json_values
    )
    inner = {"type": draw(st.sampled_from(KNOWN_TYPES) | json_values), "properties": properties}
    if draw(st.booleans()):
        return {"directory": draw(json_values), "payload": inner}
    return inner


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


@st.composite
def mutated_recorded_frames(draw: st.DrawFn) -> Any:
    frame = copy.deepcopy(draw(st.sampled_from([r["data"] for r in records()])))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(frame)))
        if not path:
            return draw(json_values)
        parent = frame
        for step in path[:-1]:
            parent = parent[step]
        if isinstance(parent, dict) and draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_values)
    return frame


def _parse_or_parse_error(frame: Any) -> None:
    try:
        result = parse_event(frame)
    except EventParseError:
        result = None
    assert result is None or isinstance(result, ev.Event)
    envelope = isinstance(frame, dict) and "payload" in frame
    try:
        from_json = parse_event_json(json.dumps(frame), envelope=envelope)
    except EventParseError:
        from_json = None
    assert from_json == result


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(synthetic_frames())
def test_parse_event_raises_only_event_parse_error_on_synthetic_frames(frame: Any) -> None:
    _parse_or_parse_error(frame)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_recorded_frames())
def test_parse_event_raises_only_event_parse_error_on_mutated_frames(frame: Any) -> None:
    _parse_or_parse_error(frame)
