"""TelegramChat's live progress: drawn when the Outbox sends, from the newest snapshot."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from telegram import Bot

from oc_outpost.core.chat import ClosingProgress, GoneTopics
from oc_outpost.core.journal import TurnJournal
from oc_outpost.core.turn import TurnPhase, TurnSnapshot
from oc_outpost.store.active_turns import ActiveTurnStore
from oc_outpost.store.db import Database
from oc_outpost.store.migrations import TOPIC_MIGRATIONS
from oc_outpost.telegram.outbox import Limits, Outbox
from oc_outpost.telegram.view import INTERRUPTED, TelegramChat

CHAT = -100123
TOPIC = 5
LIMITS = Limits(
    per_chat_interval_s=0.0, group_per_minute=1000, global_per_second=1000, min_edit_interval_s=0.05
)


class GatedBot:
    """Records sends and edits; `gate` holds every call until it is set."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def send_message(self, chat_id: int, text: str, **_: Any) -> Any:
        await self.gate.wait()
        self.calls.append(("send", text))
        return SimpleNamespace(message_id=100 + len(self.calls))

    async def edit_message_text(self, text: str, **_: Any) -> Any:
        await self.gate.wait()
        self.calls.append(("edit", text))
        return True


def snapshot(text: str, phase: TurnPhase = TurnPhase.RUNNING) -> TurnSnapshot:
    return TurnSnapshot(1, "ses_1", 0.0, phase=phase, texts=(("p", text),))


class NoProgressLog:
    async def progress_shown(self, session_id: str, message_id: int) -> None:
        return None

    async def progress_closing(self, closing: ClosingProgress) -> None:
        return None

    async def progress_closed(self, message_id: int) -> None:
        return None

    async def progress_left_closing(self) -> list[ClosingProgress]:
        return []


async def settle() -> None:
    await asyncio.sleep(0.3)


@asynccontextmanager
async def chat_on(bot: GatedBot, now: float = 0.0) -> AsyncIterator[TelegramChat]:
    outbox = Outbox(cast(Bot, bot), LIMITS)
    outbox.start()
    try:
        yield TelegramChat(outbox, CHAT, GoneTopics(), NoProgressLog(), clock=lambda: now)
    finally:
        await outbox.close(1.0)


async def test_a_burst_of_snapshots_is_drawn_once_from_the_newest() -> None:
    bot = GatedBot()
    async with chat_on(bot) as chat:
        for index in range(1000):
            chat.show_progress(TOPIC, snapshot(f"answer {index}"))
        await settle()
    assert len(bot.calls) == 1
    kind, text = bot.calls[0]
    assert kind == "send" and text.endswith("answer 999")


async def test_snapshots_that_arrive_while_a_call_is_out_are_shown_next() -> None:
    bot = GatedBot()
    async with chat_on(bot) as chat:
        bot.gate.clear()
        chat.show_progress(TOPIC, snapshot("first"))
        await asyncio.sleep(0.05)  # the send is on its way
        chat.show_progress(TOPIC, snapshot("second"))
        chat.show_progress(TOPIC, snapshot("third"))
        bot.gate.set()
        await settle()
    assert [(kind, text.rsplit("\n", 1)[-1]) for kind, text in bot.calls] == [
        ("send", "first"),
        ("edit", "third"),
    ]


async def test_the_summary_is_the_last_word_even_after_a_late_snapshot() -> None:
    bot = GatedBot()
    async with chat_on(bot, now=9.0) as chat:
        chat.show_progress(TOPIC, snapshot("streaming"))
        await settle()
        bot.gate.clear()
        chat.show_progress(TOPIC, snapshot("streaming more"))
        await asyncio.sleep(0.1)  # that edit is on its way when the turn ends
        chat.show_progress(TOPIC, snapshot("late"))
        final = asyncio.create_task(
            chat.show_final(
                TOPIC,
                replace(snapshot("done"), phase=TurnPhase.DONE, finished_at=9.0),
                streaming=True,
            )
        )
        bot.gate.set()
        await asyncio.wait_for(final, 2.0)
        await settle()
    edits = [text for kind, text in bot.calls if kind == "edit"]
    assert edits[-1].startswith("✅ Done in 9s")
    assert not any("late" in text for text in edits)


class EditsHeldBot(GatedBot):
    """Sends go through; edits wait for `edits` (a bot killed before its summary edit)."""

    def __init__(self) -> None:
        super().__init__()
        self.edits = asyncio.Event()

    async def edit_message_text(self, text: str, **_: Any) -> Any:
        await self.edits.wait()
        return await super().edit_message_text(text)


async def test_a_summary_not_drawn_before_the_bot_stopped_is_drawn_by_the_next_start(
    tmp_path: Path,
) -> None:
    async with await Database.open(tmp_path / "topics.db", TOPIC_MIGRATIONS) as db:
        journal = TurnJournal(ActiveTurnStore(db))
        killed = EditsHeldBot()
        outbox = Outbox(cast(Bot, killed), LIMITS)
        outbox.start()
        chat = TelegramChat(outbox, CHAT, GoneTopics(), journal, clock=lambda: 3.0)
        chat.show_progress(TOPIC, snapshot("streaming"))
        await settle()
        done = replace(snapshot("the answer"), phase=TurnPhase.DONE, finished_at=3.0)
        await chat.show_final(TOPIC, done, streaming=True)
        await settle()
        assert [kind for kind, _ in killed.calls] == ["send", "send"]  # no summary yet

        restarted = GatedBot()  # the next start, while the first run never drew the summary
        async with chat_on_log(restarted, TurnJournal(ActiveTurnStore(db))) as next_run:
            next_run.close_progress_left()
            await settle()
        assert restarted.calls == [("edit", "✅ Done in 3s · 0 tools")]
        assert await TurnJournal(ActiveTurnStore(db)).progress_left_closing() == []
        killed.edits.set()
        await outbox.close(1.0)


@asynccontextmanager
async def chat_on_log(bot: GatedBot, journal: TurnJournal) -> AsyncIterator[TelegramChat]:
    outbox = Outbox(cast(Bot, bot), LIMITS)
    outbox.start()
    try:
        yield TelegramChat(outbox, CHAT, GoneTopics(), journal)
    finally:
        await outbox.close(1.0)


async def test_a_progress_message_of_a_turn_cut_by_a_kill_is_reduced_to_a_note_next_start(
    tmp_path: Path,
) -> None:
    async with await Database.open(tmp_path / "topics.db", TOPIC_MIGRATIONS) as db:
        async with chat_on_log(GatedBot(), TurnJournal(ActiveTurnStore(db))) as killed:
            killed.show_progress(TOPIC, snapshot("streaming"))  # its turn is not journaled yet
            await settle()

        restarted = GatedBot()
        async with chat_on_log(restarted, TurnJournal(ActiveTurnStore(db))) as next_run:
            next_run.close_progress_left()
            await settle()
        assert restarted.calls == [("edit", INTERRUPTED)]
        assert await TurnJournal(ActiveTurnStore(db)).progress_left_closing() == []
