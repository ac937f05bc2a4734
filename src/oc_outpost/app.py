"""The composition root: builds every part, wires them, and owns start-up and shutdown order."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from telegram.ext import Application, ApplicationBuilder
from telegram.request import HTTPXRequest

from oc_outpost.api.server import ApiServer, build_api
from oc_outpost.config import Settings
from oc_outpost.core.commands import Commands, CommandsConfig
from oc_outpost.core.journal import TurnJournal
from oc_outpost.core.outpost import Outpost, OutpostConfig
from oc_outpost.core.supervision import Supervision
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
from oc_outpost.telegram.view import TelegramChat

log = logging.getLogger(__name__)

BOT_API_TIMEOUT_S = 10.0
SHUTDOWN_FLUSH_S = 10.0


@dataclass(frozen=True)
class RunOptions:
    poll_timeout_s: int = 30  # long polls: an idle bot asks Telegram twice a minute
    stream_watchdog_s: float = 30.0  # no event (heartbeats come every 10 s) = dead stream
    # Leave the managed servers running at shutdown; the next start adopts them (bot upgrades).
    keep_servers_running: bool = False


def build_application(
    settings: Settings, options: RunOptions
) -> Application[Any, Any, Any, Any, Any, Any]:
    api = settings.telegram_api_url
    request = HTTPXRequest(
        connect_timeout=BOT_API_TIMEOUT_S,
        read_timeout=BOT_API_TIMEOUT_S,
        write_timeout=BOT_API_TIMEOUT_S,
        pool_timeout=BOT_API_TIMEOUT_S,
    )
    polling = HTTPXRequest(
        connect_timeout=BOT_API_TIMEOUT_S,
        read_timeout=options.poll_timeout_s + BOT_API_TIMEOUT_S,
        write_timeout=BOT_API_TIMEOUT_S,
    )
    return (
        ApplicationBuilder()
        .token(settings.telegram_bot_token.get_secret_value())
        .base_url(f"{api}/bot")
        .base_file_url(f"{api}/file/bot")
        .request(request)
        .get_updates_request(polling)
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
        self.outbox = Outbox(self.application.bot, outbox_limits(settings))
        self.chat = TelegramChat(self.outbox, settings.telegram_chat_id)
        self._dbs: list[Database] = []
        self._wired = False  # every part is built (start-up may still have failed after that)
        self.api: ApiServer | None = None

    async def start(self) -> None:
        s = self.settings
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
            lambda bot: bot.set_my_commands(COMMANDS), chat_id=None, priority=Priority.INTERACTIVE
        )
        await self.instances.start()  # adopt the servers a previous run left running
        await self.outpost.start()
        self.supervision.start()  # deliver what finished while the bot was down
        api_key = s.api_key.get_secret_value() if s.api_key else None
        self.api = ApiServer(build_api(self.outpost.externals, api_key), s.api_host, s.api_port)
        await self.api.start()
        await self.application.start()
        assert self.application.updater is not None
        await self.application.updater.start_polling(timeout=self.options.poll_timeout_s)
        log.info("oc-outpost is running for chat %s", s.telegram_chat_id)

    async def stop(self) -> None:
        """Stop taking updates, flush final answers, stop servers, close stores."""
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


async def serve(settings: Settings, stop: asyncio.Event, options: RunOptions | None = None) -> None:
    """Run the bot until ``stop`` is set. The `oc-outpost` command and the tests both use this."""
    app = OutpostApp(settings, options)
    try:
        await app.start()
        await stop.wait()
    finally:
        await app.stop()
