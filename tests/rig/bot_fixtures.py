"""The whole bot in a test: real entry point, fake Bot API, real OpenCode, mock LLM.

Fixture `bot` starts `serve()` with settings pointing at `fake_telegram`, a fresh project base
and databases under `tmp_path`; it waits for `setMyCommands` (the bot is up) and stops the bot
on teardown. `RunningBot.restart()` stops and starts it again on the same databases.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from oc_outpost.app import RunOptions, serve
from oc_outpost.config import Settings, load_settings
from tests.rig.fake_telegram import FakeTelegram, StoredMessage
from tests.rig.telegram_fixtures import ALLOWED_USER_ID, TEST_CHAT_ID

START_TIMEOUT_S = 15
STOP_TIMEOUT_S = 30
WAIT_S = 30.0
COALESCE_S = 0.3  # the fake delivers an album's messages at once; no need to wait 1 s a prompt


def quick_options(**overrides: Any) -> RunOptions:
    """RunOptions for a bot in a test: a short long poll and prompt window."""
    return RunOptions(**({"poll_timeout_s": 1, "coalesce_window_s": COALESCE_S} | overrides))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bot_env(
    fake: FakeTelegram, opencode_bin: Path, tmp_path: Path, **overrides: str
) -> dict[str, str]:
    """The bot's configuration variables for a test (also for a bot run as its own process)."""
    projects = tmp_path / "projects"
    projects.mkdir(parents=True, exist_ok=True)
    env = {
        "TELEGRAM_BOT_TOKEN": fake.bot_token,
        "TELEGRAM_CHAT_ID": str(TEST_CHAT_ID),
        "TELEGRAM_ALLOWED_USERS": str(ALLOWED_USER_ID),
        "TELEGRAM_API_URL": fake.url,
        "PROJECT_BASE_PATH": str(projects),
        "OPENCODE_PATH": str(opencode_bin),
        "OPENCODE_PORT_START": str(free_port()),
        "OPENCODE_PORT_POOL_SIZE": "20",
        "API_PORT": str(free_port()),
        "OPENCODE_STARTUP_TIMEOUT_MS": "30000",
        # Telegram's limits loosened so a test's dozens of messages take seconds, not minutes;
        # the flood behaviour itself is tested with the real limits in the Outbox's tests.
        "TELEGRAM_RATE_PER_CHAT_INTERVAL_MS": "50",
        "TELEGRAM_RATE_GROUP_PER_MINUTE": "600",
        "TELEGRAM_RATE_GLOBAL_PER_SECOND": "100",
        "ORCHESTRATOR_DB_PATH": str(tmp_path / "data/orchestrator.db"),
        "TOPIC_DB_PATH": str(tmp_path / "data/topics.db"),
        # The glance views add calls and messages most tests do not look at; their tests turn
        # them on.
        "TOPIC_STATUS": "off",
        "BOARD": "off",
    }
    return env | overrides


def bot_settings(
    fake: FakeTelegram, opencode_bin: Path, tmp_path: Path, **overrides: str
) -> Settings:
    return load_settings(bot_env(fake, opencode_bin, tmp_path, **overrides), env_file=None)


def texts(messages: list[StoredMessage]) -> list[str]:
    return [m.text or "" for m in messages]


@dataclass
class RunningBot:
    fake: FakeTelegram
    settings: Settings
    options: RunOptions = field(default_factory=quick_options)
    task: asyncio.Task[None] | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def projects(self) -> Path:
        return self.settings.project_base_path

    async def start(self) -> None:
        self._stop = asyncio.Event()
        commands_before = len(self.fake.calls("setMyCommands"))
        task = asyncio.create_task(serve(self.settings, self._stop, self.options))
        self.task = task
        await self.fake.wait_for(
            lambda: len(self.fake.calls("setMyCommands")) > commands_before or task.done(),
            timeout=START_TIMEOUT_S,
            what="bot start",
        )
        if task.done():
            task.result()  # raises what stopped it

    async def stop(self) -> None:
        if self.task is None:
            return
        self._stop.set()
        await asyncio.wait_for(self.task, STOP_TIMEOUT_S)
        self.task = None

    async def restart(self) -> None:
        """Stop the bot and start it again on the same databases. With
        `@pytest.mark.bot_options(keep_servers_running=True)` its OpenCode servers survive
        the stop and are adopted by the new bot (which stops them at the end as usual)."""
        await self.stop()
        self.options = replace(self.options, keep_servers_running=False)
        await self.start()

    async def shutdown(self) -> None:
        await self.stop()
        if self.options.keep_servers_running:  # a started-and-stopped bot adopts and stops them
            self.options = replace(self.options, keep_servers_running=False)
            await self.start()
            await self.stop()

    # --- driving it like a user --------------------------------------------------------------

    async def say(
        self, text: str, topic: int | None = None, *, user: int = ALLOWED_USER_ID, **extra: Any
    ) -> dict[str, Any]:
        return await self.fake.send_user_message(text, user_id=user, thread_id=topic, **extra)

    async def wait_message(
        self,
        topic: int | None,
        match: Callable[[StoredMessage], bool] | str,
        *,
        after: int = 0,
        within_s: float = WAIT_S,
    ) -> StoredMessage:
        """The first bot message in ``topic`` (None: General), from index ``after`` on, that
        contains ``match`` (a string) or satisfies it (a predicate)."""

        def matches(message: StoredMessage) -> bool:
            if isinstance(match, str):
                return match in (message.text or "")
            return match(message)

        return await self.fake.wait_for(
            lambda: next((m for m in self.fake.bot_messages(topic)[after:] if matches(m)), None),
            timeout=within_s,
            what=f"a bot message in {topic} matching {match!r}",
        )

    async def new_topic(self, name: str) -> int:
        await self.say(f"/new {name}")
        topic = await self.fake.wait_for(
            lambda: next((tid for tid, t in self.fake.topics.items() if t.name == name), None),
            timeout=WAIT_S,
            what=f"topic {name}",
        )
        await self.wait_message(topic, "is ready")
        return int(topic)


@pytest.fixture
async def bot(
    fake_telegram: FakeTelegram,
    opencode_bin: Path,
    opencode_env: dict[str, str],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> AsyncIterator[RunningBot]:
    marker = request.node.get_closest_marker("bot_options")
    options = quick_options(**(marker.kwargs if marker else {}))
    settings = bot_settings(fake_telegram, opencode_bin, tmp_path)
    running = RunningBot(fake_telegram, settings, options)
    await running.start()
    try:
        yield running
    finally:
        await running.shutdown()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "bot_options(**kwargs): RunOptions for the `bot` fixture's bot"
    )
