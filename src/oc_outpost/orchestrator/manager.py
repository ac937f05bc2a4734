"""Instance manager: the managed OpenCode servers, their ports, health, idle time and restarts.

Per-project mode (default): one `opencode serve` per project directory, cwd = the project; the
instance id is the one stored for that directory, so it stays valid for the topics bound to it
across idle stops, crash restarts and bot restarts.

Shared mode (`shared_dir` set, OPENCODE_SHARED_SERVER): one server with cwd = PROJECT_BASE_PATH.
Every project is a *view* of it with its own instance id (derived from the directory, so stable
too) and its own client that sends `?directory=<project>` on every request.

Supervision (one task, every `health_interval_s`): a process that exited, or that failed
`unhealthy_after` health checks in a row over at least `hung_after_s`, is restarted with backoff
(1, 2, 4, 8, 16 s), then left in error state; a server without activity for `idle_timeout_s` is
stopped unless it is busy (core is asked through `InstanceListener.is_busy`, OpenCode through its
session status and pending permissions/questions). Core hears about all of it through the
`InstanceListener` it registers.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from oc_outpost.core.types import InstanceInfo, InstanceKind, InstanceState
from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.opencode.errors import OpenCodeError
from oc_outpost.orchestrator.discovery import Discovery
from oc_outpost.orchestrator.managed import ManagedServer, ServerStartError
from oc_outpost.orchestrator.ports import PortPool, PortsExhausted
from oc_outpost.orchestrator.process import (
    AdoptedServer,
    ServerProcess,
    is_opencode_server_pid,
    listeners_on,
    process_cwd,
    serves_on,
    terminate,
)
from oc_outpost.orchestrator.status import DiscoveredServer, OrchestratorStatus, ServerStatus
from oc_outpost.store.instances import InstanceStore

log = logging.getLogger(__name__)

RESTART_BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0)
_LIVE_STATES = (InstanceState.RUNNING, InstanceState.STARTING, InstanceState.STOPPING)

Sleep = Callable[[float], Awaitable[None]]


class InstanceError(RuntimeError):
    """An OpenCode server could not be provided; the message is fit for the user."""


class InstanceBusy(InstanceError):
    """Every allowed server is busy, so no other one can be started now."""


@dataclass(frozen=True)
class ManagerConfig:
    binary: str
    port_start: int
    pool_size: int
    max_instances: int
    startup_timeout_s: float
    idle_timeout_s: float = 1800.0
    health_interval_s: float = 30.0
    request_timeout_s: float = 10.0
    health_timeout_s: float = 2.0
    unhealthy_after: int = 3  # failed health checks in a row before a live process counts as hung
    hung_after_s: float = 15.0  # ... and for at least this long
    restart_backoff_s: tuple[float, ...] = RESTART_BACKOFF_S
    stop_grace_s: float = 5.0
    log_dir: Path | None = None  # child output files; a temporary directory when None
    shared_dir: Path | None = None  # set: shared-server mode, the server's cwd


@dataclass(frozen=True)
class RunningInstance:
    info: InstanceInfo
    client: OpenCodeClient
    server: ServerProcess | None  # None for a discovered server


class InstanceListener(Protocol):
    """What the manager tells core (and asks it). Core implements it; see `set_listener`."""

    def is_busy(self, instance_id: str) -> bool:
        """A turn is running or waiting for a permission/question answer."""

    async def instance_down(self, instance_ids: Sequence[str], reason: str) -> None:
        """The server crashed or hung; a restart is coming."""

    async def instance_up(self, instances: Sequence[RunningInstance]) -> None:
        """The server is back after a crash (same instance ids, maybe new clients)."""

    async def instance_failed(self, instance_ids: Sequence[str], reason: str) -> None:
        """Every restart attempt failed; the instances are in error state."""

    async def instance_stopped(self, instance_ids: Sequence[str], reason: str) -> None:
        """Stopped on purpose (idle, evicted, shut down); the next message wakes it."""


class _NoListener:
    def is_busy(self, instance_id: str) -> bool:
        return False

    async def instance_down(self, instance_ids: Sequence[str], reason: str) -> None:
        return None

    async def instance_up(self, instances: Sequence[RunningInstance]) -> None:
        return None

    async def instance_failed(self, instance_ids: Sequence[str], reason: str) -> None:
        return None

    async def instance_stopped(self, instance_ids: Sequence[str], reason: str) -> None:
        return None


@dataclass(eq=False)
class _View:
    """One project served by a slot: its instance id and its client."""

    instance_id: str
    directory: Path
    client: OpenCodeClient | None = None


@dataclass(eq=False)
class _Slot:
    """One managed server process (running or not) and the projects it serves."""

    info: InstanceInfo  # the stored row
    cwd: Path
    shared: bool
    views: dict[str, _View] = field(default_factory=dict)
    server: ServerProcess | None = None
    client: OpenCodeClient | None = None  # no directory: health checks, the cwd's sessions
    client_key: tuple[str, str] | None = None  # (base url, password) the clients were made for
    last_active: float = 0.0
    started_at: float | None = None
    health_failures: int = 0
    failing_since: float | None = None
    crashed: bool = False
    recovery: asyncio.Task[None] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def alive(self) -> bool:
        return self.server is not None and self.server.is_alive()


def new_instance_id() -> str:
    return f"inst_{secrets.token_hex(4)}"


def shared_view_id(directory: Path) -> str:
    return "inst_" + hashlib.sha256(str(directory).encode()).hexdigest()[:8]


class InstanceManager:
    def __init__(
        self,
        config: ManagerConfig,
        store: InstanceStore,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        pool: PortPool | None = None,
        discovery: Discovery | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._clock = clock
        self._sleep = sleep
        self._pool = pool or PortPool(config.port_start, config.pool_size)
        self._discovery = discovery or Discovery(store)
        self._slots: dict[str, _Slot] = {}  # by cwd
        self._views: dict[str, tuple[_Slot, _View]] = {}  # by instance id
        self._discovered: dict[str, tuple[DiscoveredServer, OpenCodeClient | None]] = {}
        self._listener: InstanceListener = _NoListener()
        self._admission = asyncio.Lock()
        self._creation = asyncio.Lock()
        self._spawning = asyncio.Lock()
        self._supervisor: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._started_at = clock()

    @property
    def shared(self) -> bool:
        return self._config.shared_dir is not None

    @property
    def pool(self) -> PortPool:
        return self._pool

    def set_listener(self, listener: InstanceListener) -> None:
        self._listener = listener

    # --- start-up -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Adopt the servers an earlier run left running, clean up orphans, start supervising."""
        managed = [r for r in await self._store.all() if r.kind == InstanceKind.MANAGED]
        for row in managed:
            if row.state in _LIVE_STATES and not await self._adopt(row):
                await self._store.update_state(row.id, InstanceState.STOPPED, pid=None)
        await self._reclaim_orphans(managed)
        await self.discover()  # so topics connected to discovered servers keep working
        self._supervisor = asyncio.create_task(self._supervise(), name="opencode-supervisor")

    async def _adopt(self, row: InstanceInfo) -> bool:
        cwd = Path(row.project_path)
        if (cwd == self._config.shared_dir) != self.shared or str(cwd) in self._slots:
            return False  # a server of the other mode, or a duplicate row of an adopted one
        if row.pid is None or row.port is None or row.password is None:
            return False
        if not await asyncio.to_thread(serves_on, row.pid, row.port):
            log.info(
                "not adopting %s: pid %s is not OpenCode on port %s", row.id, row.pid, row.port
            )
            return False
        client = self._client(f"http://127.0.0.1:{row.port}", row.password, None)
        try:
            await client.health()
        except OpenCodeError as exc:
            log.warning("not adopting %s (pid %d): unhealthy: %s", row.id, row.pid, exc)
            await client.aclose()
            return False
        slot = self._new_slot(row, cwd)
        slot.server = AdoptedServer(row.pid, row.port, row.password, cwd)
        slot.client, slot.client_key = client, (client.base_url, row.password)
        slot.started_at = slot.last_active = self._clock()
        for view in slot.views.values():
            view.client = client
        self._pool.reserve(row.port)
        slot.info = await self._store.save(replace(row, state=InstanceState.RUNNING))
        log.info("adopted OpenCode %s (pid %d, port %d) for %s", row.id, row.pid, row.port, cwd)
        return True

    async def _reclaim_orphans(self, rows: Sequence[InstanceInfo]) -> None:
        """Stop OpenCode servers on pool ports that our records attribute to us but we do not
        run. Anything else on a pool port is left alone (the pool skips that port)."""
        ours = self.managed_pids()
        listeners = await asyncio.to_thread(listeners_on, self._pool.ports)
        for port, pid in sorted(listeners.items()):
            if pid is None or pid in ours:
                continue
            owner = await asyncio.to_thread(_attributed_row, rows, port, pid)
            if owner is None or not await asyncio.to_thread(is_opencode_server_pid, pid):
                log.info(
                    "pool port %d is used by pid %s, which is not ours; skipping it", port, pid
                )
                continue
            log.warning(
                "stopping orphan OpenCode pid %d on pool port %d (recorded as %s for %s)",
                pid, port, owner.id, owner.project_path,
            )  # fmt: skip
            await terminate(pid, self._config.stop_grace_s, sleep=self._sleep)

    # --- get or create ------------------------------------------------------------------------

    async def ensure_running(self, project_path: Path) -> RunningInstance:
        """The running server for `project_path`, started or woken (under its stable id) if
        needed. Raises InstanceBusy when the cap is reached and every server is busy, and
        InstanceError when the server cannot be started."""
        slot = await self._slot_for(project_path)
        back_after_crash = False
        async with slot.lock:
            if not slot.alive():
                if slot.recovery is not None:
                    slot.recovery.cancel()  # the user is waiting: start now, not after backoff
                await self._admit(slot)
                back_after_crash, slot.crashed = slot.crashed, False
            view = self._view_of(slot, project_path)
            slot.last_active = self._clock()
            running = self._running(slot, view)
        if back_after_crash:
            await self._listener.instance_up(self._running_views(slot))
        return running

    def get(self, instance_id: str) -> RunningInstance | None:
        """The instance if it is running now (managed, or discovered and usable)."""
        entry = self._views.get(instance_id)
        if entry is not None:
            slot, view = entry
            return self._running(slot, view) if slot.alive() else None
        server, client = self._discovered.get(instance_id, (None, None))
        if server is None or client is None:
            return None
        info = InstanceInfo(
            id=server.instance_id,
            kind=InstanceKind.DISCOVERED,
            project_path=server.cwd or "",
            state=InstanceState.RUNNING,
            created_at=0,
            updated_at=0,
            port=server.port,
            url=server.url,
            pid=server.pid,
        )
        return RunningInstance(info, client, None)

    async def kind_of(self, instance_id: str) -> InstanceKind | None:
        """The recorded kind of an instance id (None when unknown)."""
        row = await self._store.get(instance_id)
        return row.kind if row is not None else None

    def is_running(self, project_path: Path) -> bool:
        """Whether the server for `project_path` runs now (nothing is started or created)."""
        key = self._config.shared_dir if self._config.shared_dir is not None else project_path
        slot = self._slots.get(str(key))
        return slot is not None and slot.alive()

    def running(self) -> list[RunningInstance]:
        return [
            self._running(slot, view)
            for slot in self._slots.values()
            if slot.alive()
            for view in slot.views.values()
        ]

    def touch(self, instance_id: str) -> None:
        """Record activity (a prompt, an agent event): it postpones the idle stop."""
        entry = self._views.get(instance_id)
        if entry is not None:
            entry[0].last_active = self._clock()

    def managed_pids(self) -> set[int]:
        return {slot.server.pid for slot in self._slots.values() if slot.server is not None}

    async def _slot_for(self, project_path: Path) -> _Slot:
        key = self._config.shared_dir if self._config.shared_dir is not None else project_path
        slot = self._slots.get(str(key))
        if slot is not None:
            return slot
        async with self._creation:
            slot = self._slots.get(str(key))
            if slot is None:
                row = await self._stored_row(str(key))
                slot = self._new_slot(row, key)
            return slot

    async def _stored_row(self, path: str) -> InstanceInfo:
        rows = [
            r
            for r in await self._store.all()
            if r.kind == InstanceKind.MANAGED and r.project_path == path
        ]
        if rows:
            rows.sort(key=lambda r: (r.state not in _LIVE_STATES, -r.updated_at))
            return rows[0]
        now = int(time.time())
        return InstanceInfo(
            id=new_instance_id(),
            kind=InstanceKind.MANAGED,
            project_path=path,
            state=InstanceState.STOPPED,
            created_at=now,
            updated_at=now,
        )

    def _new_slot(self, row: InstanceInfo, cwd: Path) -> _Slot:
        slot = _Slot(info=row, cwd=cwd, shared=self.shared)
        self._slots[str(cwd)] = slot
        if not self.shared:
            self._add_view(slot, _View(row.id, cwd, slot.client))
        return slot

    def _add_view(self, slot: _Slot, view: _View) -> None:
        slot.views[view.instance_id] = view
        self._views[view.instance_id] = (slot, view)

    def _view_of(self, slot: _Slot, project_path: Path) -> _View:
        if not slot.shared:
            return next(iter(slot.views.values()))
        instance_id = shared_view_id(project_path)
        view = slot.views.get(instance_id)
        if view is None:
            view = _View(instance_id, project_path)
            self._add_view(slot, view)
        if view.client is None and slot.server is not None:
            view.client = self._client(slot.server.base_url, slot.server.password, project_path)
        return view

    def _running(self, slot: _Slot, view: _View) -> RunningInstance:
        assert view.client is not None, "a view of a running slot has a client"
        info = slot.info
        if slot.shared:
            info = replace(info, id=view.instance_id, project_path=str(view.directory))
        return RunningInstance(info, view.client, slot.server)

    def _running_views(self, slot: _Slot) -> list[RunningInstance]:
        if not slot.alive():
            return []
        return [self._running(slot, view) for view in slot.views.values() if view.client]

    # --- starting -----------------------------------------------------------------------------

    async def _admit(self, slot: _Slot) -> None:
        """Start the slot's server within OPENCODE_MAX_INSTANCES (call with slot.lock held)."""
        async with self._admission:
            if not slot.shared:
                await self._make_room(slot)
            slot.info = replace(slot.info, state=InstanceState.STARTING)  # counts for the cap
        await self._start_server(slot)

    async def _make_room(self, slot: _Slot) -> None:
        others = [
            s
            for s in self._slots.values()
            if s is not slot and (s.alive() or s.info.state == InstanceState.STARTING)
        ]
        limit = self._config.max_instances
        if len(others) < limit:
            return
        for victim in sorted((s for s in others if s.alive()), key=lambda s: s.last_active):
            if await self._is_busy(victim) or victim.lock.locked():
                continue
            async with victim.lock:
                await self._stop_slot(
                    victim, f"stopped to make room for {slot.cwd.name} (OPENCODE_MAX_INSTANCES)"
                )
            return
        raise InstanceBusy(
            f"All {limit} OpenCode servers are busy (OPENCODE_MAX_INSTANCES={limit}); "
            "try again when one of them has finished."
        )

    async def _start_server(self, slot: _Slot) -> None:
        try:
            port = self._pool.allocate(prefer=slot.info.port)
        except PortsExhausted as exc:
            slot.info = replace(slot.info, state=InstanceState.STOPPED)
            raise InstanceError(str(exc)) from exc
        password = slot.info.password or secrets.token_urlsafe(24)
        slot.info = await self._store.save(
            replace(slot.info, state=InstanceState.STARTING, port=port, pid=None, password=password)
        )
        try:
            # One spawn at a time: servers starting together contend for OpenCode's database
            # ("database is locked" makes one exit) and for the CPU.
            async with self._spawning:
                server = await ManagedServer.start(
                    self._config.binary,
                    slot.cwd,
                    port,
                    password=password,
                    log_dir=self._config.log_dir,
                    startup_timeout_s=self._config.startup_timeout_s,
                )
        except ServerStartError as exc:
            self._pool.release(port)
            slot.info = await self._store.save(replace(slot.info, state=InstanceState.ERROR))
            raise InstanceError(f"OpenCode could not start for {slot.cwd.name}: {exc}") from exc
        except BaseException:
            self._pool.release(port)
            slot.info = replace(slot.info, state=InstanceState.STOPPED)
            raise
        slot.server = server
        slot.started_at = slot.last_active = self._clock()
        slot.health_failures, slot.failing_since = 0, None
        slot.info = await self._store.save(
            replace(slot.info, state=InstanceState.RUNNING, pid=server.pid)
        )
        self._refresh_clients(slot, server)
        log.info("OpenCode %s running for %s on port %d", slot.info.id, slot.cwd, port)

    def _refresh_clients(self, slot: _Slot, server: ServerProcess) -> None:
        key = (server.base_url, server.password)
        if slot.client is not None and slot.client_key == key:
            return  # same port and password: the existing clients keep working
        old = [slot.client, *(v.client for v in slot.views.values())]
        slot.client, slot.client_key = self._client(server.base_url, server.password, None), key
        for view in slot.views.values():
            view.client = (
                self._client(server.base_url, server.password, view.directory)
                if slot.shared
                else slot.client
            )
        for client in {c for c in old if c is not None}:
            self._spawn(client.aclose())

    def _client(self, base_url: str, password: str, directory: Path | None) -> OpenCodeClient:
        return OpenCodeClient(
            base_url,
            password=password,
            timeout=self._config.request_timeout_s,
            health_timeout=self._config.health_timeout_s,
            directory=str(directory) if directory is not None else None,
        )

    # --- stopping -----------------------------------------------------------------------------

    async def stop(self, instance_id: str) -> None:
        """Stop the instance's server (in shared mode: forget that project's view)."""
        entry = self._views.get(instance_id)
        if entry is None:
            return
        slot, view = entry
        if slot.shared:
            del slot.views[instance_id], self._views[instance_id]
            if view.client is not None:
                await view.client.aclose()
            await self._listener.instance_stopped([instance_id], "disconnected")
            return
        async with slot.lock:
            await self._stop_slot(slot, "stopped")

    async def _stop_slot(self, slot: _Slot, reason: str, *, notify: bool = True) -> None:
        if slot.recovery is not None:
            slot.recovery.cancel()
        server, slot.server = slot.server, None
        if server is not None:
            slot.info = await self._store.save(replace(slot.info, state=InstanceState.STOPPING))
            await server.stop(self._config.stop_grace_s)
        self._pool.release(slot.info.port)
        slot.started_at = None
        slot.crashed = False
        slot.info = await self._store.save(
            replace(slot.info, state=InstanceState.STOPPED, pid=None)
        )
        log.info("OpenCode %s for %s stopped: %s", slot.info.id, slot.cwd, reason)
        if notify:
            await self._listener.instance_stopped(list(slot.views), reason)

    async def stop_supervision(self) -> None:
        """Stop health checks, idle stops and pending restarts (first step of shutdown)."""
        tasks = [t for t in (self._supervisor, *self._tasks) if t is not None]
        self._supervisor = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def stop_all(self) -> None:
        """Shutdown: stop every managed server (SIGTERM, grace, SIGKILL)."""
        await self.stop_supervision()
        await asyncio.gather(
            *(self._stop_slot(s, "shutdown", notify=False) for s in self._slots.values())
        )
        await self._close_clients()

    async def detach_all(self) -> None:
        """Shutdown that leaves the servers running: the next start adopts them."""
        await self.stop_supervision()
        for slot in self._slots.values():
            if slot.server is not None:
                slot.server.detach()
        await self._close_clients()

    async def _close_clients(self) -> None:
        clients = {s.client for s in self._slots.values()}
        clients |= {v.client for s in self._slots.values() for v in s.views.values()}
        clients |= {client for _, client in self._discovered.values()}
        await asyncio.gather(*(c.aclose() for c in clients if c is not None))

    # --- supervision --------------------------------------------------------------------------

    async def _supervise(self) -> None:
        while True:
            await self._sleep(self._config.health_interval_s)
            await self.check_now()

    async def check_now(self) -> None:
        """One round of health and idle checks over every managed server."""
        for slot in list(self._slots.values()):
            try:
                await self._check(slot)
            except Exception:
                log.exception("supervising OpenCode %s for %s failed", slot.info.id, slot.cwd)

    async def _check(self, slot: _Slot) -> None:
        server, client = slot.server, slot.client
        if server is None or client is None or slot.lock.locked():
            return
        if not server.is_alive():
            await self._crashed(slot, f"the process exited with code {server.returncode}")
            return
        try:
            if not client.answered_within(self._config.health_interval_s):  # else: alive
                await client.health()
        except OpenCodeError as exc:
            await self._health_failed(slot, exc)
            return
        slot.health_failures, slot.failing_since = 0, None
        await self._stop_if_idle(slot)

    async def _health_failed(self, slot: _Slot, exc: OpenCodeError) -> None:
        """Hung = `unhealthy_after` failed checks in a row spanning `hung_after_s`: a slow
        answer now and then (a busy machine) is not a crash."""
        now = self._clock()
        slot.health_failures += 1
        if slot.failing_since is None:
            slot.failing_since = now
        log.warning(
            "OpenCode %s failed health check %d/%d: %s",
            slot.info.id, slot.health_failures, self._config.unhealthy_after, exc,
        )  # fmt: skip
        failing_for = now - slot.failing_since
        if (
            slot.health_failures >= self._config.unhealthy_after
            and failing_for >= self._config.hung_after_s
        ):
            await self._crashed(slot, f"it stopped answering health checks ({exc})")

    async def _stop_if_idle(self, slot: _Slot) -> None:
        if self._clock() - slot.last_active < self._config.idle_timeout_s:
            return
        if await self._is_busy(slot):
            slot.last_active = self._clock()  # working, just quietly: that is activity
            return
        if slot.lock.locked():
            return
        async with slot.lock:
            idle_for = self._clock() - slot.last_active
            if slot.server is not None and idle_for >= self._config.idle_timeout_s:
                await self._stop_slot(slot, f"idle for {idle_for:.0f} s")

    async def _is_busy(self, slot: _Slot) -> bool:
        if any(self._listener.is_busy(instance_id) for instance_id in slot.views):
            return True
        clients = [v.client for v in slot.views.values() if v.client is not None]
        for client in clients or [c for c in (slot.client,) if c is not None]:
            try:
                if await client.session_status():
                    return True
                if await client.list_permissions() or await client.list_questions():
                    return True
            except OpenCodeError as exc:
                log.warning("cannot tell whether %s is busy (%s); keeping it", slot.info.id, exc)
                return True
        return False

    async def _crashed(self, slot: _Slot, reason: str) -> None:
        log.error("OpenCode %s for %s is down: %s", slot.info.id, slot.cwd, reason)
        slot.crashed = True
        server, slot.server = slot.server, None
        if server is not None:
            await server.stop(grace_s=0)  # a hung process must not keep the port
        self._pool.release(slot.info.port)
        slot.info = await self._store.save(
            replace(slot.info, state=InstanceState.STOPPED, pid=None)
        )
        await self._listener.instance_down(list(slot.views), reason)
        slot.recovery = self._spawn(self._recover(slot, reason))

    async def _recover(self, slot: _Slot, reason: str) -> None:
        last_error = reason
        attempts = len(self._config.restart_backoff_s)
        for attempt, delay in enumerate(self._config.restart_backoff_s, start=1):
            await self._sleep(delay)
            async with slot.lock:
                if slot.alive():
                    return  # woken by a message meanwhile
                try:
                    await self._admit(slot)
                except InstanceError as exc:
                    last_error = str(exc)
                    log.warning(
                        "restart %d/%d of %s failed: %s", attempt, attempts, slot.info.id, exc
                    )
                    continue
                slot.crashed = False
            log.info("OpenCode %s restarted (attempt %d)", slot.info.id, attempt)
            await self._listener.instance_up(self._running_views(slot))
            return
        slot.crashed = False  # the next message tries again
        slot.info = await self._store.save(replace(slot.info, state=InstanceState.ERROR))
        await self._listener.instance_failed(
            list(slot.views), f"{attempts} restart attempts failed; last error: {last_error}"
        )

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("instance manager task failed", exc_info=task.exception())

    # --- status and discovery -----------------------------------------------------------------

    async def status(self) -> OrchestratorStatus:
        now = self._clock()
        servers = [self._slot_status(slot, now) for slot in self._slots.values()]
        known = {slot.info.id for slot in self._slots.values()}
        for row in await self._store.all():
            if row.id not in known:
                servers.append(
                    ServerStatus(
                        row.id, row.kind, row.state, row.project_path, row.port, row.url, row.pid
                    )
                )
        return OrchestratorStatus(
            servers=tuple(servers),
            ports_used=self._pool.used,
            ports_total=self._pool.total,
            uptime_s=now - self._started_at,
            shared_server=self.shared,
            max_instances=1 if self.shared else self._config.max_instances,
        )

    def _slot_status(self, slot: _Slot, now: float) -> ServerStatus:
        running = slot.alive()
        return ServerStatus(
            instance_id=slot.info.id,
            kind=InstanceKind.MANAGED,
            state=slot.info.state,
            project_path=str(slot.cwd),
            port=slot.info.port,
            pid=slot.server.pid if slot.server is not None else None,
            uptime_s=now - slot.started_at if running and slot.started_at is not None else None,
            idle_s=now - slot.last_active if running else None,
            projects=max(len(slot.views), 1),
        )

    async def discover(self) -> list[DiscoveredServer]:
        """Scan this machine for OpenCode servers we did not start; record and return them."""
        found = await self._discovery.run(exclude_pids=self.managed_pids())
        previous = self._discovered
        self._discovered = {}
        for server in found:
            old = previous.pop(server.instance_id, None)
            client = old[1] if old is not None and old[0].url == server.url else None
            if client is None and not server.auth_required:
                client = OpenCodeClient(
                    server.url,
                    timeout=self._config.request_timeout_s,
                    health_timeout=self._config.health_timeout_s,
                    directory=server.cwd,
                )
            self._discovered[server.instance_id] = (server, client)
        await asyncio.gather(*(c.aclose() for _, c in previous.values() if c is not None))
        return found


def _attributed_row(rows: Sequence[InstanceInfo], port: int, pid: int) -> InstanceInfo | None:
    """The managed row that says the process on `port` is ours: same port and pid, or same port
    and directory when the pid was never recorded."""
    for row in rows:
        if row.port != port:
            continue
        if row.pid == pid or (row.pid is None and process_cwd(pid) == row.project_path):
            return row
    return None
