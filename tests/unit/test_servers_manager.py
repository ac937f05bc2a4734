"""InstanceManager, Supervisor and PortPool with fake server processes and fake clients.

The real binary is exercised in tests/e2e/test_orchestration*.py; here every timing path
(restart backoff, idle timeout, cap eviction, hung servers) runs instantly: the manager and the
supervisor get an injected clock and sleep, and the spawn and client factories are fakes.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from oc_outpost.model import InstanceKind, InstanceState
from oc_outpost.opencode.errors import OpenCodeTimeout, OpenCodeUnavailable
from oc_outpost.servers.errors import InstanceBusy, InstanceError
from oc_outpost.servers.listener import RunningInstance
from oc_outpost.servers.managed import ServerStartError
from oc_outpost.servers.manager import InstanceManager, ManagerConfig
from oc_outpost.servers.pool import PortPool, PortsExhausted
from oc_outpost.servers.process import is_opencode_command
from oc_outpost.servers.slots import shared_view_id
from oc_outpost.servers.supervisor import Supervisor
from oc_outpost.store.db import Database
from oc_outpost.store.instances import InstanceStore
from oc_outpost.store.migrations import ORCHESTRATOR_MIGRATIONS

PORT_START = 4100
FOREVER = 10_000.0

# --- fakes ------------------------------------------------------------------------------------


@dataclass
class World:
    """What the fake servers and clients share: which ports are taken, what OpenCode says."""

    taken_by_others: set[int] = field(default_factory=set)
    start_failures: int = 0
    starts: list[tuple[Path, int, str]] = field(default_factory=list)
    servers: list[FakeServer] = field(default_factory=list)
    unhealthy: set[int] = field(default_factory=set)
    refusing: set[int] = field(default_factory=set)  # ports whose connections are refused
    busy_sessions: dict[str, dict[str, Any]] = field(default_factory=dict)  # by directory key
    permissions: dict[str, list[object]] = field(default_factory=dict)
    pids: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))

    def port_free(self, port: int, _host: str) -> bool:
        live = {s.port for s in self.servers if s.alive}
        return port not in self.taken_by_others and port not in live


class FakeServer:
    def __init__(self, world: World, cwd: Path, port: int, password: str) -> None:
        self.pid = next(world.pids)
        self.port = port
        self.password = password
        self.cwd = cwd
        self.base_url = f"http://127.0.0.1:{port}"
        self.alive = True
        self.detached = False
        self.stopped_with: float | None = None

    @property
    def returncode(self) -> int | None:
        return None if self.alive else -9

    def is_alive(self) -> bool:
        return self.alive

    async def stop(self, grace_s: float = 5.0) -> None:
        self.alive = False
        self.stopped_with = grace_s

    def detach(self) -> None:
        self.detached = True


class FakeServerFactory:
    def __init__(self, world: World) -> None:
        self.world = world

    async def start(self, _binary: str, cwd: Path, port: int, **kwargs: Any) -> FakeServer:
        self.world.starts.append((cwd, port, kwargs["password"]))
        if self.world.start_failures:
            self.world.start_failures -= 1
            raise ServerStartError("boom")
        server = FakeServer(self.world, cwd, port, kwargs["password"])
        self.world.servers.append(server)
        return server


class FakeClient:
    def __init__(self, world: World, base_url: str, **kwargs: Any) -> None:
        self.world = world
        self.base_url = base_url
        self.directory: str | None = kwargs.get("directory")
        self.closed = False

    @property
    def _port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    def answered_within(self, seconds: float) -> bool:
        return False  # no event stream here: every check asks /global/health

    async def health(self) -> object:
        if self._port in self.world.unhealthy:
            raise OpenCodeTimeout("GET /global/health: no response within 2s")
        if self._port in self.world.refusing:
            raise OpenCodeUnavailable("GET /global/health: connection refused")
        return object()

    async def session_status(self) -> dict[str, Any]:
        return self.world.busy_sessions.get(self.directory or "", {})

    async def list_permissions(self) -> list[object]:
        return self.world.permissions.get(self.directory or "", [])

    async def list_questions(self) -> list[object]:
        return []

    async def aclose(self) -> None:
        self.closed = True


class FakeStreams:
    """The event streams as the manager uses them: which instances are followed, activity."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.followed: set[str] = set()
        self.activity: dict[str, float] = {}

    def record_activity(self, instance_id: str) -> None:
        self.activity[instance_id] = self.clock()

    def last_activity(self, instance_id: str) -> float | None:
        return self.activity.get(instance_id)

    async def ensure(self, instance_id: str, client: object) -> None:
        self.followed.add(instance_id)

    async def restart(self, instance_id: str, client: object) -> None:
        self.followed.add(instance_id)

    async def drop(self, instance_id: str) -> None:
        self.followed.discard(instance_id)


