"""The turn journal, and the tracker crossing entries out only once a final was delivered."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from oc_outpost.core.bindings import Bindings
from oc_outpost.core.chat import TopicGone
from oc_outpost.core.journal import TurnJournal
from oc_outpost.core.tracker import TurnTracker
from oc_outpost.core.turn import TurnSnapshot
from oc_outpost.model import TopicBinding
from oc_outpost.store.active_turns import ActiveTurnRecord, ActiveTurnStore
from oc_outpost.store.db import Database
from oc_outpost.store.migrations import TOPIC_MIGRATIONS
from oc_outpost.store.topics import TopicStore


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with await Database.open(tmp_path / "topics.db", TOPIC_MIGRATIONS) as db:
        yield db


@pytest.fixture
def store(db: Database) -> ActiveTurnStore:
    return ActiveTurnStore(db, now=lambda: 1000)


def binding(session_id: str = "ses_1", topic_id: int = 7) -> TopicBinding:
    return TopicBinding(
        chat_id=-100,
        topic_id=topic_id,
        project_path="/p/demo",
        created_at=1,
        updated_at=1,
        session_id=session_id,
        instance_id="inst_1",
    )


class RecordingChat:
    """The chat port as far as the tracker uses it; `fail_with` makes final deliveries fail."""

    def __init__(self, fail_with: BaseException | None = None) -> None:
        self.finals: list[str] = []
        self.notices: list[tuple[int | None, str]] = []
        self.fail_with = fail_with

    def show_progress(self, topic_id: int, turn: TurnSnapshot) -> None:
        return None

    async def show_final(self, topic_id: int, turn: TurnSnapshot, *, streaming: bool) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.finals.append(turn.session_id)

    async def notify(self, topic_id: int | None, text: str) -> None:
        self.notices.append((topic_id, text))


def tracker_with(chat: RecordingChat, db: Database, journal: TurnJournal) -> TurnTracker:
    bindings = Bindings(TopicStore(db), -100)
    return TurnTracker(chat, bindings, journal)  # type: ignore[arg-type]


# --- the journal ------------------------------------------------------------------------------


async def test_active_turns_are_stored_listed_and_deleted(store: ActiveTurnStore) -> None:
    record = ActiveTurnRecord("ses_1", 7, "inst_1", "/p/demo", 1000)
    await store.put(record)
    await store.put(ActiveTurnRecord("ses_2", 8, None, "/p/other", 1000))

    assert await store.delete("ses_2") is True
    assert await store.delete("ses_2") is False
    assert await store.all() == [record]


async def test_a_delivered_final_closes_the_journal_entry(
    store: ActiveTurnStore, db: Database
) -> None:
    journal = TurnJournal(store)
    await journal.started(binding())
    await journal.started(binding())  # once per turn
    chat = RecordingChat()
    tracker = tracker_with(chat, db, journal)
    tracker.begin(binding(), client=None)  # type: ignore[arg-type]
    assert journal.is_open("ses_1") and len(await store.all()) == 1

    await tracker.fail("ses_1", 7, "it broke")

    assert chat.finals == ["ses_1"]
    assert not journal.is_open("ses_1")
    assert await store.all() == []


async def test_a_final_that_could_not_be_delivered_stays_owed(
    store: ActiveTurnStore, db: Database
) -> None:
    journal = TurnJournal(store)
    await journal.started(binding())
    tracker = tracker_with(RecordingChat(fail_with=RuntimeError("telegram is down")), db, journal)
    tracker.begin(binding(), client=None)  # type: ignore[arg-type]

    await tracker.fail("ses_1", 7, "it broke")  # logged, not raised: the caller goes on

    (record,) = await TurnJournal(store).load()  # the next start delivers it
    assert record.session_id == "ses_1"


async def test_a_final_whose_topic_is_gone_is_not_owed_any_more(
    store: ActiveTurnStore, db: Database
) -> None:
    journal = TurnJournal(store)
    await journal.started(binding())
    tracker = tracker_with(RecordingChat(fail_with=TopicGone()), db, journal)
    tracker.begin(binding(), client=None)  # type: ignore[arg-type]

    await tracker.fail("ses_1", 7, "it broke")

    assert await journal.load() == []


async def test_load_returns_what_a_previous_run_left_open(store: ActiveTurnStore) -> None:
    await TurnJournal(store).started(binding("ses_9", 3))

    journal = TurnJournal(store)
    (record,) = await journal.load()

    assert (record.session_id, record.topic_id, record.instance_id) == ("ses_9", 3, "inst_1")
    assert journal.is_open("ses_9")


class AdoptingChat(RecordingChat):
    def __init__(self) -> None:
        super().__init__()
        self.adopted: list[tuple[int, str, int]] = []

    def adopt_progress(self, topic_id: int, turn: TurnSnapshot, message_id: int) -> None:
        self.adopted.append((topic_id, turn.session_id, message_id))


async def test_the_progress_message_of_a_turn_survives_a_restart_and_is_closed(
    store: ActiveTurnStore, db: Database
) -> None:
    before = TurnJournal(store)
    await before.progress_shown("ses_1", 41)  # sent before the first event wrote the turn down
    await before.started(binding())

    after = TurnJournal(store)  # the next run
    (record,) = await after.load()
    assert record.progress_message_id == 41
    chat = AdoptingChat()
    tracker = tracker_with(chat, db, after)
    await tracker.fail("ses_1", 7, "The bot restarted during this turn and OpenCode is gone")

    assert chat.adopted == [(7, "ses_1", 41)]  # the old message is edited, not left "Working"
    assert chat.finals == ["ses_1"] and chat.notices == []
    assert await after.load() == []


async def test_a_turn_still_running_after_a_restart_edits_its_old_progress_message(
    store: ActiveTurnStore, db: Database
) -> None:
    before = TurnJournal(store)
    await before.started(binding())
    await before.progress_shown("ses_1", 52)
    after = TurnJournal(store)
    await after.load()
    chat = AdoptingChat()
    tracker = tracker_with(chat, db, after)

    tracker.reconcile(binding(), client=None, busy=True)  # type: ignore[arg-type]

    assert chat.adopted == [(7, "ses_1", 52)] and tracker.is_busy("ses_1")
