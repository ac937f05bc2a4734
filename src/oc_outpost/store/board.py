"""Where the board in General is: its message id, kept across restarts (bot_state table)."""

from __future__ import annotations

from typing import Final

from oc_outpost.store.bot_state import BotStateStore
from oc_outpost.store.errors import StoreError

BOARD_MESSAGE_KEY: Final = "telegram.board_message_id"


class BoardStore:
    def __init__(self, state: BotStateStore) -> None:
        self._state = state

    async def message_id(self) -> int | None:
        value = await self._state.get(BOARD_MESSAGE_KEY)
        if value is None or value == "":
            return None
        try:
            return int(value)
        except ValueError as exc:
            raise StoreError(f"bot_state {BOARD_MESSAGE_KEY!r} is not an integer") from exc

    async def set_message_id(self, message_id: int | None) -> None:
        await self._state.set(BOARD_MESSAGE_KEY, "" if message_id is None else str(message_id))
