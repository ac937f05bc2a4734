"""One OpenCode event stream per running instance, dispatching typed events to core.

Per-project servers are followed on `/global/event` (every directory, heartbeats for the
watchdog). A project of the shared server has a client with `directory` set and is followed on
`/event?directory=<project>`: only that project's events, so the shared server's projects never
see each other's events twice.

Hooks (set with `configure`): `on_activity(instance_id)` for every event but heartbeats (the idle
clock), `after_event(instance_id, event)` once core handled it (the turn journal), and
`on_reconnect(instance_id, client)` after a connection came back (reconcile: nothing is replayed).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from oc_outpost.metrics import Metrics
from oc_outpost.opencode import events as ev
from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.opencode.stream import DEFAULT_BACKOFF, DEFAULT_PATH, EventStream

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
DEFAULT_WATCHDOG_S = 30.0
DIRECTORY_PATH = "/event"

Dispatch = Callable[[str, OpenCodeClient, ev.Event], Awaitable[None]]
Reconnected = Callable[[str, OpenCodeClient], Awaitable[None]]
Activity = Callable[[str], None]
AfterEvent = Callable[[str, ev.Event], Awaitable[None]]

_NOT_ACTIVITY = (ev.ServerHeartbeat, ev.ServerConnected)


class EventStreams:
    def __init__(
        self,
        dispatch: Dispatch,
        *,
        watchdog_s: float = DEFAULT_WATCHDOG_S,
        backoff: Sequence[float] = DEFAULT_BACKOFF,
        metrics: Metrics | None = None,
    ) -> None:
        self._dispatch = dispatch
        self._metrics = metrics or Metrics()
        self._watchdog_s = watchdog_s
        self._backoff = tuple(backoff)
        self._on_reconnect: Reconnected | None = None
        self._on_activity: Activity | None = None
        self._after_event: AfterEvent | None = None
        self._streams: dict[str, EventStream] = {}

    def configure(
        self,
        *,
        watchdog_s: float | None = None,
        on_reconnect: Reconnected | None = None,
        on_activity: Activity | None = None,
        after_event: AfterEvent | None = None,
    ) -> None:
        """Set the hooks (and the watchdog) for streams opened from now on."""
        if watchdog_s is not None:
            self._watchdog_s = watchdog_s
        self._on_reconnect = on_reconnect or self._on_reconnect
        self._on_activity = on_activity or self._on_activity
        self._after_event = after_event or self._after_event

    def stream(self, instance_id: str) -> EventStream | None:
        return self._streams.get(instance_id)

    async def ensure(self, instance_id: str, client: OpenCodeClient) -> None:
        """Subscribe to the instance (once) and wait until connected, so no event is missed."""
        stream = self._streams.get(instance_id)
        if stream is None or stream.client is not client:
            if stream is not None:
                await stream.stop()
            stream = self._open(instance_id, client)
        await asyncio.wait_for(stream.wait_connected(), CONNECT_TIMEOUT_S)

    async def restart(self, instance_id: str, client: OpenCodeClient) -> None:
        """A fresh connection now (the server was restarted: do not wait for the backoff)."""
        await self.drop(instance_id)
        await self.ensure(instance_id, client)

    def _open(self, instance_id: str, client: OpenCodeClient) -> EventStream:
        async def on_event(event: ev.Event) -> None:
            if self._on_activity is not None and not isinstance(event, _NOT_ACTIVITY):
                self._on_activity(instance_id)
            await self._dispatch(instance_id, client, event)
            if self._after_event is not None:
                await self._after_event(instance_id, event)

        async def on_reconnect() -> None:
            log.info("event stream of %s reconnected; reconciling", instance_id)
            self._metrics.stream_reconnected()
            if self._on_reconnect is not None:
                await self._on_reconnect(instance_id, client)

        stream = EventStream(
            client,
            on_event,
            on_reconnect=on_reconnect,
            path=DIRECTORY_PATH if client.directory else DEFAULT_PATH,
            backoff=self._backoff,
            watchdog_s=self._watchdog_s,
        )
        self._streams[instance_id] = stream
        stream.start()
        return stream

    async def drop(self, instance_id: str) -> None:
        stream = self._streams.pop(instance_id, None)
        if stream is not None:
            await stream.stop()

    async def stop_all(self) -> None:
        await asyncio.gather(*(s.stop() for s in self._streams.values()))
        self._streams.clear()
