"""The composition root: builds every part, wires them, and owns start-up and shutdown order."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from telegram import Update
from telegram.ext import Application, ApplicationBuilder

from oc_outpost.api.server import ApiConfig, ApiServer, build_api
from oc_outpost.api_key import api_key_file, resolve_api_key
from oc_outpost.config import Settings
from oc_outpost.core.approvals import Approvals
from oc_outpost.core.bindings import Bindings
from oc_outpost.core.browser import FileBrowser
from oc_outpost.core.chat import ChatPort, GoneTopics
from oc_outpost.core.compactions import Compactions
from oc_outpost.core.context import ContextWatch
from oc_outpost.core.context_gauge import ContextGauge
from oc_outpost.core.control_buttons import ControlButtons
from oc_outpost.core.controller import Controller, ControllerConfig
from oc_outpost.core.controls import Controls, opencode_state_file, read_model_state
from oc_outpost.core.diffs import Diffs
from oc_outpost.core.file_port import FilePort
from oc_outpost.core.held import HeldMessages
from oc_outpost.core.history import History
from oc_outpost.core.journal import TurnJournal
from oc_outpost.core.linking import Linker
from oc_outpost.core.oc_commands import OpenCodeCommands
from oc_outpost.core.project_files import ProjectFiles
from oc_outpost.core.prompting import Prompter
from oc_outpost.core.recovery import Reconciler, StartupRecovery
from oc_outpost.core.registration import Registrations
from oc_outpost.core.server_events import ServerEvents
from oc_outpost.core.sessions import SessionCatalog
from oc_outpost.core.shell import ShellRunner
from oc_outpost.core.topic_states import TopicBook, TopicStates, TopicStateView
from oc_outpost.core.tracker import TurnTracker
from oc_outpost.core.turn_ends import TurnEnds
from oc_outpost.core.turn_outputs import TurnOutputs
from oc_outpost.core.unlinking import Unlinker
from oc_outpost.core.voice import VoicePrompts
from oc_outpost.metrics import Metrics
from oc_outpost.model import InstanceKind, InstanceState
from oc_outpost.opencode.version import (
    INSTALL_COMMAND,
    PINNED,
    VersionError,
    judge,
    opencode_version,
)
from oc_outpost.servers.discovery import Discovery
from oc_outpost.servers.manager import InstanceManager, ManagerConfig
from oc_outpost.servers.registry import ServerRegistry
from oc_outpost.servers.streams import EventStreams
from oc_outpost.servers.supervisor import Supervisor
from oc_outpost.store.active_turns import ActiveTurnStore
from oc_outpost.store.board import BoardStore
from oc_outpost.store.bot_state import BotStateStore
from oc_outpost.store.buttons import ButtonStore
from oc_outpost.store.db import Database
from oc_outpost.store.held_messages import HeldMessageStore
from oc_outpost.store.instances import InstanceStore
from oc_outpost.store.migrations import ORCHESTRATOR_MIGRATIONS, TOPIC_MIGRATIONS
from oc_outpost.store.pending import PendingStore
from oc_outpost.store.topics import TopicStore
from oc_outpost.store.update_inbox import UpdateInbox
from oc_outpost.stt import SttClient, SttConfig
from oc_outpost.telegram.board import Board, BoardConfig, ServerCounts
from oc_outpost.telegram.board_command import BoardCommand
from oc_outpost.telegram.coalesce import CoalesceConfig
from oc_outpost.telegram.handlers import COMMANDS, AccessPolicy, Handlers
from oc_outpost.telegram.outbox import Limits, Outbox, Priority
from oc_outpost.telegram.polling import PollingConfig, UpdatePoller
from oc_outpost.telegram.requests import bot_requests
from oc_outpost.telegram.service_cleanup import ServiceCleanup
from oc_outpost.telegram.startup import StartupRetry, with_retries
from oc_outpost.telegram.topic_icons import TopicIcons
from oc_outpost.telegram.view import TelegramChat

log = logging.getLogger(__name__)

SHUTDOWN_FLUSH_S = 10.0


@dataclass(frozen=True)
class RunOptions:
    poll_timeout_s: int = 30  # long polls: an idle bot asks Telegram twice a minute
    stream_watchdog_s: float = 30.0  # no event (heartbeats come every 10 s) = dead stream
    # Leave the managed servers running at shutdown; the next start adopts them (bot upgrades).
    keep_servers_running: bool = False
    # Messages of one person in one topic this close together become one prompt.
    coalesce_window_s: float = 1.0
    startup_retry: StartupRetry = field(default_factory=StartupRetry)
    # A topic's state must hold this long before its icon changes (running→done sends "done").
    icon_settle_s: float = 3.0
    board: BoardConfig = field(default_factory=BoardConfig)


def build_application(
    settings: Settings, options: RunOptions
) -> Application[Any, Any, Any, Any, Any, Any]:
    api = settings.telegram_api_url
    requests = bot_requests(options.poll_timeout_s)
    return (
        ApplicationBuilder()
        .token(settings.telegram_bot_token.get_secret_value())
        .base_url(f"{api}/bot")
        .base_file_url(f"{api}/file/bot")
        .request(requests.calls)
        .get_updates_request(requests.polling)
        .updater(None)  # our UpdatePoller fetches updates (handled exactly once, see polling.py)
        .build()
    )


def outbox_limits(settings: Settings) -> Limits:
    return Limits(
        per_chat_interval_s=settings.telegram_rate_per_chat_interval_s,
        group_per_minute=settings.telegram_rate_group_per_minute,
        global_per_second=settings.telegram_rate_global_per_second,
    )


async def api_config(settings: Settings) -> ApiConfig:
    key = await asyncio.to_thread(
        resolve_api_key,
        settings.api_key,
        api_key_file(settings.orchestrator_db_path),
        create=True,
    )
    return ApiConfig(
        api_key=key,
        api_host=settings.api_host,
        allowed_server_hosts=frozenset(settings.api_allowed_server_hosts),
    )


class ChatPorts(ChatPort, FilePort, Protocol):
    """The chat layer as core uses it: messages and topics, and files."""


def stt_config(s: Settings) -> SttConfig | None:
    """The transcription service the settings name (None: voice notes are declined). With it,
    `oc_outpost.stt.stt_reachable(config)` tells whether the service answers."""
    if s.stt_url is None:
        return None
    key = s.stt_api_key.get_secret_value() if s.stt_api_key is not None else None
    return SttConfig(s.stt_url, key, s.stt_model)


def transcriber(s: Settings) -> SttClient | None:
    config = stt_config(s)
    return SttClient(config) if config is not None else None


class OutpostApp:
    """Everything of one running bot, built in `start()` from the bottom layer up (each part gets
    what it uses as constructor arguments), stopped in `stop()` in the reverse order."""

    def __init__(self, settings: Settings, options: RunOptions | None = None) -> None:
        self.settings = settings
        self.options = options or RunOptions()
        self.application = build_application(settings, self.options)
        self.metrics = Metrics(servers=self._server_counts)
        self.outbox = Outbox(self.application.bot, outbox_limits(settings), metrics=self.metrics)
        self._dbs: list[Database] = []
        self._wired = False  # every part is built (start-up may still have failed after that)
        self.api: ApiServer | None = None
        self.poller: UpdatePoller | None = None
        self._version_report: asyncio.Task[None] | None = None
        self.icons: TopicIcons | None = None
        self.board: Board | None = None

    async def start(self) -> None:
        s = self.settings
        self._version_report = asyncio.create_task(log_opencode_version(s.opencode_path))
        orchestrator_db = await Database.open(s.orchestrator_db_path, ORCHESTRATOR_MIGRATIONS)
        self._dbs.append(orchestrator_db)
        topic_db = await Database.open(s.topic_db_path, TOPIC_MIGRATIONS)
        self._dbs.append(topic_db)
        gone_topics = GoneTopics()
        journal = TurnJournal(ActiveTurnStore(topic_db))
        chat = TelegramChat(
            self.outbox, s.telegram_chat_id, gone_topics, journal, metrics=self.metrics
        )
        core = build_core(
            s,
            self.options,
            chat,
            gone_topics,
            journal,
            orchestrator_db,
            topic_db,
            self.metrics,
            states_for=lambda bindings: self._topic_states(bindings, topic_db),
        )
        self.core = core
        self.controller = core.controller

        # the edges
        policy = AccessPolicy(
            chat_id=s.telegram_chat_id,
            allowed_users=frozenset(s.telegram_allowed_users),
            handle_general=s.handle_general_topic,
        )
        self.api = ApiServer(
            build_api(self.controller, await api_config(s), self.metrics), s.api_host, s.api_port
        )
        self.handlers = Handlers(
            self.controller,
            chat,
            policy,
            CoalesceConfig(window_s=self.options.coalesce_window_s),
        )
        BoardCommand(self.board, chat).install(self.application)
        self.handlers.install(self.application)
        if self.icons is not None or self.board is not None:
            ServiceCleanup(self.outbox, s.telegram_chat_id).install(self.application)
        self.inbox = UpdateInbox(topic_db)

        self._wired = True
        retry = self.options.startup_retry
        await with_retries("getMe", self.application.initialize, retry)
        self.outbox.start()
        await with_retries(
            "setMyCommands",
            lambda: self.outbox.submit(
                lambda bot: bot.set_my_commands(COMMANDS),
                method="setMyCommands",
                chat_id=None,
                priority=Priority.INTERACTIVE,
            ),
            retry,
        )
        chat.close_progress_left()  # summaries a kill -9 kept from being drawn
        await self.controller.start()  # adopt running servers, deliver what finished meanwhile
        if self.board is not None:
            await self.board.start()
        core.supervisor.start()
        await self.api.start()
        await self.application.start()
        bot = self.application.bot
        await with_retries("deleteWebhook", bot.delete_webhook, retry)  # polling needs none set
        self.poller = UpdatePoller(
            bot,
            self.inbox,
            self._handle_update,
            PollingConfig(timeout_s=self.options.poll_timeout_s),
        )
        await self.poller.start()
        await self._version_report
        log.info("oc-outpost is running for chat %s", s.telegram_chat_id)

    def _topic_states(self, bindings: Bindings, topic_db: Database) -> TopicStates:
        """Topic states reported to the icons and the board, as configured (TOPIC_STATUS,
        BOARD)."""
        book = TopicBook(bindings)
        return TopicStates(book, self._glance_views(book, topic_db))

    def _glance_views(self, book: TopicBook, topic_db: Database) -> list[TopicStateView]:
        s = self.settings
        views: list[TopicStateView] = []
        if s.topic_status == "icons":
            self.icons = TopicIcons(
                self.outbox, s.telegram_chat_id, settle_s=self.options.icon_settle_s
            )
            views.append(self.icons)
        if s.board == "on":
            store = BoardStore(BotStateStore(topic_db))
            self.board = Board(
                self.outbox,
                s.telegram_chat_id,
                store,
                book.statuses,
                self._board_servers,
                self.options.board,
            )
            views.append(self.board)
        return views

    async def _board_servers(self) -> ServerCounts:
        """The bot's servers (managed and registered), not others found on the machine."""
        counts = (await self.core.registry.status()).counts() if self._wired else {}
        ours = {state: n for (kind, state), n in counts.items() if kind != InstanceKind.DISCOVERED}
        return ServerCounts(ours.get(InstanceState.RUNNING, 0), ours.get(InstanceState.STOPPED, 0))

    async def _handle_update(self, update: Update) -> None:
        await self.application.process_update(update)
        await self.handlers.work_done(update.update_id)

    async def _server_counts(self) -> Mapping[tuple[str, str], int]:
        """Servers by (kind, state) for the metrics; every pair present, zeros included."""
        counts = (await self.core.registry.status()).counts() if self._wired else {}
        return {
            (kind.value, state.value): counts.get((kind, state), 0)
            for kind in InstanceKind
            for state in InstanceState
        }

    async def stop(self) -> None:
        """Stop taking updates, flush final answers, stop servers, close stores."""
        if self._version_report is not None and not self._version_report.done():
            self._version_report.cancel()  # start-up failed before it was awaited
            await asyncio.gather(self._version_report, return_exceptions=True)
        if self._wired:
            await self._stop_parts()
        for db in self._dbs:
            await db.close()
        log.info("oc-outpost stopped")

    async def _stop_parts(self) -> None:
        if self.poller is not None:
            await self.poller.stop()
        if self.application.running:
            await self.application.stop()
        if self.api is not None:
            await self.api.stop()
        await self.core.supervisor.stop()
        await self.controller.stop()
        # after the controller: the finals it flushes still report their topics' states
        if self.board is not None:
            await self.board.stop()
        if self.icons is not None:
            await self.icons.stop()
        await self.outbox.close(SHUTDOWN_FLUSH_S)
        await self.core.registry.stop(keep_servers_running=self.options.keep_servers_running)
        await self.application.shutdown()


