"""Telegram updates received but not yet handled, and the getUpdates offset after them.

Stored in the topics database's `bot_state` table: the offset under `telegram.update_offset`
(as `BotStateStore.get_update_offset` reads it) and each update under `telegram.update:<id>`
with the update as Telegram sent it (JSON). `receive` writes a batch and the offset after it in
one statement, so a crash never leaves one without the other.
"""

from __future__ import annotations

from collections.abc import Sequence

from oc_outpost.model import ReceivedUpdate
from oc_outpost.store.bot_state import UPDATE_OFFSET_KEY
from oc_outpost.store.db import Clock, Database, system_clock
from oc_outpost.store.errors import StoreError

_PREFIX = "telegram.update:"


class UpdateInbox:
    def __init__(self, db: Database, now: Clock = system_clock) -> None:
        self._db = db
        self._now = now

    async def offset(self) -> int | None:
        """The next getUpdates offset: every update below it was received and stored."""
        row = await self._db.fetch_one(
            "SELECT value FROM bot_state WHERE key = ?", (UPDATE_OFFSET_KEY,)
        )
        if row is None:
            return None
        try:
            return int(row["value"])
        except ValueError as exc:
            raise StoreError(f"bot_state {UPDATE_OFFSET_KEY!r} is not an integer") from exc

    async def receive(self, updates: Sequence[ReceivedUpdate], next_offset: int) -> None:
        """Store a batch of updates and the offset that acknowledges it, atomically."""
        now = self._now()
        rows = [(_PREFIX + str(u.update_id), u.data, now) for u in updates]
        rows.append((UPDATE_OFFSET_KEY, str(next_offset), now))
        values = ", ".join("(?, ?, ?)" for _ in rows)
        await self._db.execute(
            f"""
            INSERT INTO bot_state (key, value, updated_at) VALUES {values}
            ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at
            """,  # only placeholders are formatted into the statement
            tuple(value for row in rows for value in row),
        )

    async def handled(self, update_id: int) -> None:
        await self._db.execute("DELETE FROM bot_state WHERE key = ?", (_PREFIX + str(update_id),))

    async def pending(self) -> list[ReceivedUpdate]:
        """Updates received and never handled, oldest first."""
        rows = await self._db.fetch_all(
            "SELECT key, value FROM bot_state WHERE key LIKE ?", (_PREFIX + "%",)
        )
        found = []
        for row in rows:
            suffix = str(row["key"]).removeprefix(_PREFIX)
            if not suffix.isdigit():
                raise StoreError(f"bot_state {row['key']!r} is not an update")
            found.append(ReceivedUpdate(int(suffix), str(row["value"])))
        return sorted(found, key=lambda u: u.update_id)
