"""Instance manager: one managed `opencode serve` per project directory, started on demand."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from oc_outpost.core.types import InstanceInfo, InstanceKind, InstanceState
from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.orchestrator.managed import ManagedServer, ServerStartError
from oc_outpost.orchestrator.ports import PortsExhausted, find_free_port
from oc_outpost.store.instances import InstanceStore

log = logging.getLogger(__name__)


class InstanceError(RuntimeError):
    """An OpenCode server could not be provided; the message is fit for the user."""


@dataclass(frozen=True)
class ManagerConfig:
    binary: str
    port_start: int
    pool_size: int
    max_instances: int
    startup_timeout_s: float
    request_timeout_s: float = 10.0


@dataclass
class RunningInstance:
    info: InstanceInfo
    client: OpenCodeClient
    server: ManagedServer


def new_instance_id() -> str:
    return f"inst_{secrets.token_hex(4)}"


class InstanceManager:
    def __init__(
        self,
        config: ManagerConfig,
        store: InstanceStore,
        *,
        now: Callable[[], int] = lambda: int(time.time()),
    ) -> None:
        self._config = config
        self._store = store
        self._now = now
        self._running: dict[str, RunningInstance] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def running(self) -> list[RunningInstance]:
        return list(self._running.values())

    def get(self, instance_id: str) -> RunningInstance | None:
        running = self._running.get(instance_id)
        if running is not None and running.server.is_alive():
            return running
        return None

    async def ensure_running(self, project_path: Path) -> RunningInstance:
        """The running server for ``project_path``, starting it (under a stable id) if needed."""
        key = str(project_path)
        async with self._locks.setdefault(key, asyncio.Lock()):
            for running in self._running.values():
                if running.info.project_path == key and running.server.is_alive():
                    return running
            return await self._start(project_path)

    async def _start(self, project_path: Path) -> RunningInstance:
        alive = [r for r in self._running.values() if r.server.is_alive()]
        if len(alive) >= self._config.max_instances:
            raise InstanceError(
                f"All {self._config.max_instances} OpenCode servers are in use "
                "(OPENCODE_MAX_INSTANCES); stop one with /disconnect or try again later."
            )
        previous = await self._store.get_by_path(str(project_path))
        instance_id = previous.id if previous is not None else new_instance_id()
        in_use = {r.info.port for r in alive if r.info.port is not None}
        try:
            port = find_free_port(self._config.port_start, self._config.pool_size, exclude=in_use)
        except PortsExhausted as exc:
            raise InstanceError(str(exc)) from exc
        now = self._now()
        info = InstanceInfo(
            id=instance_id,
            kind=InstanceKind.MANAGED,
            project_path=str(project_path),
            state=InstanceState.STARTING,
            created_at=previous.created_at if previous else now,
            updated_at=now,
            port=port,
        )
        await self._store.save(info)
        try:
            server = await ManagedServer.start(
                Path(self._config.binary),
                project_path,
                port,
                startup_timeout_s=self._config.startup_timeout_s,
            )
        except ServerStartError as exc:
            await self._store.save(replace(info, state=InstanceState.ERROR, updated_at=self._now()))
            raise InstanceError(f"OpenCode could not start for {project_path.name}: {exc}") from exc
        info = replace(
            info,
            state=InstanceState.RUNNING,
            pid=server.pid,
            password=server.password,
            updated_at=self._now(),
        )
        await self._store.save(info)
        client = OpenCodeClient(
            server.base_url, password=server.password, timeout=self._config.request_timeout_s
        )
        running = RunningInstance(info, client, server)
        self._running[instance_id] = running
        log.info("OpenCode %s running for %s on port %d", instance_id, project_path, port)
        return running

    async def stop(self, instance_id: str) -> None:
        running = self._running.pop(instance_id, None)
        if running is None:
            return
        await self._store.update_state(instance_id, InstanceState.STOPPING)
        await running.client.aclose()
        await running.server.stop()
        await self._store.update_state(instance_id, InstanceState.STOPPED)
        log.info("OpenCode %s stopped", instance_id)

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop(iid) for iid in list(self._running)))
