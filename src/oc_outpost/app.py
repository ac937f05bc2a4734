"""The composition root: builds every part, wires them, and owns start-up and shutdown order."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from telegram.ext import Application, ApplicationBuilder

from oc_outpost.api.server import ApiServer, build_api
from oc_outpost.config import Settings
from oc_outpost.core.commands import Commands, CommandsConfig
from oc_outpost.core.journal import TurnJournal
from oc_outpost.core.outpost import Outpost, OutpostConfig
from oc_outpost.core.supervision import Supervision
from oc_outpost.core.types import InstanceKind, InstanceState
from oc_outpost.metrics import Metrics
from oc_outpost.opencode.version import (
    INSTALL_COMMAND,
    PINNED,
    VersionError,
    judge,
    opencode_version,
)
from oc_outpost.orchestrator.manager import InstanceManager, ManagerConfig
from oc_outpost.store.active_turns import ActiveTurnStore
from oc_outpost.store.bot_state import BotStateStore
from oc_outpost.store.db import Database
from oc_outpost.store.instances import InstanceStore
from oc_outpost.store.migrations import ORCHESTRATOR_MIGRATIONS, TOPIC_MIGRATIONS
from oc_outpost.store.pending import PendingStore
from oc_outpost.store.topics import TopicStore
from oc_outpost.telegram.handlers import COMMANDS, AccessPolicy, Handlers
from oc_outpost.telegram.outbox import Limits, Outbox, Priority
from oc_outpost.telegram.requests import bot_requests
from oc_outpost.telegram.view import TelegramChat

log = logging.getLogger(__name__)

SHUTDOWN_FLUSH_S = 10.0


@dataclass(frozen=True)
class RunOptions:
    poll_timeout_s: int = 10
    stream_watchdog_s: float = 30.0  # no event (heartbeats come every 10 s) = dead stream
    # Leave the managed servers running at shutdown; the next start adopts them (bot upgrades).
    keep_servers_running: bool = False


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
        .concurrent_updates(True)
        .build()
    )


def outbox_limits(settings: Settings) -> Limits:
    return Limits(
        per_chat_interval_s=settings.telegram_rate_per_chat_interval_s,
        group_per_minute=settings.telegram_rate_group_per_minute,
        global_per_second=settings.telegram_rate_global_per_second,
    )


class OutpostApp:
    """Everything of one running bot; `start()` and `stop()` in the right order."""

    def __init__(self, settings: Settings, options: RunOptions | None = None) -> None:
        self.settings = settings
        self.options = options or RunOptions()
        self.application = build_application(settings, self.options)
        self.metrics = Metrics(servers=self._server_counts)
        self.outbox = Outbox(self.application.bot, outbox_limits(settings), metrics=self.metrics)
        self.chat = TelegramChat(self.outbox, settings.telegram_chat_id, metrics=self.metrics)
        self._dbs: list[Database] = []
        self._wired = False  # every part is built (start-up may still have failed after that)
        self.api: ApiServer | None = None
        self._version_report: asyncio.Task[None] | None = None

    async def start(self) -> None:
        s = self.settings
        self._version_report = asyncio.create_task(log_opencode_version(s.opencode_path))
        orchestrator_db = await Database.open(s.orchestrator_db_path, ORCHESTRATOR_MIGRATIONS)
        self._dbs.append(orchestrator_db)
        topic_db = await Database.open(s.topic_db_path, TOPIC_MIGRATIONS)
        self._dbs.append(topic_db)
        self.bot_state = BotStateStore(topic_db)
        instance_store = InstanceStore(orchestrator_db)
        self.instances = InstanceManager(
            ManagerConfig(
                binary=s.opencode_path,
                port_start=s.opencode_port_start,
                pool_size=s.opencode_port_pool_size,
                max_instances=s.opencode_max_instances,
                startup_timeout_s=s.startup_timeout_s,
                idle_timeout_s=s.idle_timeout_s,
                health_interval_s=s.health_check_interval_s,
                log_dir=s.orchestrator_db_path.parent / "logs",
                shared_dir=s.project_base_path if s.opencode_shared_server else None,
            ),
            instance_store,
        )
        self.journal = TurnJournal(ActiveTurnStore(topic_db))
        self.outpost = Outpost(
            OutpostConfig(
                chat_id=s.telegram_chat_id,
                project_base=s.project_base_path,
                auto_create_dirs=s.auto_create_project_dirs,
            ),
            topics=TopicStore(topic_db),
            pending=PendingStore(topic_db),
            instances=self.instances,
            instance_store=instance_store,
            chat=self.journal.wrap(self.chat),
            metrics=self.metrics,
        )
        self.supervision = Supervision(
            self.outpost,
            self.instances,
            self.journal,
            self.chat,
            watchdog_s=self.options.stream_watchdog_s,
        )
        policy = AccessPolicy(
            chat_id=s.telegram_chat_id,
            allowed_users=frozenset(s.telegram_allowed_users),
            handle_general=s.handle_general_topic,
        )
        self.commands = Commands(
            self.outpost,
            instances=self.instances,
            instance_store=instance_store,
            chat=self.chat,
            config=CommandsConfig(
                project_base=s.project_base_path,
                setup_wait_s=s.startup_timeout_s,
            ),
        )
        self.chat.topic_gone = self.commands.topic_gone
        Handlers(self.outpost, self.commands, self.chat, policy).install(self.application)

        self._wired = True
        await self.application.initialize()
        self.outbox.start()
        await self.outbox.submit(
            lambda bot: bot.set_my_commands(COMMANDS),
            method="setMyCommands",
            chat_id=None,
            priority=Priority.INTERACTIVE,
        )
        await self.instances.start()  # adopt the servers a previous run left running
        await self.outpost.start()
        self.supervision.start()  # deliver what finished while the bot was down
        api_key = s.api_key.get_secret_value() if s.api_key else None
        api = build_api(self.outpost.externals, api_key, self.metrics)
        self.api = ApiServer(api, s.api_host, s.api_port)
        await self.api.start()
        await self.application.start()
        assert self.application.updater is not None
        await self.application.updater.start_polling(timeout=self.options.poll_timeout_s)
        await self._version_report
        log.info("oc-outpost is running for chat %s", s.telegram_chat_id)

    async def _server_counts(self) -> Mapping[tuple[str, str], int]:
        """Servers by (kind, state) for the metrics; every pair present, zeros included."""
        counts = (await self.instances.status()).counts() if self._wired else {}
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
        updater = self.application.updater
        if updater is not None and updater.running:
            await updater.stop()
        if self.application.running:
            await self.application.stop()
        if self.api is not None:
            await self.api.stop()
        await self.instances.stop_supervision()
        await self.supervision.stop()
        await self.outpost.stop()
        await self.outbox.close(SHUTDOWN_FLUSH_S)
        if self.options.keep_servers_running:
            await self.instances.detach_all()
        else:
            await self.instances.stop_all()
        await self.application.shutdown()


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
