"""The whole bot in a test with its insides reachable (for orchestration tests).

`AppBot` is `RunningBot` (tests/rig/bot_fixtures.py: say, wait_message, new_topic, ...) run
through `OutpostApp` directly instead of `serve()`, so a test can look at `app.core`, run
it with `RunOptions` (keep servers at stop, a short watchdog) and start a second bot on the same
databases. Also: OpenCode servers started outside the bot, and process lookups by directory.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from oc_outpost.app import OutpostApp, RunOptions
from oc_outpost.servers.process import is_opencode_server
from tests.rig.bot_fixtures import RunningBot, quick_options

READY_TIMEOUT_S = 30.0


@dataclass
class AppBot(RunningBot):
    options: RunOptions = field(default_factory=quick_options)
    app: OutpostApp | None = None

    @property
    def running_app(self) -> OutpostApp:
        assert self.app is not None, "the bot is not running"
        return self.app

    async def start(self) -> None:
        app = OutpostApp(self.settings, self.options)
        try:
            await app.start()
        except BaseException:
            await app.stop()
            raise
        self.app = app

    async def stop(self) -> None:
        app, self.app = self.app, None
        if app is not None:
            await app.stop()

    def instance_id(self, topic: int) -> str:
        binding = self.running_app.core.bindings.by_topic(topic)
        assert binding is not None and binding.instance_id is not None
        return binding.instance_id

    def server_pid(self, topic: int) -> int | None:
        running = self.running_app.core.registry.manager.get(self.instance_id(topic))
        return running.server.pid if running is not None and running.server is not None else None

    def session_id(self, topic: int) -> str:
        binding = self.running_app.core.bindings.by_topic(topic)
        assert binding is not None and binding.session_id is not None
        return binding.session_id

    def finals(self, topic: int, text: str) -> int:
        """How many bot messages in the topic contain `text` (a final answer counted once)."""
        return sum(1 for m in self.fake.bot_messages(topic) if text in (m.text or ""))


def opencode_servers_in(directory: Path) -> list[psutil.Process]:
    """Live OpenCode server processes whose working directory is `directory`."""
    return opencode_servers_where(lambda cwd: cwd == directory)


def opencode_servers_where(wanted: Callable[[Path], bool]) -> list[psutil.Process]:
    """Live OpenCode server processes whose working directory satisfies `wanted`."""
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        try:
            if (
                is_opencode_server(process)
                and process.status() != psutil.STATUS_ZOMBIE
                and wanted(Path(process.cwd()))
            ):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


async def start_outside_server(
    binary: Path, cwd: Path, port: int, *, password: str | None = None, log: Path
) -> subprocess.Popen[bytes]:
    """`opencode serve` started the way a developer would (not by the bot); ready on return.
    Its output goes to `log`."""
    process = _spawn_outside(binary, cwd, port, password, log)
    try:
        await _wait_answering(port, process, log)
    except BaseException:
        stop_outside_server(process)
        raise
    return process


def _spawn_outside(
    binary: Path, cwd: Path, port: int, password: str | None, log: Path
) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.pop("OPENCODE_SERVER_PASSWORD", None)
    if password is not None:
        env["OPENCODE_SERVER_PASSWORD"] = password
    with log.open("ab") as output:
        return subprocess.Popen(
            [str(binary), "serve", "--port", str(port), "--hostname", "127.0.0.1"],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:]


async def _wait_answering(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    """Until `/global/health` answers (200, or 401 for a password-protected server)."""
    last = "no attempt"
    try:
        async with asyncio.timeout(READY_TIMEOUT_S), httpx.AsyncClient(timeout=0.5) as http:
            while True:
                if process.poll() is not None:
                    raise AssertionError(f"opencode on port {port} exited early:\n{_tail(log)}")
                try:
                    response = await http.get(f"http://127.0.0.1:{port}/global/health")
                    if response.status_code in (200, 401):
                        return
                    last = f"HTTP {response.status_code}"
                except httpx.HTTPError as exc:
                    last = repr(exc)  # not listening yet
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"opencode on port {port} not ready: {last}") from None


def stop_outside_server(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
