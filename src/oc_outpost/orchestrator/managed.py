"""One OpenCode server process run by the bot (`opencode serve`), from spawn to stop.

Readiness follows the reference (§13): the server prints `opencode server listening on <url>`,
and only then is `/global/health` polled, each request with a short timeout, because a request
that arrives just before the server is ready can hang forever.

The child runs in its own session (process group) so a Ctrl-C aimed at the bot does not kill it
and so `stop()` also reaches anything it spawned (bash tool commands, language servers).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import signal
from collections import deque
from collections.abc import Mapping
from pathlib import Path

import httpx

from oc_outpost.orchestrator.ports import is_port_free

HOST = "127.0.0.1"
DEFAULT_USERNAME = "opencode"
DEFAULT_STARTUP_TIMEOUT_S = 30.0
DEFAULT_HEALTH_REQUEST_TIMEOUT_S = 1.0
DEFAULT_POLL_INTERVAL_S = 0.1
DRAIN_GRACE_S = 1.0
OUTPUT_TAIL_LINES = 40
HEALTH_PATH = "/global/health"
_LISTENING_RE = re.compile(r"opencode server listening on (http://\S+)")
_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_MASK = "***"

log = logging.getLogger(__name__)


class ServerStartError(RuntimeError):
    """The OpenCode server could not be started or did not become healthy."""


class _NotReady(Exception):
    """Internal: why a starting server is being given up on."""


class ManagedServer:
    """A running `opencode serve` child process. Create it with `await ManagedServer.start(...)`."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        *,
        port: int,
        password: str,
        username: str,
        project_dir: Path,
    ) -> None:
        self._process = process
        self._port = port
        self._password = password
        self._username = username
        self._project_dir = project_dir
        self._logger = logging.getLogger(f"oc_outpost.opencode.{port}")
        self._tail: deque[str] = deque(maxlen=OUTPUT_TAIL_LINES)
        self._listening = asyncio.Event()
        self._listening_url: str | None = None
        self._health_problem = "not checked yet"
        self._stop_task: asyncio.Task[None] | None = None
        self._drains = [
            asyncio.create_task(self._drain(process.stdout, "stdout", logging.INFO)),
            asyncio.create_task(self._drain(process.stderr, "stderr", logging.WARNING)),
        ]

    @classmethod
    async def start(
        cls,
        binary: str | os.PathLike[str],
        project_dir: str | os.PathLike[str],
        port: int,
        *,
        extra_env: Mapping[str, str] | None = None,
        username: str = DEFAULT_USERNAME,
        startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
        health_request_timeout_s: float = DEFAULT_HEALTH_REQUEST_TIMEOUT_S,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
    ) -> ManagedServer:
        """Spawn the server and return it once it is listening and healthy."""
        if not 0 < port <= 65535:
            raise ValueError(f"port must be in 1..65535, got {port}")
        directory = Path(project_dir)
        _check_preconditions(directory, port)
        password = secrets.token_urlsafe(24)
        env = {
            **os.environ,
            **(extra_env or {}),
            "OPENCODE_SERVER_USERNAME": username,
            "OPENCODE_SERVER_PASSWORD": password,
        }
        process = await _spawn(binary, directory, port, env)
        server = cls(
            process, port=port, password=password, username=username, project_dir=directory
        )
        log.info("spawned OpenCode pid %d on port %d for %s", process.pid, port, directory)
        try:
            await server._wait_until_ready(
                startup_timeout_s, health_request_timeout_s, poll_interval_s
            )
        except _NotReady as exc:
            await server.stop(grace_s=0)
            output = "\n".join(server.recent_output()) or "(no output)"
            raise ServerStartError(
                f"OpenCode on port {port} for {directory} failed to start: {exc}\n"
                f"last output:\n{output}"
            ) from None
        except BaseException:
            await server.stop(grace_s=0)
            raise
        return server

    # -- properties ----------------------------------------------------------------------

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        return (self._listening_url or f"http://{HOST}:{self._port}").rstrip("/")

    @property
    def username(self) -> str:
        return self._username

    @property
    def password(self) -> str:
        return self._password

    @property
    def auth(self) -> tuple[str, str]:
        """Basic-auth credentials, as accepted by httpx's `auth=`."""
        return (self._username, self._password)

    @property
    def project_dir(self) -> Path:
        return self._project_dir

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    def is_alive(self) -> bool:
        return self._process.returncode is None

    def recent_output(self) -> list[str]:
        """The last lines the process printed (password masked), oldest first."""
        return list(self._tail)

    async def wait(self) -> int:
        """Wait for the process to exit and return its exit code."""
        return await self._process.wait()

    def __repr__(self) -> str:
        return (
            f"ManagedServer(pid={self.pid}, port={self._port}, dir={str(self._project_dir)!r}, "
            f"password={_MASK!r}, returncode={self.returncode})"
        )

    # -- stopping ------------------------------------------------------------------------

    async def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM, wait up to `grace_s`, then SIGKILL (at once if `grace_s` <= 0).

        Safe to call any number of times, also concurrently; later calls wait for the first.
        """
        if self._stop_task is None:
            self._stop_task = asyncio.create_task(self._terminate(grace_s))
        await asyncio.shield(self._stop_task)

    async def _terminate(self, grace_s: float) -> None:
        if self._process.returncode is None and grace_s > 0:
            self._signal_group(signal.SIGTERM)
            try:
                await asyncio.wait_for(self._process.wait(), timeout=grace_s)
            except TimeoutError:
                log.warning(
                    "OpenCode pid %d ignored SIGTERM for %.1f s; killing it", self.pid, grace_s
                )
        if self._process.returncode is None:
            self._signal_group(signal.SIGKILL)
            await self._process.wait()
        else:
            # The group can outlive its leader (a bash tool command, a language server).
            self._signal_group(signal.SIGKILL)
        log.info("OpenCode pid %d exited with code %s", self.pid, self._process.returncode)
        await self._finish_drains()

    def _signal_group(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            log.debug("process group %d already gone when sending %s", self.pid, sig.name)
        except PermissionError:
            log.warning("not allowed to send %s to process group %d", sig.name, self.pid)

    async def _finish_drains(self) -> None:
        _done, pending = await asyncio.wait(self._drains, timeout=DRAIN_GRACE_S)
        for task in pending:
            task.cancel()
        results = await asyncio.gather(*self._drains, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                log.error("output drain of OpenCode pid %d failed: %r", self.pid, result)

    # -- readiness -----------------------------------------------------------------------

    async def _wait_until_ready(
        self, startup_timeout_s: float, request_timeout_s: float, poll_interval_s: float
    ) -> None:
        try:
            async with asyncio.timeout(startup_timeout_s):
                await self._await_listening()
                await self._poll_health(request_timeout_s, poll_interval_s)
        except TimeoutError:
            stage = "health check" if self._listening.is_set() else "'listening' line"
            raise _NotReady(
                f"not ready within {startup_timeout_s:.1f} s (waiting for the {stage}; "
                f"last health check: {self._health_problem})"
            ) from None

    async def _await_listening(self) -> None:
        listening = asyncio.create_task(self._listening.wait())
        exited = asyncio.create_task(self._process.wait())
        try:
            await asyncio.wait({listening, exited}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            listening.cancel()
            exited.cancel()
        if not self._listening.is_set():
            raise _NotReady(f"process exited with code {self._process.returncode} before listening")

    async def _poll_health(self, request_timeout_s: float, poll_interval_s: float) -> None:
        url = f"{self.base_url}{HEALTH_PATH}"
        async with httpx.AsyncClient(auth=self.auth, timeout=request_timeout_s) as client:
            while True:
                if self._process.returncode is not None:
                    raise _NotReady(
                        f"process exited with code {self._process.returncode} "
                        f"(last health check: {self._health_problem})"
                    )
                try:
                    response = await client.get(url)
                    if response.status_code == 200 and response.json().get("healthy") is True:
                        return
                    self._health_problem = f"HTTP {response.status_code}: {response.text[:200]}"
                except (httpx.HTTPError, ValueError) as exc:
                    self._health_problem = f"{type(exc).__name__}: {exc}"
                self._logger.debug("health check not ready: %s", self._health_problem)
                await asyncio.sleep(poll_interval_s)

    # -- output --------------------------------------------------------------------------

    async def _drain(self, stream: asyncio.StreamReader | None, name: str, level: int) -> None:
        if stream is None:
            return
        while True:
            try:
                raw = await stream.readline()
            except ValueError:
                self._logger.warning("%s: over-long output line skipped", name)
                continue
            if not raw:
                return
            self._record_line(name, level, raw.decode(errors="replace").rstrip("\r\n"))

    def _record_line(self, name: str, level: int, line: str) -> None:
        clean = _ANSI_RE.sub("", line).replace(self._password, _MASK)
        self._tail.append(f"{name}: {clean}")
        self._logger.log(level, "%s", clean)
        match = _LISTENING_RE.search(clean)
        if match and self._listening_url is None:
            self._listening_url = match.group(1)
            self._listening.set()


def _check_preconditions(directory: Path, port: int) -> None:
    if not directory.is_dir():
        raise ServerStartError(f"project directory {directory} does not exist")
    if not is_port_free(port, HOST):
        raise ServerStartError(f"port {port} on {HOST} is already in use")


async def _spawn(
    binary: str | os.PathLike[str], directory: Path, port: int, env: Mapping[str, str]
) -> asyncio.subprocess.Process:
    command = [os.fspath(binary), "serve", "--port", str(port), "--hostname", HOST]
    try:
        return await asyncio.create_subprocess_exec(
            *command,
            cwd=directory,
            env=dict(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        raise ServerStartError(
            f"cannot run the OpenCode binary {os.fspath(binary)!r}: "
            f"{exc.strerror or exc} (set OPENCODE_PATH to an opencode executable)"
        ) from exc
