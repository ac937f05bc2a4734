"""The buttons of a final answer: which prompt Undo reverts to and where Fork cuts, what a turn
gone or undone answers, Build it only after the plan agent, and a store failure that leaves
the answer without its buttons instead of failing it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from oc_outpost.core.bindings import Bindings
from oc_outpost.core.chat import Menu
from oc_outpost.core.control_buttons import ControlButtons
from oc_outpost.core.errors import BadRequest, NotFound
from oc_outpost.core.history import GONE, History, TurnRef, fork_point, undo_target
from oc_outpost.core.journal import TurnJournal
from oc_outpost.core.outputs import DiffStat, TurnButtons, TurnOutput
from oc_outpost.core.prompting import Prompter
from oc_outpost.core.tracker import TurnTracker
from oc_outpost.core.turn import TurnSnapshot
from oc_outpost.core.turn_outputs import BUILD, FORK, UNDO, TurnOutputs
from oc_outpost.model import TopicBinding
from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.opencode.wire import MessageWithParts, Session
from oc_outpost.store.active_turns import ActiveTurnStore
from oc_outpost.store.buttons import ButtonStore
from oc_outpost.store.db import Database
from oc_outpost.store.migrations import TOPIC_MIGRATIONS
from oc_outpost.store.topics import TopicStore
from oc_outpost.telegram.keyboards import final_rows
from tests.unit.test_prompting import FakeChat, FakeRegistry

# two turns: msg_1 (prompt) msg_2 (answer), msg_3 and msg_4 (prompts of one turn) msg_5, msg_6 msg_7
ROLES = ["user", "assistant", "user", "user", "assistant", "user", "assistant"]


def session(*roles: str) -> list[MessageWithParts]:
    return [
        MessageWithParts.model_validate(
            {
                "info": {"id": f"msg_{i}", "role": role, "time": {"created": i, "completed": i}},
                "parts": [{"id": f"prt_{i}", "type": "text", "text": f"text {i}"}],
            }
        )
        for i, role in enumerate(roles, start=1)
    ]


def test_undo_reverts_to_the_turns_first_prompt_or_without_a_turn_the_last_one() -> None:
    messages = session(*ROLES)
    assert undo_target(messages, None, TurnRef("msg_3", "msg_4")).info.id == "msg_3"
    assert undo_target(messages, None, None).info.id == "msg_6"
    assert undo_target(messages, "msg_6", None).info.id == "msg_4"  # msg_6 is undone already
    # a later turn undone: an older one may still be undone
    assert undo_target(messages, "msg_6", TurnRef("msg_1", "msg_1")).info.id == "msg_1"
    with pytest.raises(BadRequest, match="undone already"):
        undo_target(messages, "msg_3", TurnRef("msg_3", "msg_4"))
    with pytest.raises(NotFound, match="not in the session any more"):
        undo_target(session("user", "assistant"), None, TurnRef("msg_3", "msg_4"))
    with pytest.raises(NotFound, match="Nothing to undo"):
        undo_target(session(), None, None)


def test_a_fork_cuts_before_the_first_prompt_after_the_turn() -> None:
    messages = session(*ROLES)
    assert fork_point(messages, None, TurnRef("msg_1", "msg_1")) == "msg_3"
    assert fork_point(messages, None, TurnRef("msg_3", "msg_4")) == "msg_6"
    assert fork_point(messages, None, TurnRef("msg_6", "msg_6")) is None  # the last: all of it
    with pytest.raises(BadRequest, match="Redo it first"):
        fork_point(messages, "msg_3", TurnRef("msg_3", "msg_4"))
    with pytest.raises(NotFound) as gone:
        fork_point(session("user"), None, TurnRef("msg_3", "msg_4"))
    assert str(gone.value) == GONE


def answered_by(agent: str) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json=[
                {"info": {"id": "msg_1", "role": "user"}, "parts": []},
                {"info": {"id": "msg_2", "role": "assistant", "agent": agent}, "parts": []},
            ],
        )

    return httpx.MockTransport(answer)


async def test_a_final_gets_undo_and_fork_and_after_a_plan_build_it(tmp_path: Path) -> None:
    async with await Database.open(tmp_path / "topics.db", TOPIC_MIGRATIONS) as db:
        buttons = ButtonStore(db)
        outputs = TurnOutputs(buttons, Bindings(TopicStore(db), -100))
        snapshot = TurnSnapshot(1, "ses_1", 0.0, user_messages=("msg_1",))
        built = OpenCodeClient("http://oc.test", transport=answered_by("build"))
        plain = (await outputs.collect(7, built, snapshot)).buttons
        assert plain is not None and plain.build is None
        planned = OpenCodeClient("http://oc.test", transport=answered_by("plan"))
        turn = (await outputs.collect(7, planned, snapshot)).buttons
        assert turn is not None and turn.build is not None
        rows = {}
        for kind, token in ((UNDO, turn.undo), (FORK, turn.fork), (BUILD, turn.build)):
            row = await buttons.get(token)
            assert row is not None and (row.kind, row.topic_id) == (kind, 7)
            rows[kind] = dict(row.payload)
        turn_payload = {"session_id": "ses_1", "message_id": "msg_1", "last_message_id": "msg_1"}
        assert rows == {UNDO: turn_payload, FORK: turn_payload, BUILD: {"session_id": "ses_1"}}
        # a turn nobody prompted (no user message seen) has nothing to undo or fork
        unprompted = TurnSnapshot(2, "ses_1", 0.0)
        assert (await outputs.collect(7, planned, unprompted)).buttons is None


async def test_a_store_failure_shows_the_final_without_its_buttons(tmp_path: Path) -> None:
    async with await Database.open(tmp_path / "topics.db", TOPIC_MIGRATIONS) as db:
        broken = ButtonStore(db)
        await db.execute("DROP TABLE buttons")  # every new button fails now
        outputs = TurnOutputs(broken, Bindings(TopicStore(db), -100))
        client = OpenCodeClient("http://oc.test", transport=answered_by("plan"))
        output = await outputs.collect(7, client, TurnSnapshot(1, "ses_1", 0.0, ("msg_1",)))
    assert output == TurnOutput()


def test_the_final_keyboard_has_diff_then_undo_fork_and_build_it() -> None:
    def shown(output: TurnOutput) -> list[list[tuple[str, str]]] | None:
        rows = final_rows(output)
        if rows is None:
            return None
        return [[(b.text, str(b.callback_data)) for b in row] for row in rows]

    assert shown(TurnOutput()) is None
    turn = TurnButtons("u1", "f1")
    assert shown(TurnOutput(buttons=turn)) == [[("↩️ Undo", "k:u1"), ("🍴 Fork", "k:f1")]]
    everything = TurnOutput(
        changes=DiffStat(3, 1, 2), diff_token="d1", buttons=TurnButtons("u1", "f1", "b1")
    )
    assert shown(everything) == [
        [("📄 Diff +3 −1 · 2 files", "d:d1")],
        [("↩️ Undo", "k:u1"), ("🍴 Fork", "k:f1"), ("▶ Build it", "k:b1")],
    ]


class SessionClient:
    """A server holding the session ``messages``, undone from ``revert`` on (if set)."""

    def __init__(self, messages: list[MessageWithParts], revert: str | None = None) -> None:
        self._messages = messages
        self.revert_at = revert
        self.calls: list[tuple[str, str | None]] = []

    async def get_session(self, session_id: str) -> Session:
        revert = {"messageID": self.revert_at} if self.revert_at else None
        return Session.model_validate(
            {"id": session_id, "directory": "/p", "title": "t", "time": {"created": 0}}
            | {"revert": revert}
        )

    async def messages(self, session_id: str) -> list[MessageWithParts]:
        return self._messages

    async def revert(self, session_id: str, message_id: str) -> None:
        self.calls.append(("revert", message_id))
        self.revert_at = message_id

    async def unrevert(self, session_id: str) -> None:
        self.calls.append(("unrevert", None))
        self.revert_at = None


async def history_of(db: Database, client: SessionClient) -> tuple[History, TopicBinding, Any]:
    bindings = Bindings(TopicStore(db), -100)
    binding = await bindings.bind(7, Path("/p/demo"), "ses_1", "inst_1")
    chat = MenuChat()
    tracker = TurnTracker(chat, bindings, TurnJournal(ActiveTurnStore(db)))  # type: ignore[arg-type]
    prompter = Prompter(FakeRegistry(client), tracker, chat)  # type: ignore[arg-type]
    buttons = ControlButtons(ButtonStore(db), bindings)
    return History(prompter, tracker, None, buttons, chat), binding, chat  # type: ignore[arg-type]


class MenuChat(FakeChat):
    def __init__(self) -> None:
        super().__init__()
        self.menus: list[Menu] = []

    async def show_menu(self, topic_id: int, menu: Menu) -> int:
        self.menus.append(menu)
        return len(self.menus)


async def test_undo_of_an_older_turn_then_its_redo_and_a_gone_turn_changes_nothing(
    tmp_path: Path,
) -> None:
    async with await Database.open(tmp_path / "topics.db", TOPIC_MIGRATIONS) as db:
        client = SessionClient(session(*ROLES))
        history, binding, chat = await history_of(db, client)
        await history.undo(binding, TurnRef("msg_3", "msg_4"))
        assert client.calls == [("revert", "msg_3")]
        (menu,) = chat.menus
        assert menu.text.startswith("↩️ Undone from this turn on (1 later prompt too)")
        assert menu.text.endswith("text 3")
        assert [b.label for row in menu.rows for b in row] == ["↪️ Redo"]

        await history.undo(binding, TurnRef("msg_1", "msg_1"))  # further back: fine
        with pytest.raises(NotFound, match="A later undo is in place"):
            await history.redo(binding, "msg_3")  # the first Redo: not the undo in place
        assert await history.redo(binding, "msg_1") == "↪️ Redone: the undone turn is back."

        gone = SessionClient(session("user", "assistant"))
        history, binding, chat = await history_of(db, gone)
        with pytest.raises(NotFound, match="not in the session any more"):
            await history.undo(binding, TurnRef("msg_3", "msg_4"))
        assert gone.calls == [] and chat.menus == []
