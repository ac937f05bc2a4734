"""Sessions whose turn just ended: the tracker reports them, the held messages wait for them."""

from __future__ import annotations

import asyncio


class TurnEnds:
    def __init__(self) -> None:
        self._queue: asyncio.Queue[str] = asyncio.Queue()

    def ended(self, session_id: str) -> None:
        self._queue.put_nowait(session_id)

    async def next(self) -> str:
        return await self._queue.get()
