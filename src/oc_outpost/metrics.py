"""What the bot counts, exposed as Prometheus text on `GET /metrics`.

A leaf module: it imports nothing of ours, so every layer may be handed a `Metrics` by
constructor. Each instance has its own registry (never the process-global one), so two bots in
one process, or two tests, never see each other's numbers.

Servers by kind and state are not counted as they change: they are asked for at scrape time
through the `servers` callable the composition root passes in.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import generate_latest

# (kind, state) -> how many servers; asked for on every scrape.
ServerCounts = Callable[[], Awaitable[Mapping[tuple[str, str], int]]]

CONTENT_TYPE = CONTENT_TYPE_LATEST


async def _no_servers() -> Mapping[tuple[str, str], int]:
    return {}


class Metrics:
    def __init__(self, *, servers: ServerCounts = _no_servers) -> None:
        self._servers = servers
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._turns_started = Counter(
            "oc_outpost_turns_started",
            "Turns begun (a prompt sent or a session gone busy)",
            registry=r,
        )
        self._turns_finished = Counter(
            "oc_outpost_turns_finished",
            "Turns that ended with an answer (done or stopped)",
            registry=r,
        )
        self._turns_failed = Counter(
            "oc_outpost_turns_failed", "Turns that ended with an error", registry=r
        )
        self._finals = Counter(
            "oc_outpost_finals_delivered",
            "Final answers whose every part Telegram accepted",
            registry=r,
        )
        self._bot_calls = Counter(
            "oc_outpost_bot_api_calls", "Bot API calls made, by method", ["method"], registry=r
        )
        self._bot_429 = Counter(
            "oc_outpost_bot_api_retry_after",
            "Bot API calls refused with 429 (retry after), by method",
            ["method"],
            registry=r,
        )
        self._queue = Gauge(
            "oc_outpost_outbox_queue_depth",
            "Bot API calls waiting in the Outbox, by priority",
            ["priority"],
            registry=r,
        )
        self._server_gauge = Gauge(
            "oc_outpost_servers",
            "OpenCode servers known to the bot, by kind and state",
            ["kind", "state"],
            registry=r,
        )
        self._reconnects = Counter(
            "oc_outpost_event_stream_reconnects",
            "OpenCode event streams that came back after a drop",
            registry=r,
        )

    # --- turns ---------------------------------------------------------------------------------

    def turn_started(self) -> None:
        self._turns_started.inc()

    def turn_ended(self, *, failed: bool) -> None:
        (self._turns_failed if failed else self._turns_finished).inc()

    def final_delivered(self) -> None:
        self._finals.inc()

    # --- Telegram ------------------------------------------------------------------------------

    def bot_api_call(self, method: str) -> None:
        self._bot_calls.labels(method=method).inc()

    def bot_api_retry_after(self, method: str) -> None:
        self._bot_429.labels(method=method).inc()

    def watch_queue_depth(self, priority: str, depth: Callable[[], int]) -> None:
        """Read ``depth()`` for the queue of ``priority`` at every scrape."""
        self._queue.labels(priority=priority).set_function(depth)

    # --- OpenCode ------------------------------------------------------------------------------

    def stream_reconnected(self) -> None:
        self._reconnects.inc()

    # --- exposition ----------------------------------------------------------------------------

    async def render(self) -> bytes:
        """The Prometheus text of everything, servers counted now."""
        counts = await self._servers()
        self._server_gauge.clear()
        for (kind, state), count in counts.items():
            self._server_gauge.labels(kind=kind, state=state).set(count)
        return generate_latest(self.registry)
