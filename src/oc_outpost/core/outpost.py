"""The Outpost: topics bound to projects and OpenCode sessions, turns, approvals.

Chat handlers call the public methods; OpenCode events come in per server through one event
stream each. Everything the user sees goes out through the ChatPort.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from oc_outpost.core import turn as turns
from oc_outpost.core.ports import ChatPort, PermissionPrompt, QuestionPrompt, TopicGone
from oc_outpost.core.projects import ProjectError, project_dir
from oc_outpost.core.turn import TurnPhase, TurnSnapshot
from oc_outpost.core.types import TopicBinding
from oc_outpost.opencode import events as ev
from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.opencode.errors import OpenCodeError, OpenCodeNotFound
from oc_outpost.opencode.stream import EventStream
from oc_outpost.opencode.wire import TextInput
from oc_outpost.orchestrator.manager import InstanceError, InstanceManager, RunningInstance
from oc_outpost.store.pending import PendingStore
from oc_outpost.store.topics import TopicStore

log = logging.getLogger(__name__)

STREAM_CONNECT_TIMEOUT_S = 10.0
PERMISSION_REPLIES = {
    "o": ("once", "Allowed once"),
    "a": ("always", "Always allowed"),
    "r": ("reject", "Rejected"),
}


@dataclass(frozen=True)
class OutpostConfig:
    chat_id: int
    project_base: Path
    auto_create_dirs: bool


@dataclass
class _ActiveTurn:
    topic_id: int
    streaming: bool
    client: OpenCodeClient
    snapshot: TurnSnapshot


class Outpost:
    def __init__(
        self,
        config: OutpostConfig,
        *,
        topics: TopicStore,
        pending: PendingStore,
        instances: InstanceManager,
        chat: ChatPort,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._topics = topics
        self._pending = pending
        self._instances = instances
        self._chat = chat
        self._clock = clock
        self._bindings: dict[str, TopicBinding] = {}  # by session id
        self._parents: dict[str, str] = {}  # sub-agent session -> parent session
        self._turns: dict[str, _ActiveTurn] = {}  # by (root) session id
        self._turn_ids = itertools.count(1)
        self._streams: dict[str, EventStream] = {}
        self._topic_locks: dict[int, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        for binding in await self._topics.by_chat(self._config.chat_id):
            if binding.session_id:
                self._bindings[binding.session_id] = binding

    async def stop(self) -> None:
        await asyncio.gather(*(s.stop() for s in self._streams.values()))
        self._streams.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- commands -----------------------------------------------------------------------------

    async def new_project(self, name: str) -> None:
        """`/new <name>`: directory, topic, server, session, binding, welcome.

        Any failing step is reported in General and rolled back: no orphan topic or server.
        """
        try:
            path, _ = project_dir(
                self._config.project_base, name, create=self._config.auto_create_dirs
            )
        except ProjectError as exc:
            await self._chat.notify(None, f"❌ {exc}")
            return
        existing = next((b for b in self._bindings.values() if b.project_path == str(path)), None)
        if existing is not None:
            await self._chat.notify(None, f"Project {name} already has a topic; continue there.")
            return
        topic_id = await self._chat.create_topic(name)
        try:
            running = await self._instances.ensure_running(path)
            await self._ensure_stream(running)
            session = await running.client.create_session()
            binding = await self._bind(topic_id, path, session.id, running.info.id)
        except (InstanceError, OpenCodeError, OSError) as exc:
            log.warning("/new %s failed: %s", name, exc)
            await self._roll_back_new(topic_id, path)
            await self._chat.notify(None, f"❌ Could not set up {name}: {exc}")
            return
        await self._chat.notify(
            topic_id,
            f"✅ Project {name} is ready.\nDirectory: {binding.project_path}\n"
            f"Session: {session.id}\nSend a message here to talk to OpenCode.",
        )
        await self._chat.notify(None, f"✅ {name} is ready in its own topic.")

    async def _roll_back_new(self, topic_id: int, path: Path) -> None:
        with contextlib.suppress(TopicGone):
            await self._chat.delete_topic(topic_id)
        if not any(b.project_path == str(path) for b in self._bindings.values()):
            for running in self._instances.running():
                if running.info.project_path == str(path):
                    await self._instances.stop(running.info.id)

    async def _bind(
        self, topic_id: int, path: Path, session_id: str, instance_id: str
    ) -> TopicBinding:
        now = int(time.time())
        binding = TopicBinding(
            chat_id=self._config.chat_id,
            topic_id=topic_id,
            project_path=str(path),
            session_id=session_id,
            instance_id=instance_id,
            streaming_enabled=True,
            created_at=now,
            updated_at=now,
        )
        await self._topics.save(binding)
        self._bindings[session_id] = binding
        return binding

    def binding_for_topic(self, topic_id: int) -> TopicBinding | None:
        return next((b for b in self._bindings.values() if b.topic_id == topic_id), None)

    # --- prompts ------------------------------------------------------------------------------

    async def prompt(self, topic_id: int, text: str) -> None:
        """Plain text in a topic: send it to the topic's session."""
        binding = await self._topics.get(self._config.chat_id, topic_id)
        if binding is None or binding.session_id is None:
            await self._chat.notify(
                topic_id, "This topic is not linked to a project. Use /new <name> in General."
            )
            return
        async with self._topic_locks.setdefault(topic_id, asyncio.Lock()):
            try:
                running = await self._instances.ensure_running(Path(binding.project_path))
                await self._ensure_stream(running)
            except (InstanceError, OpenCodeError, OSError) as exc:
                await self._chat.notify(topic_id, f"❌ OpenCode is not available: {exc}")
                return
            session_id = binding.session_id
            queued = session_id in self._turns
            if queued:
                await self._chat.notify(topic_id, "⏳ Queued: it will run after the current turn.")
            else:
                self._begin_turn(session_id, binding, running.client)
            try:
                await running.client.prompt_async(session_id, [TextInput(text=text)])
            except OpenCodeError as exc:
                log.warning("prompt to %s failed: %s", session_id, exc)
                await self._fail_turn(session_id, topic_id, f"The prompt was not accepted: {exc}")

    def _begin_turn(self, session_id: str, binding: TopicBinding, client: OpenCodeClient) -> None:
        snapshot = TurnSnapshot(next(self._turn_ids), session_id, self._clock())
        active = _ActiveTurn(binding.topic_id, binding.streaming_enabled, client, snapshot)
        self._turns[session_id] = active
        if active.streaming:
            self._chat.show_progress(binding.topic_id, snapshot)

    async def _fail_turn(self, session_id: str, topic_id: int, message: str) -> None:
        active = self._turns.pop(session_id, None)
        if active is None:
            await self._chat.notify(topic_id, f"❌ {message}")
            return
        failed = replace(
            active.snapshot, phase=TurnPhase.FAILED, error=message, finished_at=self._clock()
        )
        await self._chat.show_final(topic_id, failed, streaming=active.streaming)

    async def abort(self, session_id: str, who: str) -> str:
        """Stop button: abort the session's running turn."""
        binding = self._bindings.get(session_id)
        if binding is None or session_id not in self._turns:
            return "Nothing is running."
        active = self._turns[session_id]
        try:
            await active.client.abort(session_id)
        except OpenCodeError as exc:
            log.warning("abort of %s failed: %s", session_id, exc)
            return f"OpenCode did not stop: {exc}"
        log.info("turn of %s stopped by %s", session_id, who)
        return "Stopping…"

    # --- approvals ----------------------------------------------------------------------------

    async def answer_permission(self, token: str, choice: str, who: str) -> str:
        """A button press on a permission request; returns the text for the button spinner."""
        if choice not in PERMISSION_REPLIES:
            return "Unknown choice."
        request = await self._pending.get(token)
        if request is None or request.kind != "permission":
            return "This request is no longer known."
        reply, verb = PERMISSION_REPLIES[choice]
        running = self._instances.get(request.instance_id or "")
        if running is None:
            return "The OpenCode server of this request is not running any more."
        if not await self._pending.resolve(token, reply, who):
            return "Already answered."
        try:
            await running.client.reply_permission(request.request_id, reply)  # type: ignore[arg-type]
        except OpenCodeNotFound:
            await self._show_decision(request.topic_id, request.message_id, "⌛ Expired.")
            return "This request has expired."
        except OpenCodeError as exc:
            log.warning("permission reply failed: %s", exc)
            return f"OpenCode did not take the answer: {exc}"
        mark = "❌" if reply == "reject" else "✅"
        await self._show_decision(request.topic_id, request.message_id, f"{mark} {verb} by {who}.")
        return verb

    async def answer_question(self, token: str, option: int, who: str) -> str:
        request = await self._pending.get(token)
        if request is None or request.kind != "question":
            return "This question is no longer known."
        options: list[str] = list(request.payload.get("options", []))
        if not 0 <= option < len(options):
            return "Unknown option."
        running = self._instances.get(request.instance_id or "")
        if running is None:
            return "The OpenCode server of this question is not running any more."
        label = options[option]
        if not await self._pending.resolve(token, label, who):
            return "Already answered."
        try:
            await running.client.reply_question(request.request_id, [[label]])
        except OpenCodeError as exc:
            log.warning("question reply failed: %s", exc)
            return f"OpenCode did not take the answer: {exc}"
        await self._show_decision(
            request.topic_id, request.message_id, f"✅ {who} answered: {label}"
        )
        return label

    async def _show_decision(self, topic_id: int, message_id: int | None, text: str) -> None:
        if message_id is not None:
            await self._chat.show_decision(topic_id, message_id, text)

    # --- OpenCode events ----------------------------------------------------------------------

    async def _ensure_stream(self, running: RunningInstance) -> None:
        instance_id = running.info.id
        stream = self._streams.get(instance_id)
        if stream is None or stream.client is not running.client:
            if stream is not None:
                await stream.stop()

            async def on_event(event: ev.Event) -> None:
                await self._on_event(instance_id, event)

            stream = EventStream(running.client, on_event)
            self._streams[instance_id] = stream
            stream.start()
        await asyncio.wait_for(stream.wait_connected(), STREAM_CONNECT_TIMEOUT_S)

    async def _on_event(self, instance_id: str, event: ev.Event) -> None:
        session_id = getattr(event, "session_id", None)
        if session_id is None:
            return
        if isinstance(event, ev.SessionCreated) and event.parent_id:
            self._parents[session_id] = self._parents.get(event.parent_id, event.parent_id)
            return
        root = self._parents.get(session_id, session_id)
        binding = self._bindings.get(root)
        if binding is None:
            return
        match event:
            case ev.PermissionAsked():
                await self._ask_permission(instance_id, binding, event)
            case ev.QuestionAsked():
                await self._ask_question(instance_id, binding, event)
        if root != session_id:
            self._fold_child(root, event)
            return
        await self._fold(instance_id, binding, event)

    def _fold_child(self, root: str, event: ev.Event) -> None:
        active = self._turns.get(root)
        if (
            active is not None
            and isinstance(event, ev.PartUpdated | ev.PermissionAsked | ev.PermissionReplied)
            and not (isinstance(event, ev.PartUpdated) and not isinstance(event.part, ev.ToolPart))
        ):
            self._update(active, turns.fold(active.snapshot, event))

    async def _fold(self, instance_id: str, binding: TopicBinding, event: ev.Event) -> None:
        session_id = binding.session_id or ""
        active = self._turns.get(session_id)
        if active is None:
            if not (isinstance(event, ev.SessionStatusChanged) and event.status == "busy"):
                return
            running = self._instances.get(instance_id)
            if running is None:
                return
            self._begin_turn(session_id, binding, running.client)
            active = self._turns[session_id]
        if isinstance(event, ev.SessionIdle) or (
            isinstance(event, ev.SessionStatusChanged) and event.status == "idle"
        ):
            del self._turns[session_id]
            self._spawn(self._finish(active))
            return
        self._update(active, turns.fold(active.snapshot, event))

    def _update(self, active: _ActiveTurn, snapshot: TurnSnapshot) -> None:
        if snapshot == active.snapshot:
            return
        active.snapshot = snapshot
        if active.streaming:
            self._chat.show_progress(active.topic_id, snapshot)

    async def _finish(self, active: _ActiveTurn) -> None:
        snapshot = turns.finish(active.snapshot, self._clock())
        try:
            messages = await active.client.messages(snapshot.session_id)
        except OpenCodeError as exc:
            log.warning("could not fetch the final messages of %s: %s", snapshot.session_id, exc)
        else:
            answer = turns.answer_from_messages(messages, snapshot.first_user_message)
            if answer:
                snapshot = replace(snapshot, texts=(("answer", answer),))
        await self._chat.show_final(active.topic_id, snapshot, streaming=active.streaming)

    async def _ask_permission(
        self, instance_id: str, binding: TopicBinding, event: ev.PermissionAsked
    ) -> None:
        if await self._pending.get_by_request_id(event.request_id) is not None:
            return  # already shown (a reconnect can replay the pending list)
        request = await self._pending.create(
            kind="permission",
            request_id=event.request_id,
            session_id=event.session_id,
            instance_id=instance_id,
            chat_id=binding.chat_id,
            topic_id=binding.topic_id,
            payload={"permission": event.permission, "patterns": list(event.patterns)},
        )
        detail = str(event.metadata.get("command") or event.metadata.get("diff") or "")
        prompt = PermissionPrompt(request.token, event.permission, tuple(event.patterns), detail)
        message_id = await self._chat.ask_permission(binding.topic_id, prompt)
        await self._pending.set_message_id(request.token, message_id)

    async def _ask_question(
        self, instance_id: str, binding: TopicBinding, event: ev.QuestionAsked
    ) -> None:
        if (
            await self._pending.get_by_request_id(event.request_id) is not None
            or not event.questions
        ):
            return
        question = event.questions[0]
        options = [label for label, _ in question.options]
        request = await self._pending.create(
            kind="question",
            request_id=event.request_id,
            session_id=event.session_id,
            instance_id=instance_id,
            chat_id=binding.chat_id,
            topic_id=binding.topic_id,
            payload={"question": question.question, "options": options},
        )
        prompt = QuestionPrompt(request.token, question.question, question.header, tuple(options))
        message_id = await self._chat.ask_question(binding.topic_id, prompt)
        await self._pending.set_message_id(request.token, message_id)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background chat update failed", exc_info=task.exception())
