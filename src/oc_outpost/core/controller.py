"""The controller: core's one front door. The chat handlers and the HTTP API call only this.

Each method does one thing a user asked for. What cannot be done raises a `UserError` subclass
(core/errors.py) whose message is fit for the user; each edge maps it (a ❌ reply in the chat, an
HTTP status in the API). Nothing here deletes a user file: `/disconnect` and `/clear` only unbind,
stop servers nothing uses any more and close topics, whose history stays.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from oc_outpost.core.approvals import Approvals
from oc_outpost.core.bindings import Bindings
from oc_outpost.core.browser import FileBrowser
from oc_outpost.core.chat import Attachment, ChatPort, GoneTopics, ProjectEntry, TopicGone
from oc_outpost.core.diffs import Diffs
from oc_outpost.core.errors import BadRequest, NotFound, Unavailable
from oc_outpost.core.linking import SERVER_ERRORS, Linker, LinkRequest
from oc_outpost.core.naming import is_placeholder, topic_name
from oc_outpost.core.pickers import Pickers
from oc_outpost.core.projects import (
    ProjectError,
    find_project,
    list_projects,
    project_dir,
    project_key,
    resolve_inside,
    validate_name,
)
from oc_outpost.core.prompting import NOT_LINKED, Prompter
from oc_outpost.core.recovery import StartupRecovery
from oc_outpost.core.registration import Registration, Registrations
from oc_outpost.core.replies import ClearReport, SessionDetails, SessionList, StatusReport
from oc_outpost.core.sessions import SessionCatalog
from oc_outpost.core.tracker import TurnTracker
from oc_outpost.core.unlinking import Unlinker
from oc_outpost.core.voice import VoicePrompts
from oc_outpost.model import InstanceInfo, InstanceKind, TopicBinding
from oc_outpost.servers.registry import ServerRegistry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ControllerConfig:
    project_base: Path
    auto_create_dirs: bool = True
    setup_wait_s: float = 60.0  # how long a message waits for its topic's /new to finish


class Controller:
    def __init__(
        self,
        config: ControllerConfig,
        *,
        chat: ChatPort,
        bindings: Bindings,
        registry: ServerRegistry,
        tracker: TurnTracker,
        approvals: Approvals,
        linker: Linker,
        prompter: Prompter,
        catalog: SessionCatalog,
        registrations: Registrations,
        unlinker: Unlinker,
        recovery: StartupRecovery,
        gone_topics: GoneTopics,
        browser: FileBrowser,
        diffs: Diffs,
        voice: VoicePrompts,
    ) -> None:
        self._config = config
        self._chat = chat
        self._bindings = bindings
        self._registry = registry
        self._tracker = tracker
        self._approvals = approvals
        self._linker = linker
        self._prompter = prompter
        self._catalog = catalog
        self._registrations = registrations
        self._unlinker = unlinker
        self._recovery = recovery
        self._gone_topics = gone_topics
        self._browser = browser
        self._diffs = diffs
        self._voice = voice
        self._pickers = Pickers(chat, self.projects)
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def base(self) -> Path:
        return self._config.project_base

    # --- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the bindings, take over the servers, then catch up in the background."""
        await self._bindings.load()
        await self._registry.start(b.instance_id for b in self._bindings.all() if b.instance_id)
        self._tasks = [
            asyncio.create_task(self._recover(), name="recover-open-turns"),
            asyncio.create_task(self._unlink_gone_topics(), name="unlink-gone-topics"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._tracker.stop()

    async def _recover(self) -> None:
        try:
            await self._recovery.run()
        except Exception:
            log.exception("catching up after the bot restart failed")

    async def _unlink_gone_topics(self) -> None:
        while True:
            topic_id = await self._gone_topics.next()
            try:
                await self.topic_gone(topic_id)
            except Exception:
                log.exception("unlinking the deleted topic %d failed", topic_id)

    # --- projects -----------------------------------------------------------------------------

    async def new(self, name: str) -> None:
        """`/new <name>`: directory, topic, server, session, binding, welcome."""
        try:
            path, _ = project_dir(self.base, name, create=self._config.auto_create_dirs)
        except ProjectError as exc:
            raise BadRequest(str(exc)) from None

        def welcome(binding: TopicBinding) -> str:
            return (
                f"✅ Project {name} is ready.\nDirectory: {binding.project_path}\n"
                f"Session: {binding.session_id}\nSend a message here to talk to OpenCode."
            )

        await self._linker.link(LinkRequest(path, name, welcome, one_topic_per_project=True))
        await self._chat.notify(None, f"✅ {name} is ready in its own topic.")

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
            raise NotFound("That directory is not there any more; see /projects.")
        bound = self._bindings.by_path(path.resolve())
        if not bound:
            try:
                validate_name(path.name)
            except ProjectError as exc:
                raise BadRequest(
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
            raise NotFound(
                f"The topic of {path.name} was deleted; press the button again to create a new one."
            ) from None

    # --- messages and linking a topic ---------------------------------------------------------

    def is_linked(self, topic_id: int) -> bool:
        return self._bindings.by_topic(topic_id) is not None

    async def message(
        self, topic_id: int, text: str, attachments: Sequence[Attachment] = ()
    ) -> None:
        """Text (or files with their caption) typed in a topic: the session's next prompt."""
        if self._bindings.by_topic(topic_id) is None:
            await self._linker.wait_idle(self._config.setup_wait_s)
        binding = self._bindings.by_topic(topic_id)
        if binding is None:
            await self._pickers.offer(topic_id, str(self.base), (text, tuple(attachments)))
            return
        await self._prompter.send(binding, text, tuple(attachments))

    async def topic_created(self, topic_id: int) -> None:
        """A person created a topic in the app: offer the picker right away."""
        if self._bindings.by_topic(topic_id) is None:
            await self._pickers.offer(topic_id, str(self.base))

    async def choose(self, topic_id: int, key: str, who: str, message_id: int) -> None:
        """A press on a picker button: link the topic, then send the message it held."""
        path = find_project(self.base, key)
        if path is None:
            raise NotFound("That directory is not there any more; /link <path> instead.")
        await self._link_topic(topic_id, path)
        self._pickers.close(topic_id)
        await self._chat.show_decision(topic_id, message_id, f"📁 Linked to {path.name} by {who}.")
        await self._send_held(topic_id)

    async def link(self, topic_id: int | None, argument: str) -> None:
        """`/link <path>`: bind this topic to a directory inside PROJECT_BASE_PATH."""
        if topic_id is None:
            raise BadRequest("Use /link <path> inside a topic: it binds that topic to a directory.")
        if not argument.strip():
            raise BadRequest(
                f"Usage: /link <path> — a directory inside {self.base} "
                "(absolute, or relative to it). /projects lists them."
            )
        path = self._project_path(argument.strip())
        current = self._bindings.by_topic(topic_id)
        if current is not None and current.project_path == str(path):
            raise BadRequest(f"This topic is already linked to {path}.")
        if current is not None:
            await self._release(current, "the topic was linked to another directory")
        await self._link_topic(topic_id, path)
        picker = self._pickers.close(topic_id)
        if picker is not None:
            await self._chat.show_decision(
                topic_id, picker, f"📁 Linked to {path.name} with /link."
            )
        await self._send_held(topic_id)

    def _project_path(self, argument: str) -> Path:
        try:
            path = resolve_inside(self.base, argument)
        except ProjectError as exc:
            raise BadRequest(f"{exc} Only directories inside it can be linked.") from None
        if path == self.base.resolve():
            raise BadRequest(f"Choose a directory inside {self.base}, not the base itself.")
        if not path.exists():
            raise NotFound(f"{path} does not exist. Create it first, or use /new <name>.")
        if not path.is_dir():
            raise BadRequest(f"{path} is not a directory.")
        return path

    async def _link_topic(self, topic_id: int, path: Path) -> TopicBinding:
        def linked(binding: TopicBinding) -> str:
            return (
                f"✅ Linked to {path.name}.\nDirectory: {path}\nSession: {binding.session_id}\n"
                "Send a message here to talk to OpenCode."
            )

        return await self._linker.link(LinkRequest(path, path.name, linked, topic_id=topic_id))

    async def _send_held(self, topic_id: int) -> None:
        held = self._pickers.take_held(topic_id)
        binding = self._bindings.by_topic(topic_id)
        if held is not None and binding is not None:
            await self._prompter.send(binding, *held)

    # --- prompts ------------------------------------------------------------------------------

    async def stop_turn(self, session_id: str, who: str) -> str:
        """The Stop button: abort the session's running turn."""
        answer = await self._tracker.abort(session_id)
        log.info("stop of %s pressed by %s: %s", session_id, who, answer)
        return answer

    async def cancel(self, topic_id: int | None, who: str) -> str:
        binding = self._require_binding(topic_id)
        assert binding.session_id is not None
        return await self.stop_turn(binding.session_id, who)

    # --- approvals ----------------------------------------------------------------------------

    async def answer_permission(self, token: str, choice: str, who: str, message_id: int) -> str:
        return await self._approvals.answer_permission(
            token, choice, who, self._registry.client, message_id
        )

    async def answer_question(self, token: str, option: int, who: str, message_id: int) -> str:
        return await self._approvals.answer_question(
            token, option, who, self._registry.client, message_id
        )

    # --- sessions -----------------------------------------------------------------------------

    async def sessions(self) -> SessionList:
        return await self._catalog.listing()

    async def connect(self, query: str) -> None:
        """`/connect <project | session id>`: bind an existing session to a new topic."""
        query = query.strip()
        if not query:
            raise BadRequest(
                "Usage: /connect <project name | session id>. /sessions lists the sessions."
            )
        try:
            entry = await self._catalog.find(query)
        except SERVER_ERRORS as exc:
            raise Unavailable(f"Could not reach OpenCode for {query}: {exc}") from exc
        try:
            path = resolve_inside(self.base, entry.directory)
        except ProjectError:
            raise BadRequest(
                f"The session's directory {entry.directory} is outside {self.base}; "
                "only projects inside it can be connected."
            ) from None
        title = "" if is_placeholder(entry.title) else entry.title
        shown = title or entry.session_id

        def connected(_: TopicBinding) -> str:
            return (
                f"🔗 Connected to “{shown}” of {path.name}. Messages here go to this session "
                "and its activity is shown here."
            )

        await self._linker.link(
            LinkRequest(
                path,
                topic_name(path.name, title),
                connected,
                instance_id=None if entry.kind == InstanceKind.MANAGED else entry.instance_id,
                session_id=entry.session_id,
                session_title=title,
                show_history=True,
            )
        )
        await self._chat.notify(None, f"✅ {shown} is connected in its topic.")

    # --- /disconnect, /clear, deleted topics --------------------------------------------------

    async def disconnect(self, topic_id: int | None) -> None:
        if topic_id is None:
            raise BadRequest("Use /disconnect inside the topic you want to disconnect.")
        await self._unlinker.disconnect(self._require_binding(topic_id))

    async def clear(self) -> ClearReport:
        return await self._unlinker.clear()

    async def topic_gone(self, topic_id: int) -> None:
        await self._unlinker.topic_gone(topic_id)

    async def _release(self, binding: TopicBinding, reason: str) -> None:
        await self._unlinker.release(binding, reason)
        self._pickers.close(binding.topic_id)

    # --- per-topic commands -------------------------------------------------------------------

    def _require_binding(self, topic_id: int | None) -> TopicBinding:
        if topic_id is None:
            raise BadRequest("Use this command inside a project topic.")
        binding = self._bindings.by_topic(topic_id)
        if binding is None or binding.session_id is None:
            raise BadRequest(NOT_LINKED)
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
                raise BadRequest(f"Usage: /stream [on|off] — got “{other}”.")
        await self._bindings.save(replace(binding, streaming_enabled=enabled))
        return enabled

    async def session_info(self, topic_id: int | None) -> SessionDetails:
        binding = self._require_binding(topic_id)
        assert binding.session_id is not None
        return await self._catalog.info(binding, busy=self._tracker.is_busy(binding.session_id))

    async def status(self) -> StatusReport:
        return StatusReport(
            orchestrator=await self._registry.status(),
            pending=await self._approvals.count_pending(),
            topics=len(self._bindings.all()),
            busy_turns=self._tracker.active_count(),
        )

    # --- files and voice (core/browser.py, core/diffs.py, core/voice.py) ----------------------

    async def browse(self, topic_id: int | None, argument: str) -> None:
        """`/ls [-a] [path]`: a keyboard browser of the project."""
        await self._browser.open(self._require_binding(topic_id), argument)

    async def get_file(self, topic_id: int | None, argument: str) -> None:
        """`/get <path>`: one file of the project (a small folder as a zip)."""
        await self._browser.get(self._require_binding(topic_id), argument)

    async def browse_press(
        self, topic_id: int | None, token: str, action: str, press_id: str, message_id: int
    ) -> None:
        binding = self._require_binding(topic_id)
        await self._browser.press(binding, token, action, press_id, message_id)

    async def diff(self, topic_id: int | None) -> None:
        """`/diff`: the project's uncommitted changes as a .diff document."""
        await self._diffs.project(self._require_binding(topic_id))

    async def turn_diff(self, topic_id: int | None, token: str, press_id: str) -> None:
        """A final answer's Diff button: that turn's changes."""
        await self._diffs.turn(self._require_binding(topic_id), token, press_id)

    async def voice(self, topic_id: int | None, audio: Attachment) -> None:
        """A voice note: transcribed, echoed, then sent as the topic's next prompt."""
        binding = self._require_binding(topic_id)
        text = await self._voice.transcribe(binding, audio)
        await self._chat.notify(binding.topic_id, f"🎙 {text}")
        await self.message(binding.topic_id, text)

    # --- the HTTP API: external servers -------------------------------------------------------

    async def register(
        self, project_path: str, url: str, session_id: str | None, password: str | None
    ) -> Registration:
        return await self._registrations.register(project_path, url, session_id, password)

    async def unregister(self, project_path: str) -> list[int]:
        return await self._registrations.unregister(project_path)

    async def registration_status(
        self, project_path: str
    ) -> tuple[list[TopicBinding], list[InstanceInfo]]:
        return await self._registrations.status(project_path)

    async def instances(self) -> list[InstanceInfo]:
        return await self._registry.all_instances()
