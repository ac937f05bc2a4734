"""A TCP proxy that can be paused, stall only event streams, or cut the line.

* `pause()`: connections stay open but no byte is forwarded either way. That is what a stuck
  event stream looks like from the client (no frame, no error), so it lets a test prove the
  watchdog.
* `pause_streams()`: the same, but only for connections that carry an OpenCode event stream
  (`GET /global/event` or `GET /event`); prompts and every other request still flow.
* `cut()`: an outage. Open connections are closed and new ones are closed as soon as they are
  accepted, so a client's calls fail at once with a connection error (the Bot API unreachable)
  until `restore()`.

`PausableProxy.open(target_port)` can be called outside a coroutine's await (e.g. in a patched
client factory): the listening socket is bound at once, the server starts serving on the
running loop right after.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass, field

CHUNK = 65536
STREAM_REQUESTS = (b"GET /global/event", b"GET /event")


@dataclass(eq=False)
class _Link:
    """One proxied connection: both writers, and whether it carries an event stream."""

    writers: tuple[asyncio.StreamWriter, asyncio.StreamWriter]
    stream: bool = False
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class PausableProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.setblocking(False)
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._streams_flowing = asyncio.Event()
        self._streams_flowing.set()
        self._cut = False
        self._links: set[_Link] = set()
        self._server: asyncio.Server | None = None
        self._starting = asyncio.ensure_future(self._serve())

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def is_cut(self) -> bool:
        return self._cut

    def pause(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def pause_streams(self) -> None:
        self._streams_flowing.clear()

    def resume_streams(self) -> None:
        self._streams_flowing.set()

    def cut(self) -> None:
        self._cut = True
        for link in list(self._links):
            self._close(link)

    def restore(self) -> None:
        self._cut = False

    async def _serve(self) -> None:
        self._server = await asyncio.start_server(self._handle, sock=self._sock)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        link = _Link((writer, up_writer))
        self._links.add(link)
        for source, sink, upstream in ((reader, up_writer, True), (up_reader, writer, False)):
            task = asyncio.create_task(self._pipe(link, source, sink, upstream=upstream))
            link.tasks.add(task)
            task.add_done_callback(link.tasks.discard)

    async def _pipe(
        self,
        link: _Link,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        *,
        upstream: bool,
    ) -> None:
        try:
            while data := await source.read(CHUNK):
                if upstream and data.startswith(STREAM_REQUESTS):
                    link.stream = True
                await self._flowing.wait()
                if link.stream:
                    await self._streams_flowing.wait()
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass  # either side went away: close both below
        finally:
            self._close(link)

    def _close(self, link: _Link) -> None:
        self._links.discard(link)
        for writer in link.writers:
            writer.close()

    async def stop(self) -> None:
        await self._starting
        if self._server is not None:
            self._server.close()
        tasks = [task for link in self._links for task in link.tasks]
        for link in list(self._links):
            self._close(link)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(OSError):
            self._sock.close()
