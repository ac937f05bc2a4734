"""Instance manager: the managed OpenCode servers, their ports, admission and stopping.

Per-project mode (default): one `opencode serve` per project directory, cwd = the project; the
instance id is the one stored for that directory, so it stays valid for the topics bound to it
across idle stops, crash restarts and bot restarts.

Shared mode (`shared_dir` set, OPENCODE_SHARED_SERVER): one server with cwd = PROJECT_BASE_PATH.
Every project is a *view* of it with its own instance id (derived from the directory, so stable
too) and its own client that sends `?directory=<project>` on every request.

Health checks, idle stops and crash restarts are the `Supervisor`'s (servers/supervisor.py);
taking over the servers of an earlier run is `adopt` here plus servers/adoption.py for orphans.
The manager keeps each instance's event stream in step with its process (dropped when it stops,
reconnected when it comes back) and tells core through the `ServerListener`.

It is longer than our other rooms on purpose: it is the one owner of slot state (creation,
admission and eviction, start, stop, crash marking, adoption, status), and splitting that state
across modules would let two places change a slot.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

from oc_outpost.model import InstanceInfo, InstanceKind, InstanceState
from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.opencode.errors import OpenCodeError, OpenCodeUnavailable
from oc_outpost.servers.adoption import reclaim_orphans
from oc_outpost.servers.errors import InstanceBusy, InstanceError
from oc_outpost.servers.listener import RunningInstance, ServerListener
from oc_outpost.servers.managed import ManagedServer, ServerStartError
from oc_outpost.servers.pool import PortPool, PortsExhausted
from oc_outpost.servers.process import AdoptedServer, ServerProcess, serves_on
from oc_outpost.servers.slots import Slot, View, new_instance_id, shared_view_id
from oc_outpost.servers.status import OrchestratorStatus, ServerStatus
from oc_outpost.servers.streams import EventStreams
from oc_outpost.store.instances import InstanceStore

log = logging.getLogger(__name__)

RESTART_BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0)
LIVE_STATES = (InstanceState.RUNNING, InstanceState.STARTING, InstanceState.STOPPING)

Sleep = Callable[[float], Awaitable[None]]
Spawn = Callable[..., Awaitable[ServerProcess]]


def new_client(
    base_url: str, *, password: str | None, timeout: float, health_timeout: float,
    directory: str | None,
) -> OpenCodeClient:  # fmt: skip
    return OpenCodeClient(
        base_url,
        password=password,
        timeout=timeout,
        health_timeout=health_timeout,
        directory=directory,
    )


ClientFactory = Callable[..., OpenCodeClient]


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


class InstanceManager:
    def __init__(
        self,
        config: ManagerConfig,
        store: InstanceStore,
        listener: ServerListener,
        streams: EventStreams,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        pool: PortPool | None = None,
        spawn: Spawn = ManagedServer.start,
        client_factory: ClientFactory = new_client,
    ) -> None:
        self.config = config
        self._store = store
        self._listener = listener
        self._streams = streams
        self._clock = clock
        self._sleep = sleep
        self._pool = pool or PortPool(config.port_start, config.pool_size)
        self._spawn = spawn
        self._client_factory = client_factory
        self._slots: dict[str, Slot] = {}  # by cwd
        self._views: dict[str, tuple[Slot, View]] = {}  # by instance id
        self._admission = asyncio.Lock()
        self._creation = asyncio.Lock()
        self._spawning = asyncio.Lock()
        self._started_at = clock()

    @property
    def shared(self) -> bool:
        return self.config.shared_dir is not None

    @property
    def pool(self) -> PortPool:
        return self._pool

    # --- start-up -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Adopt the servers an earlier run left running and clean up orphans."""
        managed = [r for r in await self._store.all() if r.kind == InstanceKind.MANAGED]
        for row in managed:
            if row.state in LIVE_STATES and not await self._adopt(row):
                await self._store.update_state(row.id, InstanceState.STOPPED, pid=None)
        await reclaim_orphans(
            self._pool.ports, self.managed_pids(), managed,
            grace_s=self.config.stop_grace_s, sleep=self._sleep,
        )  # fmt: skip

    async def _adopt(self, row: InstanceInfo) -> bool:
        cwd = Path(row.project_path)
        if (cwd == self.config.shared_dir) != self.shared or str(cwd) in self._slots:
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

    # --- get or create ------------------------------------------------------------------------

    async def ensure_running(self, project_path: Path) -> RunningInstance:
        """The running server for `project_path`, started or woken (under its stable id) if
        needed. Raises InstanceBusy when the cap is reached and every server is busy, and
        InstanceError when the server cannot be started."""
        slot = await self._slot_for(project_path)
        back_after_crash = False
        async with slot.lock:
            if slot.alive() and not await self._answers(slot):
                # killed or crashed moments ago, before a health check noticed: restart now
                # rather than hand out a client whose prompt would be refused
                await self.mark_down(slot, "its port refuses connections")
            if not slot.alive():
                if slot.recovery is not None:
                    slot.recovery.cancel()  # the user is waiting: start now, not after backoff
                await self.admit(slot)
                back_after_crash, slot.crashed = slot.crashed, False
            view = self._view_of(slot, project_path)
            slot.last_active = self._clock()
            running = self._running(slot, view)
        if back_after_crash:
            await self.announce_up(slot)
        return running

    async def _answers(self, slot: Slot) -> bool:
        """False only when the server's port refuses connections (it is gone); a slow answer
        is left to the supervisor's health checks."""
        if slot.client is None:
            return True
        try:
            await slot.client.health()
        except OpenCodeUnavailable:
            return False
        except OpenCodeError:
            return True
        return True

    def get(self, instance_id: str) -> RunningInstance | None:
        """The managed instance if it is running now."""
        entry = self._views.get(instance_id)
        if entry is None:
            return None
        slot, view = entry
        return self._running(slot, view) if slot.alive() else None

    def knows(self, instance_id: str) -> bool:
        return instance_id in self._views

    def is_running(self, project_path: Path) -> bool:
        """Whether the server for `project_path` runs now (nothing is started or created)."""
        slot = self._slots.get(str(self._slot_key(project_path)))
        return slot is not None and slot.alive()

    def running(self) -> list[RunningInstance]:
        return [r for slot in self._slots.values() for r in self.running_views(slot)]

    def slots(self) -> list[Slot]:
        return list(self._slots.values())

    def managed_pids(self) -> set[int]:
        return {slot.server.pid for slot in self._slots.values() if slot.server is not None}

    def last_active(self, slot: Slot) -> float:
        """The latest prompt or agent activity of the slot's projects."""
        seen = (self._streams.last_activity(instance_id) for instance_id in slot.views)
        return max([slot.last_active, *(t for t in seen if t is not None)])

    def _slot_key(self, project_path: Path) -> Path:
        return self.config.shared_dir if self.config.shared_dir is not None else project_path

    async def _slot_for(self, project_path: Path) -> Slot:
        key = self._slot_key(project_path)
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
            rows.sort(key=lambda r: (r.state not in LIVE_STATES, -r.updated_at))
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

    def _new_slot(self, row: InstanceInfo, cwd: Path) -> Slot:
        slot = Slot(info=row, cwd=cwd, shared=self.shared)
        self._slots[str(cwd)] = slot
        if not self.shared:
            self._add_view(slot, View(row.id, cwd, slot.client))
        return slot

    def _add_view(self, slot: Slot, view: View) -> None:
        slot.views[view.instance_id] = view
        self._views[view.instance_id] = (slot, view)

    def _view_of(self, slot: Slot, project_path: Path) -> View:
        if not slot.shared:
            return next(iter(slot.views.values()))
        instance_id = shared_view_id(project_path)
        view = slot.views.get(instance_id)
        if view is None:
            view = View(instance_id, project_path)
            self._add_view(slot, view)
        if view.client is None and slot.server is not None:
            view.client = self._client(slot.server.base_url, slot.server.password, project_path)
        return view

    def _running(self, slot: Slot, view: View) -> RunningInstance:
        assert view.client is not None, "a view of a running slot has a client"
        info = slot.info
        if slot.shared:
            info = replace(info, id=view.instance_id, project_path=str(view.directory))
        return RunningInstance(info, view.client, slot.server)

    def running_views(self, slot: Slot) -> list[RunningInstance]:
        if not slot.alive():
            return []
        return [self._running(slot, view) for view in slot.views.values() if view.client]

    # --- starting -----------------------------------------------------------------------------

    async def admit(self, slot: Slot) -> None:
        """Start the slot's server within OPENCODE_MAX_INSTANCES (call with slot.lock held)."""
        async with self._admission:
            if not slot.shared:
                await self._make_room(slot)
            slot.info = replace(slot.info, state=InstanceState.STARTING)  # counts for the cap
        await self._start_server(slot)

    async def _make_room(self, slot: Slot) -> None:
        others = [
            s
            for s in self._slots.values()
            if s is not slot and (s.alive() or s.info.state == InstanceState.STARTING)
        ]
        limit = self.config.max_instances
        if len(others) < limit:
            return
        for victim in sorted((s for s in others if s.alive()), key=self.last_active):
            if await self.is_busy(victim) or victim.lock.locked():
                continue
            async with victim.lock:
                await self.stop_slot(
                    victim, f"stopped to make room for {slot.cwd.name} (OPENCODE_MAX_INSTANCES)"
                )
            return
        raise InstanceBusy(
            f"All {limit} OpenCode servers are busy (OPENCODE_MAX_INSTANCES={limit}); "
            "try again when one of them has finished."
        )

    async def _start_server(self, slot: Slot) -> None:
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
                server = await self._spawn(
                    self.config.binary,
                    slot.cwd,
                    port,
                    password=password,
                    log_dir=self.config.log_dir,
                    startup_timeout_s=self.config.startup_timeout_s,
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
        await self._refresh_clients(slot, server)
        log.info("OpenCode %s running for %s on port %d", slot.info.id, slot.cwd, port)

    async def _refresh_clients(self, slot: Slot, server: ServerProcess) -> None:
        key = (server.base_url, server.password)
        if slot.client is not None and slot.client_key == key:
            return  # same port and password: the existing clients keep working
        old = {c for c in [slot.client, *(v.client for v in slot.views.values())] if c}
        slot.client, slot.client_key = self._client(server.base_url, server.password, None), key
        for view in slot.views.values():
            view.client = (
                self._client(server.base_url, server.password, view.directory)
                if slot.shared
                else slot.client
            )
        for instance_id in slot.views:
            await self._streams.drop(instance_id)  # they still use the old clients
        await asyncio.gather(*(client.aclose() for client in old))

    def _client(self, base_url: str, password: str, directory: Path | None) -> OpenCodeClient:
        return self._client_factory(
            base_url,
            password=password,
            timeout=self.config.request_timeout_s,
            health_timeout=self.config.health_timeout_s,
            directory=str(directory) if directory is not None else None,
        )

    async def announce_up(self, slot: Slot) -> None:
        """The slot's server is back after a crash: fresh streams, then tell core."""
        running = self.running_views(slot)
        for instance in running:
            try:
                await self._streams.restart(instance.info.id, instance.client)
            except (OpenCodeError, TimeoutError) as exc:
                log.warning("the stream of %s did not come back: %s", instance.info.id, exc)
        await self._listener.instance_up(running)

    # --- busy? --------------------------------------------------------------------------------

    async def is_busy(self, slot: Slot) -> bool:
        """Core has a turn or an open request there, or OpenCode says a session works or waits."""
        if any(self._listener.is_busy(instance_id) for instance_id in slot.views):
            return True
        for client in slot.clients():
            try:
                if await client.session_status():
                    return True
                if await client.list_permissions() or await client.list_questions():
                    return True
            except OpenCodeError as exc:
                log.warning("cannot tell whether %s is busy (%s); keeping it", slot.info.id, exc)
                return True
        return False

    # --- stopping -----------------------------------------------------------------------------

    async def stop(self, instance_id: str) -> None:
        """Stop the instance's server (in shared mode: forget that project's view)."""
        entry = self._views.get(instance_id)
        if entry is None:
            return
        slot, view = entry
        if slot.shared:
            del slot.views[instance_id], self._views[instance_id]
            await self._streams.drop(instance_id)
            if view.client is not None:
                await view.client.aclose()
            await self._listener.instance_stopped([instance_id], "disconnected")
            return
        async with slot.lock:
            await self.stop_slot(slot, "stopped")

    async def stop_slot(self, slot: Slot, reason: str, *, notify: bool = True) -> None:
        """Stop the slot's process (call with slot.lock held, or at shutdown)."""
        if slot.recovery is not None:
            slot.recovery.cancel()
        for instance_id in slot.views:
            await self._streams.drop(instance_id)
        server, slot.server = slot.server, None
        if server is not None:
            slot.info = await self._store.save(replace(slot.info, state=InstanceState.STOPPING))
            await server.stop(self.config.stop_grace_s)
        self._pool.release(slot.info.port)
        slot.started_at = None
        slot.crashed = False
        slot.info = await self._store.save(
            replace(slot.info, state=InstanceState.STOPPED, pid=None)
        )
        log.info("OpenCode %s for %s stopped: %s", slot.info.id, slot.cwd, reason)
        if notify:
            await self._listener.instance_stopped(list(slot.views), reason)

    async def mark_down(self, slot: Slot, reason: str) -> None:
        """The slot's process crashed or hung: kill what is left, free the port, tell core."""
        log.error("OpenCode %s for %s is down: %s", slot.info.id, slot.cwd, reason)
        slot.crashed = True
        for instance_id in slot.views:
            await self._streams.drop(instance_id)
        server, slot.server = slot.server, None
        if server is not None:
            await server.stop(grace_s=0)  # a hung process must not keep the port
        self._pool.release(slot.info.port)
        slot.info = await self._store.save(
            replace(slot.info, state=InstanceState.STOPPED, pid=None)
        )
        await self._listener.instance_down(list(slot.views), reason)

    async def mark_failed(self, slot: Slot, reason: str) -> None:
        slot.crashed = False  # the next message tries again
        slot.info = await self._store.save(replace(slot.info, state=InstanceState.ERROR))
        await self._listener.instance_failed(list(slot.views), reason)

    async def stop_all(self) -> None:
        """Shutdown: stop every managed server (SIGTERM, grace, SIGKILL)."""
        await asyncio.gather(
            *(self.stop_slot(s, "shutdown", notify=False) for s in self._slots.values())
        )
        await self._close_clients()

    async def detach_all(self) -> None:
        """Shutdown that leaves the servers running: the next start adopts them."""
        for slot in self._slots.values():
            if slot.server is not None:
                slot.server.detach()
        await self._close_clients()

    async def _close_clients(self) -> None:
        clients = {s.client for s in self._slots.values()}
        clients |= {v.client for s in self._slots.values() for v in s.views.values()}
        await asyncio.gather(*(c.aclose() for c in clients if c is not None))

    # --- status -------------------------------------------------------------------------------

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
            max_instances=1 if self.shared else self.config.max_instances,
        )

    def _slot_status(self, slot: Slot, now: float) -> ServerStatus:
        running = slot.alive()
        return ServerStatus(
            instance_id=slot.info.id,
            kind=InstanceKind.MANAGED,
            state=slot.info.state,
            project_path=str(slot.cwd),
            port=slot.info.port,
            pid=slot.server.pid if slot.server is not None else None,
            uptime_s=now - slot.started_at if running and slot.started_at is not None else None,
            idle_s=now - self.last_active(slot) if running else None,
            projects=max(len(slot.views), 1),
        )
