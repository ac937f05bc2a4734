"""OpenCode server processes seen through psutil: what a server process is, whom a port belongs
to, and how to end a process group. Also `AdoptedServer`, a server started by an earlier run of
the bot and taken over after a bot restart.

Everything here that touches psutil is synchronous and quick; callers in the event loop that scan
every process (`listeners_on`, discovery) run it in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Protocol

import psutil

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
POLL_S = 0.05

Sleep = Callable[[float], Awaitable[None]]


class ServerProcess(Protocol):
    """A running `opencode serve` the manager supervises (spawned or adopted)."""

    @property
    def pid(self) -> int: ...

    @property
    def port(self) -> int: ...

    @property
    def password(self) -> str: ...

    @property
    def base_url(self) -> str: ...

    @property
    def returncode(self) -> int | None: ...

    def is_alive(self) -> bool: ...

    async def stop(self, grace_s: float = 5.0) -> None: ...

    def detach(self) -> None:
        """Stop watching the process and leave it running (the next bot run adopts it)."""


def is_opencode_server(process: psutil.Process) -> bool:
    """Whether the process runs `opencode … serve` (the binary, or a launcher script for it)."""
    try:
        cmdline = process.cmdline()
        name = process.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return is_opencode_command(cmdline, name)


def is_opencode_server_pid(pid: int) -> bool:
    try:
        return is_opencode_server(psutil.Process(pid))
    except psutil.NoSuchProcess:
        return False


def serves_on(pid: int, port: int) -> bool:
    """The process is alive, runs `opencode … serve` and listens on `port`."""
    return process_alive(pid) and is_opencode_server_pid(pid) and port in listening_ports(pid)


def is_opencode_command(cmdline: list[str], name: str = "") -> bool:
    if "serve" not in cmdline[1:]:
        return False
    programs = [name, *(Path(arg).name for arg in cmdline[:2])]
    return any(program.lower().startswith("opencode") for program in programs)


def process_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (reaping it if it is our child)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def listening_ports(pid: int) -> set[int]:
    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return set()
    return {c.laddr.port for c in connections if c.status == psutil.CONN_LISTEN}


def listeners_on(ports: Iterable[int]) -> dict[int, int | None]:
    """Port -> pid of the process listening on it (None when the owner cannot be seen)."""
    wanted = set(ports)
    found: dict[int, int | None] = {}
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:
        log.warning("cannot list TCP listeners (access denied); orphan cleanup skipped")
        return found
    for conn in connections:
        port = getattr(conn.laddr, "port", None)  # laddr is () for some socket states
        if conn.status == psutil.CONN_LISTEN and port in wanted and found.get(port) is None:
            found[port] = conn.pid
    return found


def process_cwd(pid: int) -> str | None:
    try:
        return psutil.Process(pid).cwd()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


async def terminate(pid: int, grace_s: float, *, sleep: Sleep = asyncio.sleep) -> None:
    """SIGTERM the process (its whole group when it leads one), wait `grace_s`, then SIGKILL."""
    if not process_alive(pid):
        return
    if grace_s > 0:
        _signal(pid, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while loop.time() < deadline and process_alive(pid):
            await sleep(POLL_S)
        if process_alive(pid):
            log.warning("pid %d ignored SIGTERM for %.1f s; killing it", pid, grace_s)
    _signal(pid, signal.SIGKILL)
    while process_alive(pid):
        await sleep(POLL_S)


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)  # the bash commands and language servers it started, too
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        log.debug("pid %d already gone when sending %s", pid, sig.name)
    except PermissionError:
        log.warning("not allowed to send %s to pid %d", sig.name, pid)


class AdoptedServer:
    """A server spawned by an earlier run of the bot, found alive, OpenCode and healthy.

    Its output keeps going to the log files that run opened for it; this class only watches the
    process and can stop it.
    """

    def __init__(self, pid: int, port: int, password: str, project_dir: Path) -> None:
        self._pid = pid
        self._port = port
        self._password = password
        self._project_dir = project_dir
        self._returncode: int | None = None

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def port(self) -> int:
        return self._port

    @property
    def password(self) -> str:
        return self._password

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self._port}"

    @property
    def project_dir(self) -> Path:
        return self._project_dir

    @property
    def returncode(self) -> int | None:
        """Unknown for a process that is not our child: -1 once it is gone."""
        if self._returncode is None and not process_alive(self._pid):
            self._returncode = -1
        return self._returncode

    def is_alive(self) -> bool:
        return self.returncode is None

    async def stop(self, grace_s: float = 5.0) -> None:
        await terminate(self._pid, grace_s)
        self._returncode = self._returncode if self._returncode is not None else -1

    def detach(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"AdoptedServer(pid={self._pid}, port={self._port}, password='***')"
