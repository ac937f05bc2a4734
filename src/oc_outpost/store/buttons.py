"""What the file and diff buttons point at (topics database).

A button carries only a short token; the directory view or turn it stands for lives here, so a
press after a bot restart still works. Presses are remembered by their callback query id and their
button, so a press Telegram delivers twice (the bot stopped before confirming the update) or a
quick double tap acts once; the same button pressed again later acts again (the file is sent
again). Rows older than ``ttl_s`` are pruned when new ones are written.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

from oc_outpost.store.db import Clock, Database, system_clock
from oc_outpost.store.errors import StoreError
from oc_outpost.store.pending import new_token

DEFAULT_TTL_S: Final = 30 * 24 * 3600
REPEAT_WINDOW_S: Final = 10
_CREATE_ATTEMPTS: Final = 5


@dataclass(frozen=True)
class ButtonRow:
    token: str
    kind: str
    topic_id: int
    payload: Mapping[str, Any]
    created_at: int


class ButtonStore:
    def __init__(self, db: Database, now: Clock = system_clock, ttl_s: int = DEFAULT_TTL_S) -> None:
        self._db = db
        self._now = now
        self._ttl_s = ttl_s

    async def create(self, kind: str, topic_id: int, payload: Mapping[str, Any]) -> str:
        """Store ``payload`` under a fresh token and return the token."""
        await self._prune()
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        for _ in range(_CREATE_ATTEMPTS):
            token = new_token()
            changed = await self._db.execute(
                "INSERT INTO buttons (token, kind, topic_id, payload, created_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (token) DO NOTHING",
                (token, kind, topic_id, body, self._now()),
            )
            if changed == 1:
                return token
        raise StoreError(f"could not allocate a unique button token in {_CREATE_ATTEMPTS} tries")

    async def get(self, token: str) -> ButtonRow | None:
        row = await self._db.fetch_one(
            "SELECT token, kind, topic_id, payload, created_at FROM buttons WHERE token = ?",
            (token,),
        )
        if row is None:
            return None
        payload = json.loads(row["payload"])
        if not isinstance(payload, dict):
            raise StoreError(f"button {token!r}: payload is not a JSON object")
        return ButtonRow(row["token"], row["kind"], row["topic_id"], payload, row["created_at"])

    async def claim_press(self, query_id: str, key: str) -> bool:
        """True for a press to act on. False for a press Telegram delivered before (same
        callback query id) or the same button (``key``) pressed again within
        ``REPEAT_WINDOW_S`` (a double tap, or a replay with a new id): that is done already."""
        now = self._now()
        changed = await self._db.execute(
            """
            INSERT INTO button_presses (query_id, press_key, created_at)
            SELECT ?, ?, ? WHERE NOT EXISTS (
                SELECT 1 FROM button_presses WHERE press_key = ? AND created_at > ?
            )
            ON CONFLICT (query_id) DO NOTHING
            """,
            (query_id, key, now, key, now - REPEAT_WINDOW_S),
        )
        return changed == 1

    @asynccontextmanager
    async def pressed(self, query_id: str, key: str) -> AsyncIterator[bool]:
        """``claim_press`` for the block's work; a press whose work fails is released, so
        pressing the button again is not ignored."""
        fresh = await self.claim_press(query_id, key)
        try:
            yield fresh
        except BaseException:
            if fresh:
                await self.release_press(query_id)
            raise

    async def release_press(self, query_id: str) -> None:
        """Forget a press whose work failed, so pressing the button again is not ignored."""
        await self._db.execute("DELETE FROM button_presses WHERE query_id = ?", (query_id,))

    async def _prune(self) -> None:
        horizon = self._now() - self._ttl_s
        await self._db.execute("DELETE FROM buttons WHERE created_at < ?", (horizon,))
        await self._db.execute("DELETE FROM button_presses WHERE created_at < ?", (horizon,))
