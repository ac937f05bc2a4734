"""`ProcessBot`: `RunningBot` (say, wait_message, new_topic, …) run as its own `oc-outpost`
process (tests/rig/bot_process.py), so a test can kill -9 it and start it again on the same
databases. It reaches the fake Bot API through a `PausableProxy`, so a test can also cut the
line (`api.cut()`: every Bot API call fails with a connection error until `api.restore()`).

Fixture `process_bot`: one started on the test's fake with a fast health check; stopped with
SIGTERM at the end (its exit code is checked by the tests that care).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from oc_outpost.config import load_settings
from tests.rig.app_bot import opencode_servers_where
from tests.rig.bot_fixtures import RunningBot, bot_env
from tests.rig.bot_process import BotProcess
from tests.rig.fake_telegram import FakeTelegram
from tests.rig.tcp_proxy import PausableProxy

# A crashed OpenCode server is noticed within half a second.
DRILL_ENV = {"OPENCODE_HEALTH_CHECK_INTERVAL_MS": "500"}


@dataclass
class ProcessBot(RunningBot):
    api: PausableProxy | None = None  # the bot's line to the Bot API
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: Path = Path()
    process: BotProcess | None = None

    @property
    def running_process(self) -> BotProcess:
        assert self.process is not None, "the bot process was not started"
        return self.process

    @property
    def line(self) -> PausableProxy:
        assert self.api is not None
        return self.api

    async def start(self) -> None:
        if self.process is None:
            log = self.workdir / "bot.log"
            self.process = await BotProcess.start(self.fake, self.env, cwd=self.workdir, log=log)
        else:
            self.process = await self.process.restart()

    async def stop(self) -> None:
        await self.terminate()

    async def terminate(self) -> int:
        """SIGTERM; the exit code."""
        return await self.running_process.stop()

    async def kill(self) -> None:
        await self.running_process.kill()

    def output(self) -> str:
        return self.running_process.output()

    def opencode_servers(self) -> list[psutil.Process]:
        """Live OpenCode servers of this test, whoever started them (after a kill -9 the
        bot's servers are no longer its children)."""
        return opencode_servers_where(lambda cwd: cwd.is_relative_to(self.workdir))


async def start_process_bot(
    fake: FakeTelegram, opencode_bin: Path, tmp_path: Path, **overrides: str
) -> ProcessBot:
    """A `ProcessBot` on ``fake`` through a fresh proxy, its environment os.environ (with the
    hermetic OpenCode variables the `opencode_env` fixture set) plus the test's variables."""
    api = PausableProxy(int(fake.url.rsplit(":", 1)[1]))
    variables = bot_env(fake, opencode_bin, tmp_path) | DRILL_ENV | overrides
    variables["TELEGRAM_API_URL"] = api.url
    settings = load_settings(variables, env_file=None)
    bot = ProcessBot(fake, settings, api=api, env=os.environ | variables, workdir=tmp_path)
    try:
        await bot.start()
    except BaseException:
        await api.stop()
        raise
    return bot


@pytest.fixture
async def process_bot(
    fake_telegram: FakeTelegram,
    opencode_bin: Path,
    opencode_env: dict[str, str],
    tmp_path: Path,
) -> AsyncIterator[ProcessBot]:
    bot = await start_process_bot(fake_telegram, opencode_bin, tmp_path)
    try:
        yield bot
    finally:
        if bot.running_process.running:
            await bot.terminate()
        await bot.line.stop()
