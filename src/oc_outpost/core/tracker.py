"""Turns in flight: OpenCode events folded per session (core/turn.py), shown live, finished on
idle. A turn is written in the journal when it starts and crossed out once its final answer was
delivered (or its topic is gone), so a restart delivers what is still owed.

Each turn's header (the topic's model and agent, its context use, the messages queued behind
it) is set here: looked up once when the turn begins, never per event."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any

from oc_outpost.core import turn as turns
from oc_outpost.core.bindings import Bindings
from oc_outpost.core.chat import ChatPort, TopicGone
from oc_outpost.core.context_gauge import ContextGauge
from oc_outpost.core.journal import TurnJournal
from oc_outpost.core.naming import TopicNamer
from oc_outpost.core.topic_states import TopicBook, TopicStates
from oc_outpost.core.turn import TurnHeader, TurnPhase, TurnSnapshot
from oc_outpost.core.turn_ends import TurnEnds
from oc_outpost.core.turn_outputs import TurnOutputs
from oc_outpost.metrics import Metrics
from oc_outpost.model import TopicBinding
from oc_outpost.opencode import events as ev
from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.opencode.errors import OpenCodeError

log = logging.getLogger(__name__)


@dataclass
class ActiveTurn:
    topic_id: int
    streaming: bool
    client: OpenCodeClient
    snapshot: TurnSnapshot
    # OpenCode has the prompt (it accepted it, or its events arrived); until then a server
    # crash does not end the turn: the prompt is sent again once the server is back.
    accepted: bool = False
    # set once OpenCode has written the turn's prompt down (its user message arrived) or the
    # turn ended: see `prompt_written`
    written: asyncio.Event = field(default_factory=asyncio.Event)


class TurnTracker:
    def __init__(
        self,
        chat: ChatPort,
        bindings: Bindings,
        journal: TurnJournal,
        *,
        clock: Callable[[], float] = time.monotonic,
        metrics: Metrics | None = None,
        outputs: TurnOutputs | None = None,
        states: TopicStates | None = None,
        ends: TurnEnds | None = None,
        gauge: ContextGauge | None = None,
    ) -> None:
        self._chat = chat
        self._gauge = gauge  # the context use shown in the progress header (None: not shown)
        self._outputs = outputs  # images and changes of a finished turn (None: not shown)
        self._ends = ends or TurnEnds()
        self._bindings = bindings
        self._journal = journal
        self._clock = clock
        self._metrics = metrics or Metrics()
        self._states = states or TopicStates(TopicBook(bindings))
        self._turns: dict[str, ActiveTurn] = {}  # by root session id
        self._parents: dict[str, str] = {}  # sub-agent session -> root session
        self._last_user: dict[str, str] = {}  # session -> newest user message of past turns
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[object]] = set()
        self._delivering: set[str] = set()  # sessions whose final answer is being delivered
        self._hushed: set[str] = set()  # sessions running a `!` shell command: not a turn
        self._queued: dict[str, int] = {}  # session -> messages held until its turn ends
        self._lookups: set[asyncio.Task[None]] = set()  # context use of turns begun
        self.namer = TopicNamer(chat, bindings)

    def root_of(self, session_id: str) -> str:
        return self._parents.get(session_id, session_id)

    def note_child(self, session_id: str, parent_id: str) -> None:
        self._parents[session_id] = self.root_of(parent_id)

    def hush(self, session_id: str, hushed: bool) -> None:
        """While hushed, the session's activity starts no turn (a shell command's output is
        shown by itself, not as an answer)."""
        if hushed:
            self._hushed.add(session_id)
        else:
            self._hushed.discard(session_id)

    def is_busy(self, session_id: str) -> bool:
        return session_id in self._turns

    def active(self, session_id: str) -> ActiveTurn | None:
        return self._turns.get(session_id)

    def is_accepted(self, session_id: str) -> bool:
        active = self._turns.get(session_id)
        return active is not None and active.accepted

    async def mark_accepted(self, binding: TopicBinding, client: OpenCodeClient) -> None:
        """OpenCode took the turn's prompt (through ``client``, maybe a restarted server's).

        The turn goes into the journal now, not with its first event: a bot killed before any
        event arrived (a stalled stream, or just a fast kill) still owes this answer."""
        active = self._turns.get(binding.session_id or "")
        if active is None:  # it has already ended (and was delivered, or is being)
            return
        active.accepted, active.client = True, client
        await self._journal.started(binding)

    async def prompt_written(self, session_id: str, timeout_s: float) -> None:
        """Wait until OpenCode has written down the running turn's prompt (or the turn ended).

        OpenCode writes an accepted prompt down in the background, and then answers only the
        newest user message: a second prompt sent meanwhile can be written first, and is then
        never answered (seen with the first prompt of a fresh server)."""
        active = self._turns.get(session_id)
        if active is None:
            return
        try:
            await asyncio.wait_for(active.written.wait(), timeout_s)
        except TimeoutError:
            log.info("the running prompt of %s was not written in %.0f s", session_id, timeout_s)

    def active_count(self) -> int:
        return len(self._turns)

    def begin(
        self, binding: TopicBinding, client: OpenCodeClient, *, resume: bool = False
    ) -> ActiveTurn:
        """Track a new turn of the binding's session. ``resume``: a turn of the previous run
        (from the journal), whose progress message is edited on instead of sending another."""
        assert binding.session_id is not None
        snapshot = TurnSnapshot(
            next(self._ids),
            binding.session_id,
            self._clock(),
            earlier_user_message=self._last_user.get(binding.session_id),
            header=self._header(binding),
        )
        active = ActiveTurn(binding.topic_id, binding.streaming_enabled, client, snapshot)
        self._turns[binding.session_id] = active
        self._look_up_context(binding, active)
        if resume:
            self._adopt_progress(binding.topic_id, snapshot)
        self._metrics.turn_started()
        self._states.turn_started(binding.topic_id)
        if active.streaming:
            self._chat.show_progress(binding.topic_id, snapshot)
        return active

    def _header(self, binding: TopicBinding) -> TurnHeader:
        ref = binding.model_ref
        return TurnHeader(
            model=ref[1] if ref is not None else None,
            agent=binding.agent,
            queued=self._queued.get(binding.session_id or "", 0),
        )

    def _look_up_context(self, binding: TopicBinding, active: ActiveTurn) -> None:
        if self._gauge is None:
            return
        task = asyncio.create_task(self._read_context(self._gauge, binding, active))
        self._lookups.add(task)
        task.add_done_callback(self._lookups.discard)

    async def _read_context(
        self, gauge: ContextGauge, binding: TopicBinding, active: ActiveTurn
    ) -> None:
        session_id, turn_id = active.snapshot.session_id, active.snapshot.turn_id
        try:
            limit = await gauge.limit(active.client, binding)
            used = await gauge.used(active.client, session_id) if limit else 0
        except OpenCodeError as exc:
            log.info("the context use of %s is not shown: %s", session_id, exc)
            return
        current = self._turns.get(session_id)
        if current is not None and current.snapshot.turn_id == turn_id:  # still this turn
            self._set_header(
                current, replace(current.snapshot.header, context_limit=limit, context_before=used)
            )

    def _set_header(self, active: ActiveTurn, header: TurnHeader) -> None:
        if header != active.snapshot.header:
            self._update(active, replace(active.snapshot, header=header))

    def queued(self, session_id: str, count: int) -> None:
        """`count` messages are held for the session until its turn ends (shown in its header)."""
        self._queued[session_id] = count
        active = self._turns.get(session_id)
        if active is not None:
            self._set_header(active, replace(active.snapshot.header, queued=count))

    def _adopt_progress(self, topic_id: int, snapshot: TurnSnapshot) -> None:
        message_id = self._journal.progress_message(snapshot.session_id)
        if message_id is not None:
            self._chat.adopt_progress(topic_id, snapshot, message_id)

    async def fail(self, session_id: str, topic_id: int, message: str) -> None:
        """End the session's turn with an error the user can read."""
        active = self._turns.pop(session_id, None)
        if active is not None:
            active.written.set()
            self._remember_user_messages(active.snapshot)
            snapshot, streaming = active.snapshot, active.streaming
        elif self._journal.progress_message(session_id) is not None:
            # a turn of the previous run: its progress message is closed with the failure
            snapshot, streaming = TurnSnapshot(next(self._ids), session_id, self._clock()), True
            self._adopt_progress(topic_id, snapshot)
        else:
            try:
                await self._chat.notify(topic_id, f"❌ {message}")
            except Exception:
                log.exception("the end of the turn of %s could not be told", session_id)
                return  # the journal keeps it: the next start settles it
            await self._journal.finished(session_id)
            return
        failed = replace(snapshot, phase=TurnPhase.FAILED, error=message, finished_at=self._clock())
        await self._deliver(topic_id, failed, streaming=streaming)

    async def abort(self, session_id: str) -> str:
        active = self._turns.get(session_id)
        if active is None:
            return "Nothing is running."
        # Flag first: the idle that follows the abort may be handled before the call returns.
        active.snapshot = replace(active.snapshot, abort_requested=True)
        try:
            await active.client.abort(session_id)
        except OpenCodeError as exc:
            log.warning("abort of %s failed: %s", session_id, exc)
            active.snapshot = replace(active.snapshot, abort_requested=False)
            return f"OpenCode did not stop: {exc}"
        return "Stopping…"

    def reconcile(
        self,
        binding: TopicBinding,
        client: OpenCodeClient,
        *,
        busy: bool,
        error: str | None = None,
    ) -> None:
        """Align the session's turn with what OpenCode says after events may have been missed
        (stream reconnect, server restart, bot restart; see core/recovery.py).

        busy: track the turn (begin it if unknown). Idle: end the turn now and deliver its final
        answer from the stored messages, once; with `error`, as a failed turn saying why."""
        session_id = binding.session_id
        if session_id is None:
            return
        active = self._turns.pop(session_id, None)
        if active is not None and not busy:
            active.written.set()
        if busy:
            if active is None:
                active = self.begin(binding, client, resume=True)
            self._turns[session_id] = replace(active, client=client, accepted=True)
            return
        if active is None:  # known only from the turn journal (the bot restarted)
            snapshot = TurnSnapshot(next(self._ids), session_id, self._clock())
            self._adopt_progress(binding.topic_id, snapshot)
            active = ActiveTurn(binding.topic_id, binding.streaming_enabled, client, snapshot)
        active = replace(active, client=client)
        if error is None:
            self._spawn_final(session_id, self._finish(active))
            return
        failed = replace(
            active.snapshot, phase=TurnPhase.FAILED, error=error, finished_at=self._clock()
        )
        self._spawn_final(
            session_id, self._deliver(active.topic_id, failed, streaming=active.streaming)
        )

    async def on_event(self, client: OpenCodeClient, event: ev.Event) -> None:
        session_id = getattr(event, "session_id", None)
        if session_id is None:
            return
        root = self.root_of(session_id)
        if root != session_id:
            self._fold_child(root, event)
            return
        binding = self._bindings.by_session(session_id)
        if binding is None:
            return
        self._note_task_child(session_id, event)
        if isinstance(event, ev.SessionUpdated):
            await self.namer.on_title(session_id, event.title)
            return
        active = self._turns.get(session_id)
        if active is None:
            quiet = session_id in self._hushed or session_id in self._delivering
            if not _turns_busy(event) or quiet:
                # (hushed: a `!` shell command runs; delivering: a reconcile just ended the turn
                # from the session's status, its own events may still come, and their `busy`
                # is not a new turn)
                return
            active = self.begin(binding, client)  # a turn started elsewhere, e.g. in the TUI
        active.accepted = True
        if _turns_idle(event):
            del self._turns[session_id]
            active.written.set()
            self._remember_user_messages(active.snapshot)
            self._spawn_final(session_id, self._finish(active))
            return
        self._update(active, turns.fold(active.snapshot, event, self._clock()))

    def _remember_user_messages(self, snapshot: TurnSnapshot) -> None:
        if snapshot.last_user_message is not None:
            self._last_user[snapshot.session_id] = snapshot.last_user_message

    def _fold_child(self, root: str, event: ev.Event) -> None:
        active = self._turns.get(root)
        if active is not None:
            self._update(active, turns.fold_child(active.snapshot, event))

    def _note_task_child(self, session_id: str, event: ev.Event) -> None:
        """A `task` tool names its sub-agent session, in case its creation event was missed."""
        if isinstance(event, ev.PartUpdated) and isinstance(event.part, ev.ToolPart):
            child = event.part.metadata.get("sessionId")
            if event.part.tool == "task" and isinstance(child, str) and child != session_id:
                self.note_child(child, session_id)

    def _update(self, active: ActiveTurn, snapshot: TurnSnapshot) -> None:
        if snapshot is active.snapshot:  # the fold returns the same snapshot for no change
            return
        active.snapshot = snapshot
        if snapshot.user_messages:
            active.written.set()
        if active.streaming:
            self._chat.show_progress(active.topic_id, snapshot)

    async def _finish(self, active: ActiveTurn) -> None:
        snapshot = turns.finish(active.snapshot, self._clock())
        try:
            messages = await active.client.messages(snapshot.session_id)
        except OpenCodeError as exc:
            log.warning("could not fetch the final messages of %s: %s", snapshot.session_id, exc)
        else:
            self._states.session_read(active.topic_id, messages)
            answer = turns.answer_from_messages(messages, snapshot.first_user_message)
            if answer:
                snapshot = replace(snapshot, texts=(("answer", answer),))
        if self._outputs is not None:
            output = await self._outputs.collect(active.topic_id, active.client, snapshot)
            snapshot = replace(snapshot, output=output)
        if await self._deliver(active.topic_id, snapshot, streaming=active.streaming):
            await self.namer.after_turn(snapshot.session_id, active.client)

    async def _deliver(self, topic_id: int, snapshot: TurnSnapshot, *, streaming: bool) -> bool:
        """Hand the final answer to the chat; the journal entry goes once it is delivered (or
        its topic is gone). Any other failure leaves it for the next start to deliver, and is
        not raised: the caller (a server crash being handled, a recovery, a prompt) goes on."""
        failed = snapshot.phase == TurnPhase.FAILED
        self._metrics.turn_ended(failed=failed)
        self._states.turn_ended(topic_id, failed=failed)
        try:
            await self._chat.show_final(topic_id, snapshot, streaming=streaming)
        except TopicGone:  # deleted in the app; the chat layer reports it to be unlinked
            log.info("the answer of %s has no topic to go to any more", snapshot.session_id)
            await self._journal.finished(snapshot.session_id)
            return False
        except Exception:
            log.exception(
                "the final answer of %s was not delivered; it stays owed", snapshot.session_id
            )
            return False
        await self._journal.finished(snapshot.session_id)
        self._ends.ended(snapshot.session_id)
        return True

    def is_delivering(self, session_id: str) -> bool:
        """The session's turn has ended and its final answer is on its way (it is still in the
        journal until delivered: a reconciliation must not deliver it a second time)."""
        return session_id in self._delivering

    def _spawn_final(self, session_id: str, coro: Coroutine[Any, Any, object]) -> None:
        self._delivering.add(session_id)
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        task.add_done_callback(lambda _: self._delivering.discard(session_id))

    def _task_done(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("delivering a final answer failed", exc_info=task.exception())

    async def stop(self) -> None:
        """Let final answers being delivered finish (the Outbox bounds that), then stop."""
        for lookup in list(self._lookups):
            lookup.cancel()
        await asyncio.gather(*self._lookups, return_exceptions=True)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5.0)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _turns_busy(event: ev.Event) -> bool:
    return isinstance(event, ev.SessionStatusChanged) and event.status.type == "busy"


def _turns_idle(event: ev.Event) -> bool:
    return isinstance(event, ev.SessionIdle) or (
        isinstance(event, ev.SessionStatusChanged) and event.status.type == "idle"
    )
