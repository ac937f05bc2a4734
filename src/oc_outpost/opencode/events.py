"""OpenCode's events, and the parts, messages and requests they share with the REST API.

Every type is a frozen dataclass, defined once: a `TextPart` is the same object whether it came
in a `message.part.updated` event or in `GET /session/{id}/message`, and a `PermissionAsked`
wraps the very `PermissionRequest` that `GET /permission` lists (`PermissionAsked(request)`
turns a listed request into its event). Pydantic validates them at the edge; the field
annotations say where each value sits in the JSON (`AliasPath`), so a frame is parsed in one
pass, straight from its bytes (`parse_event_json`).

Frames: `/event` sends `{"id", "type", "properties"}`, `/global/event` wraps the same in
`{"directory", "project", "payload": {...}}`. `Event` is one discriminated union over `type`.

Tolerance (OpenCode 1.1.65 – 1.18.33): an event type or part type we do not model is no error
(the frame gives None; the part becomes an `OtherPart`), and neither is an unknown key. A frame
of a *known* type whose required fields are missing or mistyped raises `EventParseError`, as
does a frame that is not an object with a string `type`; `stream.py` logs and skips those.

Session ids: 1.18.33 puts `sessionID` in every session-scoped event's properties; older servers
had it only in `info.sessionID` / `part.sessionID`, or `info.id` for `session.*` events, tried
in that order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, AliasChoices, AliasPath, Field, TypeAdapter, ValidationError

from oc_outpost.opencode.errors import EventParseError


def _at(key: str, *path: str) -> Any:
    """Where a field's value sits in the JSON object being validated."""
    return Field(validation_alias=AliasPath(key, *path) if path else key)


def _prop(*path: str) -> Any:
    """A value in an event's `properties`."""
    return _at("properties", *path)


def _prop_either(*keys: str) -> Any:
    """A value in an event's `properties` under the first of `keys` that is there."""
    return Field(validation_alias=AliasChoices(*(AliasPath("properties", key) for key in keys)))


def _tag(value: str) -> Any:
    """The discriminator field `type` (keyword-only, so a dataclass is built without it)."""
    return field(default=value, kw_only=True, repr=False)


# ---------------------------------------------------------------------------------------------
# Shared with the REST API: tokens, parts, messages, statuses, permission and question requests


@dataclass(frozen=True)
class TokenUsage:
    input: int = 0
    output: int = 0
    reasoning: int = 0
    cache_read: Annotated[int, _at("cache", "read")] = 0
    cache_write: Annotated[int, _at("cache", "write")] = 0


@dataclass(frozen=True)
class TextPart:
    id: str
    text: str = ""
    synthetic: bool = False
    ended_at: Annotated[float | None, _at("time", "end")] = None
    type: Literal["text"] = _tag("text")

    @property
    def ended(self) -> bool:
        return self.ended_at is not None


@dataclass(frozen=True)
class ReasoningPart:
    id: str
    text: str = ""
    ended_at: Annotated[float | None, _at("time", "end")] = None
    type: Literal["reasoning"] = _tag("reasoning")

    @property
    def ended(self) -> bool:
        return self.ended_at is not None


@dataclass(frozen=True)
class ToolPart:
    """A tool call. `status` is pending, running, completed or error. While running, live
    output (bash) is in `metadata["output"]`; a `task` tool names its child session in
    `metadata["sessionId"]`."""

    id: str
    call_id: Annotated[str, _at("callID")]
    tool: str
    status: Annotated[str, _at("state", "status")]
    title: Annotated[str | None, _at("state", "title")] = None
    input: Annotated[Mapping[str, Any], _at("state", "input")] = field(default_factory=dict)
    output: Annotated[str | None, _at("state", "output")] = None
    error: Annotated[str | None, _at("state", "error")] = None
    metadata: Annotated[Mapping[str, Any], _at("state", "metadata")] = field(default_factory=dict)
    type: Literal["tool"] = _tag("tool")


