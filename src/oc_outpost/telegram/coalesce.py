"""Messages that belong together become one prompt.

Telegram delivers an album as one message per picture (sharing a media_group_id, the caption on
one of them) and a pasted text over 4096 characters as several messages; people also send a
thought in two quick messages. Messages from one person in one topic that arrive within
`window_s` of each other are therefore collected and sent as one prompt, in message order:
texts joined by a blank line, attachments together. A message's piece may still be downloading
when the next one arrives; the window counts from arrivals, not from finished downloads.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from oc_outpost.core.chat import Attachment

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class Piece:
    """What one message contributes to a prompt."""

    text: str
    attachments: tuple[Attachment, ...] = ()
    message_ids: tuple[int, ...] = ()  # the Telegram messages it came from
    sent_at: float | None = None  # epoch s: when the person sent the (first) message


def joined(pieces: Sequence[Piece]) -> Piece:
    texts = [p.text for p in pieces if p.text.strip()]
    times = [p.sent_at for p in pieces if p.sent_at is not None]
    return Piece(
        "\n\n".join(texts),
        tuple(a for p in pieces for a in p.attachments),
        tuple(i for p in pieces for i in p.message_ids),
        min(times, default=None),
    )


@dataclass(frozen=True)
class CoalesceConfig:
    window_s: float = 1.0  # quiet time after the last message that closes a prompt
    max_wait_s: float = 10.0  # a prompt is sent after this long even if messages keep coming


Deliver = Callable[[int, Piece], Awaitable[None]]


@dataclass
class _Batch:
    topic_id: int
    opened: float
    last: float
    pieces: list[tuple[int, asyncio.Future[Piece | None]]] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Coalescer:
    def __init__(
        self,
        deliver: Deliver,
        config: CoalesceConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._deliver = deliver
        self._config = config or CoalesceConfig()
        self._clock = clock
        self._sleep = sleep
        self._open: dict[tuple[int, int], _Batch] = {}

    async def add(
        self, topic_id: int, sender_id: int, order: int, piece: Awaitable[Piece | None]
    ) -> None:
        """Add one message (``order``: its message id) and return once the prompt it is part
        of was delivered. A piece of None (e.g. a refused file) adds nothing."""
        future = asyncio.ensure_future(piece)
        key = (topic_id, sender_id)
        batch = self._open.get(key)
        if batch is not None:
            batch.pieces.append((order, future))
            batch.last = self._clock()
            await batch.done.wait()
            return
        now = self._clock()
        batch = _Batch(topic_id, now, now, [(order, future)])
        self._open[key] = batch
        try:
            try:
                await self._until_quiet(batch)
            finally:
                if self._open.get(key) is batch:
                    del self._open[key]
            await self._flush(batch)
        finally:
            batch.done.set()  # the followers never wait for a leader that is gone

    async def _until_quiet(self, batch: _Batch) -> None:
        while True:
            now = self._clock()
            closes = min(batch.last + self._config.window_s, batch.opened + self._config.max_wait_s)
            if now >= closes:
                return
            await self._sleep(closes - now)

    async def _flush(self, batch: _Batch) -> None:
        ordered = [future for _, future in sorted(batch.pieces, key=lambda item: item[0])]
        try:
            results = await asyncio.gather(*ordered, return_exceptions=True)
        finally:
            for future in ordered:
                future.cancel()  # only if still running (the leader was cancelled)
        pieces = [r for r in results if isinstance(r, Piece)]
        if pieces:
            prompt = joined(pieces)
            if prompt.text or prompt.attachments:
                await self._deliver(batch.topic_id, prompt)
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            raise failure


async def ready(piece: Piece) -> Piece:
    """A piece that needs no download."""
    return piece