class Listener:
    def __init__(self) -> None:
        self.busy: set[str] = set()
        self.events: list[tuple[str, object]] = []

    def is_busy(self, instance_id: str) -> bool:
        return instance_id in self.busy

    async def on_event(self, instance_id: str, client: object, event: object) -> None:
        self.events.append(("event", event))

    async def on_reconnect(self, instance_id: str, client: object) -> None:
        self.events.append(("reconnect", instance_id))

    async def instance_down(self, instance_ids: Sequence[str], reason: str) -> None:
        self.events.append(("down", (tuple(instance_ids), reason)))

    async def instance_up(self, instances: Sequence[RunningInstance]) -> None:
        self.events.append(("up", tuple(r.info.id for r in instances)))

    async def instance_failed(self, instance_ids: Sequence[str], reason: str) -> None:
        self.events.append(("failed", (tuple(instance_ids), reason)))

    async def instance_stopped(self, instance_ids: Sequence[str], reason: str) -> None:
        self.events.append(("stopped", (tuple(instance_ids), reason)))

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Sleeps:
    """Records backoff sleeps and returns at once; the health loop's long sleep never ends."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.gate: asyncio.Event | None = None  # set: backoff sleeps wait for it

    async def __call__(self, delay: float) -> None:
        if delay >= FOREVER:
            await asyncio.Event().wait()
        if self.gate is not None:
            await self.gate.wait()
        self.delays.append(delay)
        await asyncio.sleep(0)


@dataclass
class Rig:
    manager: InstanceManager
    supervisor: Supervisor
    streams: FakeStreams
    world: World
    store: InstanceStore
    listener: Listener
    clock: Clock
    sleeps: Sleeps
    tmp: Path

    def project(self, name: str) -> Path:
        path = self.tmp / "projects" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    async def settle(self) -> None:
        """Wait for the manager's background work (restarts) to finish."""
        async with asyncio.timeout(5):
            await self.supervisor.settle()


async def make_rig(tmp_path: Path, **config: Any) -> AsyncIterator[Rig]:
    world = World()
    db = await Database.open(tmp_path / "orchestrator.db", ORCHESTRATOR_MIGRATIONS)
    store = InstanceStore(db)
    settings: dict[str, Any] = {
        "binary": "opencode",
        "port_start": PORT_START,
        "pool_size": 10,
        "max_instances": 2,
        "startup_timeout_s": 5.0,
        "idle_timeout_s": 60.0,
        "health_interval_s": FOREVER,
        **config,
    }
    clock, sleeps, listener = Clock(), Sleeps(), Listener()
    streams = FakeStreams(clock)
    manager = InstanceManager(
        ManagerConfig(**settings),
        store,
        listener,  # type: ignore[arg-type]
        streams,  # type: ignore[arg-type]
        clock=clock,
        sleep=sleeps,
        pool=PortPool(PORT_START, settings["pool_size"], is_free=world.port_free),
        spawn=FakeServerFactory(world).start,
        client_factory=lambda base_url, **kw: FakeClient(world, base_url, **kw),
    )
    supervisor = Supervisor(manager, clock=clock, sleep=sleeps)
    rig = Rig(manager, supervisor, streams, world, store, listener, clock, sleeps, tmp_path)
    try:
        yield rig
    finally:
        await supervisor.stop()
        await manager.stop_all()
        await db.close()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async for value in make_rig(tmp_path):
        yield value