@dataclass(frozen=True)
class StepStart:
    id: str
    type: Literal["step-start"] = _tag("step-start")


_MODELED_PARTS = frozenset({"text", "reasoning", "tool", "step-start"})


def _unmodeled_part(part_type: str) -> str:
    if part_type in _MODELED_PARTS:
        raise ValueError(f"malformed {part_type!r} part")
    return part_type


@dataclass(frozen=True)
class OtherPart:
    """Any part type we do not model (step-finish, file, patch, agent, subtask, ...)."""

    id: str
    type: Annotated[str, AfterValidator(_unmodeled_part)]


Part = Annotated[
    Annotated[TextPart | ReasoningPart | ToolPart | StepStart, Field(discriminator="type")]
    | OtherPart,
    Field(union_mode="left_to_right"),
]


@dataclass(frozen=True)
class MessageError:
    """A provider or agent error such as APIError or MessageAbortedError."""

    name: str
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def message(self) -> str:
        message = self.data.get("message")
        return message if isinstance(message, str) else ""


@dataclass(frozen=True)
class Message:
    """A user or assistant message; an assistant message is finished once `completed`."""

    id: str
    role: Literal["user", "assistant"]
    created_at: Annotated[float | None, _at("time", "created")] = None  # epoch ms
    completed_at: Annotated[float | None, _at("time", "completed")] = None
    parent_id: Annotated[str | None, _at("parentID")] = None
    provider_id: Annotated[str | None, _at("providerID")] = None
    model_id: Annotated[str | None, _at("modelID")] = None
    finish: str | None = None
    error: MessageError | None = None
    cost: float = 0.0
    tokens: TokenUsage = TokenUsage()

    @property
    def completed(self) -> bool:
        return self.role == "user" or self.completed_at is not None


@dataclass(frozen=True)
class SessionStatus:
    """`busy`, `retry` (with attempt, message, next = epoch ms) or `idle`; a newer type is
    kept as it is, for callers to ignore."""

    type: str
    attempt: int | None = None
    message: str | None = None
    next: int | None = None


@dataclass(frozen=True)
class PermissionRequest:
    id: str
    session_id: Annotated[str, _at("sessionID")]
    permission: str
    patterns: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    always: tuple[str, ...] = ()
    message_id: Annotated[str | None, _at("tool", "messageID")] = None
    call_id: Annotated[str | None, _at("tool", "callID")] = None


@dataclass(frozen=True)
class QuestionOption:
    label: str
    description: str = ""


@dataclass(frozen=True)
class Question:
    question: str
    header: str = ""
    options: tuple[QuestionOption, ...] = ()
    multiple: bool = False
    custom: bool = True  # OpenCode's documented default: typing a custom answer is allowed


@dataclass(frozen=True)
class Todo:
    """One item of the agent's todo list (its `todowrite` tool). `status` is pending,
    in_progress, completed or cancelled; a newer one is kept as it is, for callers to show
    plainly."""

    content: str
    status: str = "pending"
    priority: str = "medium"
    id: str | None = None


@dataclass(frozen=True)
class QuestionRequest:
    id: str
    session_id: Annotated[str, _at("sessionID")]
    questions: tuple[Question, ...]
    message_id: Annotated[str | None, _at("tool", "messageID")] = None
    call_id: Annotated[str | None, _at("tool", "callID")] = None


# ---------------------------------------------------------------------------------------------
# Events

_SESSION_ID = AliasChoices(
    AliasPath("properties", "sessionID"),
    AliasPath("properties", "info", "sessionID"),
    AliasPath("properties", "part", "sessionID"),
)
SessionId = Annotated[str, Field(validation_alias=_SESSION_ID)]
# `session.*` events of older servers only name the session as their `info.id`.
InfoSessionId = Annotated[
    str,
    Field(
        validation_alias=AliasChoices(*_SESSION_ID.choices, AliasPath("properties", "info", "id"))
    ),
]


