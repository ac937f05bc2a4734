"""Typed internal events and the parser for OpenCode 1.18 SSE frames.

`parse_event(frame)` accepts a `/event` frame `{"id", "type", "properties"}` or a `/global/event`
frame `{"directory", "project", "payload": {...}}` and returns a frozen dataclass, or None when
the type is unknown or irrelevant (including `/global/event`'s `sync` replication records).

Error policy: unknown types never raise. A frame of a *known* type whose required fields are
missing or mistyped raises `EventParseError` (and so does a frame that is not an object with a
string `type`); `iter_events` in stream.py logs such frames and skips them.

Session ids: 1.18.33 puts `sessionID` in every session-scoped event's properties; older servers
only had it in `info.sessionID` / `part.sessionID`, or `info.id` for `session.*` events, which
are tried in that order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from pydantic import TypeAdapter, ValidationError

from oc_outpost.opencode.errors import EventParseError
from oc_outpost.opencode.wire import (
    AssistantMessage,
    FilePartWire,
    MessageInfo,
    PartWire,
    PermissionRequest,
    QuestionInfo,
    QuestionRequest,
    ReasoningPartWire,
    SessionStatus,
    StepFinishPartWire,
    StepStartPartWire,
    TextPartWire,
    TodoWire,
    ToolPartWire,
)
from oc_outpost.opencode.wire import Tokens as WireTokens

# ---------------------------------------------------------------------------------------------
# Parts


@dataclass(frozen=True)
class TokenUsage:
    input: int = 0
    output: int = 0
    reasoning: int = 0
    cache_read: int = 0
    cache_write: int = 0


@dataclass(frozen=True)
class TextPart:
    id: str
    text: str
    synthetic: bool = False
    ended: bool = False


@dataclass(frozen=True)
class ReasoningPart:
    id: str
    text: str
    ended: bool = False


@dataclass(frozen=True)
class ToolPart:
    """A tool call. `status` is pending, running, completed or error. While running, live
    output (bash) is in `metadata["output"]`; a `task` tool names its child session in
    `metadata["sessionId"]`."""

    id: str
    call_id: str
    tool: str
    status: str
    title: str | None = None
    input: Mapping[str, Any] = field(default_factory=dict)
    output: str | None = None
    error: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StepStart:
    id: str


@dataclass(frozen=True)
class StepFinish:
    id: str
    reason: str
    cost: float
    tokens: TokenUsage


@dataclass(frozen=True)
class FilePart:
    id: str
    mime: str
    url: str
    filename: str | None = None


@dataclass(frozen=True)
class OtherPart:
    id: str
    type: str


Part = TextPart | ReasoningPart | ToolPart | StepStart | StepFinish | FilePart | OtherPart


def token_usage(tokens: WireTokens) -> TokenUsage:
    return TokenUsage(
        input=tokens.input,
        output=tokens.output,
        reasoning=tokens.reasoning,
        cache_read=tokens.cache.read,
        cache_write=tokens.cache.write,
    )


def part_from_wire(part: PartWire) -> Part:
    """Convert a validated wire part (e.g. from `OpenCodeClient.messages`) to its dataclass."""
    match part:
        case TextPartWire():
            ended = part.time is not None and part.time.end is not None
            return TextPart(part.id, part.text, synthetic=part.synthetic, ended=ended)
        case ReasoningPartWire():
            ended = part.time is not None and part.time.end is not None
            return ReasoningPart(part.id, part.text, ended=ended)
        case ToolPartWire():
            state = part.state
            return ToolPart(
                id=part.id,
                call_id=part.call_id,
                tool=part.tool,
                status=state.status,
                title=state.title,
                input=state.input,
                output=state.output,
                error=state.error,
                metadata=state.metadata,
            )
        case StepStartPartWire():
            return StepStart(part.id)
        case StepFinishPartWire():
            return StepFinish(part.id, part.reason, part.cost, token_usage(part.tokens))
        case FilePartWire():
            return FilePart(part.id, part.mime, part.url, part.filename)
        case _:
            return OtherPart(part.id, part.type)


# ---------------------------------------------------------------------------------------------
# Events


@dataclass(frozen=True)
class ServerConnected:
    pass


@dataclass(frozen=True)
class ServerHeartbeat:
    pass


@dataclass(frozen=True)
class ServerInstanceDisposed:
    directory: str


StatusType = Literal["idle", "busy", "retry"]


@dataclass(frozen=True)
class SessionStatusChanged:
    """`retry` carries the attempt number, the provider's message and the next try (epoch ms)."""

    session_id: str
    status: StatusType
    attempt: int | None = None
    message: str | None = None
    next_ms: int | None = None


@dataclass(frozen=True)
class SessionIdle:
    """May arrive twice per turn (abort, provider error); treat as idempotent."""

    session_id: str


