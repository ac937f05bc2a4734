"""A turn's state: an immutable snapshot folded from typed OpenCode events.

A turn runs from the prompt (or the session turning busy) until the session goes idle. The
snapshot holds what the chat shows: phase, steps, tool lines and the answer text streamed so far.
Rendering lives in the chat layer; nothing here knows about Telegram.

A long answer streams as thousands of deltas, so a delta must cost the same at the end of the
answer as at its start: the streaming text is a `StreamedText` (appending shares what came
before) and the snapshot is copied without re-running the dataclass `__init__`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from oc_outpost.core.outputs import NO_OUTPUT, TurnOutput
from oc_outpost.opencode import events as ev
from oc_outpost.opencode.wire import MessageWithParts

MAX_TOOL_LINES = 50


class StreamedText:
    """A part's text as its deltas arrive: immutable, and `text + delta` shares every chunk
    before it instead of copying them. `str()` joins the chunks once; the result is kept and
    the chunks behind it are let go."""

    __slots__ = ("_chunk", "_joined", "_previous")

    def __init__(self, chunk: str, previous: StreamedText | None = None) -> None:
        self._chunk = chunk
        self._previous = previous
        self._joined: str | None = None

    def __add__(self, delta: str) -> StreamedText:
        return StreamedText(delta, self)

    def __str__(self) -> str:
        if self._joined is not None:
            return self._joined
        chunks: list[str] = []
        node: StreamedText | None = self
        while node is not None:
            if node._joined is not None:
                chunks.append(node._joined)
                break
            chunks.append(node._chunk)
            node = node._previous
        joined = self._joined = "".join(reversed(chunks))
        self._previous = None
        return joined

    def __repr__(self) -> str:
        return f"StreamedText({str(self)!r})"


Text = str | StreamedText


class TurnPhase(StrEnum):
    RUNNING = "running"
    RETRYING = "retrying"
    WAITING = "waiting"  # for a permission or a question answer
    DONE = "done"
    FAILED = "failed"
    ABORTED = "aborted"


@dataclass(frozen=True)
class ToolLine:
    call_id: str
    tool: str
    status: str  # pending | running | completed | error
    detail: str
    sub: bool = False  # run by a sub-agent of the turn's session


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0


@dataclass(frozen=True)
class TurnSnapshot:
    turn_id: int
    session_id: str
    started_at: float
    phase: TurnPhase = TurnPhase.RUNNING
    steps: int = 0
    tools: tuple[ToolLine, ...] = ()
    texts: tuple[tuple[str, Text], ...] = ()  # (part id, text) of the assistant, in order
    reasoning_parts: frozenset[str] = frozenset()
    user_messages: tuple[str, ...] = ()
    usage_by_message: tuple[tuple[str, Usage], ...] = ()
    error: str | None = None
    retry_note: str | None = None
    abort_requested: bool = False
    finished_at: float | None = None
    # The newest user message of earlier turns: OpenCode re-announces a turn's user message
    # after it ended, and message ids ascend, so anything up to this one is not ours.
    earlier_user_message: str | None = None
    output: TurnOutput = NO_OUTPUT  # images and changes, collected when the turn finished

    @property
    def answer(self) -> str:
        stripped = (str(text).strip() for _, text in self.texts)
        return "\n\n".join(text for text in stripped if text)

    @property
    def finished(self) -> bool:
        return self.phase in (TurnPhase.DONE, TurnPhase.FAILED, TurnPhase.ABORTED)

    @property
    def usage(self) -> Usage:
        total = Usage()
        for _, u in self.usage_by_message:
            total = Usage(
                total.input_tokens + u.input_tokens,
                total.output_tokens + u.output_tokens,
                total.cost + u.cost,
            )
        return total

    @property
    def first_user_message(self) -> str | None:
        return self.user_messages[0] if self.user_messages else None

    @property
    def last_user_message(self) -> str | None:
        return max((*self.user_messages, self.earlier_user_message or ""), default="") or None


def fold(turn: TurnSnapshot, event: ev.Event) -> TurnSnapshot:
    """Return the snapshot after ``event``. Events of other sessions must be filtered out first."""
    match event:
        case ev.PartDelta(message_id=mid, part_id=pid, field="text", delta=delta):
            if mid in turn.user_messages or pid in turn.reasoning_parts:
                return turn
            return _append_text(turn, pid, delta)
        case ev.MessageUpdated(info=ev.Message(role="user", id=mid)):
            earlier = turn.earlier_user_message
            if mid in turn.user_messages or (earlier is not None and mid <= earlier):
                return turn
            return replace(turn, user_messages=(*turn.user_messages, mid))
        case ev.MessageUpdated(info=ev.Message(role="assistant") as message):
            return _fold_assistant_message(turn, message)
        case ev.PartUpdated(message_id=mid) if mid in turn.user_messages:
            return turn
        case ev.PartUpdated(part=ev.TextPart() as part):
            if part.synthetic:
                return turn
            return _set_text(turn, part.id, part.text)
        case ev.PartUpdated(part=ev.ReasoningPart(id=pid)):
            texts = tuple(t for t in turn.texts if t[0] != pid)
            return replace(turn, reasoning_parts=turn.reasoning_parts | {pid}, texts=texts)
        case ev.PartUpdated(part=ev.ToolPart() as part):
            return _upsert_tool(turn, part)
        case ev.PartUpdated(part=ev.StepStart()):
            return replace(turn, steps=turn.steps + 1)
        case ev.SessionStatusChanged(
            status=ev.SessionStatus(type="retry", attempt=attempt, message=message)
        ):
            note = f"attempt {attempt}: {message}" if message else f"attempt {attempt}"
            return replace(turn, phase=TurnPhase.RETRYING, retry_note=note)
        case ev.SessionStatusChanged(status=ev.SessionStatus(type="busy")) if (
            turn.phase == TurnPhase.RETRYING
        ):
            return replace(turn, phase=TurnPhase.RUNNING)
        case ev.SessionError(name=name, message=message):
            if name == "MessageAbortedError":
                return replace(turn, phase=TurnPhase.ABORTED)
            return replace(turn, error=f"{name}: {message}" if message else name)
        case ev.PermissionAsked() | ev.QuestionAsked():
            return replace(turn, phase=TurnPhase.WAITING)
        case ev.PermissionReplied() | ev.QuestionReplied() | ev.QuestionRejected():
            if turn.phase == TurnPhase.WAITING:
                return replace(turn, phase=TurnPhase.RUNNING)
            return turn
        case _:
            return turn


def fold_child(turn: TurnSnapshot, event: ev.Event) -> TurnSnapshot:
    """What a sub-agent's event adds to its parent's turn: its tool lines and waits."""
    match event:
        case ev.PartUpdated(part=ev.ToolPart() as part):
            return _upsert_tool(turn, part, sub=True)
        case (
            ev.PermissionAsked()
            | ev.QuestionAsked()
            | ev.PermissionReplied()
            | ev.QuestionReplied()
            | ev.QuestionRejected()
        ):
            return fold(turn, event)
        case _:
            return turn


def finish(turn: TurnSnapshot, now: float) -> TurnSnapshot:
    """The session went idle: the turn ends in the phase its events imply."""
    if turn.finished:
        return replace(turn, finished_at=turn.finished_at or now)
    if turn.abort_requested:  # a stopped retry loop ends without any error event
        phase = TurnPhase.ABORTED
    else:
        phase = TurnPhase.FAILED if turn.error else TurnPhase.DONE
    return replace(turn, phase=phase, finished_at=now)


def _fold_assistant_message(turn: TurnSnapshot, message: ev.Message) -> TurnSnapshot:
    error = message.error
    if error is not None and error.name == "MessageAbortedError":
        turn = replace(turn, phase=TurnPhase.ABORTED)
    elif error is not None and error.name and not turn.error:
        detail = f"{error.name}: {error.message}" if error.message else error.name
        turn = replace(turn, error=detail)
    usage = Usage(message.tokens.input, message.tokens.output, message.cost)
    others = tuple(u for u in turn.usage_by_message if u[0] != message.id)
    return replace(turn, usage_by_message=(*others, (message.id, usage)))


def _append_text(turn: TurnSnapshot, part_id: str, delta: str) -> TurnSnapshot:
    texts = turn.texts
    for index in range(len(texts) - 1, -1, -1):  # the part streaming now is nearly always last
        pid, text = texts[index]
        if pid == part_id:
            grown = (text if isinstance(text, StreamedText) else StreamedText(text)) + delta
            return _with_texts(turn, (*texts[:index], (pid, grown), *texts[index + 1 :]))
    return _with_texts(turn, (*texts, (part_id, StreamedText(delta))))


def _with_texts(turn: TurnSnapshot, texts: tuple[tuple[str, Text], ...]) -> TurnSnapshot:
    """`replace(turn, texts=texts)` for the per-delta path: a frozen dataclass's `__init__` sets
    every field through `object.__setattr__`, which costs five times as much as this copy."""
    copy = object.__new__(TurnSnapshot)
    copy.__dict__.update(turn.__dict__, texts=texts)
    return copy


def _set_text(turn: TurnSnapshot, part_id: str, text: str) -> TurnSnapshot:
    if any(pid == part_id for pid, _ in turn.texts):
        texts = tuple((pid, text if pid == part_id else old) for pid, old in turn.texts)
    else:
        texts = (*turn.texts, (part_id, text))
    return replace(turn, texts=texts)


def _upsert_tool(turn: TurnSnapshot, part: ev.ToolPart, *, sub: bool = False) -> TurnSnapshot:
    line = ToolLine(part.call_id, part.tool, part.status, tool_detail(part), sub)
    if any(t.call_id == part.call_id for t in turn.tools):
        tools = tuple(line if t.call_id == part.call_id else t for t in turn.tools)
    else:
        tools = (*turn.tools, line)[-MAX_TOOL_LINES:]
    return replace(turn, tools=tools)


def tool_detail(part: ev.ToolPart) -> str:
    """The most telling argument of a tool call: the command, the file or the title."""
    for key in ("command", "filePath", "path", "pattern", "url", "description"):
        value = part.input.get(key)
        if isinstance(value, str) and value:
            return value
    return part.title or ""


def answer_from_messages(
    messages: Sequence[MessageWithParts], since_user_message: str | None
) -> str:
    """The turn's answer as stored by OpenCode: assistant text after the turn's first prompt.

    ``GET /session/{id}/message`` is authoritative; events may have been missed or cut short.
    Without a known first prompt, the turn is taken to start at the last user message.
    """
    ids = [m.info.id for m in messages]
    if since_user_message in ids:
        start = ids.index(since_user_message)
    else:
        users = [i for i, m in enumerate(messages) if m.info.role == "user"]
        start = users[-1] if users else 0
    texts = [
        part.text.strip()
        for message in messages[start:]
        if message.info.role == "assistant"
        for part in message.parts
        if isinstance(part, ev.TextPart) and not part.synthetic and part.text.strip()
    ]
    return "\n\n".join(texts)