@pytest.fixture
async def shared_rig(tmp_path: Path) -> AsyncIterator[Rig]:
    base = tmp_path / "projects"
    base.mkdir()
    async for value in make_rig(tmp_path, shared_dir=base):
        yield value


# --- port pool --------------------------------------------------------------------------------


def test_pool_hands_out_the_lowest_free_port_and_reuses_released_ones() -> None:
    others = {4100}
    pool = PortPool(4100, 4, is_free=lambda port, _host: port not in others)

    first, second = pool.allocate(), pool.allocate()
    pool.release(first)

    assert (first, second) == (4101, 4102)
    assert pool.allocate() == 4101
    assert (pool.used, pool.total) == (2, 4)


def test_pool_prefers_the_previous_port_when_free() -> None:
    pool = PortPool(4100, 4, is_free=lambda _port, _host: True)

    assert pool.allocate(prefer=4103) == 4103
    assert pool.allocate(prefer=4103) == 4100  # taken by us now: the lowest free one instead
    assert pool.allocate(prefer=9999) == 4101  # outside the pool: ignored


def test_pool_exhaustion_is_a_clear_error() -> None:
    pool = PortPool(4100, 2, is_free=lambda port, _host: port != 4101)
    pool.allocate()

    with pytest.raises(PortsExhausted, match=r"4100-4101.*1 used by oc-outpost.*POOL_SIZE"):
        pool.allocate()


def test_pool_reserve_marks_an_adopted_port_as_ours() -> None:
    pool = PortPool(4100, 2, is_free=lambda _port, _host: True)
    pool.reserve(4100)

    assert pool.allocate() == 4101
    assert pool.used == 2


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        (["/x/node_modules/opencode-ai/bin/opencode.exe", "serve", "--port", "1"], True),
        (["node", "/usr/lib/node_modules/.bin/opencode", "serve"], True),
        (["opencode"], False),  # the TUI without a server of its own
        (["python", "-m", "http.server", "serve"], False),
    ],
)
def test_opencode_server_command_lines(cmdline: list[str], expected: bool) -> None:
    assert is_opencode_command(cmdline, "") is expected


# --- get or create ----------------------------------------------------------------------------


async def test_ensure_running_reuses_the_server_of_a_directory(rig: Rig) -> None:
    demo, other = rig.project("demo"), rig.project("other")

    first = await rig.manager.ensure_running(demo)
    again = await rig.manager.ensure_running(demo)
    second = await rig.manager.ensure_running(other)

    assert first.info.id == again.info.id and first.server is again.server
    assert second.info.id != first.info.id
    assert [cwd for cwd, _, _ in rig.world.starts] == [demo, other]
    assert {r.info.id for r in rig.manager.running()} == {first.info.id, second.info.id}
    assert rig.manager.get(first.info.id) is not None
    stored = await rig.store.get(first.info.id)
    assert stored is not None and stored.state == InstanceState.RUNNING
    assert stored.pid == first.server.pid if first.server else False


async def test_is_running_neither_starts_nor_creates_anything(rig: Rig) -> None:
    demo = rig.project("demo")
    assert not rig.manager.is_running(demo)

    running = await rig.manager.ensure_running(demo)
    assert rig.manager.is_running(demo)
    await rig.manager.stop(running.info.id)

    assert not rig.manager.is_running(demo)
    assert len(rig.world.starts) == 1


async def test_concurrent_requests_for_one_directory_start_one_server(rig: Rig) -> None:
    demo = rig.project("demo")

    results = await asyncio.gather(*(rig.manager.ensure_running(demo) for _ in range(5)))

    assert len({r.info.id for r in results}) == 1
    assert len(rig.world.starts) == 1