@dataclass(frozen=True)
class SessionError:
    """`name` is e.g. APIError, MessageAbortedError, ProviderAuthError, UnknownError."""

    session_id: str | None
    name: str
    message: str


@dataclass(frozen=True)
class SessionCreated:
    session_id: str
    parent_id: str | None
    title: str


@dataclass(frozen=True)
class SessionUpdated:
    session_id: str
    title: str
    parent_id: str | None


@dataclass(frozen=True)
class SessionDeleted:
    session_id: str


@dataclass(frozen=True)
class MessageUpdated:
    """An assistant message is finished once `completed`; a user message always is."""

    session_id: str
    message_id: str
    role: Literal["user", "assistant"]
    completed: bool
    finish: str | None = None
    error_name: str | None = None
    error_message: str | None = None
    cost: float = 0.0
    tokens: TokenUsage = TokenUsage()
    parent_id: str | None = None


@dataclass(frozen=True)
class MessageRemoved:
    session_id: str
    message_id: str


@dataclass(frozen=True)
class PartUpdated:
    """The full current state of a part (1.18 sends no delta here)."""

    session_id: str
    message_id: str
    part: Part


@dataclass(frozen=True)
class PartDelta:
    """Text appended to a part's `field` (`"text"` for text and reasoning parts alike). The part
    may never have been announced by a PartUpdated: create it on its first delta."""

    session_id: str
    message_id: str
    part_id: str
    field: str
    delta: str


@dataclass(frozen=True)
class PartRemoved:
    session_id: str
    message_id: str
    part_id: str


@dataclass(frozen=True)
class PermissionAsked:
    request_id: str
    session_id: str
    permission: str
    patterns: tuple[str, ...]
    metadata: Mapping[str, Any]
    always: tuple[str, ...]
    message_id: str | None = None
    call_id: str | None = None


@dataclass(frozen=True)
class PermissionReplied:
    session_id: str
    request_id: str
    reply: str


class QuestionOption(NamedTuple):
    label: str
    description: str


@dataclass(frozen=True)
class Question:
    question: str
    header: str
    options: tuple[QuestionOption, ...]
    multiple: bool = False
    custom: bool = True


@dataclass(frozen=True)
class QuestionAsked:
    request_id: str
    session_id: str
    questions: tuple[Question, ...]
    message_id: str | None = None
    call_id: str | None = None


@dataclass(frozen=True)
class QuestionReplied:
    session_id: str
    request_id: str
    answers: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class QuestionRejected:
    session_id: str
    request_id: str


@dataclass(frozen=True)
class Todo:
    content: str
    status: str
    priority: str


@dataclass(frozen=True)
class TodoUpdated:
    session_id: str
    todos: tuple[Todo, ...]


Event = (
    ServerConnected
    | ServerHeartbeat
    | ServerInstanceDisposed
    | SessionStatusChanged
    | SessionIdle
    | SessionError
    | SessionCreated
    | SessionUpdated
    | SessionDeleted
    | MessageUpdated
    | MessageRemoved
    | PartUpdated
    | PartDelta
    | PartRemoved
    | PermissionAsked
    | PermissionReplied
    | QuestionAsked
    | QuestionReplied
    | QuestionRejected
    | TodoUpdated
)


@dataclass(frozen=True)
class ParsedFrame:
    """An event plus the instance directory of its `/global/event` envelope (None on `/event`
    frames and on server-wide frames such as heartbeats)."""

    event: Event
    directory: str | None


# ---------------------------------------------------------------------------------------------
# Parsing


def parse_event(frame: Mapping[str, Any]) -> Event | None:
    """Parse one SSE frame (either envelope); None for unknown or irrelevant types."""
    parsed = parse_frame(frame)
    return parsed.event if parsed is not None else None


def parse_frame(frame: Mapping[str, Any]) -> ParsedFrame | None:
    """Like `parse_event`, keeping the `/global/event` envelope's directory."""
    if not isinstance(frame, Mapping):
        raise EventParseError(f"frame is not an object: {type(frame).__name__}")
    directory: str | None = None
    inner: Any = frame
    if "payload" in frame:
        inner = frame["payload"]
        envelope_directory = frame.get("directory")
        directory = envelope_directory if isinstance(envelope_directory, str) else None
        if not isinstance(inner, Mapping):
            raise EventParseError("global frame payload is not an object")
    event_type = inner.get("type")
    if not isinstance(event_type, str):
        raise EventParseError("frame has no string 'type'")
    handler = _HANDLERS.get(event_type)
    if handler is None:
        return None
    props = inner.get("properties", {})
    if not isinstance(props, Mapping):
        raise EventParseError(f"{event_type}: 'properties' is not an object")
    try:
        event = handler(props)
    except ValidationError as exc:
        raise EventParseError(f"{event_type}: {_brief(exc)}") from exc
    return ParsedFrame(event, directory) if event is not None else None


