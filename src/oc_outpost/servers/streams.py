"""One OpenCode event stream per instance, delivering typed events to core's listener.

Per-project servers are followed on `/global/event` (every directory, heartbeats for the
watchdog). A project of the shared server has a client with `directory` set and is followed on
`/event?directory=<project>`: only that project's events, so the shared server's projects never
see each other's events twice.

Every event but heartbeats counts as activity of its instance (`last_activity`, read by the
instance manager's idle clock); after a reconnect the listener catches up (nothing is replayed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from oc_outpost.metrics import Metrics
from oc_outpost.opencode import events as ev
from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.opencode.stream import DEFAULT_BACKOFF, DEFAULT_PATH, EventStream
from oc_outpost.servers.listener import ServerListener

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
DEFAULT_WATCHDOG_S = 30.0
DIRECTORY_PATH = "/event"

_NOT_ACTIVITY = (ev.ServerHeartbeat, ev.ServerConnected)


class EventStreams:
    def __init__(
        self,
        listener: ServerListener,
        *,
        watchdog_s: float = DEFAULT_WATCHDOG_S,
        backoff: Sequence[float] = DEFAULT_BACKOFF,
        clock: Callable[[], float] = time.monotonic,
        metrics: Metrics | None = None,
    ) -> None:
        self._listener = listener
        self._metrics = metrics or Metrics()
        self._watchdog_s = watchdog_s
        self._backoff = tuple(backoff)
        self._clock = clock
        self._streams: dict[str, EventStream] = {}
        self._last_activity: dict[str, float] = {}

    def stream(self, instance_id: str) -> EventStream | None:
        return self._streams.get(instance_id)

    def last_activity(self, instance_id: str) -> float | None:
        """When the instance's stream last carried agent activity (clock of the constructor)."""
        return self._last_activity.get(instance_id)

    def record_activity(self, instance_id: str) -> None:
        self._last_activity[instance_id] = self._clock()

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
        listener = self._listener

        async def on_event(event: ev.Event) -> None:
            if not isinstance(event, _NOT_ACTIVITY):
                self.record_activity(instance_id)
            await listener.on_event(instance_id, client, event)

        async def on_reconnect() -> None:
            log.info("event stream of %s reconnected; reconciling", instance_id)
            self._metrics.stream_reconnected()
            await listener.on_reconnect(instance_id, client)

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