@dataclass(frozen=True)
class Core:
    """The parts below the chat layer, as the composition root wired them."""

    controller: Controller
    registry: ServerRegistry
    supervisor: Supervisor
    bindings: Bindings
    catalog: SessionCatalog
    journal: TurnJournal


StatesFor = Callable[[Bindings], TopicStates]


def build_core(
    s: Settings,
    options: RunOptions,
    chat: ChatPorts,
    gone_topics: GoneTopics,
    journal: TurnJournal,
    orchestrator_db: Database,
    topic_db: Database,
    metrics: Metrics,
    *,
    states_for: StatesFor = lambda bindings: TopicStates(TopicBook(bindings)),
) -> Core:
    """Stores, core and servers, each given what it uses (bottom layer first; the servers report
    to core's `ServerEvents`, so that is built before them). ``states_for`` makes what topic
    states are reported to (the glance views) once the bindings exist."""
    instance_store = InstanceStore(orchestrator_db)
    bindings = Bindings(TopicStore(topic_db), s.telegram_chat_id)
    states = states_for(bindings)

    # core's side of the OpenCode events: built first, the servers report to it
    buttons = ButtonStore(topic_db)
    turn_ends = TurnEnds()
    gauge = ContextGauge()
    tracker = TurnTracker(
        chat,
        bindings,
        journal,
        metrics=metrics,
        outputs=TurnOutputs(buttons, bindings),
        states=states,
        ends=turn_ends,
        gauge=gauge,
    )
    approvals = Approvals(chat, PendingStore(topic_db), states)
    compactions = Compactions()
    reconciler = Reconciler(bindings=bindings, turns=tracker, approvals=approvals, journal=journal)
    server_events = ServerEvents(
        chat=chat,
        bindings=bindings,
        tracker=tracker,
        approvals=approvals,
        journal=journal,
        reconciler=reconciler,
        compactions=compactions,
        states=states,
    )

    # the servers
    streams = EventStreams(server_events, watchdog_s=options.stream_watchdog_s, metrics=metrics)
    instances = InstanceManager(manager_config(s), instance_store, server_events, streams)
    supervisor = Supervisor(instances)
    registry = ServerRegistry(instances, streams, instance_store, Discovery(instance_store))

    # core's front door
    linker = Linker(registry, bindings, chat)
    catalog = SessionCatalog(registry, bindings, s.project_base_path)
    files = ProjectFiles(registry, chat)
    prompter = Prompter(registry, tracker, chat)
    controls_buttons = ControlButtons(buttons, bindings)
    shell = ShellRunner(prompter, tracker, chat)
    held = HeldMessages(
        HeldMessageStore(topic_db),
        controls_buttons,
        bindings,
        tracker,
        prompter,
        chat,
        turn_ends,
        shell,
    )
    model_state = opencode_state_file(dict(os.environ), Path.home())
    controls = Controls(bindings, prompter, controls_buttons, lambda: read_model_state(model_state))
    controller = Controller(
        ControllerConfig(
            project_base=s.project_base_path,
            auto_create_dirs=s.auto_create_project_dirs,
            setup_wait_s=s.startup_timeout_s,
            busy_policy=s.busy_policy,
            started_at=time.time(),
        ),
        chat=chat,
        bindings=bindings,
        registry=registry,
        tracker=tracker,
        approvals=approvals,
        linker=linker,
        prompter=prompter,
        catalog=catalog,
        registrations=Registrations(registry, bindings, linker, chat, s.project_base_path),
        unlinker=Unlinker(
            chat=chat, bindings=bindings, registry=registry, tracker=tracker, approvals=approvals
        ),
        recovery=StartupRecovery(
            reconciler=reconciler,
            registry=registry,
            bindings=bindings,
            tracker=tracker,
            journal=journal,
        ),
        gone_topics=gone_topics,
        browser=FileBrowser(files, buttons, chat, chat),
        diffs=Diffs(files, buttons, chat, chat),
        voice=VoicePrompts(transcriber(s), files),
        controls=controls,
        held=held,
        shell=shell,
        context=ContextWatch(
            bindings, controls, prompter, tracker, controls_buttons, chat, compactions, gauge
        ),
        turn_ends=turn_ends,
        compactions=compactions,
        commands=OpenCodeCommands(prompter, tracker, controls_buttons, chat),
        history=History(prompter, tracker, linker, controls_buttons, chat),
        buttons=controls_buttons,
    )

    return Core(controller, registry, supervisor, bindings, catalog, journal)


