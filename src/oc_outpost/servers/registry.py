"""The server registry: the ONLY map from an instance id to the client that serves it, for every
kind of server — managed (started by the bot), discovered (found running on this machine) and
external (registered over the HTTP API).

`client(id)` answers "who serves this id right now" without side effects; `connect(id, path)`
is the same question when the answer must be a live connection: a stopped managed server is
started (or woken), and the instance's event stream is subscribed before the client is returned,
so no event of what follows is missed.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from pathlib import Path

from oc_outpost.model import InstanceInfo, InstanceKind, InstanceState
from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.opencode.errors import OpenCodeError
from oc_outpost.servers.discovery import Discovery
from oc_outpost.servers.errors import ServerGone
from oc_outpost.servers.listener import RunningInstance
from oc_outpost.servers.manager import InstanceManager
from oc_outpost.servers.status import DiscoveredServer, OrchestratorStatus
from oc_outpost.servers.streams import EventStreams
from oc_outpost.servers.waking import with_notice
from oc_outpost.store.instances import InstanceStore

log = logging.getLogger(__name__)

EXTERNAL_TIMEOUT_S = 10.0

ExternalClientFactory = Callable[[str, str | None], OpenCodeClient]
Notice = Callable[[], Awaitable[None]]


def external_client(url: str, password: str | None) -> OpenCodeClient:
    return OpenCodeClient(url, password=password, timeout=EXTERNAL_TIMEOUT_S)


class ServerRegistry:
    def __init__(
        self,
        manager: InstanceManager,
        streams: EventStreams,
        store: InstanceStore,
        discovery: Discovery,
        *,
        external_factory: ExternalClientFactory = external_client,
        now: Callable[[], int] = lambda: int(time.time()),
    ) -> None:
        self._manager = manager
        self._streams = streams
        self._store = store
        self._discovery = discovery
        self._external_factory = external_factory
        self._now = now
        self._externals: dict[str, OpenCodeClient] = {}
        self._discovered: dict[str, tuple[DiscoveredServer, OpenCodeClient | None]] = {}

    @property
    def manager(self) -> InstanceManager:
        return self._manager

    # --- the one lookup -----------------------------------------------------------------------

    def client(self, instance_id: str | None) -> OpenCodeClient | None:
        """The client of the server behind ``instance_id`` if it runs now (nothing is started)."""
        if not instance_id:
            return None
        if instance_id in self._externals:
            return self._externals[instance_id]
        running = self._manager.get(instance_id)
        if running is not None:
            return running.client
        _, client = self._discovered.get(instance_id, (None, None))
        return client

    def kind(self, instance_id: str | None) -> InstanceKind:
        """The kind of server behind ``instance_id`` as far as the registry knows it now."""
        if instance_id in self._externals:
            return InstanceKind.EXTERNAL
        if instance_id in self._discovered:
            return InstanceKind.DISCOVERED
        return InstanceKind.MANAGED

    async def recorded_kind(self, instance_id: str | None) -> InstanceKind | None:
        """The kind recorded for ``instance_id`` (None when unknown)."""
        row = await self._store.get(instance_id) if instance_id else None
        return row.kind if row is not None else None

    async def connect(
        self, instance_id: str | None, project_path: Path, *, on_slow: Notice | None = None
    ) -> RunningInstance:
        """A live server for the instance (managed: the one for ``project_path``, started or
        woken if needed, announcing a slow wake-up through ``on_slow``), its event stream
        subscribed. Raises ServerGone for a discovered/external server that is not there any
        more, InstanceError when a managed one cannot be started."""
        running = await self._unmanaged(instance_id) if instance_id else None
        if running is None:
            starting = self._manager.ensure_running(project_path)
            running = await (starting if on_slow is None else with_notice(starting, on_slow))
        await self._streams.ensure(running.info.id, running.client)
        return running

    async def _unmanaged(self, instance_id: str) -> RunningInstance | None:
        client = self._externals.get(instance_id)
        if client is not None:
            row = await self._store.get(instance_id)
            assert row is not None, "an external client has its row"
            return RunningInstance(row, client, None)
        if instance_id in self._discovered:
            server, client = self._discovered[instance_id]
            if client is None:
                raise ServerGone(
                    f"The OpenCode server at {server.url} needs a password the bot does not know."
                )
            return RunningInstance(_discovered_info(server), client, None)
        row = await self._store.get(instance_id)
        if row is not None and row.kind == InstanceKind.EXTERNAL:
            raise ServerGone("The external OpenCode server of this topic is not registered now.")
        if row is not None and row.kind == InstanceKind.DISCOVERED:
            raise ServerGone("The OpenCode server this topic was connected to is gone.")
        return None

    # --- managed and discovered ---------------------------------------------------------------

    def running_managed(self) -> list[RunningInstance]:
        return self._manager.running()

    def discovered(self) -> list[DiscoveredServer]:
        return [server for server, _ in self._discovered.values()]

    async def discover(self) -> list[DiscoveredServer]:
        """Scan this machine for OpenCode servers we did not start; record and return them."""
        found = await self._discovery.run(exclude_pids=self._manager.managed_pids())
        previous, self._discovered = self._discovered, {}
        for server in found:
            old = previous.pop(server.instance_id, None)
            client = old[1] if old is not None and old[0].url == server.url else None
            if client is None and not server.auth_required:
                client = OpenCodeClient(
                    server.url,
                    timeout=self._manager.config.request_timeout_s,
                    health_timeout=self._manager.config.health_timeout_s,
                    directory=server.cwd,
                )
            self._discovered[server.instance_id] = (server, client)
        await asyncio.gather(*(c.aclose() for _, c in previous.values() if c is not None))
        return found

    async def status(self) -> OrchestratorStatus:
        return await self._manager.status()

    # --- external servers ---------------------------------------------------------------------

    def probe_client(self, url: str, password: str | None) -> OpenCodeClient:
        """A client for a server someone wants to register (not recorded yet)."""
        return self._external_factory(url, password)

    async def add_external(
        self, client: OpenCodeClient, path: Path, password: str | None, session_id: str
    ) -> InstanceInfo:
        """Record the external server behind ``client`` (one row per URL) and follow it."""
        url = client.base_url.rstrip("/")
        known = next(
            (
                i
                for i in await self._store.all()
                if i.kind == InstanceKind.EXTERNAL and i.base_url == url
            ),
            None,
        )
        now = self._now()
        info = InstanceInfo(
            id=known.id if known else f"ext_{secrets.token_hex(4)}",
            kind=InstanceKind.EXTERNAL,
            project_path=str(path),
            state=InstanceState.RUNNING,
            created_at=known.created_at if known else now,
            updated_at=now,
            url=url,
            session_id=session_id,
            password=password,
        )
        info = await self._store.save(info)
        old = self._externals.get(info.id)
        self._externals[info.id] = client
        if old is not None and old is not client:
            await self._streams.drop(info.id)  # its stream still uses the old client
            await old.aclose()
        await self._streams.ensure(info.id, client)
        return info

    async def forget_external(self, instance_id: str, *, delete: bool = False) -> None:
        """Stop following an external server (it keeps running); its row says stopped, or is
        deleted (``delete``: a registration that failed leaves nothing behind)."""
        await self._streams.drop(instance_id)
        client = self._externals.pop(instance_id, None)
        if client is not None:
            await client.aclose()
        info = await self._store.get(instance_id)
        if delete:
            await self._store.delete(instance_id)
        elif info is not None:
            await self._store.save(replace(info, state=InstanceState.STOPPED))

    async def external_instances(self) -> list[InstanceInfo]:
        return [i for i in await self._store.all() if i.kind == InstanceKind.EXTERNAL]

    async def all_instances(self) -> list[InstanceInfo]:
        return await self._store.all()

    # --- life cycle ---------------------------------------------------------------------------

    async def start(self, bound: Iterable[str]) -> None:
        """Adopt what an earlier run left running, find outside servers, and follow again the
        external servers that still have topics (``bound``: the instance ids of bindings)."""
        await self._manager.start()
        await self.discover()  # so topics connected to discovered servers keep working
        wanted = set(bound)
        for info in await self.external_instances():
            if info.id not in wanted:
                continue
            client = self._external_factory(info.base_url, info.password)
            self._externals[info.id] = client
            try:
                await self._streams.ensure(info.id, client)
            except (OpenCodeError, TimeoutError) as exc:
                log.warning("external server %s is not reachable yet: %s", info.base_url, exc)

    async def release(self, instance_id: str) -> None:
        """Nothing is bound to the instance any more: stop a managed server, forget an
        external one. A discovered server is left alone."""
        if instance_id in self._externals:
            await self.forget_external(instance_id)
        elif self._manager.knows(instance_id):
            await self._manager.stop(instance_id)

    async def stop(self, *, keep_servers_running: bool) -> None:
        await self._streams.stop_all()
        if keep_servers_running:
            await self._manager.detach_all()
        else:
            await self._manager.stop_all()
        clients = [*self._externals.values(), *(c for _, c in self._discovered.values() if c)]
        await asyncio.gather(*(c.aclose() for c in clients))
        self._externals.clear()


def _discovered_info(server: DiscoveredServer) -> InstanceInfo:
    return InstanceInfo(
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
