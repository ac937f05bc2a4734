"""Updates handled exactly once: the UpdatePoller with the real PTB client on the fake Bot API
and the inbox in a real SQLite database. A "kill" here cancels the poller's tasks without any
shutdown, as kill -9 would stop them (the end-to-end drill kills a real bot process)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
import telegram
from telegram import Update

from oc_outpost.model import ReceivedUpdate
from oc_outpost.store.db import Database
from oc_outpost.store.migrations import TOPIC_MIGRATIONS
from oc_outpost.store.update_inbox import UpdateInbox
from oc_outpost.telegram.polling import ALLOWED_UPDATES, PollingConfig, UpdatePoller
from tests.rig.fake_telegram import FakeTelegram
from tests.rig.telegram_fixtures import ALLOWED_USER_ID

QUICK = PollingConfig(timeout_s=1, first_retry_s=0.01, max_retry_s=0.05)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(tmp_path / "topics.db", TOPIC_MIGRATIONS)
    try:
        yield database
    finally:
        await database.close()


class Recorder:
    """The handling side: records each update's text; can hold updates back."""

    def __init__(self) -> None:
        self.handled: list[str] = []
        self.started: list[str] = []
        self.hold: set[str] = set()
        self.release = asyncio.Event()

    async def __call__(self, update: Update) -> None:
        text = update.message.text if update.message and update.message.text else "?"
        self.started.append(text)
        if text in self.hold:
            await self.release.wait()
        self.handled.append(text)


def kill(poller: UpdatePoller) -> None:
    """Stop every task of the poller where it is, with no cleanup (as kill -9 would)."""
    tasks = [poller._loop, *poller._inflight.values()]  # private: a crash has no API
    for task in tasks:
        if task is not None:
            task.cancel()


async def test_an_update_acknowledged_but_not_handled_when_killed_is_handled_after_restart(
    fake_telegram: FakeTelegram, fake_telegram_bot: telegram.Bot, db: Database
) -> None:
    first = Recorder()
    first.hold.add("slow")
    poller = UpdatePoller(fake_telegram_bot, UpdateInbox(db), first, QUICK)
    await poller.start()
    await fake_telegram.send_user_message("slow", ALLOWED_USER_ID)
    await fake_telegram.wait_for(lambda: first.started == ["slow"])
    # the next poll acknowledged it: Telegram will not send it again
    await fake_telegram.wait_for(lambda: not fake_telegram.pending_updates)
    kill(poller)
    await asyncio.sleep(0.05)
    assert first.handled == []

    second = Recorder()
    poller = UpdatePoller(fake_telegram_bot, UpdateInbox(db), second, QUICK)
    await poller.start()
    await fake_telegram.send_user_message("next", ALLOWED_USER_ID)
    await fake_telegram.wait_for(lambda: second.handled == ["slow", "next"])
    await poller.stop()
    assert await UpdateInbox(db).pending() == []


async def test_an_update_handled_but_not_acknowledged_when_killed_is_not_handled_again(
    fake_telegram: FakeTelegram, fake_telegram_bot: telegram.Bot, db: Database
) -> None:
    first = Recorder()
    poller = UpdatePoller(fake_telegram_bot, UpdateInbox(db), first, QUICK)
    update_id = fake_telegram.next_update_id
    fake_telegram.keep_unacknowledged(update_id)  # as if the bot died before its next poll
    await fake_telegram.send_user_message("once", ALLOWED_USER_ID)
    await poller.start()
    await fake_telegram.wait_for(lambda: first.handled == ["once"])
    await until_inbox_empty(db)
    kill(poller)
    assert [u["update_id"] for u in fake_telegram.pending_updates] == [update_id]

    fake_telegram.keep_unacknowledged(None)
    second = Recorder()
    poller = UpdatePoller(fake_telegram_bot, UpdateInbox(db), second, QUICK)
    await poller.start()
    await fake_telegram.send_user_message("after", ALLOWED_USER_ID)
    await fake_telegram.wait_for(lambda: second.handled == ["after"])
    await poller.stop()
    assert first.handled + second.handled == ["once", "after"]


async def until_inbox_empty(db: Database) -> None:
    inbox = UpdateInbox(db)
    for _ in range(250):
        if not await inbox.pending():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the handled update is still in the inbox")


class FlakyInbox(UpdateInbox):
    """An inbox whose first write fails (a locked or full disk)."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.failures = 1

    async def receive(self, updates: Sequence[ReceivedUpdate], next_offset: int) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError("disk I/O error")
        await super().receive(updates, next_offset)


async def test_a_batch_that_could_not_be_stored_is_not_acknowledged_and_comes_again(
    fake_telegram: FakeTelegram, fake_telegram_bot: telegram.Bot, db: Database
) -> None:
    recorder = Recorder()
    poller = UpdatePoller(fake_telegram_bot, FlakyInbox(db), recorder, QUICK)
    await fake_telegram.send_user_message("keep me", ALLOWED_USER_ID)
    await poller.start()
    await fake_telegram.wait_for(lambda: recorder.handled == ["keep me"])
    await poller.stop()
    assert recorder.handled == ["keep me"]


async def test_polling_names_the_update_types_it_serves_and_survives_errors(
    fake_telegram: FakeTelegram, fake_telegram_bot: telegram.Bot, db: Database
) -> None:
    fake_telegram.allowed_updates = frozenset({"callback_query"})  # left by an earlier program
    fake_telegram.add_fault("getUpdates", 502, times=2)
    fake_telegram.add_fault("getUpdates", 429, retry_after=1, times=1)
    fake_telegram.add_fault("getUpdates", 409, "Conflict: terminated by other getUpdates request")
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    recorder = Recorder()
    poller = UpdatePoller(fake_telegram_bot, UpdateInbox(db), recorder, QUICK, sleep=sleep)
    await fake_telegram.send_user_message("hello", ALLOWED_USER_ID)
    await poller.start()
    await fake_telegram.wait_for(lambda: recorder.handled == ["hello"])
    await poller.stop()
    assert waits[:4] == [0.01, 0.02, 1.0, 0.05]  # backoff doubles, capped at max_retry_s
    polls = fake_telegram.calls("getUpdates")
    assert all(c.params["allowed_updates"] == list(ALLOWED_UPDATES) for c in polls)


async def test_an_unreadable_update_in_the_inbox_does_not_stop_the_start(
    fake_telegram: FakeTelegram, fake_telegram_bot: telegram.Bot, db: Database
) -> None:
    inbox = UpdateInbox(db)
    offset = fake_telegram.next_update_id
    await inbox.receive([ReceivedUpdate(offset - 1, "{not json")], next_offset=offset)
    recorder = Recorder()
    poller = UpdatePoller(fake_telegram_bot, inbox, recorder, QUICK)
    await poller.start()
    await fake_telegram.send_user_message("still works", ALLOWED_USER_ID)
    await fake_telegram.wait_for(lambda: recorder.handled == ["still works"])
    await poller.stop()
    assert await inbox.pending() == []