def _brief(exc: ValidationError) -> str:
    first = exc.errors()[0]
    location = ".".join(str(item) for item in first["loc"]) or "<root>"
    return f"{location}: {first['msg']} ({exc.error_count()} error(s))"


_MESSAGE_INFO: TypeAdapter[Any] = TypeAdapter(MessageInfo)
_PART: TypeAdapter[Any] = TypeAdapter(PartWire)


def _optional_str(props: Mapping[str, Any], key: str) -> str | None:
    value = props.get(key)
    return value if isinstance(value, str) else None


def _require_str(props: Mapping[str, Any], key: str, event_type: str) -> str:
    value = props.get(key)
    if not isinstance(value, str):
        raise EventParseError(f"{event_type}: missing string '{key}'")
    return value


def _nested_str(props: Mapping[str, Any], outer: str, key: str) -> str | None:
    container = props.get(outer)
    return _optional_str(container, key) if isinstance(container, Mapping) else None


def _session_id(props: Mapping[str, Any], event_type: str, *, info_id: bool = False) -> str:
    """sessionID with the fallbacks of older servers (see the module docstring)."""
    candidates = [
        _optional_str(props, "sessionID"),
        _nested_str(props, "info", "sessionID"),
        _nested_str(props, "part", "sessionID"),
    ]
    if info_id:
        candidates.append(_nested_str(props, "info", "id"))
    for candidate in candidates:
        if candidate:
            return candidate
    raise EventParseError(f"{event_type}: no session id")


def _session_status(props: Mapping[str, Any]) -> SessionStatusChanged | None:
    session_id = _session_id(props, "session.status")
    status_value = props.get("status")
    if isinstance(status_value, Mapping) and status_value.get("type") not in (
        "idle",
        "busy",
        "retry",
    ):
        return None  # a status type newer than 1.18: ignore rather than guess
    status = SessionStatus.model_validate(status_value)
    return SessionStatusChanged(
        session_id=session_id,
        status=status.type,
        attempt=status.attempt,
        message=status.message,
        next_ms=status.next,
    )


def _session_error(props: Mapping[str, Any]) -> SessionError:
    session_id = _optional_str(props, "sessionID")
    error = props.get("error")
    if error is None:
        return SessionError(session_id, "UnknownError", "")
    if not isinstance(error, Mapping):
        raise EventParseError("session.error: 'error' is not an object")
    name = _optional_str(error, "name") or "UnknownError"
    data = error.get("data")
    message = _optional_str(data, "message") if isinstance(data, Mapping) else None
    return SessionError(session_id, name, message or "")


def _session_info(props: Mapping[str, Any], event_type: str) -> tuple[str, str, str | None]:
    session_id = _session_id(props, event_type, info_id=True)
    info = props.get("info")
    if not isinstance(info, Mapping):
        raise EventParseError(f"{event_type}: missing object 'info'")
    title = _optional_str(info, "title") or ""
    return session_id, title, _optional_str(info, "parentID")


def _session_created(props: Mapping[str, Any]) -> SessionCreated:
    session_id, title, parent_id = _session_info(props, "session.created")
    return SessionCreated(session_id, parent_id, title)


def _session_updated(props: Mapping[str, Any]) -> SessionUpdated:
    session_id, title, parent_id = _session_info(props, "session.updated")
    return SessionUpdated(session_id, title, parent_id)


def _session_deleted(props: Mapping[str, Any]) -> SessionDeleted:
    return SessionDeleted(_session_id(props, "session.deleted", info_id=True))


def _message_updated(props: Mapping[str, Any]) -> MessageUpdated:
    session_id = _session_id(props, "message.updated")
    info = _MESSAGE_INFO.validate_python(props.get("info"))
    if not isinstance(info, AssistantMessage):
        return MessageUpdated(session_id, info.id, "user", completed=True)
    return MessageUpdated(
        session_id=session_id,
        message_id=info.id,
        role="assistant",
        completed=info.completed,
        finish=info.finish,
        error_name=info.error.name if info.error else None,
        error_message=info.error.message if info.error else None,
        cost=info.cost,
        tokens=token_usage(info.tokens),
        parent_id=info.parent_id,
    )


def _message_removed(props: Mapping[str, Any]) -> MessageRemoved:
    session_id = _session_id(props, "message.removed")
    return MessageRemoved(session_id, _require_str(props, "messageID", "message.removed"))


def _part_updated(props: Mapping[str, Any]) -> PartUpdated:
    session_id = _session_id(props, "message.part.updated")
    wire_part = _PART.validate_python(props.get("part"))
    message_id = wire_part.message_id
    if message_id is None:
        raise EventParseError("message.part.updated: part has no messageID")
    return PartUpdated(session_id, message_id, part_from_wire(wire_part))


