"""The bot as a separate process, started the way a user starts it: the `oc-outpost` command
with its configuration in real environment variables. Its output (every log line) goes to a
file; `stop()` sends SIGTERM and returns the exit code, `kill()` is a kill -9 (the OpenCode
servers it started run in their own sessions and survive it), `restart()` starts the command
again with the same environment, on the same databases."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

from oc_outpost.servers.process import is_opencode_server
from tests.rig.fake_telegram import FakeTelegram

CLI = Path(sys.executable).parent / "oc-outpost"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
RUNNING = "oc-outpost is running"  # the bot's log line once it polls


@dataclass
class BotProcess:
    process: subprocess.Popen[bytes]
    log: Path
    fake: FakeTelegram
    env: Mapping[str, str]
    cwd: Path

    @classmethod
    async def start(
        cls, fake: FakeTelegram, env: Mapping[str, str], *, cwd: Path, log: Path
    ) -> BotProcess:
        """Run `oc-outpost` and wait until it is up: it logged that it runs, which it does once
        its start-up calls (setMyCommands, deleteWebhook) are done and it polls."""
        offset = _size(log)
        process = _spawn(env, cwd, log)
        bot = cls(process, log, fake, env, cwd)
        try:
            await fake.wait_for(
                lambda: _says_running(log, offset) or process.poll() is not None,
                timeout=START_TIMEOUT_S,
                what="bot process start",
            )
        except BaseException:
            await bot.stop()
            raise
        if process.poll() is not None:
            raise AssertionError(f"the bot exited with {process.returncode}:\n{bot.output()}")
        return bot

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def opencode_children(self) -> list[psutil.Process]:
        """The live `opencode serve` processes this bot started."""
        children = psutil.Process(self.pid).children(recursive=True)
        return [c for c in children if c.is_running() and is_opencode_server(c)]

    async def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(asyncio.to_thread(self.process.wait), STOP_TIMEOUT_S)
        except TimeoutError:
            os.kill(self.pid, signal.SIGKILL)
            self.process.wait()
            raise AssertionError(f"the bot ignored SIGTERM:\n{self.output()[-3000:]}") from None

    async def kill(self) -> None:
        """kill -9: no shutdown code runs; whatever was in flight is simply gone."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self.process.wait)

    async def restart(self) -> BotProcess:
        """The command started again (after a kill or a stop) with the same environment."""
        if self.running:
            raise AssertionError("restart() of a bot that still runs: kill() or stop() it first")
        return await BotProcess.start(self.fake, self.env, cwd=self.cwd, log=self.log)


def _size(log: Path) -> int:
    return log.stat().st_size if log.exists() else 0


def _says_running(log: Path, offset: int) -> bool:
    """Whether what was logged into ``log`` after ``offset`` says the bot is running."""
    with log.open("rb") as output:
        output.seek(offset)
        return RUNNING.encode() in output.read()


def _spawn(env: Mapping[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as output:
        return subprocess.Popen(
            [str(CLI)],
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
