"""Control buttons and per-topic choices: a press acts once (a once button never twice), choices
stored with the binding, OpenCode's favourites read from its state file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oc_outpost.core.bindings import Bindings
from oc_outpost.core.control_buttons import ControlButtons
from oc_outpost.core.controls import opencode_state_file, read_model_state
from oc_outpost.core.errors import BadRequest, NotFound, Unavailable
from oc_outpost.core.history import History
from oc_outpost.core.journal import TurnJournal
from oc_outpost.core.prompting import Prompter, choice_of
from oc_outpost.core.tracker import TurnTracker
from oc_outpost.model import TopicBinding
from oc_outpost.opencode.errors import OpenCodeUnavailable
from oc_outpost.store.active_turns import ActiveTurnStore
from oc_outpost.store.buttons import ButtonStore
from oc_outpost.store.db import Database
from oc_outpost.store.held_messages import HeldMessageStore
from oc_outpost.store.migrations import TOPIC_MIGRATIONS
from oc_outpost.store.topics import TopicStore
from oc_outpost.telegram import callbacks
from tests.unit.test_files import Clock
from tests.unit.test_prompting import FakeChat, FakeRegistry


async def control_buttons(
    db: Database, clock: Clock | None = None
) -> tuple[ControlButtons, TopicBinding]:
    bindings = Bindings(TopicStore(db), -100)
    binding = await bindings.bind(7, Path("/p/demo"), "ses_1", "inst_1")
    store = ButtonStore(db) if clock is None else ButtonStore(db, now=clock)
    return ControlButtons(store, bindings), binding


async def test_a_control_button_survives_a_reopen_and_a_replayed_press_does_nothing(
    tmp_path: Path,
) -> None:
    async with await Database.open(tmp_path / "topics.db", TOPIC_MIGRATIONS) as db:
        buttons, _ = await control_buttons(db)
        button = await buttons.button("model", 7, "Pro", ref="mock/mock-pro")
    async with await Database.open(tmp_path / "topics.db", TOPIC_MIGRATIONS) as db:
        bindings = Bindings(TopicStore(db), -100)
        await bindings.load()  # as after a restart
        buttons = ControlButtons(ButtonStore(db), bindings)
        binding = bindings.by_topic(7)
        async with buttons.pressed(7, button.token, "q1", once=()) as press:
            assert press is not None and (press.kind, press.binding) == ("model", binding)
            assert press.payload == {"ref": "mock/mock-pro"}
        async with buttons.pressed(7, button.token, "q1", once=()) as press:
            assert press is None  # the same callback query delivered again
        async with buttons.pressed(7, button.token, "q2", once=()) as press:
            assert press is None  # a double tap
        with pytest.raises(NotFound, match="no longer valid"):
            async with buttons.pressed(8, button.token, "q3", once=()):
                pass  # another topic's button
    assert callbacks.parse(callbacks.control_data(button.token)) == callbacks.ControlPress(
        button.token
    )


async def test_a_once_button_answers_a_later_press_and_a_failed_press_may_be_repeated(
    tmp_path: Path,
) -> None:
    clock = Clock()
    async with await Database.open(tmp_path / "topics.db", TOPIC_MIGRATIONS) as db:
        buttons, _ = await control_buttons(db, clock)
        compact = await buttons.button("compact", 7, "Compact", session_id="ses_1")
        with pytest.raises(Unavailable):
            async with buttons.pressed(7, compact.token, "q1", once={"compact"}) as press:
                assert press is not None
                raise Unavailable("the server is down")
        async with buttons.pressed(7, compact.token, "q2", once={"compact"}) as press:
            assert press is not None  # the failed press was forgotten
        clock.now += 60
        with pytest.raises(BadRequest, match="acts once"):
            async with buttons.pressed(7, compact.token, "q3", once={"compact"}):
                pass
        older = await buttons.button("compact", 7, "Compact", session_id="ses_0")
        with pytest.raises(NotFound, match="older session"):
            async with buttons.pressed(7, older.token, "q4", once={"compact"}):
                pass


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
        buttons = ControlButtons(ButtonStore(db), bindings)
        history = History(prompter, tracker, linker, buttons, chat)  # type: ignore[arg-type]
        with pytest.raises(Unavailable, match=r"Fork failed: .*connection refused"):
            await history.fork(binding)
    assert linker.requests == []
    assert chat.notices == []
