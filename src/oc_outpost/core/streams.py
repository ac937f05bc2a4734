"""One OpenCode event stream per running server, dispatching typed events to core."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from oc_outpost.opencode import events as ev
from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.opencode.stream import EventStream

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0

Dispatch = Callable[[str, OpenCodeClient, ev.Event], Awaitable[None]]


class EventStreams:
    def __init__(self, dispatch: Dispatch) -> None:
        self._dispatch = dispatch
        self._streams: dict[str, EventStream] = {}

    async def ensure(self, instance_id: str, client: OpenCodeClient) -> None:
        """Subscribe to the server (once) and wait until connected, so no event is missed."""
        stream = self._streams.get(instance_id)
        if stream is None or stream.client is not client:
            if stream is not None:
                await stream.stop()

            async def on_event(event: ev.Event) -> None:
                await self._dispatch(instance_id, client, event)

            stream = EventStream(client, on_event)
            self._streams[instance_id] = stream
            stream.start()
        await asyncio.wait_for(stream.wait_connected(), CONNECT_TIMEOUT_S)

    async def drop(self, instance_id: str) -> None:
        stream = self._streams.pop(instance_id, None)
        if stream is not None:
            await stream.stop()

    async def stop_all(self) -> None:
        await asyncio.gather(*(s.stop() for s in self._streams.values()))
        self._streams.clear()
