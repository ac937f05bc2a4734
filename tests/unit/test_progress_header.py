"""The progress header the tracker sets: the topic's model and agent, the context use looked up
once when the turn begins (the limit once per server and model), and the messages queued."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from oc_outpost.core.bindings import Bindings
from oc_outpost.core.context_gauge import ContextGauge
from oc_outpost.core.journal import TurnJournal
from oc_outpost.core.tracker import TurnTracker
from oc_outpost.core.turn import TurnHeader, TurnSnapshot
from oc_outpost.opencode import events as ev
from oc_outpost.opencode.catalog import ModelLimit, Provider, ProviderList, ProviderModel
from oc_outpost.opencode.wire import MessageWithParts
from oc_outpost.store.active_turns import ActiveTurnStore
from oc_outpost.store.db import Database
from oc_outpost.store.migrations import TOPIC_MIGRATIONS
from oc_outpost.store.topics import TopicStore
from tests.unit.test_journal import RecordingChat, binding


class ShowingChat(RecordingChat):
    def __init__(self) -> None:
        super().__init__()
        self.shown: list[TurnSnapshot] = []

    def show_progress(self, topic_id: int, turn: TurnSnapshot) -> None:
        self.shown.append(turn)


class ServerWithModels:
    """The part of a client the gauge reads: the providers, the default model, messages."""

    base_url = "http://127.0.0.1:4096"

    def __init__(self) -> None:
        self.provider_lists = 0

    async def providers(self) -> ProviderList:
        self.provider_lists += 1
        pro = ProviderModel(id="mock-pro", limit=ModelLimit(context=64_000))
        return ProviderList(providers=[Provider(id="mock", models={"mock-pro": pro})])

    async def default_model(self) -> str | None:
        return None

    async def messages(self, session_id: str, limit: int | None = None) -> list[MessageWithParts]:
        tokens = ev.TokenUsage(input=30_000, output=320, cache_read=10_000)
        return [MessageWithParts(info=ev.Message("msg_1", "assistant", tokens=tokens))]


@pytest.fixture
async def tracker_parts(tmp_path: Path) -> AsyncIterator[tuple[ShowingChat, TurnTracker]]:
    async with await Database.open(tmp_path / "topics.db", TOPIC_MIGRATIONS) as db:
        chat = ShowingChat()
        journal = TurnJournal(ActiveTurnStore(db))
        bindings = Bindings(TopicStore(db), -100)
        tracker = TurnTracker(chat, bindings, journal, gauge=ContextGauge())  # type: ignore[arg-type]
        yield chat, tracker
        await tracker.stop()


async def shown_once(chat: ShowingChat, condition: Callable[[TurnHeader], bool]) -> TurnHeader:
    for _ in range(100):  # the lookup is a task of the tracker: let it run
        if chat.shown and condition(chat.shown[-1].header):
            return chat.shown[-1].header
        await asyncio.sleep(0)
    raise AssertionError(f"never shown; last: {chat.shown[-1].header if chat.shown else None}")


async def test_the_header_has_the_topics_choice_context_use_and_queue(
    tracker_parts: tuple[ShowingChat, TurnTracker],
) -> None:
    chat, tracker = tracker_parts
    server = ServerWithModels()
    chosen = replace(binding(), model="mock/mock-pro", agent="plan")
    tracker.queued("ses_1", 2)  # held before the turn began
    tracker.begin(chosen, server)  # type: ignore[arg-type]
    assert chat.shown[0].header == TurnHeader("mock-pro", "plan", queued=2)

    header = await shown_once(chat, lambda h: h.context_limit is not None)
    assert (header.context_limit, header.context_before) == (64_000, 40_320)
    assert chat.shown[-1].context_percent == 63

    tracker.queued("ses_1", 1)
    assert chat.shown[-1].header.queued == 1
    shown = len(chat.shown)
    tracker.queued("ses_1", 1)  # no change: nothing shown again
    assert len(chat.shown) == shown

    await tracker.fail("ses_1", 7, "stopped")
    tracker.begin(chosen, server)  # type: ignore[arg-type]
    await shown_once(chat, lambda h: h.context_limit is not None)
    assert server.provider_lists == 1  # the limit of a server's model is looked up once


async def test_a_topic_on_the_server_defaults_shows_no_choice(
    tracker_parts: tuple[ShowingChat, TurnTracker],
) -> None:
    chat, tracker = tracker_parts
    tracker.begin(binding(), ServerWithModels())  # type: ignore[arg-type]
    header = await shown_once(chat, lambda h: True)
    assert (header.model, header.agent, header.queued) == (None, None, 0)
    assert chat.shown[-1].context_percent is None  # no default model: the limit is unknown
