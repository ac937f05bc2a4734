"""Bot CPU per OpenCode event: a recorded turn, scaled up, through the bot's event path.

    uv run python bench/event_bench.py                          # 100,000 events, 5 runs, tcp
    uv run python bench/event_bench.py --transport mock --events 20000 --runs 3

The turn (bench/recorded_turn.py) is a recorded OpenCode 1.18.33 turn whose text deltas are
repeated until it has `--events` frames. The path is the product's:

* an `EventStream` (opencode/stream.py) reads it as SSE from `/global/event`, through httpx and
  the SSE and event parsers. `--transport tcp` (the default): from bench/sse_server.py, a
  separate process serving it over a local TCP connection, one HTTP chunk per frame, paced so
  that a read brings about one frame, as when OpenCode streams an answer. `--transport mock`:
  from an httpx MockTransport in this process, one chunk per frame with a pass through the event
  loop between chunks (no sockets, no HTTP parsing, so no read pause: `_ReadPacer` lets frames
  gather in a socket, and here each chunk would only wait);
* `TurnTracker.on_event` (core/tracker.py) folds each event into the turn's snapshot;
* `TelegramChat` (telegram/view.py) over the real `Outbox`, on a Bot that accepts every call at
  once. Telegram's limits stay as they are for progress edits; the per-chat gap, the group minute
  and the per-second budget are lifted so that the final answer's many parts do not wait (that
  is wall time, not CPU).

When the session goes idle, `GET /session/{id}/message` returns the text that was streamed, so
the final answer is as long as the stream made it. Printed: the bench process's CPU time
(`time.process_time`) from connecting until the final answer is delivered, per event; the part
until the session went idle (streaming) and the rest (final delivery); medians over the runs;
and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
from telegram import Bot

sys.path.insert(0, str(Path(__file__).resolve().parent))

from recorded_turn import Turn, scaled_turn

from oc_outpost.core.bindings import Bindings
from oc_outpost.core.chat import GoneTopics
from oc_outpost.core.journal import TurnJournal
from oc_outpost.core.tracker import TurnTracker
from oc_outpost.opencode import events as ev
from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.opencode.stream import DEFAULT_READ_PAUSE_S, EventStream
from oc_outpost.store.active_turns import ActiveTurnStore
from oc_outpost.store.db import Database
from oc_outpost.store.migrations import TOPIC_MIGRATIONS
from oc_outpost.store.topics import TopicStore
from oc_outpost.telegram.outbox import Limits, Outbox
from oc_outpost.telegram.view import TelegramChat

CHAT_ID = -1001234567890
TOPIC_ID = 7
SSE_HEADERS = {"content-type": "text/event-stream"}
DONE_TIMEOUT_S = 600.0
WARM_UP_EVENTS = 2_000


class AcceptingBot:
    """Answers every Bot API call at once; notes when the final answer's last part arrived."""

    def __init__(self, final_tail: str) -> None:
        self.edits = 0
        self.final_delivered = asyncio.Event()
        self._final_tail = final_tail
        self._ids = iter(range(100, 10**9))

    async def send_message(self, chat_id: int, text: str, **kwargs: Any) -> Any:
        # the progress message (which also shows the answer's tail) has the Stop button
        if kwargs.get("reply_markup") is None and text.endswith(self._final_tail):
            self.final_delivered.set()
        return SimpleNamespace(message_id=next(self._ids))

    async def edit_message_text(self, text: str, **_: Any) -> Any:
        self.edits += 1
        return True

    async def edit_forum_topic(self, *_: Any, **__: Any) -> Any:
        return True


def mock_transport(turn: Turn) -> httpx.MockTransport:
    async def body() -> AsyncIterator[bytes]:
        for frame in turn.frames:
            yield frame
            await asyncio.sleep(0)
        await asyncio.Event().wait()  # stay connected, like the server

    async def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/global/event":
            return httpx.Response(200, headers=SSE_HEADERS, content=body())
        if path == f"/session/{turn.session_id}/message":
            return httpx.Response(200, json=turn.messages)
        if path == f"/session/{turn.session_id}":
            return httpx.Response(200, json=turn.session)
        return httpx.Response(404, json={"name": "NotFoundError", "data": {}})

    return httpx.MockTransport(handler)


