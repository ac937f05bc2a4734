"""Update handlers: thin translations from Telegram updates to core calls, and replies.

Access control happens first, in one place (`guard`): only the configured chat and, when
TELEGRAM_ALLOWED_USERS is set, only those users reach any other handler — messages, commands
and button presses alike. Every reply goes to the topic where the command was typed; a
`UserError` from core becomes a short ❌ reply there, anything else reaches `error`.
"""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from telegram import BotCommand, InlineKeyboardButton, Message, Update, User
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

from oc_outpost.core.chat import Attachment
from oc_outpost.core.controller import Controller
from oc_outpost.core.errors import BadRequest, UserError
from oc_outpost.telegram import callbacks, render
from oc_outpost.telegram.formatted import plain
from oc_outpost.telegram.view import TelegramChat

log = logging.getLogger(__name__)

MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024  # the Bot API's getFile limit
GENERIC_MIME = "application/octet-stream"
SESSION_BUTTONS = 10
PROJECT_BUTTONS = 48

COMMANDS = [
    BotCommand("new", "Create a project, its topic and an OpenCode session"),
    BotCommand("projects", "Project directories, with a button to open each"),
    BotCommand("sessions", "OpenCode sessions of running servers"),
    BotCommand("connect", "Bind an existing session to a new topic"),
    BotCommand("cancel", "Stop the running turn in this topic"),
    BotCommand("stream", "Live progress on or off in this topic"),
    BotCommand("session", "This topic's project, server, session and usage"),
    BotCommand("ls", "Browse this topic's project files (-a: hidden too)"),
    BotCommand("get", "Send one file of this topic's project"),
    BotCommand("diff", "The project's uncommitted changes as a .diff"),
    BotCommand("link", "Bind this topic to a project directory"),
    BotCommand("disconnect", "Unlink this topic and close it (files stay)"),
    BotCommand("clear", "Unlink topics whose project or session is gone"),
    BotCommand("status", "Servers, approvals, Telegram budget, uptime"),
    BotCommand("help", "What you can do here"),
]

Callback = Callable[[Update, ContextTypes.DEFAULT_TYPE], Coroutine[Any, Any, None]]


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


def who(user: User | None) -> str:
    if user is None:
        return "someone"
    return user.full_name or (f"@{user.username}" if user.username else str(user.id))


def file_mime(name: str, declared: str, data: bytes) -> str:
    """The media type to tell OpenCode. Telegram often declares files as generic binary;
    OpenCode refuses that type, so guess from the name, and treat UTF-8 content as text."""
    if declared != GENERIC_MIME:
        return declared
    guessed = mimetypes.guess_type(name)[0]
    if guessed:
        return guessed
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return declared
    return "text/plain"


def _args(context: ContextTypes.DEFAULT_TYPE) -> str:
    return " ".join(context.args or [])


def _command_argument(update: Update) -> str:
    """Everything after the command, spacing kept (a path may contain double spaces)."""
    message = update.effective_message
    text = message.text if message is not None and message.text else ""
    return text.partition(" ")[2] if " " in text.strip() else ""


