"""Small key/value state of the bot, e.g. the Telegram update offset (topics database)."""

from __future__ import annotations

from typing import Final

from oc_outpost.store.db import Clock, Database, system_clock
from oc_outpost.store.errors import StoreError

UPDATE_OFFSET_KEY: Final = "telegram.update_offset"


class BotStateStore:
    def __init__(self, db: Database, now: Clock = system_clock) -> None:
        self._db = db
        self._now = now

    async def get(self, key: str) -> str | None:
        row = await self._db.fetch_one("SELECT value FROM bot_state WHERE key = ?", (key,))
        return None if row is None else str(row["value"])

    async def set(self, key: str, value: str) -> None:
        await self._db.execute(
            """
            INSERT INTO bot_state (key, value, updated_at) VALUES (?, ?, ?)
            ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at
            """,
            (key, value, self._now()),
        )

    async def get_update_offset(self) -> int | None:
        """The next getUpdates offset, or None if none was ever stored."""
        value = await self.get(UPDATE_OFFSET_KEY)
        if value is None:
            return None
        try:
            return int(value)
        except ValueError as exc:
            raise StoreError(
                f"bot_state {UPDATE_OFFSET_KEY!r} is not an integer: {value!r}"
            ) from exc

    async def set_update_offset(self, offset: int) -> None:
        await self.set(UPDATE_OFFSET_KEY, str(offset))
