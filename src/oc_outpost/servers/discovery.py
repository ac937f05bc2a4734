"""Discovery of OpenCode servers the bot did not start (a TUI, an `opencode serve` in a shell).

psutil finds processes whose program is `opencode…` and the TCP ports they listen on; each port is
probed with `GET /global/health` and `GET /session`, every request with a timeout. A server that
answers 401 is protected by a password we do not know: it is listed as such, not used. Results
are recorded in the instances table as kind `discovered` (one row per port, reused across scans;
rows of servers that are gone are marked stopped).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from pathlib import Path

import psutil

from oc_outpost.model import InstanceInfo, InstanceKind, InstanceState, SessionSummary
from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.opencode.errors import OpenCodeAuthError, OpenCodeError
from oc_outpost.servers.status import DiscoveredServer
from oc_outpost.store.instances import InstanceStore

log = logging.getLogger(__name__)

DEFAULT_PROBE_TIMEOUT_S = 2.0
MAX_SESSIONS = 50
_ANY_ADDRESS = {"", "0.0.0.0", "::"}


@dataclass(frozen=True)
class Candidate:
    """A process that looks like OpenCode and listens on TCP."""

    pid: int
    cwd: str | None
    endpoints: tuple[tuple[str, int], ...]  # (host to connect to, port)


def looks_like_opencode(cmdline: list[str], name: str) -> bool:
    programs = [name, *(Path(arg).name for arg in cmdline[:2])]
    return any(program.lower().startswith("opencode") for program in programs)


def scan_processes(exclude_pids: Collection[int]) -> list[Candidate]:
    """OpenCode processes with listening TCP sockets, except `exclude_pids` (blocking)."""
    found = []
    for process in psutil.process_iter(["pid", "name", "cmdline"]):
        try:
            pid = process.pid
            cmdline = process.info["cmdline"] or []
            if pid in exclude_pids or not looks_like_opencode(cmdline, process.info["name"] or ""):
                continue
            endpoints = _endpoints(process)
            cwd = process.cwd() if endpoints else None
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if endpoints:
            found.append(Candidate(pid, cwd, endpoints))
    return found


def _endpoints(process: psutil.Process) -> tuple[tuple[str, int], ...]:
    result = set()
    for conn in process.net_connections(kind="tcp"):
        if conn.status != psutil.CONN_LISTEN:
            continue
        ip = conn.laddr.ip
        host = "127.0.0.1" if ip in _ANY_ADDRESS else (f"[{ip}]" if ":" in ip else ip)
        result.add((host, conn.laddr.port))
    return tuple(sorted(result, key=lambda e: e[1]))


Scanner = Callable[[Collection[int]], list[Candidate]]


class Discovery:
    def __init__(
        self,
        store: InstanceStore,
        *,
        probe_timeout_s: float = DEFAULT_PROBE_TIMEOUT_S,
        scanner: Scanner = scan_processes,
        now: Callable[[], int] = lambda: int(time.time()),
    ) -> None:
        self._store = store
        self._probe_timeout_s = probe_timeout_s
        self._scanner = scanner
        self._now = now

    async def run(self, exclude_pids: Collection[int]) -> list[DiscoveredServer]:
        """Scan, probe and record; returns the servers found, by port."""
        candidates = await asyncio.to_thread(self._scanner, frozenset(exclude_pids))
        probes = [
            self._probe(candidate, host, port)
            for candidate in candidates
            for host, port in candidate.endpoints
        ]
        results = [r for r in await asyncio.gather(*probes) if r is not None]
        return await self._record(results)

    async def _probe(self, candidate: Candidate, host: str, port: int) -> DiscoveredServer | None:
        url = f"http://{host}:{port}"
        timeout = self._probe_timeout_s
        base = DiscoveredServer(
            instance_id="",
            pid=candidate.pid,
            port=port,
            url=url,
            cwd=candidate.cwd,
            auth_required=False,
        )
        # Non-git directories share OpenCode's "global" project, so without `directory` a server
        # would also list the sessions of other directories kept in the same database.
        async with OpenCodeClient(
            url, timeout=timeout, health_timeout=timeout, directory=candidate.cwd
        ) as client:
            try:
                health = await client.health()
            except OpenCodeAuthError:
                return replace(base, auth_required=True)
            except OpenCodeError as exc:
                log.debug("pid %d port %d is not an OpenCode API: %s", candidate.pid, port, exc)
                return None  # another socket of the process (or not an HTTP server at all)
            try:
                sessions = await client.list_sessions(limit=MAX_SESSIONS)
            except OpenCodeError as exc:
                return replace(base, version=health.version, error=str(exc))
        listed = tuple(
            SessionSummary(s.id, s.title, s.directory, (s.time.updated or s.time.created) // 1000)
            for s in sessions
            if s.parent_id is None
        )
        return replace(base, version=health.version, sessions=listed)

    async def _record(self, servers: list[DiscoveredServer]) -> list[DiscoveredServer]:
        known = [r for r in await self._store.all() if r.kind == InstanceKind.DISCOVERED]
        by_port = {r.port: r for r in known}
        recorded = []
        for server in servers:
            previous = by_port.pop(server.port, None)
            instance_id = previous.id if previous else f"inst_{secrets.token_hex(4)}"
            now = self._now()
            await self._store.save(
                InstanceInfo(
                    id=instance_id,
                    kind=InstanceKind.DISCOVERED,
                    project_path=server.cwd or "",
                    state=InstanceState.RUNNING,
                    created_at=previous.created_at if previous else now,
                    updated_at=now,
                    port=server.port,
                    url=server.url,
                    pid=server.pid,
                )
            )
            recorded.append(replace(server, instance_id=instance_id))
        for gone in by_port.values():
            if gone.state != InstanceState.STOPPED:
                await self._store.update_state(gone.id, InstanceState.STOPPED, pid=None)
        return recorded