@dataclass(frozen=True)
class ServerConnected:
    type: Literal["server.connected"] = _tag("server.connected")


@dataclass(frozen=True)
class ServerHeartbeat:
    type: Literal["server.heartbeat"] = _tag("server.heartbeat")


@dataclass(frozen=True)
class SessionStatusChanged:
    session_id: SessionId
    status: Annotated[SessionStatus, _prop("status")]
    type: Literal["session.status"] = _tag("session.status")


@dataclass(frozen=True)
class SessionIdle:
    """May arrive twice per turn (abort, provider error); treat as idempotent."""

    session_id: SessionId
    type: Literal["session.idle"] = _tag("session.idle")


@dataclass(frozen=True)
class SessionCompacted:
    """OpenCode summarized the session (asked for, or because its context overflowed)."""

    session_id: SessionId
    type: Literal["session.compacted"] = _tag("session.compacted")


@dataclass(frozen=True)
class SessionError:
    """`name` is e.g. APIError, MessageAbortedError, ProviderAuthError, UnknownError."""

    session_id: Annotated[str | None, _prop("sessionID")] = None
    name: Annotated[str, _prop("error", "name")] = "UnknownError"
    message: Annotated[str | None, _prop("error", "data", "message")] = None
    type: Literal["session.error"] = _tag("session.error")


@dataclass(frozen=True)
class SessionCreated:
    session_id: InfoSessionId
    parent_id: Annotated[str | None, _prop("info", "parentID")] = None
    title: Annotated[str, _prop("info", "title")] = ""
    type: Literal["session.created"] = _tag("session.created")


@dataclass(frozen=True)
class SessionUpdated:
    session_id: InfoSessionId
    title: Annotated[str, _prop("info", "title")] = ""
    parent_id: Annotated[str | None, _prop("info", "parentID")] = None
    type: Literal["session.updated"] = _tag("session.updated")


@dataclass(frozen=True)
class MessageUpdated:
    session_id: SessionId
    info: Annotated[Message, _prop("info")]
    type: Literal["message.updated"] = _tag("message.updated")


@dataclass(frozen=True)
class PartUpdated:
    """The full current state of a part (1.18 sends no delta here)."""

    session_id: SessionId
    message_id: Annotated[str, _prop("part", "messageID")]
    part: Annotated[Part, _prop("part")]
    type: Literal["message.part.updated"] = _tag("message.part.updated")


@dataclass(frozen=True)
class PartDelta:
    """Text appended to a part's `field` (`"text"` for text and reasoning parts alike). The part
    may never have been announced by a PartUpdated: create it on its first delta."""

    session_id: SessionId
    message_id: Annotated[str, _prop("messageID")]
    part_id: Annotated[str, _prop("partID")]
    delta: Annotated[str, _prop("delta")]
    field: Annotated[str, _prop("field")] = "text"
    type: Literal["message.part.delta"] = _tag("message.part.delta")


class _Asked:
    """An asked event's session and request id, which are its request's."""

    request: PermissionRequest | QuestionRequest

    @property
    def session_id(self) -> str:
        return self.request.session_id

    @property
    def request_id(self) -> str:
        return self.request.id


@dataclass(frozen=True)
class PermissionAsked(_Asked):
    """The agent waits for a permission; `PermissionAsked(request)` is the event for a request
    listed by `GET /permission` (asked while nobody was listening)."""

    request: Annotated[PermissionRequest, _at("properties")]
    type: Literal["permission.asked"] = _tag("permission.asked")


@dataclass(frozen=True)
class PermissionReplied:
    # 0.x servers said permissionID/response; 1.18 says requestID/reply.
    session_id: SessionId
    request_id: Annotated[str, _prop_either("requestID", "permissionID")]
    reply: Annotated[str, _prop_either("reply", "response")]
    type: Literal["permission.replied"] = _tag("permission.replied")


