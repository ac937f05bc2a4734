"""The wake-up notice: a slow start of a server is announced once, a quick one is not."""

from __future__ import annotations

import asyncio

import pytest

from oc_outpost.servers.waking import with_notice


async def test_a_slow_wake_up_is_announced_once_and_still_returns() -> None:
    notices: list[str] = []

    async def notice() -> None:
        notices.append("waking")

    async def slow_start() -> str:
        await asyncio.sleep(0.1)
        return "running"

    assert await with_notice(slow_start(), notice, after_s=0.02) == "running"
    assert notices == ["waking"]


async def test_a_quick_wake_up_is_not_announced() -> None:
    notices: list[str] = []

    async def notice() -> None:
        notices.append("waking")

    async def quick_start() -> str:
        return "running"

    assert await with_notice(quick_start(), notice, after_s=1.0) == "running"
    assert notices == []


async def test_a_failed_wake_up_raises_its_error() -> None:
    async def failing_start() -> str:
        raise RuntimeError("no server")

    async def notice() -> None:
        raise AssertionError("not slow, must not be announced")

    with pytest.raises(RuntimeError, match="no server"):
        await with_notice(failing_start(), notice, after_s=1.0)
