"""The logic behind the forum commands and the project picker.

Handlers parse an update, call one method here and render what comes back. A method that
cannot do what was asked raises `CommandError` with a message for the user; nothing here
deletes a user file (`/disconnect` and `/clear` only unbind, stop unused servers and close
topics, whose history stays).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from oc_outpost.core.chat import Attachment, Chat, ProjectEntry
from oc_outpost.core.connect import SERVER_ERRORS, Connector
from oc_outpost.core.ports import TopicGone
from oc_outpost.core.projects import (
    ProjectError,
    find_project,
    list_projects,
    project_key,
    resolve_inside,
    validate_name,
)
from oc_outpost.core.replies import (
    ClearReport,
    CommandError,
    SessionInfo,
    SessionList,
    StatusReport,
)
from oc_outpost.core.types import InstanceInfo, InstanceKind, TopicBinding
from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.opencode.errors import OpenCodeError, OpenCodeNotFound
from oc_outpost.opencode.wire import MessageWithParts, Session
from oc_outpost.orchestrator.manager import InstanceManager
from oc_outpost.store.instances import InstanceStore

if TYPE_CHECKING:
    from oc_outpost.core.outpost import Outpost

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CommandsConfig:
    project_base: Path
    setup_wait_s: float = 60.0  # how long a message waits for its topic's /new to finish


class _Setups:
    """`/new` runs in flight: a message in a topic that is still being set up waits for them
    instead of getting a project picker (its forum_topic_created may even come first)."""

    def __init__(self) -> None:
        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        self._running += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._running -= 1
            if not self._running:
                self._idle.set()

    async def wait(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)


class Commands:
    def __init__(
        self,
        outpost: Outpost,
        *,
        instances: InstanceManager,
        instance_store: InstanceStore,
        chat: Chat,
        config: CommandsConfig,
    ) -> None:
        self._outpost = outpost
        self._bindings = outpost.bindings
        self._instances = instances
        self._instance_store = instance_store
        self._chat = chat
        self._config = config
        self._setups = _Setups()
        self._pickers: dict[int, int | None] = {}  # topic -> picker message id (None: sending)
        self._held: dict[int, tuple[str, tuple[Attachment, ...]]] = {}  # sent after linking
        self._connector = Connector(
            outpost,
            instances=instances,
            instance_store=instance_store,
            chat=chat,
            project_base=config.project_base,
        )

    @property
    def base(self) -> Path:
        return self._config.project_base

    # --- messages, /new and the project picker -------------------------------------------------

    async def new(self, name: str) -> None:
        async with self._setups.running():
            await self._outpost.new_project(name)

    async def message(
        self, topic_id: int, text: str, attachments: Sequence[Attachment] = ()
    ) -> None:
        """Text (or a file with its caption) typed in a topic."""
        if self._bindings.by_topic(topic_id) is None:
            await self._setups.wait(self._config.setup_wait_s)
        if self._bindings.by_topic(topic_id) is None:
            self._held[topic_id] = (text, tuple(attachments))
            await self._offer_picker(topic_id, after_message=True)
            return
        await self._outpost.prompt(topic_id, text, tuple(attachments))

    async def topic_created(self, topic_id: int) -> None:
        """A person created a topic in the app: offer the picker right away."""
        if self._bindings.by_topic(topic_id) is None:
            await self._offer_picker(topic_id, after_message=False)

    async def _offer_picker(self, topic_id: int, *, after_message: bool) -> None:
        if topic_id in self._pickers:
            if after_message:
                await self._chat.notify(
                    topic_id,
                    "👆 Choose this topic's project above (or /link <path>); "
                    "your message is sent as soon as it is linked.",
                )
            return
        projects = self.projects()
        if not projects:
            await self._chat.notify(
                topic_id,
                "This topic is not linked to a project, and there is no project directory "
                f"under {self.base} yet. Use /new <name> in General, or /link <path> here.",
            )
            return
        self._pickers[topic_id] = None
        try:
            self._pickers[topic_id] = await self._chat.show_picker(topic_id, projects)
        except BaseException:
            self._pickers.pop(topic_id, None)
            raise

    async def choose(self, topic_id: int, key: str, who: str, message_id: int) -> None:
        """A press on a picker button: link the topic, then send the message it held."""
        path = find_project(self.base, key)
        if path is None:
            raise CommandError("That directory is not there any more; /link <path> instead.")
        if self._bindings.by_topic(topic_id) is not None:
            raise CommandError("This topic is already linked; /link <path> changes it.")
        await self._link_new_session(topic_id, path)
        self._pickers.pop(topic_id, None)
        await self._chat.show_decision(topic_id, message_id, f"📁 Linked to {path.name} by {who}.")
        await self._send_held(topic_id)

    async def link(self, topic_id: int | None, argument: str) -> None:
        """`/link <path>`: bind this topic to a directory inside PROJECT_BASE_PATH."""
        if topic_id is None:
            raise CommandError(
                "Use /link <path> inside a topic: it binds that topic to a directory."
            )
        if not argument.strip():
            raise CommandError(
                f"Usage: /link <path> — a directory inside {self.base} "
                "(absolute, or relative to it). /projects lists them."
            )
        path = self._project_path(argument.strip())
        current = self._bindings.by_topic(topic_id)
        if current is not None and current.project_path == str(path):
            raise CommandError(f"This topic is already linked to {path}.")
        if current is not None:
            await self._release(current, "the topic was linked to another directory")
        await self._link_new_session(topic_id, path)
        picker = self._pickers.pop(topic_id, None)
        if picker is not None:
            await self._chat.show_decision(
                topic_id, picker, f"📁 Linked to {path.name} with /link."
            )
        await self._send_held(topic_id)

    def _project_path(self, argument: str) -> Path:
        try:
            path = resolve_inside(self.base, argument)
        except ProjectError as exc:
            raise CommandError(f"{exc} Only directories inside it can be linked.") from None
        if path == self.base.resolve():
            raise CommandError(f"Choose a directory inside {self.base}, not the base itself.")
        if not path.exists():
            raise CommandError(f"{path} does not exist. Create it first, or use /new <name>.")
        if not path.is_dir():
            raise CommandError(f"{path} is not a directory.")
        return path

    async def _link_new_session(self, topic_id: int, path: Path) -> TopicBinding:
        try:
            running = await self._outpost.ensure_server(path)
            session = await running.client.create_session()
        except SERVER_ERRORS as exc:
            raise CommandError(f"Could not start OpenCode for {path.name}: {exc}") from exc
        binding = await self._bindings.bind(topic_id, path, session.id, running.info.id)
        await self._chat.notify(
            topic_id,
            f"✅ Linked to {path.name}.\nDirectory: {path}\nSession: {session.id}\n"
            "Send a message here to talk to OpenCode.",
        )
        return binding

    async def _send_held(self, topic_id: int) -> None:
        held = self._held.pop(topic_id, None)
        if held is not None:
            text, attachments = held
            await self._outpost.prompt(topic_id, text, attachments)

    # --- /projects ---------------------------------------------------------------------------

    def projects(self) -> list[ProjectEntry]:
        entries = []
        for path in list_projects(self.base):
            bound = self._bindings.by_path(path.resolve())
            topic = bound[0].topic_id if bound else None
            entries.append(ProjectEntry(path.name, project_key(path.name), topic))
        return entries

    async def open_project(self, key: str) -> None:
        """A /projects button: go to the project's topic, creating it if there is none."""
        path = find_project(self.base, key)
        if path is None:
            raise CommandError("That directory is not there any more; see /projects.")
        bound = self._bindings.by_path(path.resolve())
        if not bound:
            try:
                validate_name(path.name)
            except ProjectError as exc:
                raise CommandError(
                    f"{exc} Rename the directory, or create a topic by hand and /link it there."
                ) from None
            await self.new(path.name)
            return
        topic_id = bound[0].topic_id
        try:
            await self._chat.reopen_topic(topic_id)
            await self._chat.notify(topic_id, f"📂 {path.name} is here; write to continue.")
        except TopicGone:
            await self._release(bound[0], "its topic was deleted")
            raise CommandError(
                f"The topic of {path.name} was deleted; press the button again to create a new one."
            ) from None

    # --- /sessions and /connect --------------------------------------------------------------

    async def sessions(self) -> SessionList:
        return await self._connector.sessions()

    async def connect(self, query: str) -> None:
        await self._connector.connect(query)

    # --- /disconnect and /clear --------------------------------------------------------------

    async def disconnect(self, topic_id: int | None) -> None:
        if topic_id is None:
            raise CommandError("Use /disconnect inside the topic you want to disconnect.")
        binding = self._require_binding(topic_id)
        await self._release(binding, "the topic was disconnected")
        await self._chat.notify(
            topic_id,
            f"🔌 Disconnected. The project files stay in {binding.project_path}. "
            "This topic is now closed; its history stays.",
        )
        with contextlib.suppress(TopicGone):
            await self._chat.close_topic(topic_id)

    async def clear(self) -> ClearReport:
        """Unbind topics whose directory, session or server is gone; never touches files."""
        removed: list[tuple[TopicBinding, str]] = []
        bindings = self._bindings.all()
        for binding in bindings:
            reason = await self._stale_reason(binding)
            if reason is None:
                continue
            removed.append((binding, reason))
            await self._release(binding, reason)
            with contextlib.suppress(TopicGone):
                await self._chat.notify(
                    binding.topic_id, f"🧹 Unlinked by /clear: {reason}. No file was touched."
                )
                await self._chat.close_topic(binding.topic_id)
        return ClearReport(tuple(removed), len(bindings) - len(removed))

    async def _stale_reason(self, binding: TopicBinding) -> str | None:
        if not _is_dir(binding.project_path):
            return f"its directory {binding.project_path} no longer exists"
        if binding.session_id is None:
            return "it has no OpenCode session"
        info = await self._instance_store.get(binding.instance_id) if binding.instance_id else None
        unmanaged = info is not None and info.kind != InstanceKind.MANAGED
        if info is not None and unmanaged and self._outpost.externals.client(info.id) is None:
            return f"its {info.kind} OpenCode server is gone"
        client = self._running_client(binding)
        if client is None:
            return None  # a stopped managed server starts again on the next message
        try:
            await client.get_session(binding.session_id)
        except OpenCodeNotFound:
            return "its OpenCode session no longer exists"
        except OpenCodeError as exc:
            log.warning("could not check session %s: %s", binding.session_id, exc)
        return None

    async def topic_gone(self, topic_id: int) -> None:
        """The topic was deleted in the app (a send found no thread): unbind it, say so."""
        binding = self._bindings.by_topic(topic_id)
        if binding is None:
            return
        await self._release(binding, "its topic was deleted")
        name = Path(binding.project_path).name
        await self._chat.notify(
            None,
            f"🗑 The topic of {name} was deleted, so it is unlinked. The project files stay in "
            f"{binding.project_path}; /projects opens it again.",
        )

    async def _release(self, binding: TopicBinding, reason: str) -> None:
        """Unbind: stop its turn and pending approvals, stop its server if nothing else uses it."""
        session_id = binding.session_id
        if session_id is not None:
            if self._outpost.turns.is_busy(session_id):
                await self._outpost.turns.abort(session_id)
                with contextlib.suppress(TopicGone):
                    await self._outpost.turns.fail(
                        session_id, binding.topic_id, f"Stopped: {reason}."
                    )
            with contextlib.suppress(TopicGone):
                await self._outpost.approvals.expire_session(session_id)
        await self._bindings.unbind(binding.topic_id)
        self._pickers.pop(binding.topic_id, None)
        instance_id = binding.instance_id
        unused = instance_id and not self._bindings.by_instance(instance_id)
        if instance_id and unused and self._instances.get(instance_id) is not None:
            await self._outpost.streams.drop(instance_id)
            await self._instances.stop(instance_id)

    # --- per-topic commands ------------------------------------------------------------------

    def _require_binding(self, topic_id: int | None) -> TopicBinding:
        if topic_id is None:
            raise CommandError("Use this command inside a project topic.")
        binding = self._bindings.by_topic(topic_id)
        if binding is None or binding.session_id is None:
            raise CommandError(
                "This topic is not linked to a project: /link <path> links it, "
                "or use /new <name> in General."
            )
        return binding

    async def toggle_stream(self, topic_id: int | None, argument: str = "") -> bool:
        binding = self._require_binding(topic_id)
        match argument.strip().lower():
            case "":
                enabled = not binding.streaming_enabled
            case "on" | "true" | "1":
                enabled = True
            case "off" | "false" | "0":
                enabled = False
            case other:
                raise CommandError(f"Usage: /stream [on|off] — got “{other}”.")
        await self._bindings.save(replace(binding, streaming_enabled=enabled))
        return enabled

    async def cancel(self, topic_id: int | None, who: str) -> str:
        binding = self._require_binding(topic_id)
        assert binding.session_id is not None
        return await self._outpost.abort(binding.session_id, who)

    async def session_info(self, topic_id: int | None) -> SessionInfo:
        binding = self._require_binding(topic_id)
        assert binding.session_id is not None
        info = await self._instance_store.get(binding.instance_id) if binding.instance_id else None
        busy = self._outpost.turns.is_busy(binding.session_id)
        client = self._running_client(binding)
        if client is None:
            note = "Its OpenCode server is stopped; it starts on your next message."
            return SessionInfo(binding, info, busy=busy, note=note)
        try:
            session = await client.get_session(binding.session_id)
            messages = await client.messages(binding.session_id)
        except OpenCodeError as exc:
            return SessionInfo(binding, info, busy=busy, note=f"OpenCode did not answer: {exc}")
        return _session_info(binding, info, session, messages, busy)

    def _running_client(self, binding: TopicBinding) -> OpenCodeClient | None:
        instance_id = binding.instance_id or ""
        running = self._instances.get(instance_id)
        if running is not None:
            return running.client
        return self._outpost.externals.client(instance_id)

    async def status(self) -> StatusReport:
        return StatusReport(
            orchestrator=await self._outpost.server_status(),
            pending=await self._outpost.approvals.count_pending(),
            topics=len(self._bindings.all()),
            busy_turns=self._outpost.turns.active_count(),
        )


def _is_dir(path: str) -> bool:
    return Path(path).is_dir()


def _session_info(
    binding: TopicBinding,
    info: InstanceInfo | None,
    session: Session,
    messages: Sequence[MessageWithParts],
    busy: bool,
) -> SessionInfo:
    model = None
    input_tokens = output_tokens = 0
    cost = 0.0
    for message in messages:
        if message.info.role != "assistant":
            continue
        if message.info.model_id:
            model = f"{message.info.provider_id}/{message.info.model_id}"
        input_tokens += message.info.tokens.input
        output_tokens += message.info.tokens.output
        cost += message.info.cost
    return SessionInfo(
        binding,
        info,
        title=session.title,
        model=model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost=cost,
        busy=busy,
    )
