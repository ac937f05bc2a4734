"""The OpenCode SSE event stream: one connection (`iter_events`) and a supervised one
(`EventStream`: reconnect with backoff, watchdog, reconcile hook).

Which stream, checked against the recordings and a live 1.18.33 server started (like a managed
server) with the project directory as its cwd and no `?directory=` on any request:

* `/global/event` carries `server.heartbeat` every 10 s (as `{"payload": {...}}`, no
  `directory`) and the session events of every instance, the cwd's included (envelope
  `directory` = the cwd; the cwd's instance is bootstrapped by the first request that needs it,
  e.g. `POST /session`, and its events flow from then on). It also carries `sync` replication
  records and `project.updated` (`directory: "global"`); the parser drops both.
* `/event` also has heartbeats, but only one directory instance's events: a session created
  with another `?directory=` is invisible on it.

So `/global/event` is the default: one connection per server sees every session in whatever
directory, and its heartbeats feed the watchdog. `tests/e2e/test_opencode_contract.py` pins
both facts. Neither stream replays events sent while disconnected, hence `on_reconnect`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence

import httpx
from httpx_sse import aconnect_sse

from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.opencode.errors import (
    EventParseError,
    OpenCodeError,
    OpenCodeTimeout,
    http_error,
)
from oc_outpost.opencode.events import Event, parse_event_json

log = logging.getLogger(__name__)

DEFAULT_PATH = "/global/event"
DEFAULT_BACKOFF = (0.5, 1.0, 2.0, 4.0, 8.0)


async def iter_events(
    client: OpenCodeClient,
    *,
    path: str = DEFAULT_PATH,
    connect_timeout: float = 5.0,
    read_timeout: float | None = None,
) -> AsyncIterator[Event]:
    """Yield typed events from ONE SSE connection until the server closes it.

    Raises OpenCodeAuthError / OpenCodeHTTPError on an error status, OpenCodeTimeout when the
    response headers do not arrive within `connect_timeout`, OpenCodeUnavailable when the
    connection fails or breaks. Unknown frames are skipped; malformed ones are logged and skipped.
    """
    async for event in iter_frames(
        client, path=path, connect_timeout=connect_timeout, read_timeout=read_timeout
    ):
        if event is not None:
            yield event


async def iter_frames(
    client: OpenCodeClient,
    *,
    path: str = DEFAULT_PATH,
    connect_timeout: float = 5.0,
    read_timeout: float | None = None,
) -> AsyncGenerator[Event | None, None]:
    """Like `iter_events`, but yields None for every frame that is not an event we model, so a
    watchdog can count every frame as a sign of life."""
    context = client.mask(f"GET {path}")
    params = {} if path.startswith("/global/") else client.instance_params()
    timeout = httpx.Timeout(
        connect=connect_timeout, read=read_timeout, write=connect_timeout, pool=connect_timeout
    )
    try:
        async with contextlib.AsyncExitStack() as stack:
            # A request sent just before the server is ready can hang before the headers
            # arrive, so the whole handshake is bounded, not only the TCP connect.
            try:
                async with asyncio.timeout(connect_timeout):
                    source = await stack.enter_async_context(
                        aconnect_sse(client.http, "GET", path, params=params, timeout=timeout)
                    )
                    response = source.response
                    if response.status_code >= 400:
                        body = await response.aread()
                        raise http_error(
                            response.status_code,
                            client.mask(body.decode("utf-8", "replace")),
                            context=context,
                        )
            except TimeoutError as exc:
                raise OpenCodeTimeout(
                    f"{context}: no response within {connect_timeout:g}s"
                ) from exc
            envelope = path.startswith("/global/")
            async for sse in source.aiter_sse():
                if sse.data:
                    yield _decode(sse.data, context, envelope=envelope)
    except httpx.HTTPError as exc:
        raise client.transport_error(exc, context) from exc


def _decode(data: str, context: str, *, envelope: bool) -> Event | None:
    try:
        return parse_event_json(data, envelope=envelope)
    except EventParseError as exc:
        log.warning("%s: skipping a malformed frame: %s", context, exc)
    return None


EventHandler = Callable[[Event], Awaitable[None]]
ReconnectHandler = Callable[[], Awaitable[None]]
Sleep = Callable[[float], Awaitable[None]]


class EventStream:
    """Keeps one event stream to a server alive and hands every event to `on_event`.

    * Reconnects after any failure or end of stream, waiting `backoff[n]` for the n-th
      consecutive failure (the last value repeats); a connection that delivered a frame resets n.
    * Watchdog: `watchdog_s` without any frame (heartbeats come every 10 s) counts as a dead
      connection and forces a reconnect.
    * `on_reconnect()` is awaited after every successful connection that follows a disconnect or
      a failed attempt (not after the first clean one): events may have been missed, reconcile.
      Both callbacks are awaited inline, so they must not wait for further events.
    """

    def __init__(
        self,
        client: OpenCodeClient,
        on_event: EventHandler,
        *,
        on_reconnect: ReconnectHandler | None = None,
        path: str = DEFAULT_PATH,
        backoff: Sequence[float] = DEFAULT_BACKOFF,
        watchdog_s: float = 30.0,
        connect_timeout: float = 5.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not backoff:
            raise ValueError("backoff needs at least one delay")
        self._client = client
        self._on_event = on_event
        self._on_reconnect = on_reconnect
        self._path = path
        self._backoff = tuple(backoff)
        self._watchdog_s = watchdog_s
        self._connect_timeout = connect_timeout
        self._sleep = sleep
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._disrupted = False
        self._got_frame = False
        self.last_error: str | None = None
        self.connections = 0

    @property
    def client(self) -> OpenCodeClient:
        return self._client

    @property
    def connected(self) -> bool:
        """True once the current connection has delivered a frame."""
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        """Return once a connection has delivered a frame (bound it with a timeout)."""
        await self._connected.wait()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self.running:
            return
        self._task = asyncio.create_task(self._run(), name=f"opencode-events {self._label}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
        self._connected.clear()

    @property
    def _label(self) -> str:
        return self._client.mask(f"{self._client.base_url}{self._path}")

    async def _run(self) -> None:
        failures = 0
        while True:
            self._got_frame = False
            reason = await self._consume_one_connection()
            self._connected.clear()
            self._disrupted = True
            if self._got_frame:
                failures = 0
            delay = self._backoff[min(failures, len(self._backoff) - 1)]
            failures += 1
            self.last_error = reason
            log.warning("%s: %s; reconnecting in %gs", self._label, reason, delay)
            await self._sleep(delay)

    async def _consume_one_connection(self) -> str:
        """Run one connection to its end; return why it ended."""
        frames = iter_frames(self._client, path=self._path, connect_timeout=self._connect_timeout)
        try:
            while True:
                try:
                    async with asyncio.timeout(self._watchdog_s):
                        event = await anext(frames)
                except StopAsyncIteration:
                    return "stream closed by the server"
                except TimeoutError:
                    return f"no frame for {self._watchdog_s:g}s (watchdog)"
                await self._on_frame(event)
        except OpenCodeError as exc:
            return str(exc)
        except Exception as exc:
            log.exception("%s: unexpected error in the event stream", self._label)
            return f"unexpected {type(exc).__name__}"
        finally:
            await frames.aclose()

    async def _on_frame(self, event: Event | None) -> None:
        if not self._got_frame:
            self._got_frame = True
            self._connected.set()
            self.connections += 1
            self.last_error = None
            if self._disrupted:
                self._disrupted = False
                await self._call("on_reconnect", self._on_reconnect)
        if event is not None:
            await self._call("on_event", self._on_event, event)

    async def _call(
        self, name: str, handler: Callable[..., Awaitable[None]] | None, *args: Event
    ) -> None:
        if handler is None:
            return
        try:
            await handler(*args)
        except Exception:
            # A faulty handler must not take the stream down; the error is logged in full.
            log.exception("%s: %s handler failed", self._label, name)
