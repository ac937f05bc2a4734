"""One OpenCode server process run by the bot (`opencode serve`), from spawn to stop.

Readiness follows the reference (§13): the server prints `opencode server listening on <url>`,
and only then is `/global/health` polled, each request with a short timeout, because a request
that arrives just before the server is ready can hang forever.

The child runs in its own session (process group) so a Ctrl-C aimed at the bot does not kill it
and so `stop()` also reaches anything it spawned (bash tool commands, language servers).

Output goes to files, not pipes: `<log_dir>/opencode-<port>.stdout.log` and `.stderr.log`
(a temporary directory when no `log_dir` is given). The bot tails them into its own log (password
masked). With pipes, a server that outlives the bot (kept running across a bot restart, then
adopted) would get SIGPIPE/EPIPE on its next write; a file keeps working. The previous run's files
are kept as `*.log.1`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

import httpx

from oc_outpost.child_env import child_environment
from oc_outpost.servers.pool import is_port_free

HOST = "127.0.0.1"
DEFAULT_USERNAME = "opencode"
DEFAULT_STARTUP_TIMEOUT_S = 30.0
DEFAULT_HEALTH_REQUEST_TIMEOUT_S = 1.0
DEFAULT_POLL_INTERVAL_S = 0.1
WATCH_INTERVAL_S = 0.05  # while starting or stopping
# Once running, output is forwarded to the log this often (an exit is noticed at once where Linux
# has pidfds, else at this pace): on a shared boundary of the clock, so the watchers of all
# servers wake up together rather than one after the other.
WATCH_INTERVAL_RUNNING_S = 5.0
OUTPUT_TAIL_LINES = 40
MAX_LINE_BYTES = 64 * 1024
HEALTH_PATH = "/global/health"
_LISTENING_RE = re.compile(r"opencode server listening on (http://\S+)")
_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_MASK = "***"

log = logging.getLogger(__name__)


class ServerStartError(RuntimeError):
    """The OpenCode server could not be started or did not become healthy."""


class _NotReady(Exception):
    """Internal: why a starting server is being given up on."""


class _Tail:
    """Reads the lines appended to one output file."""

    def __init__(self, path: Path, name: str) -> None:
        self.name = name
        self._file: BinaryIO = path.open("rb")
        self._pending = b""

    def lines(self, *, final: bool = False) -> list[str]:
        data = self._file.read()
        if data:
            self._pending += data
        *complete, self._pending = self._pending.split(b"\n")
        if len(self._pending) > MAX_LINE_BYTES or (final and self._pending):
            complete.append(self._pending[:MAX_LINE_BYTES])
            self._pending = b""
        return [raw.decode(errors="replace").rstrip("\r") for raw in complete]

    def close(self) -> None:
        self._file.close()


class _Output:
    """Where a child writes: two files, created (previous run kept as `.1`) before the spawn."""

    def __init__(self, log_dir: Path | None, port: int) -> None:
        self._temporary = log_dir is None
        self.directory = (
            Path(tempfile.mkdtemp(prefix="oc-outpost-")) if log_dir is None else log_dir
        )
        self.directory.mkdir(parents=True, exist_ok=True)
        self.paths = {
            name: self.directory / f"opencode-{port}.{name}.log" for name in ("stdout", "stderr")
        }
        for path in self.paths.values():
            if path.exists():
                path.replace(path.with_name(path.name + ".1"))
            path.touch(mode=0o600)

    def open_for_child(self, name: str) -> BinaryIO:
        return self.paths[name].open("ab")

    def tails(self) -> list[_Tail]:
        return [_Tail(path, name) for name, path in self.paths.items()]

    def remove_if_temporary(self) -> None:
        if self._temporary:
            shutil.rmtree(self.directory, ignore_errors=True)


class ManagedServer:
    """A running `opencode serve` child process. Create it with `await ManagedServer.start(...)`."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        *,
        port: int,
        password: str,
        username: str,
        project_dir: Path,
        output: _Output,
    ) -> None:
        self._process = process
        self._port = port
        self._password = password
        self._username = username
        self._project_dir = project_dir
        self._output = output
        self._tails = output.tails()
        self._logger = logging.getLogger(f"oc_outpost.opencode.{port}")
        self._tail: deque[str] = deque(maxlen=OUTPUT_TAIL_LINES)
        self._listening = asyncio.Event()
        self._exited = asyncio.Event()
        self._listening_url: str | None = None
        self._health_problem = "not checked yet"
        self._stop_task: asyncio.Task[None] | None = None
        self._detached = False
        self._watcher = asyncio.create_task(self._watch(), name=f"opencode-{port}-watch")

    @classmethod
    async def start(
        cls,
        binary: str | os.PathLike[str],
        project_dir: str | os.PathLike[str],
        port: int,
        *,
        extra_env: Mapping[str, str] | None = None,
        username: str = DEFAULT_USERNAME,
        password: str | None = None,
        log_dir: Path | None = None,
        startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
        health_request_timeout_s: float = DEFAULT_HEALTH_REQUEST_TIMEOUT_S,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
    ) -> ManagedServer:
        """Spawn the server and return it once it is listening and healthy.

        `password` defaults to a new random one (pass the previous one to keep clients valid
        across a restart)."""
        if not 0 < port <= 65535:
            raise ValueError(f"port must be in 1..65535, got {port}")
        directory = Path(project_dir)
        _check_preconditions(directory, port)
        password = password or secrets.token_urlsafe(24)
        env = {
            **child_environment(os.environ),
            **(extra_env or {}),
            "OPENCODE_SERVER_USERNAME": username,
            "OPENCODE_SERVER_PASSWORD": password,
        }
        output = _Output(log_dir, port)
        process = _spawn(binary, directory, port, env, output)
        server = cls(
            process,
            port=port,
            password=password,
            username=username,
            project_dir=directory,
            output=output,
        )
        log.info("spawned OpenCode pid %d on port %d for %s", process.pid, port, directory)
        try:
            await server._wait_until_ready(
                startup_timeout_s, health_request_timeout_s, poll_interval_s
            )
        except _NotReady as exc:
            await server.stop(grace_s=0)
            lines = "\n".join(server.recent_output()) or "(no output)"
            raise ServerStartError(
                f"OpenCode on port {port} for {directory} failed to start: {exc}\n"
                f"last output:\n{lines}"
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
        return self._process.poll()

    def is_alive(self) -> bool:
        return self._process.poll() is None

    def recent_output(self) -> list[str]:
        """The last lines the process printed (password masked), oldest first."""
        return list(self._tail)

    async def wait(self) -> int:
        """Wait for the process to exit and return its exit code."""
        await self._exited.wait()
        code = self._process.poll()
        assert code is not None
        return code

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

    def detach(self) -> None:
        """Stop watching and leave the process running; its output keeps going to the files."""
        if self._detached or self._stop_task is not None:
            return
        self._detached = True
        self._watcher.cancel()
        for tail in self._tails:
            tail.close()
        log.info("left OpenCode pid %d on port %d running", self.pid, self._port)

    async def _terminate(self, grace_s: float) -> None:
        if self._process.poll() is None and grace_s > 0:
            self._signal_group(signal.SIGTERM)
            try:
                await asyncio.wait_for(self._exited.wait(), timeout=grace_s)
            except TimeoutError:
                log.warning(
                    "OpenCode pid %d ignored SIGTERM for %.1f s; killing it", self.pid, grace_s
                )
        if self._process.poll() is None:
            self._signal_group(signal.SIGKILL)
            await self._exited.wait()
        else:
            # The group can outlive its leader (a bash tool command, a language server).
            self._signal_group(signal.SIGKILL)
        log.info("OpenCode pid %d exited with code %s", self.pid, self._process.returncode)
        await asyncio.wait([self._watcher])
        for tail in self._tails:
            tail.close()
        self._output.remove_if_temporary()

    def _signal_group(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            log.debug("process group %d already gone when sending %s", self.pid, sig.name)
        except PermissionError:
            log.warning("not allowed to send %s to process group %d", sig.name, self.pid)

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
        exited = asyncio.create_task(self._exited.wait())
        try:
            await asyncio.wait({listening, exited}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            listening.cancel()
            exited.cancel()
        if not self._listening.is_set():
            raise _NotReady(f"process exited with code {self.returncode} before listening")

    async def _poll_health(self, request_timeout_s: float, poll_interval_s: float) -> None:
        url = f"{self.base_url}{HEALTH_PATH}"
        async with httpx.AsyncClient(auth=self.auth, timeout=request_timeout_s) as client:
            while True:
                if self._process.poll() is not None:
                    raise _NotReady(
                        f"process exited with code {self.returncode} "
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

    # -- output and exit -----------------------------------------------------------------

    async def _watch(self) -> None:
        """Forward new output lines and notice the exit (the child is not awaited: Popen)."""
        with _ExitSignal(self._process.pid) as exit_signal:
            while True:
                exited = self._process.poll() is not None
                self._read_output(final=exited)
                if exited:
                    self._exited.set()
                    return
                if self._listening.is_set() and self._stop_task is None:
                    await exit_signal.wait(WATCH_INTERVAL_RUNNING_S)
                else:
                    await asyncio.sleep(WATCH_INTERVAL_S)

    def _read_output(self, *, final: bool) -> None:
        for tail in self._tails:
            for line in tail.lines(final=final):
                self._record_line(tail.name, line)

    def _record_line(self, name: str, line: str) -> None:
        clean = _ANSI_RE.sub("", line).replace(self._password, _MASK)
        self._tail.append(f"{name}: {clean}")
        self._logger.log(logging.INFO if name == "stdout" else logging.WARNING, "%s", clean)
        match = _LISTENING_RE.search(clean)
        if match and self._listening_url is None:
            self._listening_url = match.group(1)
            self._listening.set()


class _ExitSignal:
    """Waits for a child process to exit without polling it, through a pidfd (Linux 5.3+);
    elsewhere it falls back to polling every `WATCH_INTERVAL_S`."""

    def __init__(self, pid: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._exited = asyncio.Event()
        self._fd: int | None = None
        try:
            self._fd = os.pidfd_open(pid)
        except (AttributeError, OSError) as exc:  # no pidfd_open, or not supported here
            log.debug("no pidfd for pid %d (%s); polling for its exit", pid, exc)
            return
        self._loop.add_reader(self._fd, self._exited.set)

    def __enter__(self) -> _ExitSignal:
        return self

    def __exit__(self, *_: object) -> None:
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)

    async def wait(self, period_s: float) -> None:
        """Until the process exits or the clock reaches the next multiple of `period_s`."""
        if self._fd is None:
            await asyncio.sleep(WATCH_INTERVAL_S)
            return
        left = period_s - self._loop.time() % period_s
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._exited.wait(), left)


def _check_preconditions(directory: Path, port: int) -> None:
    if not directory.is_dir():
        raise ServerStartError(f"project directory {directory} does not exist")
    if not is_port_free(port, HOST):
        raise ServerStartError(f"port {port} on {HOST} is already in use")


def _spawn(
    binary: str | os.PathLike[str],
    directory: Path,
    port: int,
    env: Mapping[str, str],
    output: _Output,
) -> subprocess.Popen[bytes]:
    command = [os.fspath(binary), "serve", "--port", str(port), "--hostname", HOST]
    with output.open_for_child("stdout") as stdout, output.open_for_child("stderr") as stderr:
        try:
            # Popen, not asyncio's subprocess: its transport kills the child when collected,
            # which would make `detach()` impossible.
            return subprocess.Popen(
                command,
                cwd=directory,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        except OSError as exc:
            output.remove_if_temporary()
            raise ServerStartError(
                f"cannot run the OpenCode binary {os.fspath(binary)!r}: "
                f"{exc.strerror or exc} (set OPENCODE_PATH to an opencode executable)"
            ) from exc
