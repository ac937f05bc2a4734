"""Each bound topic's state at a glance (running, needs you, done, failed, asleep).

The tracker, approvals and server events report what happens to `TopicStates`; it derives one
plain state per topic and hands every change to the views (topic icons, the board in General).
Core only says *what* the state is; the chat layer decides how and how often to show it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import PurePath
from typing import Protocol

from oc_outpost.core.bindings import Bindings
from oc_outpost.opencode.wire import MessageWithParts


class TopicState(StrEnum):
    RUNNING = "running"
    NEEDS_YOU = "needs_you"  # a permission or question waits for an answer
    DONE = "done"
    FAILED = "failed"
    ASLEEP = "asleep"  # its OpenCode server stopped (idle) or is down
    IDLE = "idle"  # nothing happened since the bot started


@dataclass(frozen=True)
class TopicStatus:
    """What the views show of one topic."""

    topic_id: int
    project: str  # the project directory's name
    state: TopicState
    running_since: float | None = None  # clock time the running turn started
    pending: int = 0  # approvals and questions waiting
    cost: float = 0.0  # the session's cost so far
    model: str | None = None  # provider/model of the session's last answer


class TopicStateView(Protocol):
    def show_topic_state(self, status: TopicStatus) -> None:
        """Show the topic's new state without waiting for the network."""


@dataclass(frozen=True)
class _Topic:
    running_since: float | None = None
    pending: frozenset[str] = frozenset()
    outcome: TopicState | None = None  # of the last turn, or the server's stop
    cost: float = 0.0
    model: str | None = None


def session_usage(messages: Sequence[MessageWithParts]) -> tuple[str | None, float]:
    """(provider/model of the last answer, cost of the whole session) from its messages."""
    answers = [m.info for m in messages if m.info.role == "assistant"]
    models = [f"{a.provider_id}/{a.model_id}" for a in answers if a.model_id]
    return (models[-1] if models else None), sum(a.cost for a in answers)


def _state(topic: _Topic) -> TopicState:
    if topic.pending:
        return TopicState.NEEDS_YOU
    if topic.running_since is not None:
        return TopicState.RUNNING
    return topic.outcome or TopicState.IDLE


class TopicBook:
    """Each bound topic's state as last reported; the views read the whole picture here."""

    def __init__(self, bindings: Bindings) -> None:
        self._bindings = bindings
        self._topics: dict[int, _Topic] = {}

    def statuses(self) -> list[TopicStatus]:
        """Every bound topic's status, in topic order."""
        shown = (self.status(b.topic_id) for b in self._bindings.all())
        return sorted((s for s in shown if s is not None), key=lambda s: s.topic_id)

    def status(self, topic_id: int) -> TopicStatus | None:
        """None for a topic that is not bound (any more)."""
        binding = self._bindings.by_topic(topic_id)
        if binding is None:
            return None
        topic = self._topics.get(topic_id, _Topic())
        return TopicStatus(
            topic_id,
            PurePath(binding.project_path).name or binding.project_path,
            _state(topic),
            topic.running_since,
            len(topic.pending),
            topic.cost,
            topic.model,
        )

    def change(self, topic_id: int, change: Callable[[_Topic], _Topic]) -> None:
        self._topics[topic_id] = change(self._topics.get(topic_id, _Topic()))


class TopicStates:
    """Where core reports what happens; every change of a topic's status goes to the views."""

    def __init__(
        self,
        book: TopicBook,
        views: Sequence[TopicStateView] = (),
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._book = book
        self._views = tuple(views)
        self._clock = clock

    def turn_started(self, topic_id: int) -> None:
        self._change(topic_id, lambda t: replace(t, running_since=t.running_since or self._clock()))

    def turn_ended(self, topic_id: int, *, failed: bool) -> None:
        """The turn is over; OpenCode waits for no answer of it any more either."""
        outcome = TopicState.FAILED if failed else TopicState.DONE
        self._change(
            topic_id,
            lambda t: replace(t, running_since=None, pending=frozenset(), outcome=outcome),
        )

    def session_read(self, topic_id: int, messages: Sequence[MessageWithParts]) -> None:
        """The session's messages were read (at the end of a turn): its model and cost."""
        model, cost = session_usage(messages)
        self._change(topic_id, lambda t: replace(t, model=model or t.model, cost=cost))

    def asked(self, topic_id: int, request_id: str) -> None:
        self._change(topic_id, lambda t: replace(t, pending=t.pending | {request_id}))

    def answered(self, topic_id: int, request_id: str) -> None:
        self._change(topic_id, lambda t: replace(t, pending=t.pending - {request_id}))

    def servers_stopped(self, topic_ids: Iterable[int]) -> None:
        for topic_id in topic_ids:
            self._change(
                topic_id,
                lambda t: replace(
                    t, running_since=None, pending=frozenset(), outcome=TopicState.ASLEEP
                ),
            )

    def _change(self, topic_id: int, change: Callable[[_Topic], _Topic]) -> None:
        before = self._book.status(topic_id)
        self._book.change(topic_id, change)
        after = self._book.status(topic_id)
        if after is not None and after != before and after.state != TopicState.IDLE:
            for view in self._views:
                view.show_topic_state(after)
