"""The glance views in a benchmark run: topic icons and the board, over the run's Outbox.

The turns report their state as core would (running at the prompt, done at the final); the
service messages the icon edits and the pin leave are deleted as the bot does on their update
(the benchmark polls the fake for them instead of taking updates).
"""

from __future__ import annotations

import asyncio
import contextlib

from tests.rig.fake_telegram import FakeTelegram

from oc_outpost.core.topic_states import TopicState, TopicStatus
from oc_outpost.telegram.board import Board, ServerCounts
from oc_outpost.telegram.outbox import Clock, Outbox
from oc_outpost.telegram.service_cleanup import ServiceCleanup
from oc_outpost.telegram.topic_icons import TopicIcons

SERVICE_POLL_S = 0.5  # Telegram seconds between looks for new service messages


class MemoryPlace:
    def __init__(self) -> None:
        self._message_id: int | None = None

    async def message_id(self) -> int | None:
        return self._message_id

    async def set_message_id(self, message_id: int | None) -> None:
        self._message_id = message_id


class Glance:
    def __init__(self, fake: FakeTelegram, outbox: Outbox, chat_id: int, clock: Clock) -> None:
        self._fake = fake
        self._clock = clock
        self._statuses: dict[int, TopicStatus] = {}
        self.settle_s = 3.0  # as the bot's default
        self.icons = TopicIcons(outbox, chat_id, settle_s=self.settle_s, sleep=clock.sleep)
        self.board = Board(
            outbox,
            chat_id,
            MemoryPlace(),
            lambda: list(self._statuses.values()),
            self._servers,
            clock=clock.now,
            sleep=clock.sleep,
        )
        self._cleanup = ServiceCleanup(outbox, chat_id)
        self._seen: set[int] = set()
        self._watcher: asyncio.Task[None] | None = None
        self._deletes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self.board.start()
        self._watcher = asyncio.create_task(self._watch_service_messages())

    async def stop(self) -> None:
        await self.board.stop()
        await self.icons.stop()
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await asyncio.gather(*self._deletes, return_exceptions=True)

    def report(self, topic: int, state: TopicState) -> None:
        running = self._clock.now() if state == TopicState.RUNNING else None
        status = TopicStatus(topic, f"project-{topic}", state, running_since=running)
        self._statuses[topic] = status
        self.icons.show_topic_state(status)
        self.board.show_topic_state(status)

    async def _servers(self) -> ServerCounts:
        return ServerCounts(running=len(self._statuses), asleep=0)

    async def _watch_service_messages(self) -> None:
        while True:
            await self._clock.sleep(SERVICE_POLL_S)
            for message in self._fake.messages(include_service=True, include_deleted=False):
                edit = message.service and (
                    "forum_topic_edited" in message.service or "pinned_message" in message.service
                )
                if edit and message.from_bot and message.message_id not in self._seen:
                    self._seen.add(message.message_id)
                    task = asyncio.create_task(self._cleanup.delete(message.message_id))
                    self._deletes.add(task)
                    task.add_done_callback(self._deletes.discard)
