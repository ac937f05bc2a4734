"""SQLite stores: schema and migrations, and every store operation against a real file."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from oc_outpost.model import InstanceInfo, InstanceKind, InstanceState, TopicBinding
from oc_outpost.store import pending as pending_module
from oc_outpost.store.bot_state import BotStateStore
from oc_outpost.store.db import Database
from oc_outpost.store.errors import MigrationError, NotFound, StoreError
from oc_outpost.store.instances import InstanceStore
from oc_outpost.store.migrations import ORCHESTRATOR_MIGRATIONS, TOPIC_MIGRATIONS
from oc_outpost.store.pending import PendingKind, PendingStatus, PendingStore
from oc_outpost.store.topics import TopicStore

CHAT = -1001
T0 = 1_700_000_000


class FakeClock:
    def __init__(self, start: int = T0) -> None:
        self.value = start

    def __call__(self) -> int:
        return self.value

    def advance(self, seconds: int) -> None:
        self.value += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def topic_db_path(tmp_path: Path) -> Path:
    return tmp_path / "nested" / "dir" / "topics.db"


@pytest.fixture
async def orchestrator_db(tmp_path: Path) -> AsyncIterator[Database]:
    db = await Database.open(tmp_path / "orchestrator.db", ORCHESTRATOR_MIGRATIONS)
    yield db
    await db.close()


@pytest.fixture
async def topic_db(topic_db_path: Path) -> AsyncIterator[Database]:
    db = await Database.open(topic_db_path, TOPIC_MIGRATIONS)
    yield db
    await db.close()


@pytest.fixture
def instances(orchestrator_db: Database, clock: FakeClock) -> InstanceStore:
    return InstanceStore(orchestrator_db, now=clock)


@pytest.fixture
def topics(topic_db: Database, clock: FakeClock) -> TopicStore:
    return TopicStore(topic_db, now=clock)


@pytest.fixture
def pending(topic_db: Database, clock: FakeClock) -> PendingStore:
    return PendingStore(topic_db, now=clock)


@pytest.fixture
def bot_state(topic_db: Database, clock: FakeClock) -> BotStateStore:
    return BotStateStore(topic_db, now=clock)


def instance(
    instance_id: str = "inst_1",
    *,
    path: str = "/p/alpha",
    state: InstanceState = InstanceState.RUNNING,
    port: int | None = 4100,
    created_at: int = T0,
) -> InstanceInfo:
    return InstanceInfo(
        id=instance_id,
        kind=InstanceKind.MANAGED,
        project_path=path,
        state=state,
        created_at=created_at,
        updated_at=created_at,
        port=port,
        pid=1234,
        session_id="ses_1",
        password="pw-secret",
    )


def binding(topic_id: int = 7, **changes: object) -> TopicBinding:
    base = TopicBinding(
        chat_id=CHAT,
        topic_id=topic_id,
        project_path="/p/alpha",
        created_at=T0,
        updated_at=T0,
        session_id="ses_1",
        instance_id="inst_1",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


async def names(db: Database, kind: str) -> set[str]:
    rows = await db.fetch_all(
        "SELECT name FROM sqlite_master WHERE type = ? AND name NOT LIKE 'sqlite_%'", (kind,)
    )
    return {row["name"] for row in rows}


# --- Database and migrations --------------------------------------------------------------


async def test_topic_db_is_created_with_tables_and_indexes(
    topic_db: Database, topic_db_path: Path
) -> None:
    assert await asyncio.to_thread(topic_db_path.is_file)
    assert await names(topic_db, "table") == {
        "topic_mappings",
        "pending_requests",
        "bot_state",
        "buttons",
        "button_presses",
    }
    assert {
        "idx_topic_mappings_chat_id",
        "idx_topic_mappings_session_id",
        "idx_topic_mappings_instance_id",
        "idx_pending_requests_request_id",
    } <= await names(topic_db, "index")


async def test_orchestrator_db_has_instances_table_and_indexes(orchestrator_db: Database) -> None:
    assert await names(orchestrator_db, "table") == {"instances"}
    assert await names(orchestrator_db, "index") == {
        "idx_instances_port",
        "idx_instances_project_path",
        "idx_instances_state",
    }


async def test_pragmas_wal_foreign_keys_busy_timeout_user_version(topic_db: Database) -> None:
    assert await topic_db.pragma("journal_mode") == "wal"
    assert await topic_db.pragma("foreign_keys") == 1
    assert await topic_db.pragma("busy_timeout") == 5000
    assert await topic_db.pragma("user_version") == len(TOPIC_MIGRATIONS)


async def test_reopen_is_idempotent_and_data_persists(topic_db_path: Path) -> None:
    async with await Database.open(topic_db_path, TOPIC_MIGRATIONS) as db:
        await TopicStore(db).save(binding())
        await BotStateStore(db).set_update_offset(42)

    for _ in range(2):
        async with await Database.open(topic_db_path, TOPIC_MIGRATIONS) as db:
            assert await db.pragma("user_version") == len(TOPIC_MIGRATIONS)
            assert len(await TopicStore(db).by_chat(CHAT)) == 1
            assert await BotStateStore(db).get_update_offset() == 42
            tables = {
                "topic_mappings",
                "pending_requests",
                "bot_state",
                "buttons",
                "button_presses",
            }
            assert await names(db, "table") == tables


async def test_new_migration_is_applied_on_reopen(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    first = ["CREATE TABLE a (x INTEGER);"]
    async with await Database.open(path, first) as db:
        await db.execute("INSERT INTO a VALUES (1)")

    async with await Database.open(path, [*first, "ALTER TABLE a ADD COLUMN y TEXT;"]) as db:
        assert await db.pragma("user_version") == 2
        rows = await db.fetch_all("SELECT x, y FROM a")
        assert [tuple(row) for row in rows] == [(1, None)]


async def test_failed_migration_rolls_back_and_reports(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    good = "CREATE TABLE a (x INTEGER);"
    bad = "CREATE TABLE b (x INTEGER); INSERT INTO missing_table VALUES (1);"

    with pytest.raises(MigrationError, match="migration 2 failed: no such table: missing_table"):
        await Database.open(path, [good, bad])

    async with await Database.open(path, [good]) as db:
        assert await db.pragma("user_version") == 1
        assert await names(db, "table") == {"a"}


async def test_database_newer_than_program_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    async with await Database.open(path, ["CREATE TABLE a (x);", "CREATE TABLE b (x);"]):
        pass

    with pytest.raises(MigrationError, match="schema version 2, newer than this program"):
        await Database.open(path, ["CREATE TABLE a (x);"])


async def test_closed_database_raises_store_error(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "c.db", TOPIC_MIGRATIONS)
    await db.close()
    await db.close()

    assert not db.is_open
    with pytest.raises(StoreError, match="is closed"):
        await BotStateStore(db).get("x")


# --- InstanceStore ------------------------------------------------------------------------


async def test_instance_roundtrip_keeps_every_field(
    instances: InstanceStore, clock: FakeClock
) -> None:
    clock.advance(5)
    saved = await instances.save(instance())

    assert saved == replace(instance(), updated_at=T0 + 5)
    assert await instances.get("inst_1") == saved
    assert saved.password == "pw-secret"


async def test_instance_enums_are_stored_as_plain_strings(
    instances: InstanceStore, orchestrator_db: Database
) -> None:
    await instances.save(instance())

    row = await orchestrator_db.fetch_one("SELECT kind, state FROM instances")
    assert row is not None
    assert (row["kind"], row["state"]) == ("managed", "running")


async def test_instance_upsert_preserves_created_at(
    instances: InstanceStore, clock: FakeClock
) -> None:
    await instances.save(instance(created_at=T0))
    clock.advance(100)

    updated = await instances.save(
        replace(instance(created_at=T0 + 50), state=InstanceState.STOPPED, port=None)
    )

    assert updated.created_at == T0
    assert updated.updated_at == T0 + 100
    assert updated.state is InstanceState.STOPPED
    assert updated.port is None
    assert len(await instances.all()) == 1


async def test_instance_lookups_of_missing_rows(instances: InstanceStore) -> None:
    assert await instances.get("nope") is None
    assert await instances.all() == []


async def test_all_lists_every_instance_in_creation_order(instances: InstanceStore) -> None:
    await instances.save(instance("b", created_at=T0 + 1))
    await instances.save(instance("a", created_at=T0 + 2))
    await instances.save(instance("c", created_at=T0))

    assert [info.id for info in await instances.all()] == ["c", "b", "a"]


async def test_update_state_with_and_without_pid(
    instances: InstanceStore, clock: FakeClock
) -> None:
    await instances.save(instance())
    clock.advance(3)

    stopping = await instances.update_state("inst_1", InstanceState.STOPPING)
    assert (stopping.state, stopping.pid, stopping.updated_at) == (
        InstanceState.STOPPING,
        1234,
        T0 + 3,
    )

    restarted = await instances.update_state("inst_1", InstanceState.RUNNING, pid=999)
    assert restarted.pid == 999

    stopped = await instances.update_state("inst_1", InstanceState.STOPPED, pid=None)
    assert stopped.pid is None
    assert await instances.get("inst_1") == stopped


async def test_update_state_of_missing_instance_raises_not_found(
    instances: InstanceStore,
) -> None:
    with pytest.raises(NotFound, match="nope"):
        await instances.update_state("nope", InstanceState.STOPPED)


async def test_delete_instance_is_idempotent(instances: InstanceStore) -> None:
    await instances.save(instance())

    assert await instances.delete("inst_1") is True
    assert await instances.delete("inst_1") is False
    assert await instances.get("inst_1") is None


async def test_instances_persist_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    async with await Database.open(path, ORCHESTRATOR_MIGRATIONS) as db:
        saved = await InstanceStore(db).save(instance())
    async with await Database.open(path, ORCHESTRATOR_MIGRATIONS) as db:
        assert await InstanceStore(db).all() == [saved]


# --- TopicStore ---------------------------------------------------------------------------


async def test_topic_roundtrip_and_upsert_preserves_created_at(
    topics: TopicStore, clock: FakeClock
) -> None:
    clock.advance(1)
    saved = await topics.save(binding(streaming_enabled=False, topic_name_updated=True))
    assert saved == binding(streaming_enabled=False, topic_name_updated=True, updated_at=T0 + 1)
    assert await topics.get(CHAT, 7) == saved

    clock.advance(9)
    updated = await topics.save(binding(project_path="/p/beta", created_at=T0 + 5))
    assert updated.created_at == T0
    assert updated.updated_at == T0 + 10
    assert updated.project_path == "/p/beta"
    assert updated.streaming_enabled is True
    assert len(await topics.by_chat(CHAT)) == 1


async def test_topic_get_missing_is_none(topics: TopicStore) -> None:
    assert await topics.get(CHAT, 999) is None
    assert await topics.get(CHAT + 1, 7) is None


async def test_topic_queries_by_chat_session_instance(topics: TopicStore) -> None:
    await topics.save(binding(7, session_id="ses_a", instance_id="inst_x"))
    await topics.save(binding(3, session_id="ses_b", instance_id="inst_x"))
    await topics.save(binding(9, session_id="ses_a", instance_id="inst_y"))
    await topics.save(binding(7, chat_id=CHAT - 1, session_id="ses_c", instance_id=None))

    assert [b.topic_id for b in await topics.by_chat(CHAT)] == [3, 7, 9]
    assert [b.topic_id for b in await topics.by_session("ses_a")] == [7, 9]
    assert [b.topic_id for b in await topics.by_instance("inst_x")] == [3, 7]
    assert await topics.by_session("ses_none") == []
    assert await topics.by_instance("inst_none") == []
    assert await topics.by_chat(42) == []


async def test_delete_topic_is_idempotent(topics: TopicStore) -> None:
    await topics.save(binding(7))
    await topics.save(binding(8))

    assert await topics.delete(CHAT, 7) is True
    assert await topics.delete(CHAT, 7) is False
    assert [b.topic_id for b in await topics.by_chat(CHAT)] == [8]


async def create_permission(
    pending: PendingStore, request_id: str = "per_1", session_id: str = "ses_1"
) -> pending_module.PendingRequest:
    return await pending.create(
        PendingKind.PERMISSION,
        request_id=request_id,
        session_id=session_id,
        instance_id="inst_1",
        chat_id=CHAT,
        topic_id=7,
        payload={"permission": "bash", "patterns": ["rm -rf build/*"], "note": "ünïcode ✓"},
    )


async def test_create_returns_stored_pending_request(pending: PendingStore) -> None:
    request = await create_permission(pending)

    assert re.fullmatch(r"[A-Za-z0-9_-]{1,16}", request.token)
    assert len(f"p:{request.token}:o".encode()) <= 64
    assert request.kind is PendingKind.PERMISSION
    assert request.status is PendingStatus.PENDING
    assert (request.request_id, request.session_id, request.instance_id) == (
        "per_1",
        "ses_1",
        "inst_1",
    )
    assert (request.chat_id, request.topic_id, request.message_id) == (CHAT, 7, None)
    assert request.payload["patterns"] == ["rm -rf build/*"]
    assert request.payload["note"] == "ünïcode ✓"
    assert (request.decision, request.answered_by) == (None, None)
    assert (request.created_at, request.updated_at) == (T0, T0)
    assert await pending.get(request.token) == request


async def test_create_accepts_kind_as_plain_string_and_rejects_unknown(
    pending: PendingStore,
) -> None:
    request = await pending.create("question", "que_1", "ses_1", None, CHAT, 7, {"options": []})
    assert request.kind is PendingKind.QUESTION
    assert request.instance_id is None

    with pytest.raises(ValueError, match="nonsense"):
        await pending.create("nonsense", "x", "ses_1", None, CHAT, 7, {})


async def test_tokens_are_unique(pending: PendingStore) -> None:
    requests = [await create_permission(pending, request_id=f"r{i}") for i in range(100)]

    assert len({request.token for request in requests}) == 100


async def test_token_collision_is_retried(
    pending: PendingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = iter(["dup", "dup", "fresh"])
    monkeypatch.setattr(pending_module, "new_token", lambda: next(tokens))

    first = await create_permission(pending, request_id="a")
    second = await create_permission(pending, request_id="b")

    assert (first.token, second.token) == ("dup", "fresh")


async def test_token_exhaustion_raises_store_error(
    pending: PendingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pending_module, "new_token", lambda: "same")
    await create_permission(pending)

    with pytest.raises(StoreError, match="unique token"):
        await create_permission(pending)


async def test_get_missing_and_get_by_request_id(pending: PendingStore, clock: FakeClock) -> None:
    assert await pending.get("missing") is None
    assert await pending.get_by_request_id("per_1") is None

    await create_permission(pending, request_id="per_1")
    clock.advance(1)
    newest = await create_permission(pending, request_id="per_1")
    await create_permission(pending, request_id="per_2")

    assert await pending.get_by_request_id("per_1") == newest


async def test_set_message_id(pending: PendingStore, clock: FakeClock) -> None:
    request = await create_permission(pending)
    clock.advance(2)

    updated = await pending.set_message_id(request.token, 555)

    assert (updated.message_id, updated.updated_at) == (555, T0 + 2)
    assert await pending.get(request.token) == updated
    with pytest.raises(NotFound, match="missing"):
        await pending.set_message_id("missing", 1)


async def test_resolve_is_true_exactly_once(pending: PendingStore, clock: FakeClock) -> None:
    request = await create_permission(pending)
    clock.advance(7)

    assert await pending.resolve(request.token, "once", "alice") is True
    assert await pending.resolve(request.token, "reject", "mallory") is False

    stored = await pending.get(request.token)
    assert stored is not None
    assert (stored.status, stored.decision, stored.answered_by, stored.updated_at) == (
        PendingStatus.ANSWERED,
        "once",
        "alice",
        T0 + 7,
    )
    assert await pending.resolve("unknown", "once", "alice") is False


async def test_concurrent_resolve_has_exactly_one_winner(pending: PendingStore) -> None:
    request = await create_permission(pending)

    results = await asyncio.gather(
        *(pending.resolve(request.token, f"decision-{i}", f"user-{i}") for i in range(20))
    )

    assert results.count(True) == 1
    winner = results.index(True)
    stored = await pending.get(request.token)
    assert stored is not None
    assert (stored.decision, stored.answered_by) == (f"decision-{winner}", f"user-{winner}")


async def test_concurrent_resolve_across_two_connections(topic_db_path: Path) -> None:
    async with (
        await Database.open(topic_db_path, TOPIC_MIGRATIONS) as first,
        await Database.open(topic_db_path, TOPIC_MIGRATIONS) as second,
    ):
        request = await create_permission(PendingStore(first))
        stores = [PendingStore(first), PendingStore(second)]

        results = await asyncio.gather(
            *(stores[i % 2].resolve(request.token, "once", f"user-{i}") for i in range(20))
        )

    assert results.count(True) == 1


async def test_expire_for_session(pending: PendingStore, clock: FakeClock) -> None:
    answered = await create_permission(pending, request_id="r0")
    await pending.resolve(answered.token, "once", "alice")
    first = await create_permission(pending, request_id="r1")
    second = await create_permission(pending, request_id="r2")
    other = await create_permission(pending, request_id="r3", session_id="ses_other")
    clock.advance(3)

    assert await pending.expire_for_session("ses_1") == 2
    assert await pending.expire_for_session("ses_1") == 0

    for token in (first.token, second.token):
        stored = await pending.get(token)
        assert stored is not None
        assert (stored.status, stored.updated_at) == (PendingStatus.EXPIRED, T0 + 3)
    assert (await pending.get(answered.token)).status is PendingStatus.ANSWERED  # type: ignore[union-attr]
    assert (await pending.get(other.token)).status is PendingStatus.PENDING  # type: ignore[union-attr]
    assert await pending.resolve(first.token, "once", "alice") is False


async def test_pending_for_session_and_count(pending: PendingStore, clock: FakeClock) -> None:
    assert await pending.count_pending() == 0
    first = await create_permission(pending, request_id="r1")
    clock.advance(1)
    second = await create_permission(pending, request_id="r2")
    await create_permission(pending, request_id="r3", session_id="ses_other")
    done = await create_permission(pending, request_id="r4")
    await pending.resolve(done.token, "reject", "bob")

    assert await pending.pending_for_session("ses_1") == [first, second]
    assert await pending.pending_for_session("ses_none") == []
    assert await pending.count_pending() == 3


async def test_pending_request_survives_restart(topic_db_path: Path) -> None:
    async with await Database.open(topic_db_path, TOPIC_MIGRATIONS) as db:
        request = await create_permission(PendingStore(db))

    async with await Database.open(topic_db_path, TOPIC_MIGRATIONS) as db:
        store = PendingStore(db)
        assert await store.get(request.token) == request
        assert await store.resolve(request.token, "always", "alice") is True


# --- BotStateStore ------------------------------------------------------------------------


async def test_bot_state_get_set(bot_state: BotStateStore, topic_db: Database) -> None:
    assert await bot_state.get("k") is None

    await bot_state.set("k", "v1")
    assert await bot_state.get("k") == "v1"

    await bot_state.set("k", "v2")
    assert await bot_state.get("k") == "v2"
    row = await topic_db.fetch_one("SELECT COUNT(*) AS n, MAX(updated_at) AS t FROM bot_state")
    assert row is not None
    assert (row["n"], row["t"]) == (1, T0)


async def test_update_offset_helpers(bot_state: BotStateStore) -> None:
    assert await bot_state.get_update_offset() is None

    await bot_state.set_update_offset(123456789)
    assert await bot_state.get_update_offset() == 123456789

    await bot_state.set_update_offset(123456790)
    assert await bot_state.get_update_offset() == 123456790


async def test_corrupt_update_offset_raises_store_error(bot_state: BotStateStore) -> None:
    await bot_state.set("telegram.update_offset", "not-a-number")

    with pytest.raises(StoreError, match="not an integer"):
        await bot_state.get_update_offset()


# --- privacy: the data directory and the database files are the bot user's only -------------


def mode_of(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest.fixture
def wide_umask() -> Iterator[None]:
    previous = os.umask(0o022)  # the common default: new files 0644, directories 0755
    try:
        yield
    finally:
        os.umask(previous)


async def test_a_new_data_directory_is_0700_and_database_files_0600(
    tmp_path: Path, wide_umask: None
) -> None:
    path = tmp_path / "data" / "topics.db"
    async with await Database.open(path, TOPIC_MIGRATIONS) as db:
        await db.execute("INSERT INTO bot_state (key, value, updated_at) VALUES ('k', 'v', 0)")
        assert mode_of(path.parent) == 0o700
        files = [path, path.with_name("topics.db-wal"), path.with_name("topics.db-shm")]
        assert all(f.exists() for f in files)
        assert [mode_of(f) for f in files] == [0o600, 0o600, 0o600]


async def test_existing_wider_permissions_are_tightened_and_logged(
    tmp_path: Path, wide_umask: None, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    path = data / "o.db"
    async with await Database.open(path, ORCHESTRATOR_MIGRATIONS):
        pass
    for name in ("o.db", "o.db-wal", "o.db-shm"):
        if (data / name).exists():
            os.chmod(data / name, 0o644)
    with caplog.at_level(logging.WARNING, logger="oc_outpost.private_files"):
        async with await Database.open(path, ORCHESTRATOR_MIGRATIONS):
            assert mode_of(data) == 0o700
            present = [f for f in data.iterdir() if f.name.startswith("o.db")]
            assert {mode_of(f) for f in present} == {0o600}
    assert f"data directory {data} was mode 755; tightened to 700" in caplog.text


async def test_a_shared_sticky_directory_is_left_alone_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    with caplog.at_level(logging.WARNING, logger="oc_outpost.private_files"):
        async with await Database.open(shared / "t.db", TOPIC_MIGRATIONS):
            pass
    assert mode_of(shared) == 0o777 and (shared.stat().st_mode & 0o1000)
    assert mode_of(shared / "t.db") == 0o600
    assert "is shared" in caplog.text
