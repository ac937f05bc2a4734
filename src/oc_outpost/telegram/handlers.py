"""Update handlers: thin translations from Telegram updates to Outpost calls.

Access control happens first, in one place (`guard`): only the configured chat and, when
TELEGRAM_ALLOWED_USERS is set, only those users reach any other handler — messages, commands
and button presses alike.
"""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from telegram import BotCommand, Message, Update
from telegram.ext import (
    Application,
    ApplicationHandlerStop,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    filters,
)

from oc_outpost.core.outpost import Outpost
from oc_outpost.telegram import callbacks
from oc_outpost.telegram.view import TelegramChat

log = logging.getLogger(__name__)

COMMANDS = [
    BotCommand("new", "Create a project, its topic and an OpenCode session"),
    BotCommand("help", "What you can do here"),
]

GENERAL_HELP = (
    "This is the control lane of oc-outpost.\n"
    "/new <name> — create a project directory, a topic and an OpenCode session\n"
    "/help — this help\n"
    "Each project lives in its own topic: write there to talk to OpenCode."
)
TOPIC_HELP = (
    "Write a message in this topic to send it to OpenCode as a prompt.\n"
    "Progress is shown live; the final answer arrives as a new message.\n"
    "Permission requests and questions appear with buttons.\n"
    "/help — this help"
)


@dataclass(frozen=True)
class AccessPolicy:
    chat_id: int
    allowed_users: frozenset[int]
    handle_general: bool

    def allows_user(self, user_id: int | None) -> bool:
        if user_id is None:
            return False
        return not self.allowed_users or user_id in self.allowed_users


def topic_of(message: Message) -> int | None:
    """The forum topic of a message; None for General (replies there carry thread ids too)."""
    return message.message_thread_id if message.is_topic_message else None


class Handlers:
    def __init__(self, outpost: Outpost, chat: TelegramChat, policy: AccessPolicy) -> None:
        self._outpost = outpost
        self._chat = chat
        self._policy = policy

    def install(self, app: Application[Any, Any, Any, Any, Any, Any]) -> None:
        app.add_handler(TypeHandler(Update, self.guard), group=-1)
        app.add_handler(CommandHandler("new", self.new))
        app.add_handler(CommandHandler("help", self.help))
        app.add_handler(CommandHandler("start", self.help))
        app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, self.text))
        app.add_handler(CallbackQueryHandler(self.button))
        app.add_error_handler(self.error)

    async def guard(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        chat = update.effective_chat
        user = update.effective_user
        if chat is None or chat.id != self._policy.chat_id:
            raise ApplicationHandlerStop
        if not self._policy.allows_user(user.id if user else None):
            log.info("ignored an update from user %s who is not allowed", user.id if user else None)
            if update.callback_query is not None:
                await self._chat.answer_callback(update.callback_query.id, "You are not allowed.")
            raise ApplicationHandlerStop
        message = update.effective_message
        if (
            not self._policy.handle_general
            and update.callback_query is None
            and message is not None
            and topic_of(message) is None
        ):
            raise ApplicationHandlerStop

    async def new(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        assert message is not None
        topic = topic_of(message)
        if topic is not None:
            await self._chat.notify(topic, "Use /new <name> in the General topic.")
            return
        if len(context.args or []) != 1:
            await self._chat.notify(None, "Usage: /new <name> (1-64 of A-Z a-z 0-9 . _ -)")
            return
        self._background(context, update, self._outpost.new_project(context.args[0]))  # type: ignore[index]

    async def help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        assert message is not None
        topic = topic_of(message)
        await self._chat.notify(topic, GENERAL_HELP if topic is None else TOPIC_HELP)

    async def text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        assert message is not None and message.text is not None
        topic = topic_of(message)
        if topic is None:
            await self._chat.notify(
                None, "General is the control lane: use /new <name>, then write in the topic."
            )
            return
        self._background(context, update, self._outpost.prompt(topic, message.text))

    async def button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        assert query is not None
        who = query.from_user.full_name or str(query.from_user.id)
        match callbacks.parse(query.data):
            case callbacks.PermissionPress(token, choice):
                answer = await self._outpost.answer_permission(token, choice, who)
            case callbacks.QuestionPress(token, option):
                answer = await self._outpost.answer_question(token, option, who)
            case callbacks.StopPress(session_id):
                answer = await self._outpost.abort(session_id, who)
            case None:
                answer = "This button is no longer valid."
        await self._chat.answer_callback(query.id, answer)

    async def error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("handler failed", exc_info=context.error)
        if isinstance(update, Update) and update.effective_message is not None:
            topic = topic_of(update.effective_message)
            await self._chat.notify(topic, f"⚠️ Something went wrong: {context.error}")

    @staticmethod
    def _background(
        context: ContextTypes.DEFAULT_TYPE, update: Update, work: Coroutine[Any, Any, None]
    ) -> None:
        # Long work (starting OpenCode) must not hold the update handler; failures still reach
        # the error handler, which tells the user.
        context.application.create_task(work, update=update)
