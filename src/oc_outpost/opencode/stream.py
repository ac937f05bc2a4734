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
from types import TracebackType

import httpx

from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.opencode.errors import (
    EventParseError,
    OpenCodeError,
    OpenCodeResponseError,
    OpenCodeTimeout,
    http_error,
)
from oc_outpost.opencode.events import Event, parse_event_json

log = logging.getLogger(__name__)

DEFAULT_PATH = "/global/event"
DEFAULT_BACKOFF = (0.5, 1.0, 2.0, 4.0, 8.0)
# While a stream is busy, read its socket at most this often (see `_ReadPacer`): far below what
# a user notices, and the Outbox shows progress at most every 2 s anyway.
DEFAULT_READ_PAUSE_S = 0.1
SSE_HEADERS = {"Accept": "text/event-stream", "Cache-Control": "no-store"}

Sleep = Callable[[float], Awaitable[None]]


async def iter_events(
    client: OpenCodeClient,
    *,
    path: str = DEFAULT_PATH,
    connect_timeout: float = 5.0,
    read_timeout: float | None = None,
) -> AsyncIterator[Event]:
    """Yield typed events from ONE SSE connection until the server closes it.

    Raises OpenCodeAuthError / OpenCodeHTTPError on an error status, OpenCodeTimeout when the
    response headers do not arrive within `connect_timeout`, OpenCodeResponseError when the
    response is not an event stream, OpenCodeUnavailable when the connection fails or breaks.
    Unknown frames are skipped; malformed ones are logged and skipped.
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
    read_pause_s: float = 0.0,
    sleep: Sleep = asyncio.sleep,
) -> AsyncGenerator[Event | None, None]:
    """Like `iter_events`, but yields None for every frame that is not an event we model, so a
    watchdog can count every frame as a sign of life. With `read_pause_s`, a busy stream's
    socket is read at most that often (`_ReadPacer`)."""
    context = client.mask(f"GET {path}")
    params = {} if path.startswith("/global/") else client.instance_params()
    timeout = httpx.Timeout(
        connect=connect_timeout, read=read_timeout, write=connect_timeout, pool=connect_timeout
    )
    request = client.http.build_request(
        "GET", path, params=params, headers=SSE_HEADERS, timeout=timeout
    )
    envelope = path.startswith("/global/")
    try:
        async with contextlib.AsyncExitStack() as stack:
            # A request sent just before the server is ready can hang before the headers
            # arrive, so the whole handshake is bounded, not only the TCP connect.
            try:
                async with asyncio.timeout(connect_timeout):
                    response = await client.http.send(request, stream=True)
                    stack.push_async_callback(response.aclose)
                    await _check_response(response, client, context)
            except TimeoutError as exc:
                raise OpenCodeTimeout(
                    f"{context}: no response within {connect_timeout:g}s"
                ) from exc
            decoder = SSEDecoder()
            pacer = _ReadPacer(read_pause_s, sleep) if read_pause_s > 0 else None
            chunks = response.aiter_bytes()
            while True:
                if pacer is not None:
                    pacer.reading()
                try:
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
                client.note_answer()
                for data in decoder.feed(chunk):
                    yield _decode(data, context, envelope=envelope)
                if pacer is not None and not decoder.pending:
                    await pacer.read(len(chunk))
    except httpx.HTTPError as exc:
        raise client.transport_error(exc, context) from exc


async def _check_response(response: httpx.Response, client: OpenCodeClient, context: str) -> None:
    if response.status_code >= 400:
        body = await response.aread()
        raise http_error(
            response.status_code, client.mask(body.decode("utf-8", "replace")), context=context
        )
    content_type = response.headers.get("content-type", "")
    if content_type.partition(";")[0].strip().lower() != "text/event-stream":
        raise OpenCodeResponseError(
            f"{context}: expected a text/event-stream response, got {content_type!r}"
        )


class SSEDecoder:
    """Splits a server-sent-events byte stream into the `data` of each event.

    Follows the WHATWG "event stream" format as far as `data` goes: lines end with CRLF, LF or
    CR; a blank line ends an event; `data` lines are joined with LF; comments (`:`) and the
    other fields (`event`, `id`, `retry`) are skipped, and so is an event without data. The
    bytes are handed on undecoded: the event parser reads JSON from bytes.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._started = False
        self._after_cr = False  # the last chunk ended with CR: a LF first in this one is its CRLF

    def feed(self, chunk: bytes) -> list[bytes]:
        if not chunk:
            return []
        if not self._started:
            self._started = True
            chunk = chunk.removeprefix(b"\xef\xbb\xbf")
        if self._after_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._after_cr = chunk.endswith(b"\r")
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buffer = self._buffer + chunk if self._buffer else chunk
        events: list[bytes] = []
        start = 0
        search = max(len(self._buffer) - 1, 0)  # the buffer held no blank line before
        while (end := buffer.find(b"\n\n", search)) >= 0:
            data = _data_of(buffer[start:end])
            if data:
                events.append(data)
            start = search = end + 2
        self._buffer = buffer[start:]
        return events

    @property
    def pending(self) -> bool:
        """Part of an event has arrived, the rest has not."""
        return bool(self._buffer.strip(b"\n"))