class Handlers:
    def __init__(self, controller: Controller, chat: TelegramChat, policy: AccessPolicy) -> None:
        self._controller = controller
        self._chat = chat
        self._policy = policy

    def install(self, app: Application[Any, Any, Any, Any, Any, Any]) -> None:
        app.add_handler(TypeHandler(Update, self.guard), group=-1)
        commands: dict[str, Callback] = {
            "new": self.new,
            "help": self.help,
            "start": self.help,
            "projects": self.projects,
            "sessions": self.sessions,
            "connect": self.connect,
            "disconnect": self.disconnect,
            "link": self.link,
            "stream": self.stream,
            "session": self.session,
            "status": self.status,
            "clear": self.clear,
            "cancel": self.cancel,
            "ls": self.ls,
            "get": self.get,
            "diff": self.diff,
        }
        for name, callback in commands.items():
            app.add_handler(CommandHandler(name, callback))
        app.add_handler(MessageHandler(filters.COMMAND, self.unknown_command))
        app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, self.text))
        app.add_handler(MessageHandler(filters.PHOTO | filters.Document.ALL, self.file))
        app.add_handler(MessageHandler(filters.VOICE | filters.AUDIO, self.voice))
        app.add_handler(
            MessageHandler(filters.StatusUpdate.FORUM_TOPIC_CREATED, self.topic_created)
        )
        app.add_handler(CallbackQueryHandler(self.button))
        app.add_error_handler(self.error)

    async def guard(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        chat = update.effective_chat
        user = update.effective_user
        if chat is None or chat.id != self._policy.chat_id:
            raise ApplicationHandlerStop
        if user is not None and user.is_bot and user.id == context.bot.id:
            raise ApplicationHandlerStop  # our own service messages (topics we created)
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

    # --- plumbing -----------------------------------------------------------------------------

    @staticmethod
    def _where(update: Update) -> int | None:
        message = update.effective_message
        assert message is not None
        return topic_of(message)

    async def _reply(self, topic: int | None, text: str) -> None:
        await self._chat.notify(topic, text)

    async def _guarded(self, topic: int | None, work: Awaitable[None]) -> None:
        try:
            await work
        except UserError as exc:
            await self._reply(topic, f"❌ {exc}")

    def _background(
        self,
        context: ContextTypes.DEFAULT_TYPE,
        update: Update,
        topic: int | None,
        work: Coroutine[Any, Any, None],
    ) -> None:
        # Long work (starting OpenCode, calling servers) must not hold the update handler;
        # unexpected failures still reach the error handler, which tells the user.
        context.application.create_task(self._guarded(topic, work), update=update)

    async def _general_only(self, update: Update, usage: str) -> bool:
        topic = self._where(update)
        if topic is not None:
            await self._reply(topic, f"{usage} works in the General topic; use it there.")
            return False
        return True

    # --- commands -----------------------------------------------------------------------------

    async def new(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if not await self._general_only(update, "/new <name>"):
            return
        if len(context.args or []) != 1:
            await self._reply(None, "Usage: /new <name> (1-64 of A-Z a-z 0-9 . _ -)")
            return
        name = (context.args or [""])[0]
        self._background(context, update, None, self._controller.new(name))

    async def help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        topic = self._where(update)
        if topic is None:
            text = render.GENERAL_HELP
        elif not self._controller.is_linked(topic):
            text = render.UNBOUND_TOPIC_HELP
        else:
            text = render.TOPIC_HELP
        await self._reply(topic, text)

    async def unknown_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        assert message is not None
        command = (message.text or "/").split()[0]
        _, _, addressee = command.partition("@")
        if addressee and addressee.lower() != (context.bot.username or "").lower():
            return  # meant for another bot in the group
        await self._reply(topic_of(message), f"Unknown command {command}. /help lists them.")

    async def projects(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        topic = self._where(update)
        entries = self._controller.projects()
        shown = entries[:PROJECT_BUTTONS]
        buttons = [
            InlineKeyboardButton(
                f"📂 {e.name[:40]}" + (" ↗" if e.topic_id is not None else ""),
                callback_data=callbacks.open_data(e.key),
            )
            for e in shown
        ]
        rows = [buttons[i : i + 2] for i in range(0, len(buttons), 2)]
        text = render.projects_message(len(entries), str(self._controller.base))
        if len(entries) > len(shown):
            text += f"\n({len(entries) - len(shown)} more not shown.)"
        await self._chat.send(topic, plain(text), rows=rows or None)

    async def sessions(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        topic = self._where(update)
        self._background(context, update, topic, self._send_sessions(topic))

    async def _send_sessions(self, topic: int | None) -> None:
        listing = await self._controller.sessions()
        shown = listing.entries[:SESSION_BUTTONS]
        rows = [
            [
                InlineKeyboardButton(
                    render.session_label(e), callback_data=callbacks.connect_data(e.session_id)
                )
            ]
            for e in shown
            if e.topic_id is None
        ]
        await self._chat.send(topic, render.sessions_message(listing, shown), rows=rows or None)

    async def connect(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if not await self._general_only(update, "/connect <project | session id>"):
            return
        self._background(context, update, None, self._controller.connect(_args(context)))

    async def disconnect(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        topic = self._where(update)
        self._background(context, update, topic, self._controller.disconnect(topic))

    async def link(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        topic = self._where(update)
        self._background(context, update, topic, self._controller.link(topic, _args(context)))

    async def stream(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        topic = self._where(update)

        async def toggle() -> None:
            enabled = await self._controller.toggle_stream(topic, _args(context))
            state = (
                "ON: progress is shown live, then the answer"
                if enabled
                else "OFF: only the final answer is sent"
            )
            await self._reply(topic, f"Live progress is {state}.")

        await self._guarded(topic, toggle())

    async def session(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        topic = self._where(update)

        async def show() -> None:
            info = await self._controller.session_info(topic)
            await self._chat.send(topic, render.session_message(info))

        self._background(context, update, topic, show())

    async def status(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        topic = self._where(update)
        report = await self._controller.status()
        await self._chat.send(topic, render.status_message(report, self._chat.budget()))

    async def clear(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if not await self._general_only(update, "/clear"):
            return

        async def run() -> None:
            report = await self._controller.clear()
            await self._reply(None, render.clear_message(report))

        self._background(context, update, None, run())

    async def cancel(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        topic = self._where(update)
        user = update.effective_user

        async def run() -> None:
            await self._reply(topic, await self._controller.cancel(topic, who(user)))

        await self._guarded(topic, run())

    async def ls(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        topic = self._where(update)
        work = self._controller.browse(topic, _command_argument(update))
        self._background(context, update, topic, work)

    async def get(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        topic = self._where(update)
        work = self._controller.get_file(topic, _command_argument(update))
        self._background(context, update, topic, work)

    async def diff(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        topic = self._where(update)
        self._background(context, update, topic, self._controller.diff(topic))

    # --- messages -----------------------------------------------------------------------------

    async def text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        assert message is not None and message.text is not None
        topic = topic_of(message)
        if topic is None:
            await self._reply(
                None,
                "General is the control lane: use /new <name> (or /projects), then write in "
                "the project's topic. /help lists everything.",
            )
            return
        self._background(context, update, topic, self._controller.message(topic, message.text))

    async def file(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        assert message is not None
        topic = topic_of(message)
        if topic is None:
            await self._reply(None, "Send files in a project's topic: they go to OpenCode there.")
            return
        self._background(context, update, topic, self._forward_file(topic, message))

    async def _forward_file(self, topic: int, message: Message) -> None:
        if message.photo:
            photo = message.photo[-1]
            file_id, size, name, mime = photo.file_id, photo.file_size, "photo.jpg", "image/jpeg"
        elif message.document is not None:
            document = message.document
            name = document.file_name or "file"
            mime = document.mime_type or GENERIC_MIME
            file_id, size = document.file_id, document.file_size
        else:
            return
        if size is not None and size > MAX_DOWNLOAD_BYTES:
            raise BadRequest("That file is over 20 MB, the most a bot can download.")
        telegram_file = await message.get_bot().get_file(file_id)
        data = bytes(await telegram_file.download_as_bytearray())
        attachment = Attachment(name, file_mime(name, mime, data), data)
        await self._controller.message(topic, message.caption or "", [attachment])

    async def voice(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        assert message is not None
        topic = topic_of(message)
        if topic is None:
            await self._reply(None, "Send voice notes in a project's topic: they become prompts.")
            return
        self._background(context, update, topic, self._transcribe(topic, message))

    async def _transcribe(self, topic: int, message: Message) -> None:
        media = message.voice or message.audio
        if media is None:
            return
        if media.file_size is not None and media.file_size > MAX_DOWNLOAD_BYTES:
            raise BadRequest("That recording is over 20 MB, the most a bot can download.")
        name = "voice.ogg" if message.voice else (message.audio and message.audio.file_name)
        telegram_file = await message.get_bot().get_file(media.file_id)
        data = bytes(await telegram_file.download_as_bytearray())
        mime = media.mime_type or "audio/ogg"
        await self._controller.voice(topic, Attachment(name or "audio", mime, data))

    async def topic_created(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        assert message is not None
        if message.message_thread_id is not None:
            self._background(
                context, update, None, self._controller.topic_created(message.message_thread_id)
            )

    # --- buttons ------------------------------------------------------------------------------

    async def button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        assert query is not None
        person = who(query.from_user)
        message = query.message
        topic = message.message_thread_id if isinstance(message, Message) else None
        if isinstance(message, Message) and not message.is_topic_message:
            topic = None
        pressed_on = message.message_id if message is not None else 0
        match callbacks.parse(query.data):
            case callbacks.PermissionPress(token, choice):
                answer = await self._controller.answer_permission(token, choice, person, pressed_on)
            case callbacks.QuestionPress(token, option):
                answer = await self._controller.answer_question(token, option, person, pressed_on)
            case callbacks.StopPress(session_id) if not self._chat.is_live_progress(
                pressed_on, session_id
            ):
                answer = "This turn has ended."  # an old progress message's Stop button
            case callbacks.StopPress(session_id):
                answer = await self._controller.stop_turn(session_id, person)
            case callbacks.LinkPress(key) if topic is not None and message is not None:
                work = self._controller.choose(topic, key, person, message.message_id)
                answer = "Linking…"
                self._background(context, update, topic, work)
            case callbacks.OpenPress(key):
                answer = "Opening…"
                self._background(context, update, topic, self._controller.open_project(key))
            case callbacks.ConnectPress(session_id):
                answer = "Connecting…"
                self._background(context, update, None, self._controller.connect(session_id))
            case callbacks.BrowsePress(token, action):
                answer = "Zipping…" if action == "z" else ""
                work = self._controller.browse_press(topic, token, action, query.id, pressed_on)
                self._background(context, update, topic, work)
            case callbacks.DiffPress(token):
                answer = "Sending the diff…"
                work = self._controller.turn_diff(topic, token, query.id)
                self._background(context, update, topic, work)
            case _:
                answer = "This button is no longer valid."
        await self._chat.answer_callback(query.id, answer)

    async def error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("handler failed", exc_info=context.error)
        if isinstance(update, Update) and update.effective_message is not None:
            topic = topic_of(update.effective_message)
            await self._chat.notify(topic, f"⚠️ Something went wrong: {context.error}")