def manager_config(s: Settings) -> ManagerConfig:
    return ManagerConfig(
        binary=s.opencode_path,
        port_start=s.opencode_port_start,
        pool_size=s.opencode_port_pool_size,
        max_instances=s.opencode_max_instances,
        startup_timeout_s=s.startup_timeout_s,
        idle_timeout_s=s.idle_timeout_s,
        health_interval_s=s.health_check_interval_s,
        log_dir=s.orchestrator_db_path.parent / "logs",
        shared_dir=s.project_base_path if s.opencode_shared_server else None,
    )


async def log_opencode_version(command: str) -> None:
    """Say at start-up which OpenCode runs the agents and whether it was tested."""
    binary = shutil.which(command)
    if binary is None:
        log.warning("OpenCode %r was not found; install it with `%s`", command, INSTALL_COMMAND)
        return
    try:
        version = await opencode_version(binary)
    except (OSError, VersionError) as exc:
        log.warning("%s --version failed: %s", binary, exc)
        return
    verdict = judge(version)
    if verdict.tested:
        log.info("%s (%s)", verdict.describe(), binary)
    else:
        log.warning("%s (%s); it may work, CI runs %s", verdict.describe(), binary, PINNED)


async def serve(settings: Settings, stop: asyncio.Event, options: RunOptions | None = None) -> None:
    """Run the bot until ``stop`` is set. The `oc-outpost` command and the tests both use this."""
    app = OutpostApp(settings, options)
    try:
        await app.start()
        await stop.wait()
    finally:
        await app.stop()
