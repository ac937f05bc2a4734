"""Holding a message while busy is idempotent per Telegram message: the bot killed while it was
holding one (say, its "Queued" reply waiting out a Bot API outage) takes the message again at
the next start, and that must not hold, and later send, a second copy (found by the chaos
soak: the one prompt ran twice)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from oc_outpost.core.bindings import Bindings
from oc_outpost.core.chat import Menu
from oc_outpost.core.control_buttons import ControlButtons
from oc_outpost.core.held import HeldMessages
from oc_outpost.core.journal import TurnJournal
from oc_outpost.core.tracker import TurnTracker
from oc_outpost.core.turn_ends import TurnEnds
from oc_outpost.store.active_turns import ActiveTurnStore
from oc_outpost.store.buttons import ButtonStore
from oc_outpost.store.db import Database
from oc_outpost.store.held_messages import HeldMessageStore
from oc_outpost.store.migrations import TOPIC_MIGRATIONS
from oc_outpost.store.topics import TopicStore
from tests.unit.test_journal import RecordingChat


class Unreachable(Exception):
    pass


class MenuChat(RecordingChat):
    def __init__(self) -> None:
        super().__init__()
        self.menus: list[str] = []
        self.unreachable = False

    async def show_menu(self, topic_id: int, menu: Menu) -> int:
        if self.unreachable:
            raise Unreachable("httpx.ConnectError")
        self.menus.append(menu.text)
        return 100 + len(self.menus)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with await Database.open(tmp_path / "topics.db", TOPIC_MIGRATIONS) as db:
        yield db


async def held_messages(db: Database, chat: MenuChat) -> tuple[HeldMessages, Any]:
    bindings = Bindings(TopicStore(db), -100)
    binding = await bindings.bind(7, Path("/p/demo"), "ses_1", "inst_1")
    tracker = TurnTracker(chat, bindings, TurnJournal(ActiveTurnStore(db)))  # type: ignore[arg-type]
    unused: Any = None
    held = HeldMessages(
        HeldMessageStore(db),
        ControlButtons(ButtonStore(db), bindings),
        bindings,
        tracker,
        unused,
        chat,  # type: ignore[arg-type]
        TurnEnds(),
        unused,
    )
    return held, binding


async def test_a_message_taken_twice_is_held_once(db: Database) -> None:
    chat = MenuChat()
    held, binding = await held_messages(db, chat)

    await held.hold(binding, "also add tests", source=55)
    await held.hold(binding, "also add tests", source=55)  # the same message after a restart

    assert [m.text for m in await HeldMessageStore(db).waiting("ses_1")] == ["also add tests"]
    assert len(chat.menus) == 1 and chat.menus[0].startswith("⏳ Queued (1)")


async def test_a_hold_whose_reply_never_went_out_shows_it_when_taken_again(db: Database) -> None:
    chat = MenuChat()
    held, binding = await held_messages(db, chat)
    chat.unreachable = True
    with pytest.raises(Unreachable):
        await held.hold(binding, "also add tests", source=55)  # the bot dies in the outage

    chat.unreachable = False
    await held.hold(binding, "also add tests", source=55)

    assert len(await HeldMessageStore(db).waiting("ses_1")) == 1
    assert len(chat.menus) == 1 and chat.menus[0].startswith("⏳ Queued (1)")