@dataclass(frozen=True)
class QuestionAsked(_Asked):
    """The agent asks the user; `QuestionAsked(request)` is the event for a request listed by
    `GET /question`."""

    request: Annotated[QuestionRequest, _at("properties")]
    type: Literal["question.asked"] = _tag("question.asked")


@dataclass(frozen=True)
class QuestionReplied:
    session_id: SessionId
    request_id: Annotated[str, _prop("requestID")]
    answers: Annotated[tuple[tuple[str, ...], ...], _prop("answers")] = ()
    type: Literal["question.replied"] = _tag("question.replied")


@dataclass(frozen=True)
class QuestionRejected:
    session_id: SessionId
    request_id: Annotated[str, _prop("requestID")]
    type: Literal["question.rejected"] = _tag("question.rejected")


@dataclass(frozen=True)
class TodoUpdated:
    """The session's whole todo list, sent each time the agent writes it."""

    session_id: SessionId
    todos: Annotated[tuple[Todo, ...], _prop("todos")] = ()
    type: Literal["todo.updated"] = _tag("todo.updated")


Event = (
    ServerConnected
    | ServerHeartbeat
    | SessionStatusChanged
    | SessionIdle
    | SessionCompacted
    | SessionError
    | SessionCreated
    | SessionUpdated
    | MessageUpdated
    | PartUpdated
    | PartDelta
    | PermissionAsked
    | PermissionReplied
    | QuestionAsked
    | QuestionReplied
    | QuestionRejected
    | TodoUpdated
)

# ---------------------------------------------------------------------------------------------
# Parsing

EVENT_TYPES: frozenset[str] = frozenset(
    str(f.default) for kind in get_args(Event) for f in fields(kind) if f.name == "type"
)


def _unmodeled_event(event_type: str) -> str:
    if event_type in EVENT_TYPES:
        raise ValueError(f"malformed {event_type!r} frame")
    return event_type


@dataclass(frozen=True)
class _Unmodeled:
    """A frame of a type we do not model (`sync`, `session.diff`, `lsp.updated`, ...)."""

    type: Annotated[str, AfterValidator(_unmodeled_event)]


_Frame = Annotated[
    Annotated[Event, Field(discriminator="type")] | _Unmodeled,
    Field(union_mode="left_to_right"),
]


@dataclass(frozen=True)
class _GlobalFrame:
    payload: _Frame


_EVENT_FRAME: TypeAdapter[Event | _Unmodeled] = TypeAdapter(_Frame)
_GLOBAL_FRAME: TypeAdapter[_GlobalFrame] = TypeAdapter(_GlobalFrame)


def parse_event(frame: Any) -> Event | None:
    """Parse one decoded SSE frame (either envelope); None for unmodeled types."""
    if not isinstance(frame, Mapping):
        raise EventParseError(f"frame is not an object: {type(frame).__name__}")
    try:
        if "payload" in frame:
            return _event_of(_GLOBAL_FRAME.validate_python(frame).payload)
        return _event_of(_EVENT_FRAME.validate_python(frame))
    except ValidationError as exc:
        raise EventParseError(_brief(exc)) from exc


def parse_event_json(data: str | bytes, *, envelope: bool) -> Event | None:
    """Parse one SSE frame's `data` straight from JSON; `envelope` for `/global/event` frames.

    Raises EventParseError for malformed frames, including data that is not JSON."""
    try:
        if envelope:
            return _event_of(_GLOBAL_FRAME.validate_json(data).payload)
        return _event_of(_EVENT_FRAME.validate_json(data))
    except ValidationError as exc:
        raise EventParseError(_brief(exc)) from exc


def _event_of(parsed: Event | _Unmodeled) -> Event | None:
    return None if isinstance(parsed, _Unmodeled) else parsed


def _brief(exc: ValidationError) -> str:
    first = exc.errors()[0]
    steps = [str(step) for step in first["loc"] if not str(step).startswith("tagged-union[")]
    location = ".".join(steps) or "<root>"
    return f"{location}: {first['msg']} ({exc.error_count()} error(s))"