def _part_delta(props: Mapping[str, Any]) -> PartDelta:
    kind = "message.part.delta"
    return PartDelta(
        session_id=_session_id(props, kind),
        message_id=_require_str(props, "messageID", kind),
        part_id=_require_str(props, "partID", kind),
        field=_optional_str(props, "field") or "text",
        delta=_require_str(props, "delta", kind),
    )


def _part_removed(props: Mapping[str, Any]) -> PartRemoved:
    kind = "message.part.removed"
    return PartRemoved(
        session_id=_session_id(props, kind),
        message_id=_require_str(props, "messageID", kind),
        part_id=_require_str(props, "partID", kind),
    )


def _permission_asked(props: Mapping[str, Any]) -> PermissionAsked:
    request = PermissionRequest.model_validate(props)
    return PermissionAsked(
        request_id=request.id,
        session_id=request.session_id,
        permission=request.permission,
        patterns=tuple(request.patterns),
        metadata=request.metadata,
        always=tuple(request.always),
        message_id=request.tool.message_id if request.tool else None,
        call_id=request.tool.call_id if request.tool else None,
    )


def _permission_replied(props: Mapping[str, Any]) -> PermissionReplied:
    kind = "permission.replied"
    # 0.x servers said permissionID/response; 1.18 says requestID/reply.
    request_id = _optional_str(props, "requestID") or _optional_str(props, "permissionID")
    reply = _optional_str(props, "reply") or _optional_str(props, "response")
    if request_id is None or reply is None:
        raise EventParseError(f"{kind}: missing requestID or reply")
    return PermissionReplied(_session_id(props, kind), request_id, reply)


def question_from_wire(info: QuestionInfo) -> Question:
    return Question(
        question=info.question,
        header=info.header,
        options=tuple(QuestionOption(o.label, o.description) for o in info.options),
        multiple=info.multiple,
        custom=info.custom,
    )


def _question_asked(props: Mapping[str, Any]) -> QuestionAsked:
    request = QuestionRequest.model_validate(props)
    return QuestionAsked(
        request_id=request.id,
        session_id=request.session_id,
        questions=tuple(question_from_wire(q) for q in request.questions),
        message_id=request.tool.message_id if request.tool else None,
        call_id=request.tool.call_id if request.tool else None,
    )


def _question_replied(props: Mapping[str, Any]) -> QuestionReplied:
    kind = "question.replied"
    answers = props.get("answers", [])
    if not isinstance(answers, list) or not all(
        isinstance(answer, list) and all(isinstance(label, str) for label in answer)
        for answer in answers
    ):
        raise EventParseError(f"{kind}: 'answers' is not a list of label lists")
    return QuestionReplied(
        session_id=_session_id(props, kind),
        request_id=_require_str(props, "requestID", kind),
        answers=tuple(tuple(answer) for answer in answers),
    )


def _question_rejected(props: Mapping[str, Any]) -> QuestionRejected:
    kind = "question.rejected"
    return QuestionRejected(_session_id(props, kind), _require_str(props, "requestID", kind))


def _todo_updated(props: Mapping[str, Any]) -> TodoUpdated:
    todos = props.get("todos", [])
    if not isinstance(todos, list):
        raise EventParseError("todo.updated: 'todos' is not a list")
    parsed = tuple(TodoWire.model_validate(todo) for todo in todos)
    return TodoUpdated(
        session_id=_session_id(props, "todo.updated"),
        todos=tuple(Todo(t.content, t.status, t.priority) for t in parsed),
    )


def _instance_disposed(props: Mapping[str, Any]) -> ServerInstanceDisposed:
    return ServerInstanceDisposed(
        _require_str(props, "directory", "server.instance.disposed"),
    )


_HANDLERS: dict[str, Callable[[Mapping[str, Any]], Event | None]] = {
    "server.connected": lambda _props: ServerConnected(),
    "server.heartbeat": lambda _props: ServerHeartbeat(),
    "server.instance.disposed": _instance_disposed,
    "session.status": _session_status,
    "session.idle": lambda props: SessionIdle(_session_id(props, "session.idle")),
    "session.error": _session_error,
    "session.created": _session_created,
    "session.updated": _session_updated,
    "session.deleted": _session_deleted,
    "message.updated": _message_updated,
    "message.removed": _message_removed,
    "message.part.updated": _part_updated,
    "message.part.delta": _part_delta,
    "message.part.removed": _part_removed,
    "permission.asked": _permission_asked,
    "permission.replied": _permission_replied,
    "question.asked": _question_asked,
    "question.replied": _question_replied,
    "question.rejected": _question_rejected,
    "todo.updated": _todo_updated,
}
