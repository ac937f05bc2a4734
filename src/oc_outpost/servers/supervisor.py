"""Supervision of the managed servers: one task, every `health_interval_s`.

A process that exited, or that failed `unhealthy_after` health checks in a row over at least
`hung_after_s`, is restarted with backoff (1, 2, 4, 8, 16 s), then left in error state. A server
without activity for `idle_timeout_s` is stopped unless it is busy (core is asked through the
listener, OpenCode through its session status and pending permissions/questions).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from oc_outpost.opencode.errors import OpenCodeError
from oc_outpost.servers.errors import InstanceError
from oc_outpost.servers.manager import InstanceManager
from oc_outpost.servers.slots import Slot

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


class Supervisor:
    def __init__(
        self,
        manager: InstanceManager,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._manager = manager
        self._config = manager.config
        self._clock = clock
        self._sleep = sleep
        self._loop: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._loop = asyncio.create_task(self._supervise(), name="opencode-supervisor")

    async def stop(self) -> None:
        """Stop health checks, idle stops and pending restarts (first step of shutdown)."""
        tasks = [t for t in (self._loop, *self._tasks) if t is not None]
        self._loop = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def settle(self) -> None:
        """Wait for the restarts under way (tests)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def _supervise(self) -> None:
        while True:
            await self._sleep(self._config.health_interval_s)
            await self.check_now()

    async def check_now(self) -> None:
        """One round of health and idle checks over every managed server."""
        for slot in self._manager.slots():
            try:
                await self._check(slot)
            except Exception:
                log.exception("supervising OpenCode %s for %s failed", slot.info.id, slot.cwd)

    async def _check(self, slot: Slot) -> None:
        server, client = slot.server, slot.client
        if server is None or client is None or slot.lock.locked():
            return
        if not server.is_alive():
            await self._crashed(slot, f"the process exited with code {server.returncode}")
            return
        try:
            if not client.answered_within(self._config.health_interval_s):  # else: alive
                await client.health()
        except OpenCodeError as exc:
            await self._health_failed(slot, exc)
            return
        slot.health_failures, slot.failing_since = 0, None
        await self._stop_if_idle(slot)

    async def _health_failed(self, slot: Slot, exc: OpenCodeError) -> None:
        """Hung = `unhealthy_after` failed checks in a row spanning `hung_after_s`: a slow
        answer now and then (a busy machine) is not a crash."""
        now = self._clock()
        slot.health_failures += 1
        if slot.failing_since is None:
            slot.failing_since = now
        log.warning(
            "OpenCode %s failed health check %d/%d: %s",
            slot.info.id, slot.health_failures, self._config.unhealthy_after, exc,
        )  # fmt: skip
        failing_for = now - slot.failing_since
        if (
            slot.health_failures >= self._config.unhealthy_after
            and failing_for >= self._config.hung_after_s
        ):
            await self._crashed(slot, f"it stopped answering health checks ({exc})")

    async def _stop_if_idle(self, slot: Slot) -> None:
        if self._idle_for(slot) < self._config.idle_timeout_s:
            return
        if await self._manager.is_busy(slot):
            slot.last_active = self._clock()  # working, just quietly: that is activity
            return
        if slot.lock.locked():
            return
        async with slot.lock:
            idle_for = self._idle_for(slot)
            if slot.server is not None and idle_for >= self._config.idle_timeout_s:
                await self._manager.stop_slot(slot, f"idle for {idle_for:.0f} s")

    def _idle_for(self, slot: Slot) -> float:
        return self._clock() - self._manager.last_active(slot)

    async def _crashed(self, slot: Slot, reason: str) -> None:
        await self._manager.mark_down(slot, reason)
        slot.recovery = self._spawn(self._recover(slot, reason))

    async def _recover(self, slot: Slot, reason: str) -> None:
        last_error = reason
        attempts = len(self._config.restart_backoff_s)
        for attempt, delay in enumerate(self._config.restart_backoff_s, start=1):
            await self._sleep(delay)
            async with slot.lock:
                if slot.alive():
                    return  # woken by a message meanwhile
                try:
                    await self._manager.admit(slot)
                except InstanceError as exc:
                    last_error = str(exc)
                    log.warning(
                        "restart %d/%d of %s failed: %s", attempt, attempts, slot.info.id, exc
                    )
                    continue
                slot.crashed = False
            log.info("OpenCode %s restarted (attempt %d)", slot.info.id, attempt)
            await self._manager.announce_up(slot)
            return
        await self._manager.mark_failed(
            slot, f"{attempts} restart attempts failed; last error: {last_error}"
        )

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("restarting an OpenCode server failed", exc_info=task.exception())