async def test_a_port_taken_by_another_program_is_skipped(rig: Rig) -> None:
    rig.world.taken_by_others.add(PORT_START)

    running = await rig.manager.ensure_running(rig.project("demo"))

    assert running.info.port == PORT_START + 1


async def test_the_instance_id_survives_stop_and_wake_without_new_rows(rig: Rig) -> None:
    demo = rig.project("demo")
    first = await rig.manager.ensure_running(demo)
    await rig.manager.stop(first.info.id)

    woken = await rig.manager.ensure_running(demo)

    assert woken.info.id == first.info.id
    assert woken.server is not first.server
    rows = [r for r in await rig.store.all() if r.project_path == str(demo)]
    assert len(rows) == 1 and rows[0].state == InstanceState.RUNNING
    assert rig.world.starts[0][2] == rig.world.starts[1][2]  # same password: clients stay valid
    assert woken.client is first.client


async def test_a_failed_start_is_reported_and_recorded(rig: Rig) -> None:
    rig.world.start_failures = 1
    demo = rig.project("demo")

    with pytest.raises(InstanceError, match="could not start for demo: boom"):
        await rig.manager.ensure_running(demo)

    (row,) = await rig.store.all()
    assert row.state == InstanceState.ERROR
    assert rig.manager.pool.used == 0
    assert (await rig.manager.ensure_running(demo)).info.id == row.id  # the next try works


# --- the instance cap -------------------------------------------------------------------------


async def test_at_the_cap_the_least_recently_used_idle_server_is_stopped(rig: Rig) -> None:
    a = await rig.manager.ensure_running(rig.project("a"))
    rig.clock.now += 1
    b = await rig.manager.ensure_running(rig.project("b"))
    rig.clock.now += 1
    rig.streams.record_activity(a.info.id)  # a is now more recent than b

    c = await rig.manager.ensure_running(rig.project("c"))

    assert rig.manager.get(b.info.id) is None
    assert rig.manager.get(a.info.id) is not None and rig.manager.get(c.info.id) is not None
    assert ("stopped", ((b.info.id,), "stopped to make room for c (OPENCODE_MAX_INSTANCES)")) in (
        rig.listener.events
    )


async def test_busy_servers_are_never_evicted_and_the_user_is_told(rig: Rig) -> None:
    a = await rig.manager.ensure_running(rig.project("a"))
    b = await rig.manager.ensure_running(rig.project("b"))
    rig.listener.busy.add(a.info.id)  # core: a turn is running
    rig.world.permissions[""] = [object()]  # OpenCode: b waits for a permission answer

    with pytest.raises(InstanceBusy, match="All 2 OpenCode servers are busy"):
        await rig.manager.ensure_running(rig.project("c"))

    assert rig.manager.get(a.info.id) is not None and rig.manager.get(b.info.id) is not None


# --- crashes and restarts ---------------------------------------------------------------------


async def test_a_crashed_server_is_restarted_under_the_same_id(rig: Rig) -> None:
    first = await rig.manager.ensure_running(rig.project("demo"))
    assert first.server is not None
    await rig.streams.ensure(first.info.id, first.client)
    rig.world.servers[0].alive = False  # kill -9

    await rig.supervisor.check_now()
    assert first.info.id not in rig.streams.followed  # the dead server's stream is dropped
    await rig.settle()

    back = rig.manager.get(first.info.id)
    assert back is not None and back.server is not first.server
    assert back.info.port == first.info.port  # same port, same password: same client
    assert back.client is first.client
    assert rig.sleeps.delays == [1.0]
    assert rig.listener.kinds() == ["down", "up"]
    assert "exited with code -9" in str(rig.listener.events[0][1])
    assert first.info.id in rig.streams.followed  # reconnected before core was told