def _data_of(block: bytes) -> bytes:
    if block.startswith(b"data: ") and b"\n" not in block:
        return block[6:]  # the usual frame: one data line
    data = []
    for line in block.split(b"\n"):
        name, _, value = line.partition(b":")
        if name == b"data":
            data.append(value.removeprefix(b" "))
    return b"\n".join(data)


def _decode(data: bytes, context: str, *, envelope: bool) -> Event | None:
    try:
        return parse_event_json(data, envelope=envelope)
    except EventParseError as exc:
        log.warning("%s: skipping a malformed frame: %s", context, exc)
    return None


class _ReadPacer:
    """Lets a busy stream's frames gather in the socket instead of waking up for each one.

    Waking up costs far more CPU than handling a frame (tens to hundreds of µs against a few),
    and an answer streams as many small deltas. So after a read from the socket, if the one
    before was recent (the stream is busy), it pauses `pause_s` before reading on: the next read
    brings everything that came meanwhile. It never pauses in the middle of an event, nor after
    taking in a lot at once (the socket may hold more), nor on a quiet stream (a heartbeat).

    Whether a chunk came from the socket or from what httpx had already read is told by a
    callback queued before asking for it: it runs only if the event loop went round, which
    reading the socket does and taking a buffered chunk does not. On a quiet stream there is
    nothing to tell: the next chunk comes from the socket, and no pause follows it.
    """

    BUSY_S = 1.0  # a read this soon after the previous one means the stream is busy
    MUCH_BYTES = 64 * 1024  # httpx's read size: more may be waiting

    def __init__(self, pause_s: float, sleep: Sleep) -> None:
        self._pause_s = pause_s
        self._sleep = sleep
        self._loop = asyncio.get_running_loop()
        self._last_read = float("-inf")
        self._went_round = False
        self._bytes = 0  # since the last read from the socket

    def reading(self) -> None:
        quiet = self._loop.time() - self._last_read >= self.BUSY_S
        self._went_round = quiet
        if not quiet:
            self._loop.call_soon(self._round)

    def _round(self) -> None:
        self._went_round = True

    async def read(self, size: int) -> None:
        """A chunk of `size` bytes was handled (and no event is cut in half)."""
        self._bytes += size
        if not self._went_round:
            return
        now = self._loop.time()
        busy = now - self._last_read < self.BUSY_S
        much, self._bytes = self._bytes >= self.MUCH_BYTES, 0
        self._last_read = now
        if busy and not much:
            await self._sleep(self._pause_s)


class _Watchdog:
    """Cancels the task in it when no frame arrived for `seconds` while it was waiting for one.

    A frame only notes the time (no timer per frame): one timer runs per quiet period and, when
    due, either fires or re-arms for the time left. Time spent handling a frame is not waiting.
    """

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._loop = asyncio.get_running_loop()
        self._timeout = asyncio.timeout(None)
        self._last = self._loop.time()
        self._handling = False
        self._timer: asyncio.TimerHandle | None = None

    async def __aenter__(self) -> _Watchdog:
        await self._timeout.__aenter__()
        self._timer = self._loop.call_at(self._last + self._seconds, self._check)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._timer is not None:
            self._timer.cancel()
        await self._timeout.__aexit__(exc_type, exc, tb)

    def handling(self, busy: bool) -> None:
        self._handling = busy
        self._last = self._loop.time()

    def _check(self) -> None:
        now = self._loop.time()
        due = self._last + self._seconds
        if self._handling:
            self._timer = self._loop.call_at(now + self._seconds, self._check)
        elif now < due:
            self._timer = self._loop.call_at(due, self._check)
        else:
            self._timer = None
            self._timeout.reschedule(now)  # the `async with` ends with TimeoutError


EventHandler = Callable[[Event], Awaitable[None]]
ReconnectHandler = Callable[[], Awaitable[None]]


class EventStream:
    """Keeps one event stream to a server alive and hands every event to `on_event`.

    * Reconnects after any failure or end of stream, waiting `backoff[n]` for the n-th
      consecutive failure (the last value repeats); a connection that delivered a frame resets n.
    * Watchdog: `watchdog_s` without any frame (heartbeats come every 10 s) counts as a dead
      connection and forces a reconnect.
    * While frames stream in, the socket is read at most every `read_pause_s` (`_ReadPacer`).
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
        read_pause_s: float = DEFAULT_READ_PAUSE_S,
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
        self._read_pause_s = read_pause_s
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
        frames = iter_frames(
            self._client,
            path=self._path,
            connect_timeout=self._connect_timeout,
            read_pause_s=self._read_pause_s,
            sleep=self._sleep,
        )
        try:
            async with _Watchdog(self._watchdog_s) as watchdog:
                async for event in frames:
                    watchdog.handling(True)
                    await self._on_frame(event)
                    watchdog.handling(False)
            return "stream closed by the server"
        except TimeoutError:
            return f"no frame for {self._watchdog_s:g}s (watchdog)"
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
