"""One SQLite database file: WAL mode, foreign keys, busy timeout, versioned migrations.

The file, its `-wal` and `-shm` companions are 0600 and their directory 0700 (they hold the
bindings and server passwords); SQLite gives the companions the mode of the main file.

The connection runs in autocommit mode (`isolation_level=None`): every statement the stores issue
is atomic on its own, and migrations open their own explicit transactions.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiosqlite

from oc_outpost.private_files import create_private_file, ensure_private_dir, restrict_file
from oc_outpost.store.errors import MigrationError, StoreError

log = logging.getLogger(__name__)

DEFAULT_BUSY_TIMEOUT_MS = 5000

Params = Sequence[Any] | dict[str, Any]
Clock = Callable[[], int]
"""Returns the current time in UTC seconds; stores take one so tests can pin time."""


def system_clock() -> int:
    return int(time.time())


class Database:
    """An open SQLite database. Create with `await Database.open(path, migrations)`."""

    def __init__(self, path: Path, connection: aiosqlite.Connection) -> None:
        self.path = path
        self._connection: aiosqlite.Connection | None = connection

    @classmethod
    async def open(
        cls,
        path: Path | str,
        migrations: Sequence[str],
        *,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
    ) -> Database:
        path = Path(path)
        await asyncio.to_thread(_prepare_private_file, path)
        connection = await aiosqlite.connect(path, isolation_level=None)
        database = cls(path, connection)
        try:
            await database._configure(busy_timeout_ms)
            await asyncio.to_thread(_restrict_companions, path)
            await database._migrate(migrations)
        except BaseException:
            await database.close()
            raise
        return database

    async def close(self) -> None:
        """Close the connection; closing twice is harmless."""
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def is_open(self) -> bool:
        return self._connection is not None

    async def fetch_all(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        """Run one statement (a SELECT, or a write with RETURNING) and return all its rows."""
        rows = await self._conn.execute_fetchall(sql, params)
        return list(rows)

    async def fetch_one(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one write statement and return the number of rows it changed."""
        async with self._conn.execute(sql, params) as cursor:
            return cursor.rowcount

    async def pragma(self, name: str) -> Any:
        row = await self.fetch_one(f"PRAGMA {name}")
        return None if row is None else row[0]

    @property
    def _conn(self) -> aiosqlite.Connection:
        if self._connection is None:
            raise StoreError(f"database {self.path} is closed")
        return self._connection

    async def _configure(self, busy_timeout_ms: int) -> None:
        self._conn.row_factory = sqlite3.Row
        await self.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        journal_mode = await self.pragma("journal_mode = WAL")
        if str(journal_mode).lower() != "wal":
            raise StoreError(f"database {self.path}: cannot enable WAL mode (got {journal_mode!r})")
        await self.execute("PRAGMA synchronous = NORMAL")
        await self.execute("PRAGMA foreign_keys = ON")

    async def _migrate(self, migrations: Sequence[str]) -> None:
        current = int(await self.pragma("user_version"))
        if current > len(migrations):
            raise MigrationError(
                f"database {self.path} has schema version {current}, newer than this program "
                f"knows ({len(migrations)}); refusing to use it"
            )
        for version in range(current + 1, len(migrations) + 1):
            await self._apply(version, migrations[version - 1])

    async def _apply(self, version: int, script: str) -> None:
        # executescript() runs the whole script in one call, so BEGIN/COMMIT wrap it exactly;
        # user_version is part of the transaction, so a failed migration leaves no trace.
        try:
            await self._conn.executescript(
                f"BEGIN IMMEDIATE;\n{script}\n;PRAGMA user_version = {version};\nCOMMIT;"
            )
        except sqlite3.Error as exc:
            if self._conn.in_transaction:
                await self.execute("ROLLBACK")
            raise MigrationError(
                f"database {self.path}: migration {version} failed: {exc}"
            ) from exc
        log.info("database %s migrated to schema version %d", self.path, version)


def _prepare_private_file(path: Path) -> None:
    ensure_private_dir(path.parent)
    create_private_file(path)


def _restrict_companions(path: Path) -> None:
    """`-wal`/`-shm` left by an older version (or another tool) with wider modes."""
    for suffix in ("-wal", "-shm"):
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            restrict_file(companion)
