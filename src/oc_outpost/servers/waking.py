"""Waking a stopped server for a message: transparent, with a notice when it takes a while."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

WAKE_NOTICE_AFTER_S = 3.0

T = TypeVar("T")


async def with_notice(
    work: Awaitable[T],
    notice: Callable[[], Awaitable[None]],
    *,
    after_s: float = WAKE_NOTICE_AFTER_S,
) -> T:
    """Await `work`; if it is not done within `after_s`, send `notice` once meanwhile."""
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait({task}, timeout=after_s)
        if not done:
            await notice()
        return await task
    finally:
        if not task.done():
            task.cancel()