@contextmanager
def sse_server(events: int, interval_us: float) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = Path(__file__).resolve().parent / "sse_server.py"
    command = [sys.executable, str(script), "--port", str(port), "--events", str(events)]
    command += ["--interval-us", str(interval_us)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            raise RuntimeError("the SSE server did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.kill()
        server.wait()


@dataclass(frozen=True)
class RunResult:
    events: int
    stream_cpu_s: float
    final_cpu_s: float
    wall_s: float
    edits: int


async def run_once(
    turn: Turn, client: OpenCodeClient, scratch: Path, read_pause_s: float
) -> RunResult:
    bot = AcceptingBot(turn.answer.strip()[-40:])
    limits = Limits(per_chat_interval_s=0.0, group_per_minute=10**6, global_per_second=10**6)
    outbox = Outbox(cast(Bot, bot), limits)
    idle_cpu: list[float] = []
    async with await Database.open(scratch / "topics.db", TOPIC_MIGRATIONS) as db:
        journal = TurnJournal(ActiveTurnStore(db))
        chat = TelegramChat(outbox, CHAT_ID, GoneTopics(), journal)
        bindings = Bindings(TopicStore(db), CHAT_ID)
        await bindings.bind(TOPIC_ID, Path("/projects/demo4"), turn.session_id, "inst_bench")
        router = TurnTracker(chat, bindings, journal)

        async def on_event(event: ev.Event) -> None:
            if _went_idle(event) and not idle_cpu:
                idle_cpu.append(time.process_time())
            await router.on_event(client, event)

        stream = EventStream(client, on_event, read_pause_s=read_pause_s)
        outbox.start()
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        stream.start()
        await asyncio.wait_for(bot.final_delivered.wait(), DONE_TIMEOUT_S)
        await router.stop()
        done_cpu, done_wall = time.process_time(), time.perf_counter()
        await stream.stop()
        await outbox.close()
    return RunResult(
        len(turn.frames), idle_cpu[0] - cpu, done_cpu - idle_cpu[0], done_wall - wall, bot.edits
    )


def _went_idle(event: ev.Event) -> bool:
    if isinstance(event, ev.SessionStatusChanged):
        return event.status.type == "idle"
    return isinstance(event, ev.SessionIdle)


def report(results: list[RunResult], turn: Turn, transport: str) -> None:
    events = results[0].events
    stream = statistics.median(r.stream_cpu_s for r in results)
    final = statistics.median(r.final_cpu_s for r in results)
    total = statistics.median(r.stream_cpu_s + r.final_cpu_s for r in results)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    per_run = ", ".join(f"{(r.stream_cpu_s + r.final_cpu_s) / events * 1e6:.1f}" for r in results)
    print(f"transport:           {transport}")
    print(f"events per run:      {events:,} ({turn.deltas:,} text deltas)")
    print(f"CPU per event:       {total / events * 1e6:6.1f} µs  (median of {len(results)} runs)")
    print(f"  streaming:         {stream / events * 1e6:6.1f} µs")
    print(f"  final delivery:    {final * 1e3:6.1f} ms in all ({len(turn.answer):,} characters)")
    print(f"CPU per event, runs: {per_run} µs")
    print(f"wall per run:        {', '.join(f'{r.wall_s:.1f}' for r in results)} s")
    print(f"progress edits:      {', '.join(str(r.edits) for r in results)}")
    print(f"peak RSS:            {peak_mb:6.1f} MB")


async def main(
    events: int, runs: int, transport: str, interval_us: float, read_pause_s: float
) -> None:
    await warm_up()
    turn = scaled_turn(events)
    if transport == "mock":
        read_pause_s = 0.0  # no socket to let frames gather in: each chunk would only wait
    results = []
    with opencode_url(transport, events, interval_us) as base_url:
        for _ in range(runs):
            mock = mock_transport(turn) if transport == "mock" else None
            async with OpenCodeClient(base_url, transport=mock) as client:
                with tempfile.TemporaryDirectory(prefix="oc-event-bench-") as tmp:
                    results.append(await run_once(turn, client, Path(tmp), read_pause_s))
    report(results, turn, transport)


async def warm_up() -> None:
    """One small unmeasured run first: imports, compiled patterns and caches that the bot sets
    up once are not costs of the events."""
    turn = scaled_turn(WARM_UP_EVENTS)
    async with OpenCodeClient("http://opencode.bench", transport=mock_transport(turn)) as client:
        with tempfile.TemporaryDirectory(prefix="oc-event-bench-") as tmp:
            await run_once(turn, client, Path(tmp), read_pause_s=0.0)


@contextmanager
def opencode_url(transport: str, events: int, interval_us: float) -> Iterator[str]:
    if transport == "mock":
        yield "http://opencode.bench"
        return
    with sse_server(events, interval_us) as base_url:
        yield base_url


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--transport", choices=("tcp", "mock"), default="tcp")
    parser.add_argument(
        "--interval-us", type=float, default=500.0, help="tcp: pause after each frame"
    )
    parser.add_argument(
        "--read-pause-s",
        type=float,
        default=DEFAULT_READ_PAUSE_S,
        help="the EventStream's read pause (0: read every frame as it comes)",
    )
    a = parser.parse_args()
    asyncio.run(main(a.events, a.runs, a.transport, a.interval_us, a.read_pause_s))
