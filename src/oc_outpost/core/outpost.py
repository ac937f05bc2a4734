"""The Outpost: what the chat layer asks of core — projects, prompts, approvals.

Chat handlers call the public methods; OpenCode events come in per server through one event
stream each and are dispatched to approvals and turns. Everything the user sees goes out through
the ChatPort.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from oc_outpost.core.approvals import Approvals
from oc_outpost.core.bindings import Bindings
from oc_outpost.core.catalog import ServerSessions, list_sessions
from oc_outpost.core.chat import Attachment, Chat
from oc_outpost.core.external import ExternalServers
from oc_outpost.core.ports import TopicGone
from oc_outpost.core.projects import ProjectError, project_dir
from oc_outpost.core.streams import EventStreams
from oc_outpost.core.turns import TurnRouter
from oc_outpost.core.types import InstanceKind, TopicBinding
from oc_outpost.core.waking import WAKING_UP, with_notice
from oc_outpost.metrics import Metrics
from oc_outpost.opencode import events as ev
from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.opencode.errors import OpenCodeError
from oc_outpost.opencode.wire import FileInput, PromptPart, TextInput
from oc_outpost.orchestrator.manager import (
    InstanceBusy,
    InstanceError,
    InstanceManager,
    RunningInstance,
)
from oc_outpost.orchestrator.status import OrchestratorStatus
from oc_outpost.store.instances import InstanceStore
from oc_outpost.store.pending import PendingStore
from oc_outpost.store.topics import TopicStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutpostConfig:
    chat_id: int
    project_base: Path
    auto_create_dirs: bool


class Outpost:
    def __init__(
        self,
        config: OutpostConfig,
        *,
        topics: TopicStore,
        pending: PendingStore,
        instances: InstanceManager,
        instance_store: InstanceStore,
        chat: Chat,
        clock: Callable[[], float] = time.monotonic,
        metrics: Metrics | None = None,
    ) -> None:
        self._config = config
        self._instances = instances
        self._chat = chat
        self.bindings = Bindings(topics, config.chat_id)
        self.turns = TurnRouter(chat, self.bindings, clock=clock, metrics=metrics)
        self.approvals = Approvals(chat, pending, self._client_of)
        self.streams = EventStreams(self._dispatch, metrics=metrics)
        self.externals = ExternalServers(
            project_base=config.project_base,
            chat=chat,
            bindings=self.bindings,
            streams=self.streams,
            store=instance_store,
        )

    async def start(self) -> None:
        await self.bindings.load()
        await self.externals.restore()

    async def stop(self) -> None:
        await self.streams.stop_all()
        await self.turns.stop()
        await self.externals.close()

    def _client_of(self, instance_id: str) -> OpenCodeClient | None:
        running = self._instances.get(instance_id)
        return running.client if running else self.externals.client(instance_id)

    # --- projects -----------------------------------------------------------------------------

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
        if self.bindings.by_path(path):
            await self._chat.notify(None, f"Project {name} already has a topic; continue there.")
            return
        topic_id = await self._chat.create_topic(name)
        try:
            running = await self._connect(path)
            session = await running.client.create_session()
            binding = await self.bindings.bind(topic_id, path, session.id, running.info.id)
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
        if not self.bindings.by_path(path):
            for running in self._instances.running():
                if running.info.project_path == str(path):
                    await self.streams.drop(running.info.id)
                    await self._instances.stop(running.info.id)

    async def _client_for(self, binding: TopicBinding) -> OpenCodeClient:
        """The client of the server behind ``binding``: external as registered, else managed."""
        external = self.externals.client(binding.instance_id or "")
        if external is not None:
            return external
        discovered = self._instances.get(binding.instance_id or "")
        if discovered is not None and discovered.info.kind == InstanceKind.DISCOVERED:
            await self.streams.ensure(discovered.info.id, discovered.client)
            return discovered.client  # a session /connect-ed from a server we did not start
        path = Path(binding.project_path)
        return (await self._connect(path, notice_topic=binding.topic_id)).client

    async def list_sessions(self) -> list[ServerSessions]:
        """Sessions of the running managed servers and of the OpenCode servers discovered on
        this machine (`/sessions`, `/connect`); plain data, see core/catalog.py."""
        return await list_sessions(self._instances)

    async def server_status(self) -> OrchestratorStatus:
        """Managed/discovered/external servers by state, port pool use, uptime (`/status`)."""
        return await self._instances.status()

    async def ensure_server(self, path: Path) -> RunningInstance:
        """The running managed server for ``path``, with its event stream connected."""
        return await self._connect(path)

    async def _connect(self, path: Path, notice_topic: int | None = None) -> RunningInstance:
        """The running server for ``path``, with its event stream connected. With
        ``notice_topic``, a wake-up that takes a while is announced there."""
        starting = self._instances.ensure_running(path)
        if notice_topic is None:
            running = await starting
        else:
            waking = WAKING_UP.format(name=path.name)
            running = await with_notice(starting, lambda: self._chat.notify(notice_topic, waking))
        await self.streams.ensure(running.info.id, running.client)
        return running

    # --- prompts ------------------------------------------------------------------------------

    async def prompt(
        self, topic_id: int, text: str, attachments: tuple[Attachment, ...] = ()
    ) -> None:
        """Text (and files, with their caption as the text) in a topic: send it to the session."""
        binding = self.bindings.by_topic(topic_id)
        if binding is None or binding.session_id is None:
            await self._chat.notify(
                topic_id, "This topic is not linked to a project. Use /new <name> in General."
            )
            return
        try:
            client = await self._client_for(binding)
        except InstanceBusy as exc:
            await self._chat.notify(topic_id, f"⏳ {exc}")
            return
        except (InstanceError, OpenCodeError, OSError, TimeoutError) as exc:
            await self._chat.notify(topic_id, f"❌ OpenCode is not available: {exc}")
            return
        session_id = binding.session_id
        if self.turns.is_busy(session_id):
            await self._chat.notify(topic_id, "⏳ Queued: it will run after the current turn.")
        else:
            self.turns.begin(binding, client)
        try:
            await client.prompt_async(session_id, prompt_parts(text, attachments))
        except OpenCodeError as exc:
            log.warning("prompt to %s failed: %s", session_id, exc)
            await self.turns.fail(session_id, topic_id, f"The prompt was not accepted: {exc}")

    async def abort(self, session_id: str, who: str) -> str:
        """Stop button: abort the session's running turn."""
        answer = await self.turns.abort(session_id)
        log.info("stop of %s pressed by %s: %s", session_id, who, answer)
        return answer

    async def answer_permission(self, token: str, choice: str, who: str) -> str:
        return await self.approvals.answer_permission(token, choice, who)

    async def answer_question(self, token: str, option: int, who: str) -> str:
        return await self.approvals.answer_question(token, option, who)

    # --- OpenCode events ----------------------------------------------------------------------

    async def _dispatch(self, instance_id: str, client: OpenCodeClient, event: ev.Event) -> None:
        if isinstance(event, ev.SessionCreated) and event.parent_id:
            self.turns.note_child(event.session_id, event.parent_id)
            return
        session_id = getattr(event, "session_id", None)
        if session_id is None:
            return
        binding = self.bindings.by_session(self.turns.root_of(session_id))
        if binding is None:
            return
        await self.approvals.on_event(instance_id, binding, event)
        await self.turns.on_event(client, event)


def prompt_parts(text: str, attachments: tuple[Attachment, ...]) -> list[PromptPart]:
    """The prompt's parts: the text, then each file inline as a data: URL (nothing is written
    to disk, so no file can land outside PROJECT_BASE_PATH)."""
    parts: list[PromptPart] = [TextInput(text=text)] if text.strip() else []
    for attachment in attachments:
        encoded = base64.b64encode(attachment.data).decode("ascii")
        parts.append(
            FileInput(
                mime=attachment.mime,
                url=f"data:{attachment.mime};base64,{encoded}",
                filename=attachment.filename,
            )
        )
    return parts