async def test_restarts_back_off_then_give_up_in_error_state(rig: Rig) -> None:
    first = await rig.manager.ensure_running(rig.project("demo"))
    rig.world.servers[0].alive = False
    rig.world.start_failures = 5

    await rig.supervisor.check_now()
    await rig.settle()

    assert rig.sleeps.delays == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert rig.listener.kinds() == ["down", "failed"]
    assert "5 restart attempts failed; last error" in str(rig.listener.events[-1][1])
    row = await rig.store.get(first.info.id)
    assert row is not None and row.state == InstanceState.ERROR
    assert rig.manager.get(first.info.id) is None
    # a message later tries again, under the same id
    assert (await rig.manager.ensure_running(rig.project("demo"))).info.id == first.info.id


async def test_a_server_whose_port_refuses_is_restarted_when_a_message_needs_it(
    rig: Rig,
) -> None:
    """Killed moments ago, before a health check noticed: the message gets a live server."""
    demo = rig.project("demo")
    first = await rig.manager.ensure_running(demo)
    assert first.info.port is not None
    rig.world.refusing.add(first.info.port)

    again = await rig.manager.ensure_running(demo)

    assert again.info.id == first.info.id and len(rig.world.starts) == 2
    assert rig.listener.kinds() == ["down", "up"]
    assert "refuses connections" in str(rig.listener.events[0][1])


async def test_a_slow_health_answer_does_not_restart_a_server_a_message_needs(rig: Rig) -> None:
    demo = rig.project("demo")
    first = await rig.manager.ensure_running(demo)
    assert first.info.port is not None
    rig.world.unhealthy.add(first.info.port)

    await rig.manager.ensure_running(demo)

    assert len(rig.world.starts) == 1 and rig.listener.kinds() == []


async def test_a_message_during_the_backoff_starts_the_server_at_once(rig: Rig) -> None:
    demo = rig.project("demo")
    first = await rig.manager.ensure_running(demo)
    gate = asyncio.Event()  # the restart is waiting for its backoff
    rig.sleeps.gate = gate
    rig.world.servers[0].alive = False
    await rig.supervisor.check_now()

    woken = await rig.manager.ensure_running(demo)
    gate.set()
    await rig.settle()

    assert woken.info.id == first.info.id
    assert len(rig.world.starts) == 2  # the cancelled backoff did not start another one
    assert rig.listener.kinds() == ["down", "up"]


async def test_a_hung_server_is_restarted_after_failing_health_checks_for_15_s(rig: Rig) -> None:
    first = await rig.manager.ensure_running(rig.project("demo"))
    assert first.info.port is not None
    rig.world.unhealthy.add(first.info.port)

    for _ in range(3):
        await rig.supervisor.check_now()
        rig.clock.now += 5
    assert rig.listener.kinds() == []  # slow answers for a while are not a crash
    await rig.supervisor.check_now()  # 4 failures over 15 s
    rig.world.unhealthy.clear()
    await rig.settle()

    assert rig.listener.kinds() == ["down", "up"]
    assert rig.world.servers[0].stopped_with == 0  # killed, not politely asked
    assert "stopped answering health checks" in str(rig.listener.events[0][1])


# --- idle -------------------------------------------------------------------------------------


async def test_an_idle_server_is_stopped_and_activity_postpones_it(rig: Rig) -> None:
    running = await rig.manager.ensure_running(rig.project("demo"))
    rig.clock.now += 59
    rig.streams.record_activity(running.info.id)  # an agent event
    rig.clock.now += 59

    await rig.supervisor.check_now()
    assert rig.manager.get(running.info.id) is not None

    rig.clock.now += 2
    await rig.supervisor.check_now()
    assert rig.manager.get(running.info.id) is None
    assert rig.listener.kinds() == ["stopped"]
    assert rig.world.servers[0].stopped_with == 5.0  # SIGTERM, 5 s, SIGKILL
    row = await rig.store.get(running.info.id)
    assert row is not None and row.state == InstanceState.STOPPED and row.pid is None
    assert rig.manager.pool.used == 0


