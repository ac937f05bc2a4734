"""Control buttons and per-topic choices: tokens used once, choices stored with the binding,
OpenCode's favourites read from its state file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oc_outpost.core.bindings import Bindings
from oc_outpost.core.controls import opencode_state_file, read_model_state
from oc_outpost.core.errors import Unavailable
from oc_outpost.core.history import History
from oc_outpost.core.journal import TurnJournal
from oc_outpost.core.prompting import Prompter, choice_of
from oc_outpost.core.tracker import TurnTracker
from oc_outpost.model import TopicBinding
from oc_outpost.opencode.errors import OpenCodeUnavailable
from oc_outpost.store.active_turns import ActiveTurnStore
from oc_outpost.store.control_tokens import ControlTokenStore
from oc_outpost.store.db import Database
from oc_outpost.store.held_messages import HeldMessageStore
from oc_outpost.store.migrations import TOPIC_MIGRATIONS
from oc_outpost.store.topics import TopicStore
from oc_outpost.telegram import callbacks
from tests.unit.test_prompting import FakeChat, FakeRegistry


async def test_a_control_token_is_used_once_and_survives_a_reopen(tmp_path: Path) -> None:
    async with await Database.open(tmp_path / "topics.db", TOPIC_MIGRATIONS) as db:
        token = await ControlTokenStore(db).create(7, "model", "mock/mock-pro")
    async with await Database.open(tmp_path / "topics.db", TOPIC_MIGRATIONS) as db:
        store = ControlTokenStore(db)
        again = await store.get(token.token)
        assert again is not None and (again.topic_id, again.value) == (7, "mock/mock-pro")
        assert await store.use(token.token, "Ann") is True
        assert await store.use(token.token, "Bob") is False  # a replayed press
        used = await store.get(token.token)
        assert used is not None and used.used_by == "Ann"
    assert callbacks.parse(callbacks.control_data(token.token)) == callbacks.ControlPress(
        token.token
    )


async def test_the_choice_is_stored_with_the_binding_and_sent_with_prompts(
    tmp_path: Path,
) -> None:
    async with await Database.open(tmp_path / "topics.db", TOPIC_MIGRATIONS) as db:
        store = TopicStore(db)
        binding = TopicBinding(
            chat_id=1,
            topic_id=2,
            project_path="/p",
            created_at=0,
            updated_at=0,
            session_id="ses_1",
            model="mock/mock-pro",
            variant="high",
            agent="plan",
        )
        await store.save(binding)
        loaded = await store.get(1, 2)
    assert loaded is not None
    assert choice_of(loaded) == {"model": ("mock", "mock-pro"), "agent": "plan", "variant": "high"}


def test_favourites_then_recent_from_opencode_state(tmp_path: Path) -> None:
    path = opencode_state_file({"XDG_STATE_HOME": str(tmp_path)}, Path("/nowhere"))
    assert path == tmp_path / "opencode" / "model.json"
    assert read_model_state(path) == []
    path.parent.mkdir()
    path.write_text(
        json.dumps(
            {
                "recent": [
                    {"providerID": "a", "modelID": "x"},
                    {"providerID": "b", "modelID": "y"},
                ],
                "favorite": [{"providerID": "b", "modelID": "y"}],
            }
        )
    )
    assert read_model_state(path) == ["b/y", "a/x"]


async def test_held_messages_go_out_in_order_urgent_first_and_leave_once(
    tmp_path: Path,
) -> None:
    async with await Database.open(tmp_path / "topics.db", TOPIC_MIGRATIONS) as db:
        store = HeldMessageStore(db)
        first = await store.hold(3, "ses_1", "first")
        second = await store.hold(3, "ses_1", "second")
        await store.hold(4, "ses_2", "elsewhere")
        assert [h.text for h in await store.waiting("ses_1")] == ["first", "second"]
        assert await store.make_urgent(second.id) is True
        assert [h.text for h in await store.waiting("ses_1")] == ["second", "first"]
        assert await store.release(second.id, "sent") is True
        assert await store.release(second.id, "dropped") is False  # a replayed press
        assert await store.make_urgent(second.id) is False
        assert [h.text for h in await store.waiting("ses_1")] == ["first"]
        assert sorted(await store.sessions_waiting()) == ["ses_1", "ses_2"]
        assert (await store.get(first.id)) == first


class DownClient:
    """A server that went away: every call is refused."""

    async def fork(self, session_id: str, message_id: str | None = None) -> None:
        raise OpenCodeUnavailable(f"POST /session/{session_id}/fork: connection refused")


class RecordingLinker:
    def __init__(self) -> None:
        self.requests: list[object] = []

    async def link(self, request: object) -> None:
        self.requests.append(request)


async def test_a_fork_while_the_server_is_down_is_refused_clearly_and_links_nothing(
    tmp_path: Path,
) -> None:
    async with await Database.open(tmp_path / "topics.db", TOPIC_MIGRATIONS) as db:
        bindings = Bindings(TopicStore(db), -100)
        binding = await bindings.bind(7, Path("/p/demo"), "ses_1", "inst_1")
        chat = FakeChat()
        tracker = TurnTracker(chat, bindings, TurnJournal(ActiveTurnStore(db)))  # type: ignore[arg-type]
        prompter = Prompter(FakeRegistry(DownClient()), tracker, chat)  # type: ignore[arg-type]
        linker = RecordingLinker()
        history = History(prompter, tracker, linker, ControlTokenStore(db), chat)  # type: ignore[arg-type]
        with pytest.raises(Unavailable, match=r"Fork failed: .*connection refused"):
            await history.fork(binding)
    assert linker.requests == []
    assert chat.notices == []
