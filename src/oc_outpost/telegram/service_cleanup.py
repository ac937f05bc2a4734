"""Deletes the service messages the bot's own glance edits leave behind.

Telegram posts "bot changed the topic icon" (`forum_topic_edited`) in the topic for every icon
change, and "bot pinned a message" (`pinned_message`) for the board's pin. They say nothing the
topic list and the board do not show already, so the bot deletes its own ones, at the Outbox's
lowest priority. Without the right to delete, it logs that once and stops trying.
"""

from __future__ import annotations

import logging
from typing import Any

from telegram import Message, Update
from telegram.error import BadRequest, TelegramError
from telegram.ext import Application, ContextTypes, MessageHandler, filters

from oc_outpost.telegram.outbox import Outbox, OutboxClosed, Priority

log = logging.getLogger(__name__)

# Before the access guard (group -1), which drops the bot's own messages.
CLEANUP_GROUP = -2
SERVICE = filters.StatusUpdate.FORUM_TOPIC_EDITED | filters.StatusUpdate.PINNED_MESSAGE


async def delete_quietly(outbox: Outbox, chat_id: int, message_id: int) -> None:
    """Delete one of the bot's messages at the Outbox's lowest priority."""
    await outbox.submit(
        lambda bot: bot.delete_message(chat_id, message_id),
        method="deleteMessage",
        chat_id=chat_id,
        priority=Priority.BACKGROUND,
    )


class ServiceCleanup:
    def __init__(self, outbox: Outbox, chat_id: int) -> None:
        self._outbox = outbox
        self._chat_id = chat_id
        self._may_delete = True
        self.deleted = 0

    def install(self, app: Application[Any, Any, Any, Any, Any, Any]) -> None:
        app.add_handler(
            MessageHandler(filters.UpdateType.MESSAGE & SERVICE, self.on_service),
            group=CLEANUP_GROUP,
        )

    async def on_service(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.message
        if message is not None and self._ours(message, context.bot.id):
            await self.delete(message.message_id)

    def _ours(self, message: Message, bot_id: int) -> bool:
        sender = message.from_user
        return message.chat.id == self._chat_id and sender is not None and sender.id == bot_id

    async def delete(self, message_id: int) -> None:
        """Delete one of the bot's service messages (at the lowest priority)."""
        if not self._may_delete:
            return
        try:
            await delete_quietly(self._outbox, self._chat_id, message_id)
        except BadRequest as exc:
            if "can't be deleted" in exc.message.lower() or "rights" in exc.message.lower():
                log.warning("the bot may not delete its service messages: %s", exc.message)
                self._may_delete = False
                return
            log.warning("service message %d not deleted: %s", message_id, exc.message)
            return
        except (TelegramError, OutboxClosed) as exc:
            log.warning("service message %d not deleted: %s", message_id, exc)
            return
        self.deleted += 1