@pytest.mark.parametrize("why", ["core-busy", "session-busy", "permission"])
async def test_a_busy_or_waiting_server_is_never_stopped_for_idleness(rig: Rig, why: str) -> None:
    running = await rig.manager.ensure_running(rig.project("demo"))
    if why == "core-busy":
        rig.listener.busy.add(running.info.id)
    elif why == "session-busy":
        rig.world.busy_sessions[""] = {"ses_1": {"type": "busy"}}
    else:
        rig.world.permissions[""] = [object()]
    rig.clock.now += 600

    await rig.supervisor.check_now()

    assert rig.manager.get(running.info.id) is not None
    assert rig.listener.kinds() == []


# --- shared server ----------------------------------------------------------------------------


async def test_shared_mode_serves_every_project_from_one_server(shared_rig: Rig) -> None:
    demo, other = shared_rig.project("demo"), shared_rig.project("other")

    a = await shared_rig.manager.ensure_running(demo)
    b = await shared_rig.manager.ensure_running(other)

    assert len(shared_rig.world.starts) == 1
    assert shared_rig.world.starts[0][0] == shared_rig.tmp / "projects"
    assert a.server is b.server
    assert (a.info.id, b.info.id) == (shared_view_id(demo), shared_view_id(other))
    assert (a.info.project_path, b.info.project_path) == (str(demo), str(other))
    assert (a.client.directory, b.client.directory) == (str(demo), str(other))
    assert shared_rig.manager.get(a.info.id) is not None
    status = await shared_rig.manager.status()
    assert status.shared_server and [s.projects for s in status.servers] == [2]


async def test_shared_mode_crash_tells_every_project(shared_rig: Rig) -> None:
    a = await shared_rig.manager.ensure_running(shared_rig.project("demo"))
    b = await shared_rig.manager.ensure_running(shared_rig.project("other"))
    shared_rig.world.servers[0].alive = False

    await shared_rig.supervisor.check_now()
    await shared_rig.settle()

    down = shared_rig.listener.events[0]
    assert down[0] == "down" and set(down[1][0]) == {a.info.id, b.info.id}  # type: ignore[index]
    assert shared_rig.listener.events[1] == ("up", (a.info.id, b.info.id))


# --- status and shutdown ----------------------------------------------------------------------


async def test_status_reports_servers_by_kind_and_state_and_the_pool(rig: Rig) -> None:
    running = await rig.manager.ensure_running(rig.project("demo"))
    stopped = await rig.manager.ensure_running(rig.project("idle"))
    await rig.manager.stop(stopped.info.id)
    rig.clock.now += 7

    status = await rig.manager.status()

    assert status.counts() == {
        (InstanceKind.MANAGED, InstanceState.RUNNING): 1,
        (InstanceKind.MANAGED, InstanceState.STOPPED): 1,
    }
    assert (status.ports_used, status.ports_total, status.max_instances) == (1, 10, 2)
    (live,) = [s for s in status.servers if s.instance_id == running.info.id]
    assert live.uptime_s == 7 and live.pid == (running.server.pid if running.server else None)


async def test_detach_leaves_servers_running_and_recorded(rig: Rig) -> None:
    running = await rig.manager.ensure_running(rig.project("demo"))

    await rig.manager.detach_all()

    assert rig.world.servers[0].detached and rig.world.servers[0].alive
    row = await rig.store.get(running.info.id)
    assert row is not None and row.state == InstanceState.RUNNING and row.pid is not None


async def test_stop_all_stops_every_server_gracefully(rig: Rig) -> None:
    await rig.manager.ensure_running(rig.project("a"))
    await rig.manager.ensure_running(rig.project("b"))

    await rig.manager.stop_all()

    assert all(not s.alive and s.stopped_with == 5.0 for s in rig.world.servers)
    assert {r.state for r in await rig.store.all()} == {InstanceState.STOPPED}
