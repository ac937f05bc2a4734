"""The controller: core's one front door. The chat handlers and the HTTP API call only this.

Each method does one thing a user asked for. What cannot be done raises a `UserError` subclass
(core/errors.py) whose message is fit for the user; each edge maps it (a ❌ reply in the chat, an
HTTP status in the API). Nothing here deletes a user file: `/disconnect` and `/clear` only unbind,
stop servers nothing uses any more and close topics, whose history stays.

It is core's longest module on purpose: one short method per thing a user can ask (some fifty),
each checking the topic and handing the work to the module that does it (linking, prompting,
controls, history, ...). Splitting it would make a second front door.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from oc_outpost.core.approvals import Approvals
from oc_outpost.core.bindings import Bindings
from oc_outpost.core.browser import FileBrowser
from oc_outpost.core.chat import Attachment, ChatPort, GoneTopics, Menu, ProjectEntry, TopicGone
from oc_outpost.core.compactions import Compactions
from oc_outpost.core.context import COMPACT, ContextWatch
from oc_outpost.core.control_buttons import OUT_OF_DATE, ControlButtons, Pressed
from oc_outpost.core.controls import PICKER_KINDS, Chosen, Controls
from oc_outpost.core.diffs import Diffs
from oc_outpost.core.errors import BadRequest, NotFound, Unavailable, UserError
from oc_outpost.core.held import DROP, SEND_NOW, HeldMessages
from oc_outpost.core.history import REDO, History, TurnRef
from oc_outpost.core.linking import SERVER_ERRORS, Linker, LinkRequest
from oc_outpost.core.naming import is_placeholder, topic_name
from oc_outpost.core.oc_commands import COMMAND, OpenCodeCommands
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
from oc_outpost.core.shell import ShellRunner, is_shell
from oc_outpost.core.tracker import TurnTracker
from oc_outpost.core.turn_ends import TurnEnds
from oc_outpost.core.turn_outputs import BUILD, FORK, UNDO
from oc_outpost.core.unlinking import Unlinker
from oc_outpost.core.voice import VoicePrompts
from oc_outpost.model import InstanceInfo, InstanceKind, TopicBinding
from oc_outpost.servers.registry import ServerRegistry

log = logging.getLogger(__name__)

# what these buttons do must not run twice, even when pressed again later
ONCE = frozenset({SEND_NOW, DROP, COMPACT, COMMAND, BUILD})
BUILD_AGENT = "build"
BUILD_PROMPT = "Implement the plan above."


@dataclass(frozen=True)
class ControllerConfig:
    project_base: Path
    auto_create_dirs: bool = True
    setup_wait_s: float = 60.0  # how long a message waits for its topic's /new to finish
    busy_policy: Literal["queue", "steer"] = "queue"
    started_at: float = 0.0  # epoch s: a message older than this may have been sent already


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
        controls: Controls,
        held: HeldMessages,
        shell: ShellRunner,
        context: ContextWatch,
        turn_ends: TurnEnds,
        compactions: Compactions,
        commands: OpenCodeCommands,
        history: History,
        buttons: ControlButtons,
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
        self._controls = controls
        self._held = held
        self._shell = shell
        self._context = context
        self._turn_ends = turn_ends
        self._compactions = compactions
        self._commands = commands
        self._history = history
        self._buttons = buttons
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
            asyncio.create_task(self._follow_turn_ends(), name="after-turns"),
            asyncio.create_task(self._follow_compactions(), name="compactions"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._tracker.stop()

    async def _recover(self) -> None:
        try:
            await self._recovery.run()
            await self._held.resume()
        except Exception:
            log.exception("catching up after the bot restart failed")

    async def _follow_turn_ends(self) -> None:
        """After each turn: the next held message, then the context hint."""
        while True:
            session_id = await self._turn_ends.next()
            for step in (self._held.send_next, self._context.after_turn):
                try:
                    await step(session_id)
                except Exception:
                    log.exception("after the turn of %s: %s failed", session_id, step.__name__)

    async def _follow_compactions(self) -> None:
        while True:
            session_id = await self._compactions.next_unasked()
            try:
                await self._context.compacted_by_opencode(session_id)
            except Exception:
                log.exception("telling the compaction of %s failed", session_id)

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
        self,
        topic_id: int,
        text: str,
        attachments: Sequence[Attachment] = (),
        *,
        source: int | None = None,
        sent_at: float | None = None,
    ) -> None:
        """Text (or files with their caption) typed in a topic: the session's next prompt.
        ``sent_at`` (epoch s) is when the person sent it."""
        if self._bindings.by_topic(topic_id) is None:
            await self._linker.wait_idle(self._config.setup_wait_s)
        binding = self._bindings.by_topic(topic_id)
        if binding is None:
            await self._pickers.offer(topic_id, str(self.base), (text, tuple(attachments)))
            return
        if await self._sent_before_the_restart(binding, text, attachments, sent_at):
            log.info("a message of topic %s reached OpenCode before the restart", topic_id)
            return
        if self._holds(binding, attachments):
            await self._held.hold(binding, text, source)
            return
        if is_shell(text) and not attachments:
            await self._shell.run(binding, text)
            return
        if any(a.mime.startswith("image/") for a in attachments):
            warning = await self._controls.image_warning(binding)
            if warning is not None:
                await self._chat.notify(topic_id, warning)
        await self._prompter.send(binding, text, tuple(attachments))

    async def _sent_before_the_restart(
        self,
        binding: TopicBinding,
        text: str,
        attachments: Sequence[Attachment],
        sent_at: float | None,
    ) -> bool:
        """A message from before this start that OpenCode has already: the bot died after
        sending it and before crossing its update out, so Telegram's update came again."""
        if sent_at is None or sent_at >= self._config.started_at:
            return False
        return await self._prompter.already_sent(binding, text, attachments, sent_at)

    async def edit_held(self, topic_id: int, message_id: int, text: str) -> None:
        """A person edited a message: if it is held, its queued copy changes too."""
        await self._held.edit(topic_id, message_id, text)

    def _holds(self, binding: TopicBinding, attachments: Sequence[Attachment]) -> bool:
        """A text typed while the session is busy waits in the bot (BUSY_POLICY=queue)."""
        return (
            self._config.busy_policy == "queue"
            and not attachments
            and binding.session_id is not None
            and self._tracker.is_busy(binding.session_id)
        )

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
        info = await self._catalog.info(binding, busy=self._tracker.is_busy(binding.session_id))
        if info.note is not None:  # its server is stopped or did not answer
            return info
        try:
            return replace(info, context_percent=await self._context.percent(binding))
        except UserError as exc:
            return replace(info, note=str(exc))

    # --- model, variant and agent -------------------------------------------------------------

    async def model_menu(self, topic_id: int | None, query: str = "") -> Menu:
        return await self._controls.model_menu(self._require_binding(topic_id), query)

    async def agent_menu(self, topic_id: int | None) -> Menu:
        return await self._controls.agent_menu(self._require_binding(topic_id))

    async def set_agent(self, topic_id: int | None, name: str) -> str:
        """`/plan`, `/build`, `/agent <name>`: switch the topic's agent directly."""
        await self._controls.set_agent(self._require_binding(topic_id), name)
        return f"🤖 Agent: {name}. Your next messages go to it."

    async def press_control(
        self, topic_id: int | None, token: str, who: str, press_id: str
    ) -> Menu | Chosen | None:
        """A control button: a new menu for the pressed message, a decision replacing it, or
        None (nothing more to show there: a repeated press, or the answer was posted anew)."""
        if topic_id is None:
            raise BadRequest("This button only works in a project topic.")
        async with self._buttons.pressed(topic_id, token, press_id, once=ONCE) as press:
            return None if press is None else await self._pressed(press, who)

    async def _pressed(self, press: Pressed, who: str) -> Menu | Chosen | None:
        kind, binding, payload = press.kind, press.binding, press.payload
        if kind in PICKER_KINDS:
            return await self._controls.press(press, who)
        if kind in (SEND_NOW, DROP):
            return Chosen(await self._held.press(kind, int(payload["held_id"]), who))
        if kind == COMPACT:
            return Chosen(await self._context.compact(binding))
        if kind == COMMAND:
            return Chosen(await self._command_pressed(binding, str(payload["name"]), who))
        if kind == REDO:
            return Chosen(await self._history.redo(binding, str(payload["message_id"])))
        if kind == UNDO:
            await self._history.undo(binding, TurnRef.from_payload(payload))
        elif kind == FORK:
            await self._history.fork(binding, TurnRef.from_payload(payload))
        elif kind == BUILD:
            await self._build_it(binding, who)
        else:
            raise NotFound(OUT_OF_DATE)
        return None

    async def _build_it(self, binding: TopicBinding, who: str) -> None:
        """A plan's Build it: the build agent implements the plan."""
        await self._controls.set_agent(binding, BUILD_AGENT)
        await self._chat.notify(
            binding.topic_id, f"🔨 {who}: agent {BUILD_AGENT}, asked to “{BUILD_PROMPT}”"
        )
        await self.message(binding.topic_id, BUILD_PROMPT)

    async def _command_pressed(self, binding: TopicBinding, name: str, who: str) -> str:
        command = await self._commands.find(binding, name)
        if command is None:
            raise NotFound(f"/{name} is not an OpenCode command here any more.")
        if command.takes_arguments:
            return f"✍️ /{command.name} takes arguments: type /{command.name} <arguments> here."
        await self._commands.run(binding, command.name, "")
        return f"▶ /{command.name} started by {who}."

    async def undo(self, topic_id: int | None) -> None:
        await self._history.undo(self._require_binding(topic_id))

    async def redo(self, topic_id: int | None) -> str:
        return await self._history.redo(self._require_binding(topic_id))

    async def fork(self, topic_id: int | None) -> None:
        await self._history.fork(self._require_binding(topic_id))

    async def command_menu(self, topic_id: int | None) -> Menu:
        return await self._commands.menu(self._require_binding(topic_id))

    async def run_command(self, topic_id: int | None, name: str, arguments: str) -> None:
        """`/name args` typed in a topic, not one of ours: OpenCode's command of that name."""
        await self._commands.run(self._require_binding(topic_id), name, arguments)

    async def compact(self, topic_id: int | None) -> str:
        return await self._context.compact(self._require_binding(topic_id))

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
