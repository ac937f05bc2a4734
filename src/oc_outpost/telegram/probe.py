"""Questions `check` and `setup` ask the Bot API, answered as plain data.

Who is the bot (getMe), what is the chat (getChat), what may the bot do there (getChatMember)
and, for setup, who sends the next message to a group (getUpdates). Telegram's errors become
`ProbeError`s whose message says what went wrong; every call has a timeout.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType

from telegram import Bot, ChatMemberAdministrator, ChatMemberOwner, Message, Update
from telegram.constants import ChatType
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Conflict,
    Forbidden,
    InvalidToken,
    NetworkError,
    TelegramError,
)

from oc_outpost.telegram.requests import bot_requests

POLL_S = 10  # one getUpdates long poll
GROUP_ANONYMOUS_BOT = 1087968824  # `from` of messages sent by an anonymous admin
CHANNEL_BOT = 777000  # `from` of a linked channel's automatic forwards


class ProbeError(Exception):
    """A question the Bot API would not answer; the message says why."""


class TokenRejected(ProbeError):
    pass


class Unreachable(ProbeError):
    pass


class ChatUnreadable(ProbeError):
    pass


class PollConflict(ProbeError):
    """Someone else takes this bot's updates (a running bot, or a webhook)."""


@dataclass(frozen=True)
class BotIdentity:
    id: int
    username: str
    reads_all_group_messages: bool  # privacy mode off


@dataclass(frozen=True)
class ChatFacts:
    id: int
    title: str
    type: str
    is_forum: bool
    migrated_from: int | None = None  # the id asked for, when the group became a supergroup

    @property
    def is_forum_supergroup(self) -> bool:
        return self.type == ChatType.SUPERGROUP and self.is_forum


@dataclass(frozen=True)
class BotRights:
    status: str  # creator | administrator | member | restricted | left | kicked
    manage_topics: bool = False
    delete_messages: bool = False
    pin_messages: bool = False

    @property
    def is_admin(self) -> bool:
        return self.status in ("creator", "administrator")


@dataclass(frozen=True)
class GroupMessage:
    """A message seen in a group: where it was sent and by whom."""

    update_id: int
    chat_id: int
    chat_title: str
    chat_type: str
    is_forum: bool
    user_id: int | None
    user_name: str
    anonymous: bool  # sent on behalf of a chat (an anonymous admin, a channel)


def make_bot(token: str, api_url: str, *, poll_s: int = POLL_S) -> Bot:
    requests = bot_requests(poll_s)
    return Bot(
        token,
        base_url=f"{api_url}/bot",
        base_file_url=f"{api_url}/file/bot",
        request=requests.calls,
        get_updates_request=requests.polling,
    )


class BotProbe:
    """`async with BotProbe(token, api_url) as probe:` checks the token (getMe) on entry."""

    def __init__(self, token: str, api_url: str, *, poll_s: int = POLL_S) -> None:
        self._api_url = api_url
        self._poll_s = poll_s
        self._bot = make_bot(token, api_url, poll_s=poll_s)
        self._offset: int | None = None
        self._unread: deque[Update] = deque()  # fetched, not yet looked at

    async def __aenter__(self) -> BotProbe:
        try:
            await self._bot.initialize()  # getMe
        except InvalidToken as exc:
            raise TokenRejected("Telegram rejected the bot token") from exc
        except NetworkError as exc:
            raise Unreachable(
                f"the Bot API at {self._api_url} is not reachable ({exc.message})"
            ) from exc
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._bot.shutdown()

    def identity(self) -> BotIdentity:
        me = self._bot.bot
        return BotIdentity(me.id, me.username or str(me.id), bool(me.can_read_all_group_messages))

    async def chat(self, chat_id: int) -> ChatFacts:
        """The chat; a group that became a supergroup is followed to its new id."""
        try:
            chat = await self._bot.get_chat(chat_id)
        except ChatMigrated as exc:
            moved = await self.chat(int(exc.new_chat_id))
            return ChatFacts(moved.id, moved.title, moved.type, moved.is_forum, chat_id)
        except (BadRequest, Forbidden) as exc:
            raise ChatUnreadable(f"chat {chat_id} cannot be read ({exc.message})") from exc
        except TelegramError as exc:
            raise ProbeError(f"getChat failed: {exc.message}") from exc
        return ChatFacts(chat.id, chat.title or chat.type, chat.type, bool(chat.is_forum))

    async def rights(self, chat_id: int) -> BotRights:
        try:
            member = await self._bot.get_chat_member(chat_id, self._bot.id)
        except TelegramError as exc:
            raise ProbeError(
                f"the bot's rights in chat {chat_id} cannot be read: {exc.message}"
            ) from exc
        if isinstance(member, ChatMemberOwner):
            return BotRights("creator", True, True, True)
        if isinstance(member, ChatMemberAdministrator):
            return BotRights(
                "administrator",
                manage_topics=bool(member.can_manage_topics),
                delete_messages=bool(member.can_delete_messages),
                pin_messages=bool(member.can_pin_messages),
            )
        return BotRights(str(member.status))

    async def next_group_message(
        self,
        timeout_s: float,
        *,
        on_other: Callable[[str], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> GroupMessage | None:
        """The next message sent to a group the bot is in, or None after ``timeout_s``.

        Messages elsewhere (private chats, channels) are skipped; ``on_other`` hears why.
        """
        deadline = clock() + timeout_s
        while self._unread or (left := deadline - clock()) > 0:
            if not self._unread:
                self._unread.extend(await self._poll(min(self._poll_s, max(1, int(left)))))
                continue
            update = self._unread.popleft()
            found = _group_message(update)
            if found is not None:
                return found
            if on_other is not None and update.message is not None:
                await on_other(update.message.chat.type)
        return None

    async def confirm(self) -> None:
        """Tell Telegram the updates read so far are handled, so the bot will not see them."""
        if self._offset is not None:
            await self._poll(0)

    async def _poll(self, poll_s: int) -> tuple[Update, ...]:
        try:
            updates = await self._bot.get_updates(offset=self._offset, timeout=poll_s)
        except Conflict as exc:
            raise PollConflict(exc.message) from exc
        except NetworkError as exc:
            raise Unreachable(f"getUpdates failed: {exc.message}") from exc
        except TelegramError as exc:
            raise ProbeError(f"getUpdates failed: {exc.message}") from exc
        if updates:
            self._offset = updates[-1].update_id + 1
        return updates


def _group_message(update: Update) -> GroupMessage | None:
    message = update.message
    if message is None or message.chat.type not in (ChatType.GROUP, ChatType.SUPERGROUP):
        return None
    user = message.from_user
    return GroupMessage(
        update_id=update.update_id,
        chat_id=message.chat.id,
        chat_title=message.chat.title or "",
        chat_type=message.chat.type,
        is_forum=bool(message.chat.is_forum),
        user_id=user.id if user else None,
        user_name=_sender_name(message),
        anonymous=_is_anonymous(message),
    )


def _is_anonymous(message: Message) -> bool:
    user = message.from_user
    return (
        message.sender_chat is not None
        or user is None
        or user.id in (GROUP_ANONYMOUS_BOT, CHANNEL_BOT)
    )


def _sender_name(message: Message) -> str:
    user = message.from_user
    if message.sender_chat is not None:
        return message.sender_chat.title or "the group"
    if user is None:
        return "someone"
    return f"@{user.username}" if user.username else user.full_name
