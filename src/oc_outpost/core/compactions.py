"""Compactions OpenCode reports (`session.compacted`). A `/compact` waits for its own before it
confirms; any other one (OpenCode compacts by itself when a context overflows) is told in the
topic, since the agent then works from a summary."""

from __future__ import annotations

import asyncio


class Compactions:
    def __init__(self) -> None:
        self._expected: dict[str, asyncio.Future[None]] = {}
        self._unasked: asyncio.Queue[str] = asyncio.Queue()

    def expect(self, session_id: str) -> asyncio.Future[None]:
        """Done once the session's next compaction is reported; `forget` it when given up."""
        future = self._expected.get(session_id)
        if future is None or future.done():
            future = self._expected[session_id] = asyncio.get_running_loop().create_future()
        return future

    def forget(self, session_id: str) -> None:
        self._expected.pop(session_id, None)

    def compacted(self, session_id: str) -> None:
        future = self._expected.get(session_id)
        if future is not None and not future.done():
            future.set_result(None)
        else:
            self._unasked.put_nowait(session_id)

    async def next_unasked(self) -> str:
        return await self._unasked.get()
