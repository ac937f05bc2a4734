"""Topic states (core), topic icons, the board and the Outbox's lowest priority, in process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from telegram import Sticker
from telegram.error import BadRequest

from oc_outpost.core.bindings import Bindings
from oc_outpost.core.topic_states import TopicBook, TopicState, TopicStates, TopicStatus
from oc_outpost.opencode.wire import MessageWithParts
from oc_outpost.store.db import Database
from oc_outpost.store.migrations import TOPIC_MIGRATIONS
from oc_outpost.store.topics import TopicStore
from oc_outpost.telegram.board import ServerCounts, board_text, elapsed, topic_link
from oc_outpost.telegram.outbox import Limits, Outbox, Priority
from oc_outpost.telegram.service_cleanup import ServiceCleanup
from oc_outpost.telegram.topic_icons import TopicIcons, icon_ids

CHAT = -1001234567890
FAST = Limits(per_chat_interval_s=0.0, group_per_minute=1000, global_per_second=1000)


@pytest.fixture
async def bindings(tmp_path: Path) -> AsyncIterator[Bindings]:
    async with await Database.open(tmp_path / "topics.db", TOPIC_MIGRATIONS) as db:
        bindings = Bindings(TopicStore(db), CHAT)
        await bindings.bind(7, Path("/projects/demo"), "ses_1", "inst_1")
        yield bindings


class RecordingView:
    def __init__(self) -> None:
        self.shown: list[TopicState] = []

    def show_topic_state(self, status: TopicStatus) -> None:
        self.shown.append(status.state)


async def test_states_follow_turns_approvals_and_servers(bindings: Bindings) -> None:
    view = RecordingView()
    states = TopicStates(TopicBook(bindings), [view], clock=lambda: 100.0)
    states.turn_started(7)
    states.asked(7, "per_1")
    states.asked(7, "per_1")  # shown again (e.g. after a restart): still one request
    states.answered(7, "per_1")
    states.turn_ended(7, failed=False)
    states.turn_started(7)
    states.turn_ended(7, failed=True)
    states.servers_stopped([7])
    states.turn_started(99)  # not bound: nobody is told
    assert view.shown == [
        TopicState.RUNNING,
        TopicState.NEEDS_YOU,
        TopicState.RUNNING,
        TopicState.DONE,
        TopicState.RUNNING,
        TopicState.FAILED,
        TopicState.ASLEEP,
    ]
    (status,) = TopicBook(bindings).statuses()  # a fresh book knows the topic, not its state
    assert (status.project, status.state) == ("demo", TopicState.IDLE)


def message(role: str, number: int, **info: Any) -> MessageWithParts:
    time = {"created": number, "completed": number}
    return MessageWithParts.model_validate(
        {"info": {"id": f"msg_{number}", "sessionID": "ses_1", "role": role, "time": time} | info}
    )


async def test_a_turn_end_clears_what_it_waited_for_and_keeps_model_and_cost(
    bindings: Bindings,
) -> None:
    book = TopicBook(bindings)
    states = TopicStates(book)
    states.turn_started(7)
    states.asked(7, "per_1")
    states.session_read(
        7,
        [
            message("assistant", 1, providerID="p", modelID="old", cost=0.25),
            message("user", 2),
            message("assistant", 3, providerID="p", modelID="new", cost=0.5),
        ],
    )
    states.turn_ended(7, failed=False)
    (status,) = book.statuses()
    assert (status.state, status.pending) == (TopicState.DONE, 0)
    assert (status.model, status.cost) == ("p/new", 0.75)


def sticker(emoji: str, custom_id: str) -> Sticker:
    return Sticker(
        f"f{custom_id}", f"u{custom_id}", 512, 512, False, False, "custom_emoji",
        emoji=emoji, custom_emoji_id=custom_id,
    )  # fmt: skip


def test_icon_ids_pick_the_first_offered_emoji_with_or_without_variation_selector() -> None:
    stickers = [sticker("⚡️", "1"), sticker("❗️", "2"), sticker("✔️", "3"), sticker("📰", "4")]
    assert icon_ids(stickers) == {
        TopicState.RUNNING: "1",
        TopicState.NEEDS_YOU: "2",
        TopicState.DONE: "3",
    }


class IconBot:
    """The two Bot API methods the icons use; ``not_modified`` answers as Telegram does when
    the topic shows that icon already."""

    def __init__(self) -> None:
        self.edits: list[tuple[int, str]] = []
        self.lookups = 0
        self.not_modified = False

    async def get_forum_topic_icon_stickers(self) -> list[Sticker]:
        self.lookups += 1
        return [sticker("⚡", "run"), sticker("✅", "done"), sticker("💤", "sleep")]

    async def edit_forum_topic(self, chat_id: int, topic_id: int, **kw: Any) -> bool:
        if self.not_modified:
            raise BadRequest("TOPIC_NOT_MODIFIED")
        self.edits.append((topic_id, kw["icon_custom_emoji_id"]))
        return True


class Gate:
    """An injectable sleep that returns only when opened."""

    def __init__(self) -> None:
        self.open = asyncio.Event()

    async def sleep(self, _seconds: float) -> None:
        await self.open.wait()


def status(state: TopicState, topic_id: int = 7) -> TopicStatus:
    return TopicStatus(topic_id, "demo", state)


async def settled(icons: TopicIcons) -> None:
    for _ in range(50):
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)


async def test_icons_coalesce_skip_what_is_shown_and_look_up_once() -> None:
    bot = IconBot()
    outbox = Outbox(bot, FAST)  # type: ignore[arg-type]
    outbox.start()
    gate = Gate()
    icons = TopicIcons(outbox, CHAT, sleep=gate.sleep)
    try:
        icons.show_topic_state(status(TopicState.RUNNING))
        icons.show_topic_state(status(TopicState.DONE))  # within the settle time
        icons.show_topic_state(status(TopicState.NEEDS_YOU, topic_id=8))  # no icon offered
        gate.open.set()
        await settled(icons)
        assert bot.edits == [(7, "done")]
        icons.show_topic_state(status(TopicState.RUNNING))
        icons.show_topic_state(status(TopicState.DONE))  # back to what is shown: no call
        await settled(icons)
        assert bot.edits == [(7, "done")]
        bot.not_modified = True  # the topic shows it already: counts as shown
        icons.show_topic_state(status(TopicState.ASLEEP))
        await settled(icons)
        bot.not_modified = False
        icons.show_topic_state(status(TopicState.ASLEEP))
        await settled(icons)
        assert bot.edits == [(7, "done")]
        assert bot.lookups == 1
    finally:
        await icons.stop()
        await outbox.close()


async def test_background_calls_wait_for_finals_and_progress() -> None:
    order: list[str] = []

    def call(name: str) -> Any:
        async def run(_bot: Any) -> str:
            order.append(name)
            return name

        return run

    outbox = Outbox(object(), FAST)  # type: ignore[arg-type]
    calls = [
        outbox.enqueue(call("icon"), method="m", chat_id=CHAT, priority=Priority.BACKGROUND),
        outbox.enqueue(call("progress"), method="m", chat_id=CHAT, priority=Priority.PROGRESS),
        outbox.enqueue(call("final"), method="m", chat_id=CHAT, priority=Priority.FINAL),
        outbox.enqueue(call("ask"), method="m", chat_id=CHAT, priority=Priority.INTERACTIVE),
    ]
    outbox.start()
    await asyncio.gather(*calls)
    await outbox.close()
    assert order == ["ask", "final", "progress", "icon"]


def test_board_rows_link_topics_and_say_what_matters() -> None:
    statuses = [
        TopicStatus(
            5, "api", TopicState.NEEDS_YOU, running_since=10.0, pending=2, cost=1.5, model="p/m"
        ),
        TopicStatus(9, "web", TopicState.DONE),
    ]
    text = board_text(CHAT, statuses, ServerCounts(running=1, asleep=3), now=130.0)
    assert text.text.splitlines()[2:] == [
        "❗ api · running 2m · p/m · 2 waiting for you · $1.50",
        "✅ web · done",
        "",
        "Servers: 1 running · 3 asleep",
    ]
    links = [e.url for e in text.entities if e.type == "text_link"]
    assert links == ["https://t.me/c/1234567890/5", "https://t.me/c/1234567890/9"]
    assert board_text(CHAT, [], ServerCounts(0, 0), now=0.0).text.count("No topic") == 1


def test_topic_link_and_elapsed() -> None:
    assert topic_link(-1009876, 3) == "https://t.me/c/9876/3"
    assert [elapsed(s) for s in (5, 125, 3725)] == ["5s", "2m", "1h02m"]


class DeletingBot:
    def __init__(self, refuse: bool) -> None:
        self.refuse = refuse
        self.deleted: list[int] = []

    async def delete_message(self, chat_id: int, message_id: int) -> bool:
        self.deleted.append(message_id)
        if self.refuse:
            raise BadRequest("Message can't be deleted")
        return True


@pytest.mark.parametrize("refuse", [False, True])
async def test_service_cleanup_stops_trying_without_the_right(refuse: bool) -> None:
    bot = DeletingBot(refuse)
    outbox = Outbox(bot, FAST)  # type: ignore[arg-type]
    outbox.start()
    cleanup = ServiceCleanup(outbox, CHAT)
    try:
        for message_id in (11, 12, 13):
            await cleanup.delete(message_id)
    finally:
        await outbox.close()
    assert bot.deleted == ([11] if refuse else [11, 12, 13])
    assert cleanup.deleted == (0 if refuse else 3)
