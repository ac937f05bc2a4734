"""The SSE decoder of opencode/stream.py, and the stream watchdog around a slow handler."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
from hypothesis import given
from hypothesis import strategies as st

from oc_outpost.opencode import events as ev
from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.opencode.stream import EventStream, SSEDecoder


def decode(*chunks: bytes) -> list[bytes]:
    decoder = SSEDecoder()
    return [data for chunk in chunks for data in decoder.feed(chunk)]


def test_one_data_line_per_event() -> None:
    assert decode(b'data: {"a":1}\n\ndata: {"b":2}\n\n') == [b'{"a":1}', b'{"b":2}']


def test_an_event_is_only_complete_at_its_blank_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: par") == []
    assert decoder.feed(b"tial\n") == []
    assert decoder.feed(b"\n") == [b"partial"]


def test_crlf_and_cr_line_ends_also_when_split_between_chunks() -> None:
    assert decode(b"data: a\r\n\r\ndata: b\r\r") == [b"a", b"b"]
    assert decode(b"data: a\r", b"\n\r", b"\ndata: b\n\n") == [b"a", b"b"]
    assert decode(b"data: a\r", b"", b"\ndata: b\n\n") == [b"a\nb"]  # one CRLF, not two ends


def test_multi_line_data_comments_other_fields_and_empty_events() -> None:
    stream = (
        b": keep-alive comment\n\n"
        b"event: message\nid: 7\nretry: 1000\ndata: first\ndata:second\n\n"
        b"id: 8\n\n"
        b"data\n\n"
    )
    assert decode(stream) == [b"first\nsecond"]


def test_a_byte_order_mark_at_the_start_is_dropped() -> None:
    assert decode(b"\xef\xbb\xbfdata: x\n\n") == [b"x"]


@given(st.lists(st.integers(0, 80), max_size=6))
def test_any_split_of_the_bytes_gives_the_same_events(cuts: list[int]) -> None:
    stream = b"data: one\r\n\r\n: c\ndata: two\ndata: 2\n\ndata: three\r\rdata: four\n\n"
    pieces, last = [], 0
    for cut in sorted(min(c, len(stream)) for c in cuts):
        pieces.append(stream[last:cut])
        last = cut
    pieces.append(stream[last:])
    assert decode(*pieces) == [b"one", b"two\n2", b"three", b"four"]


async def test_a_slow_handler_is_no_silence_for_the_watchdog() -> None:
    """Handling a frame (e.g. waiting for Telegram) is not time without frames."""
    connections = 0
    frame = {"payload": {"type": "session.idle", "properties": {"sessionID": "ses_1"}}}

    async def body() -> AsyncIterator[bytes]:
        yield f"data: {json.dumps(frame)}\n\n".encode()
        await asyncio.Event().wait()
        yield b""

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal connections
        connections += 1
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())

    handled = asyncio.Event()

    async def slow(event: ev.Event) -> None:
        await asyncio.sleep(0.3)  # six watchdog periods
        handled.set()

    client = OpenCodeClient("http://opencode.test", transport=httpx.MockTransport(handler))
    stream = EventStream(client, slow, watchdog_s=0.05)
    stream.start()
    try:
        async with asyncio.timeout(5):
            await handled.wait()
        assert connections == 1
        assert stream.last_error is None
    finally:
        await stream.stop()
        await client.aclose()


async def test_a_busy_stream_is_read_in_batches_not_frame_by_frame() -> None:
    """Over a real socket: 100 frames 2 ms apart come in a handful of reads, all in order."""
    frames = 100

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        for index in range(frames):
            payload = {"type": "session.idle", "properties": {"sessionID": f"ses_{index}"}}
            frame = f"data: {json.dumps({'payload': payload})}\n\n".encode()
            writer.write(b"%x\r\n%b\r\n" % (len(frame), frame))
            await writer.drain()
            await asyncio.sleep(0.002)
        await reader.read()  # until the client goes away
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pauses: list[float] = []
    received: list[str] = []
    done = asyncio.Event()

    async def pause(seconds: float) -> None:
        pauses.append(seconds)
        await asyncio.sleep(seconds)

    async def collect(event: ev.Event) -> None:
        assert isinstance(event, ev.SessionIdle)
        received.append(event.session_id)
        if len(received) == frames:
            done.set()

    client = OpenCodeClient(f"http://127.0.0.1:{port}")
    stream = EventStream(client, collect, read_pause_s=0.05, sleep=pause)
    stream.start()
    try:
        async with asyncio.timeout(10):
            await done.wait()
    finally:
        await stream.stop()
        await client.aclose()
        server.close()
    assert received == [f"ses_{index}" for index in range(frames)]
    # ~0.2 s of frames: a pause after each socket read, each read bringing ~25 frames.
    assert 1 <= len(pauses) <= 10
    assert set(pauses) == {0.05}
