"""`/board`: post the board in General anew (after someone unpinned or deleted it)."""

from __future__ import annotations

from typing import Any

from telegram import Update
from telegram.ext import Application, CommandHandler, ContextTypes

from oc_outpost.telegram.board import Board
from oc_outpost.telegram.handlers import NEW_MESSAGES, topic_of
from oc_outpost.telegram.view import TelegramChat

BOARD_OFF = "The board is off (BOARD=off in the configuration)."
BOARD_POSTED = "📋 The board is posted anew in General."


class BoardCommand:
    def __init__(self, board: Board | None, chat: TelegramChat) -> None:
        self._board = board
        self._chat = chat

    def install(self, app: Application[Any, Any, Any, Any, Any, Any]) -> None:
        """Before the other handlers: their unknown-command reply must not take /board."""
        app.add_handler(CommandHandler("board", self.board, filters=NEW_MESSAGES))

    async def board(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        topic_id = topic_of(message) if message is not None else None
        if self._board is None:
            await self._chat.notify(topic_id, BOARD_OFF)
            return
        await self._board.repost()
        if topic_id is not None:  # in General the board itself is the answer
            await self._chat.notify(topic_id, BOARD_POSTED)
