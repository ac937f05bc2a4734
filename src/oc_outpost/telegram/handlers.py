"""Update handlers: thin translations from Telegram updates to core calls, and replies.

Access control happens first, in one place (`guard`): only the configured chat and, when
TELEGRAM_ALLOWED_USERS is set, only those users reach any other handler — messages, commands
and button presses alike. Messages sent on behalf of a chat (anonymous admins, the linked
channel's automatic forwards) are never served. Only new messages run anything: an edit of a
message is not a new prompt (it only edits the queued copy of a held message). Every reply
goes to the topic where the command was typed; a `UserError` from core becomes a short ❌ reply
there, anything else reaches `error`.

A button press is answered at once, before its work: Telegram expires a press after some
seconds, and a failed answer is only logged. The outcome shows in the message itself (core
edits it), never as an error post.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from telegram import BotCommand, InlineKeyboardButton, Message, Update, User
from telegram.constants import ChatType
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

from oc_outpost.core.chat import Attachment, Menu
from oc_outpost.core.controller import Controller
from oc_outpost.core.controls import Chosen
from oc_outpost.core.errors import BadRequest, UserError
from oc_outpost.telegram import callbacks, render
from oc_outpost.telegram.coalesce import CoalesceConfig, Coalescer, Piece, Sleep, ready
from oc_outpost.telegram.formatted import fit, plain
from oc_outpost.telegram.keyboards import menu_rows
from oc_outpost.telegram.view import TelegramChat

log = logging.getLogger(__name__)

MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024  # the Bot API's getFile limit
GENERIC_MIME = "application/octet-stream"
SESSION_BUTTONS = 10
PROJECT_BUTTONS = 48
ANONYMOUS_ADMIN_ID = 1087968824  # GroupAnonymousBot: an admin posting as the group
SERVICE_USER_ID = 777000  # "Telegram": automatic forwards from a linked channel
ANONYMOUS_REPLY = (
    "🕶 You are posting anonymously, so I cannot tell who you are and only allowed users may "
    'use me. Turn off "Remain anonymous" in your admin rights for this group, then send it again.'
)
NEW_MESSAGES = filters.UpdateType.MESSAGE  # not edits: an edited message never runs again

COMMANDS = [
    BotCommand("new", "Create a project, its topic and an OpenCode session"),
    BotCommand("projects", "Project directories, with a button to open each"),
    BotCommand("sessions", "OpenCode sessions of running servers"),
    BotCommand("connect", "Bind an existing session to a new topic"),
    BotCommand("cancel", "Stop the running turn in this topic"),
    BotCommand("stream", "Live progress on or off in this topic"),
    BotCommand("model", "Choose this topic's model"),
    BotCommand("agent", "Choose this topic's agent"),
    BotCommand("plan", "Switch this topic to the plan agent"),
    BotCommand("build", "Switch this topic to the build agent"),
    BotCommand("commands", "OpenCode's own commands of this project, as buttons"),
    BotCommand("undo", "Undo the last turn (files too); shows its prompt"),
    BotCommand("redo", "Bring back what /undo undid"),
    BotCommand("fork", "Copy this session into a new topic"),
    BotCommand("compact", "Summarize this topic's session to free its context"),
    BotCommand("session", "This topic's project, server, session and usage"),
    BotCommand("ls", "Browse this topic's project files (-a: hidden too)"),
    BotCommand("get", "Send one file of this topic's project"),
    BotCommand("diff", "The project's uncommitted changes as a .diff"),
    BotCommand("link", "Bind this topic to a project directory"),
    BotCommand("disconnect", "Unlink this topic and close it (files stay)"),
    BotCommand("clear", "Unlink topics whose project or session is gone"),
    BotCommand("status", "Servers, approvals, Telegram budget, uptime"),
    BotCommand("board", "Post the board of all topics in General anew"),
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


def on_behalf_of_a_chat(message: Message) -> bool:
    """Sent as a chat, not as a person: an anonymous admin or the linked channel."""
    sender = message.from_user
    return (
        message.sender_chat is not None
        or message.is_automatic_forward is True
        or (sender is not None and sender.id in (ANONYMOUS_ADMIN_ID, SERVICE_USER_ID))
    )


def is_anonymous_admin(message: Message) -> bool:
    sender = message.from_user
    chat = message.sender_chat
    return (sender is not None and sender.id == ANONYMOUS_ADMIN_ID) or (
        chat is not None and chat.id == message.chat.id and chat.type != ChatType.CHANNEL
    )


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
    if guessed and guessed != GENERIC_MIME:
        return guessed
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return declared
    return "text/plain"


def _command_argument(update: Update) -> str:
    """Everything after the command, inner spacing kept (a path may contain double spaces)."""
    message = update.effective_message
    text = message.text if message is not None and message.text else ""
    return text.partition(" ")[2].strip()


class Handlers:
    def __init__(
        self,
        controller: Controller,
        chat: TelegramChat,
        policy: AccessPolicy,
        coalesce: CoalesceConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._controller = controller
        self._chat = chat
        self._policy = policy
        self._prompts = Coalescer(self._send_prompt, coalesce, clock=clock, sleep=sleep)
        self._work: dict[int, set[asyncio.Task[Any]]] = {}  # by update id

    async def work_done(self, update_id: int) -> None:
        """Wait for the work an update's handlers started in the background."""
        tasks = self._work.pop(update_id, set())
        if tasks:
            await asyncio.wait(tasks)

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
            "model": self.model,
            "agent": self.agent,
            "plan": self.plan,
            "build": self.build,
            "compact": self.compact,
            "commands": self.commands,
            "undo": self.undo,
            "redo": self.redo,
            "fork": self.fork,
        }
        for name, callback in commands.items():
            app.add_handler(CommandHandler(name, callback, filters=NEW_MESSAGES))
        app.add_handler(MessageHandler(NEW_MESSAGES & filters.COMMAND, self.unknown_command))
        app.add_handler(MessageHandler(NEW_MESSAGES & filters.TEXT & ~filters.COMMAND, self.text))
        app.add_handler(
            MessageHandler(NEW_MESSAGES & (filters.PHOTO | filters.Document.ALL), self.file)
        )
        app.add_handler(MessageHandler(NEW_MESSAGES & (filters.VOICE | filters.AUDIO), self.voice))
        app.add_handler(
            MessageHandler(NEW_MESSAGES & (filters.PHOTO | filters.Document.ALL), self.file)
        )
        app.add_handler(
            MessageHandler(
                NEW_MESSAGES & filters.StatusUpdate.FORUM_TOPIC_CREATED, self.topic_created
            )
        )
        app.add_handler(
            MessageHandler(filters.UpdateType.EDITED_MESSAGE & filters.TEXT, self.edited)
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
        message = update.effective_message
        if update.callback_query is None and message is not None and on_behalf_of_a_chat(message):
            await self._refuse_chat_sender(message)
            raise ApplicationHandlerStop
        if not self._policy.allows_user(user.id if user else None):
            log.info("ignored an update from user %s who is not allowed", user.id if user else None)
            if update.callback_query is not None:
                await self._chat.answer_callback(update.callback_query.id, "You are not allowed.")
            raise ApplicationHandlerStop
        if (
            not self._policy.handle_general
            and update.callback_query is None
            and message is not None
            and topic_of(message) is None
        ):
            raise ApplicationHandlerStop

    async def _refuse_chat_sender(self, message: Message) -> None:
        sender = message.sender_chat or message.from_user
        log.info("ignored a message sent on behalf of a chat (%s)", sender.id if sender else "-")
        has_content = message.text or message.caption or message.photo or message.document
        if self._policy.allowed_users and is_anonymous_admin(message) and has_content:
            await self._reply(topic_of(message), ANONYMOUS_REPLY)

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
        # unexpected failures still reach the error handler, which tells the user. The update
        # counts as handled once this work is done too (see work_done).
        task = context.application.create_task(self._guarded(topic, work), update=update)
        self._work.setdefault(update.update_id, set()).add(task)

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
        topic = topic_of(message)
        if topic is not None and self._controller.is_linked(topic):
            name = command.removeprefix("/").partition("@")[0]
            arguments = (message.text or "").partition(" ")[2].strip()
            work = self._controller.run_command(topic, name, arguments)
            self._background(context, update, topic, work)
            return
        await self._reply(topic, f"Unknown command {command}. /help lists them.")

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
        self._background(context, update, None, self._controller.connect(_command_argument(update)))

    async def disconnect(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        topic = self._where(update)
        self._background(context, update, topic, self._controller.disconnect(topic))

    async def link(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        topic = self._where(update)
        self._background(
            context, update, topic, self._controller.link(topic, _command_argument(update))
        )

    async def stream(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        topic = self._where(update)

        async def toggle() -> None:
            enabled = await self._controller.toggle_stream(topic, _command_argument(update))
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

    async def model(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        topic = self._where(update)
        work = self._show_menu(topic, self._controller.model_menu(topic, _command_argument(update)))
        self._background(context, update, topic, work)

    async def agent(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        topic = self._where(update)
        name = _command_argument(update).strip()
        if name:
            work = self._answer(topic, self._controller.set_agent(topic, name))
        else:
            work = self._show_menu(topic, self._controller.agent_menu(topic))
        self._background(context, update, topic, work)

    async def plan(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self._switch_agent(update, context, "plan")

    async def build(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self._switch_agent(update, context, "build")

    async def _switch_agent(
        self, update: Update, context: ContextTypes.DEFAULT_TYPE, name: str
    ) -> None:
        topic = self._where(update)
        self._background(
            context, update, topic, self._answer(topic, self._controller.set_agent(topic, name))
        )

    async def undo(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        topic = self._where(update)
        self._background(context, update, topic, self._controller.undo(topic))

    async def redo(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        topic = self._where(update)
        self._background(context, update, topic, self._answer(topic, self._controller.redo(topic)))

    async def fork(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        topic = self._where(update)
        self._background(context, update, topic, self._controller.fork(topic))

    async def commands(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        topic = self._where(update)
        work = self._show_menu(topic, self._controller.command_menu(topic))
        self._background(context, update, topic, work)

    async def compact(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        topic = self._where(update)
        self._background(
            context, update, topic, self._answer(topic, self._controller.compact(topic))
        )

    async def _send_menu(self, topic: int | None, menu: Menu) -> None:
        if topic is None:
            raise BadRequest("Use this command inside a project topic.")
        await self._chat.show_menu(topic, menu)

    async def _show_menu(self, topic: int | None, menu: Awaitable[Menu]) -> None:
        await self._send_menu(topic, await menu)

    async def _answer(self, topic: int | None, answer: Awaitable[str]) -> None:
        """Reply with what core answered."""
        await self._reply(topic, await answer)

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
        sent_at = message.date.timestamp()
        piece = ready(Piece(message.text, message_ids=(message.message_id,), sent_at=sent_at))
        self._background(context, update, topic, self._collect(topic, message, piece))

    async def edited(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """An edit runs nothing, except that it edits the queued copy of a held message."""
        message = update.effective_message
        topic = topic_of(message) if message is not None else None
        if message is None or message.text is None or topic is None:
            return
        work = self._controller.edit_held(topic, message.message_id, message.text)
        self._background(context, update, topic, work)

    async def file(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        assert message is not None
        topic = topic_of(message)
        if topic is None:
            await self._reply(None, "Send files in a project's topic: they go to OpenCode there.")
            return
        piece = self._file_piece(topic, message)
        self._background(context, update, topic, self._collect(topic, message, piece))

    async def _collect(
        self, topic: int, message: Message, piece: Coroutine[Any, Any, Piece | None]
    ) -> None:
        """Messages arriving together (an album, a split paste) become one prompt."""
        sender = message.from_user.id if message.from_user else 0
        await self._prompts.add(topic, sender, message.message_id, piece)

    async def _send_prompt(self, topic: int, prompt: Piece) -> None:
        source = prompt.message_ids[0] if len(prompt.message_ids) == 1 else None
        work = self._controller.message(
            topic, prompt.text, prompt.attachments, source=source, sent_at=prompt.sent_at
        )
        await self._guarded(topic, work)

    async def _file_piece(self, topic: int, message: Message) -> Piece | None:
        try:
            attachment = await self._download(message)
        except UserError as exc:
            await self._reply(topic, f"❌ {exc}")
            return None
        if attachment is None:
            return None
        return Piece(message.caption or "", (attachment,))

    async def _download(self, message: Message) -> Attachment | None:
        if message.photo:
            photo = message.photo[-1]
            file_id, size, name, mime = photo.file_id, photo.file_size, "photo.jpg", "image/jpeg"
        elif message.document is not None:
            document = message.document
            name = document.file_name or "file"
            mime = document.mime_type or GENERIC_MIME
            file_id, size = document.file_id, document.file_size
        else:
            return None
        if size is not None and size > MAX_DOWNLOAD_BYTES:
            raise BadRequest(f"{name} is over 20 MB, the most a bot can download.")
        telegram_file = await message.get_bot().get_file(file_id)
        data = bytes(await telegram_file.download_as_bytearray())
        return Attachment(name, file_mime(name, mime, data), data)

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
        message = query.message if isinstance(query.message, Message) else None
        topic = topic_of(message) if message is not None else None
        press = callbacks.parse(query.data)
        if isinstance(press, callbacks.LinkPress) and (topic is None or message is None):
            press = None  # the picker only lives in a topic
        if isinstance(press, callbacks.StopPress) and not self._chat.is_live_progress(
            message.message_id if message is not None else 0, query.data or ""
        ):
            press = None  # the Stop button of an old progress message stops nothing
        if press is not None:  # its work does not wait for the acknowledgement (429s hold it)
            work = self._press(press, who(query.from_user), topic, message, query.id)
            self._background(context, update, topic, work)
        await self._chat.answer_callback(query.id, _acknowledgement(press))

    async def _press(
        self,
        press: callbacks.Press,
        person: str,
        topic: int | None,
        message: Message | None,
        press_id: str,
    ) -> None:
        """The work of a press, after it was answered; core shows the outcome in the message.
        A button counts only on the message it was sent with (``pressed_on``)."""
        pressed_on = message.message_id if message is not None else 0
        match press:
            case callbacks.PermissionPress(token, choice):
                outcome = await self._controller.answer_permission(
                    token, choice, person, pressed_on
                )
            case callbacks.QuestionPress(token, option):
                outcome = await self._controller.answer_question(token, option, person, pressed_on)
            case callbacks.StopPress(session_id, _):
                outcome = await self._controller.stop_turn(session_id, person)
            case callbacks.LinkPress(key):
                assert topic is not None and message is not None
                await self._controller.choose(topic, key, person, message.message_id)
                outcome = "linked"
            case callbacks.OpenPress(key):
                await self._controller.open_project(key)
                outcome = "opened"
            case callbacks.ConnectPress(session_id):
                await self._controller.connect(session_id)
                outcome = "connected"
            case callbacks.BrowsePress(token, action):
                await self._controller.browse_press(topic, token, action, press_id, pressed_on)
                outcome = "browsed"
            case callbacks.DiffPress(token):
                await self._controller.turn_diff(topic, token, press_id)
                outcome = "diff sent"
            case callbacks.ControlPress(token):
                outcome = await self._control_press(topic, token, person, pressed_on, press_id)
        log.info("button %s pressed by %s: %s", type(press).__name__, person, outcome)

    async def _control_press(
        self, topic: int | None, token: str, person: str, message_id: int, press_id: str
    ) -> str:
        result = await self._controller.press_control(topic, token, person, press_id)
        if result is None:
            return "done"
        if isinstance(result, Chosen):
            assert topic is not None
            await self._chat.show_decision(topic, message_id, result.text)
            return result.text
        await self._chat.edit(message_id, fit(plain(result.text)), menu_rows(result) or None)
        return "menu"

    async def error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("handler failed", exc_info=context.error)
        if isinstance(update, Update) and update.effective_message is not None:
            topic = topic_of(update.effective_message)
            await self._chat.notify(topic, f"⚠️ Something went wrong: {context.error}")


def _acknowledgement(press: callbacks.Press | None) -> str:
    """What a press shows at once, before its work is done."""
    match press:
        case callbacks.PermissionPress() | callbacks.QuestionPress():
            return "Sending your answer…"
        case callbacks.StopPress():
            return "Stopping…"
        case callbacks.LinkPress():
            return "Linking…"
        case callbacks.OpenPress():
            return "Opening…"
        case callbacks.ConnectPress():
            return "Connecting…"
        case callbacks.BrowsePress(_, action):
            return "Zipping…" if action == "z" else ""
        case callbacks.DiffPress():
            return "Sending the diff…"
        case callbacks.ControlPress():
            return "OK"
        case _:
            return "This button is no longer valid."
