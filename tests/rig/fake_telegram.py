"""A stateful fake Telegram Bot API server for tests.

The real python-telegram-bot client talks to it over HTTP (``TELEGRAM_API_URL=fake.url``; PTB
appends ``/bot{token}/{method}``). It models one forum supergroup (plus private chats), forum topics
whose thread id is the message id of their ``forum_topic_created`` service message, a real
``getUpdates`` long poll, realistic validation with Telegram's error strings (telegram.md §1, §3,
§4, §10), switchable flood emulation, fault injection and a call log.

Error strings marked ``# guess`` are not verified against the real Bot API; match them loosely.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import json
import logging
import math
import re
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, Final, TypeVar

from aiohttp import web

T = TypeVar("T")
JsonDict = dict[str, Any]
_LOGGER = logging.getLogger(__name__)


class _AnyThread:
    """Sentinel for ``messages(thread_id=ANY)``: messages of every thread, General included."""

    def __repr__(self) -> str:
        return "ANY"


ANY: Final = _AnyThread()

# --- limits (telegram.md §1) --------------------------------------------------------------------
MAX_TEXT_UTF16: Final = 4096
MAX_CAPTION_UTF16: Final = 1024
MAX_CALLBACK_DATA_BYTES: Final = 64
MAX_BUTTONS_PER_ROW: Final = 8
MAX_BUTTONS: Final = 100
MAX_ANSWER_TEXT: Final = 200
MAX_TOPIC_NAME: Final = 128
MAX_COMMANDS: Final = 100
MAX_UPLOAD_BYTES: Final = 50 * 1024 * 1024
MAX_PHOTO_BYTES: Final = 10 * 1024 * 1024
MAX_DOWNLOAD_BYTES: Final = 20 * 1024 * 1024
MEDIA_GROUP_SIZES: Final = range(2, 11)  # an album holds 2-10 media
TOPIC_ICON_COLORS: Final = frozenset({0x6FB9F0, 0xFFD67E, 0xCB86DB, 0x8EEE98, 0xFF93B2, 0xFB6F5F})
DEFAULT_ICON_COLOR: Final = 0x6FB9F0
# A part of Telegram's forum topic icon set (getForumTopicIconStickers): (emoji, custom emoji id).
FORUM_ICONS: Final = (
    ("📰", "5434144690511290129"),
    ("💡", "5312536423851630001"),
    ("⚡️", "5312016608254762256"),
    ("❗️", "5379748062124056162"),
    ("✅", "5237699328843200968"),
    ("❌", "5377498341074542641"),
    ("💤", "5408906741125490282"),
    ("🔥", "5312241539987020022"),
)
COMMAND_NAME_RE: Final = re.compile(r"^[a-z0-9_]{1,32}$")
BOT_COMMAND_IN_TEXT_RE: Final = re.compile(r"(?<!\S)/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,32})?")
CHAT_ACTIONS: Final = frozenset(
    [
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    ]
)

# --- error descriptions as Telegram sends them (telegram.md §3) ---------------------------------
NOT_MODIFIED: Final = (
    "Bad Request: message is not modified: specified new message content and reply markup are "
    "exactly the same as a current content and reply markup of the message"
)
THREAD_NOT_FOUND: Final = "Bad Request: message thread not found"
TOPIC_CLOSED: Final = "Bad Request: TOPIC_CLOSED"
TEXT_TOO_LONG_SEND: Final = "Bad Request: message is too long"
TEXT_TOO_LONG_EDIT: Final = "Bad Request: MESSAGE_TOO_LONG"
CAPTION_TOO_LONG: Final = "Bad Request: message caption is too long"
EDIT_NOT_FOUND: Final = "Bad Request: message to edit not found"
DELETE_NOT_FOUND: Final = "Bad Request: message to delete not found"
BUTTON_DATA_INVALID: Final = "Bad Request: BUTTON_DATA_INVALID"
BOT_COMMAND_INVALID: Final = "Bad Request: BOT_COMMAND_INVALID"
TEXT_EMPTY_SEND: Final = "Bad Request: message text is empty"
TEXT_EMPTY_EDIT: Final = "Bad Request: text must be non-empty"  # guess (edit wording)
CHAT_NOT_FOUND: Final = "Bad Request: chat not found"
REPLY_NOT_FOUND: Final = "Bad Request: message to be replied not found"
QUERY_TOO_OLD: Final = (
    "Bad Request: query is too old and response timeout expired or query ID is invalid"
)
NO_TEXT_TO_EDIT: Final = "Bad Request: there is no text in the message to edit"
CANT_EDIT: Final = "Bad Request: message can't be edited"
CANT_DELETE: Final = "Bad Request: message can't be deleted"
TEXT_BUTTONS_UNALLOWED: Final = (
    "Bad Request: can't parse inline keyboard button: Text buttons are unallowed in the inline "
    "keyboard"
)
MARKUP_TOO_LONG: Final = "Bad Request: reply markup is too long"  # guess
MARKUP_JSON_INVALID: Final = "Bad Request: can't parse reply keyboard markup JSON object"
NOT_A_FORUM: Final = "Bad Request: the chat is not a forum"  # guess
TOPIC_NAME_INVALID: Final = "Bad Request: TOPIC_NAME_INVALID"  # guess
TOPIC_ICON_COLOR_INVALID: Final = "Bad Request: TOPIC_ICON_COLOR_INVALID"  # guess
TOPIC_NOT_MODIFIED: Final = "Bad Request: TOPIC_NOT_MODIFIED"
ICON_INVALID: Final = "Bad Request: invalid custom emoji identifier specified"  # guess
PIN_NOT_FOUND: Final = "Bad Request: message to pin not found"
NO_RIGHTS_PIN: Final = "Bad Request: not enough rights to manage pinned messages in the chat"
NO_RIGHTS_CREATE_TOPIC: Final = "Bad Request: not enough rights to create a topic"
CHAT_ADMIN_REQUIRED: Final = "Bad Request: CHAT_ADMIN_REQUIRED"
COMMANDS_TOO_MUCH: Final = "Bad Request: BOT_COMMANDS_TOO_MUCH"
COMMAND_DESCRIPTION_INVALID: Final = "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID"  # guess
ANSWER_TEXT_TOO_LONG: Final = "Bad Request: MESSAGE_TOO_LONG"  # guess (answerCallbackQuery)
WRONG_ACTION: Final = "Bad Request: wrong parameter action in request"
INVALID_FILE_ID: Final = "Bad Request: invalid file_id"
WRONG_FILE_ID: Final = "Bad Request: wrong file identifier/HTTP URL specified"
FILE_TOO_BIG: Final = "Bad Request: file is too big"
MEDIA_GROUP_SIZE_INVALID: Final = "Bad Request: wrong number of media in the group"  # guess
MEDIA_GROUP_MIXED: Final = "Bad Request: MEDIA_GROUP_INVALID"  # guess (documents with photos)
MEDIA_TYPE_INVALID: Final = "Bad Request: wrong media type"  # guess
USER_NOT_FOUND: Final = "Bad Request: user not found"  # guess
MESSAGE_ID_MISSING: Final = "Bad Request: message identifier is not specified"  # guess
DRAFT_PEER_INVALID: Final = "Bad Request: TEXTDRAFT_PEER_INVALID"  # guess
CONFLICT_POLL: Final = (
    "Conflict: terminated by other getUpdates request; make sure that only one bot instance is "
    "running"
)
CONFLICT_WEBHOOK: Final = (
    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete "
    "the webhook first"
)

# Senders Telegram uses for messages not sent by a person as themselves (telegram.md §11).
ANONYMOUS_ADMIN_ID: Final = 1087968824  # GroupAnonymousBot: an admin with "Remain anonymous"
SERVICE_USER_ID: Final = 777000  # "Telegram": automatic forwards from a linked channel
# What getUpdates delivers when allowed_updates was never set: everything but these three.
UPDATE_TYPES: Final = frozenset(
    [
        "message",
        "edited_message",
        "channel_post",
        "edited_channel_post",
        "business_connection",
        "business_message",
        "edited_business_message",
        "deleted_business_messages",
        "message_reaction",
        "message_reaction_count",
        "inline_query",
        "chosen_inline_result",
        "callback_query",
        "shipping_query",
        "pre_checkout_query",
        "purchased_paid_media",
        "poll",
        "poll_answer",
        "my_chat_member",
        "chat_member",
        "chat_join_request",
        "chat_boost",
        "removed_chat_boost",
    ]
)
DEFAULT_ALLOWED_UPDATES: Final = UPDATE_TYPES - {
    "chat_member",
    "message_reaction",
    "message_reaction_count",
}
# Not documented; people report answers failing after roughly 5-20 s. A guess.
CALLBACK_QUERY_TTL_S: Final = 15.0

# Writes that count against flood limits (edits count like sends; topic operations count too).
FLOOD_METHODS: Final = frozenset(
    [
        "sendMessage",
        "sendDocument",
        "sendPhoto",
        "sendMediaGroup",
        "editMessageText",
        "editMessageCaption",
        "editMessageReplyMarkup",
        "deleteMessage",
        "createForumTopic",
        "editForumTopic",
        "closeForumTopic",
        "reopenForumTopic",
        "deleteForumTopic",
        "pinChatMessage",
    ]
)

_INT_FIELDS: Final = frozenset(
    [
        "chat_id",
        "message_id",
        "message_thread_id",
        "reply_to_message_id",
        "user_id",
        "offset",
        "limit",
        "timeout",
        "icon_color",
        "cache_time",
        "draft_id",
        "from_chat_id",
    ]
)
_JSON_FIELDS: Final = frozenset(
    [
        "reply_markup",
        "entities",
        "caption_entities",
        "commands",
        "scope",
        "reply_parameters",
        "link_preview_options",
        "allowed_updates",
        "media",
    ]
)
_BOOL_FIELDS: Final = frozenset(
    [
        "disable_notification",
        "protect_content",
        "show_alert",
        "drop_pending_updates",
        "disable_web_page_preview",
        "allow_sending_without_reply",
        "disable_content_type_detection",
        "has_spoiler",
        "show_caption_above_media",
        "allow_paid_broadcast",
    ]
)


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units, the unit Telegram counts limits and entity offsets in."""
    return len(text.encode("utf-16-le")) // 2


class ApiError(Exception):
    """A Bot API error reply: HTTP status == error_code."""

    def __init__(self, error_code: int, description: str, parameters: JsonDict | None = None):
        super().__init__(description)
        self.error_code = error_code
        self.description = description
        self.parameters = parameters

    def to_json(self) -> JsonDict:
        body: JsonDict = {
            "ok": False,
            "error_code": self.error_code,
            "description": self.description,
        }
        if self.parameters:
            body["parameters"] = self.parameters
        return body


def bad_request(description: str) -> ApiError:
    return ApiError(HTTPStatus.BAD_REQUEST, description)


def too_many_requests(retry_after: int) -> ApiError:
    return ApiError(
        HTTPStatus.TOO_MANY_REQUESTS,
        f"Too Many Requests: retry after {retry_after}",
        {"retry_after": retry_after},
    )


# ================================================================================================
# Formatting: parse_mode HTML / MarkdownV2 / Markdown or explicit entities -> (text, entities)
# ================================================================================================


class EntityParseError(Exception):
    """Raised by the parsers; becomes ``Bad Request: can't parse entities: <message>``."""


def _byte_offset(source: str, index: int) -> int:
    return len(source[:index].encode("utf-8"))


def _sorted_entities(entities: list[JsonDict]) -> list[JsonDict]:
    return sorted(entities, key=lambda e: (e["offset"], -e["length"], e["type"]))


@dataclass
class _OpenEntity:
    tag: str
    entity_type: str
    start: int
    byte_offset: int
    extra: JsonDict = field(default_factory=dict)


_HTML_TAG_TYPES: Final = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
}
_HTML_ATTR_RE: Final = re.compile(
    r"""([a-zA-Z_-]+)\s*(?:=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+)))?"""
)
_HTML_CHAR_REF_RE: Final = re.compile(r"&(lt|gt|amp|quot|#[0-9]{1,7}|#x[0-9a-fA-F]{1,6});")
_HTML_NAMED_REFS: Final = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}


def _html_char_ref(ref: str) -> str:
    if ref in _HTML_NAMED_REFS:
        return _HTML_NAMED_REFS[ref]
    code = int(ref[2:], 16) if ref.startswith("#x") else int(ref[1:])
    return chr(code) if 0 < code <= 0x10FFFF else ""


class _TextBuilder:
    """Accumulates plain text and tracks its UTF-16 length."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.units = 0

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.units += utf16_len(text)

    def text(self) -> str:
        return "".join(self.parts)


def _close_entity(opened: _OpenEntity, end: int, entities: list[JsonDict]) -> None:
    if opened.entity_type == "text_link" and not opened.extra.get("url"):
        return  # <a> without href is plain text
    if end > opened.start:
        entities.append(
            {"type": opened.entity_type, "offset": opened.start, "length": end - opened.start}
            | opened.extra
        )


def _html_start_tag(inner: str, source: str, index: int, units: int) -> _OpenEntity:
    name_match = re.match(r"[a-zA-Z][a-zA-Z0-9-]*", inner)
    name = name_match.group(0).lower() if name_match else ""
    attrs = {
        m.group(1).lower(): next((g for g in m.groups()[1:] if g is not None), "")
        for m in _HTML_ATTR_RE.finditer(inner[len(name) :])
    }
    offset = _byte_offset(source, index)
    if name not in _HTML_TAG_TYPES or (name == "span" and attrs.get("class") != "tg-spoiler"):
        raise EntityParseError(f'Unsupported start tag "{name}" at byte offset {offset}')
    entity_type = _HTML_TAG_TYPES[name]
    extra: JsonDict = {}
    if name == "a":
        extra["url"] = attrs.get("href", "")
    elif name == "tg-emoji":
        extra["custom_emoji_id"] = attrs.get("emoji-id", "")
    elif name == "blockquote" and "expandable" in attrs:
        entity_type = "expandable_blockquote"
    elif name == "code" and attrs.get("class", "").startswith("language-"):
        extra["language"] = attrs["class"].removeprefix("language-")
    return _OpenEntity(name, entity_type, units, offset, extra)


def _html_end_tag(
    name: str, stack: list[_OpenEntity], source: str, index: int, units: int, out: list[JsonDict]
) -> None:
    offset = _byte_offset(source, index)
    if not stack:
        raise EntityParseError(f'Unexpected end tag "{name}" at byte offset {offset}')  # guess
    opened = stack.pop()
    if opened.tag != name:
        raise EntityParseError(
            f'Unmatched end tag at byte offset {offset}, expected "</{opened.tag}>", '
            f'found "</{name}>"'
        )
    parent = stack[-1] if stack else None
    if opened.tag == "code" and parent is not None and parent.tag == "pre":
        if "language" in opened.extra:
            parent.extra["language"] = opened.extra["language"]
        return
    if opened.entity_type == "code":
        opened.extra.pop("language", None)
    _close_entity(opened, units, out)


def parse_html(source: str) -> tuple[str, list[JsonDict]]:
    """Crude Telegram-HTML parser: supported tags only, balanced, the 4 named char references."""
    builder = _TextBuilder()
    stack: list[_OpenEntity] = []
    entities: list[JsonDict] = []
    index = 0
    while index < len(source):
        char = source[index]
        if char == "<":
            close = source.find(">", index)
            if close == -1:
                offset = _byte_offset(source, index)
                raise EntityParseError(f"Can't find end of tag at byte offset {offset}")  # guess
            inner = source[index + 1 : close].strip()
            if inner.startswith("/"):
                name = inner[1:].strip().lower()
                _html_end_tag(name, stack, source, index, builder.units, entities)
            else:
                stack.append(_html_start_tag(inner, source, index, builder.units))
            index = close + 1
        elif char == "&" and (ref := _HTML_CHAR_REF_RE.match(source, index)):
            builder.add(_html_char_ref(ref.group(1)))
            index = ref.end()
        else:
            builder.add(char)
            index += 1
    if stack:
        raise EntityParseError(
            f'Can\'t find end tag corresponding to start tag "{stack[-1].tag}"'  # guess (wording)
        )
    return builder.text(), _sorted_entities(entities)


_MD_RESERVED: Final = frozenset("_*[]()~`>#+-=|{}.!")
_MD_V2_MARKERS: Final = {
    "*": "bold",
    "_": "italic",
    "__": "underline",
    "~": "strikethrough",
    "||": "spoiler",
}
_MD_V1_MARKERS: Final = {"*": "bold", "_": "italic"}
_MD_TYPE_NAMES: Final = {
    "bold": "Bold",
    "italic": "Italic",
    "underline": "Underline",
    "strikethrough": "Strikethrough",
    "spoiler": "Spoiler",
    "text_link": "TextUrl",
    "code": "Code",
    "pre": "Pre",
}


def _md_unclosed(entity_type: str, byte_offset: int, v2: bool) -> EntityParseError:
    if v2:
        name = _MD_TYPE_NAMES.get(entity_type, entity_type)
        return EntityParseError(f"Can't find end of {name} entity at byte offset {byte_offset}")
    return EntityParseError(f"Can't find end of the entity starting at byte offset {byte_offset}")


class _MarkdownParser:
    """Crude MarkdownV2 (v2=True) / legacy Markdown parser producing plain text and entities."""

    def __init__(self, source: str, v2: bool):
        self.source = source
        self.v2 = v2
        self.builder = _TextBuilder()
        self.stack: list[_OpenEntity] = []
        self.entities: list[JsonDict] = []
        self.index = 0

    def parse(self) -> tuple[str, list[JsonDict]]:
        while self.index < len(self.source):
            self._step()
        if self.stack:
            top = self.stack[-1]
            raise _md_unclosed(top.entity_type, top.byte_offset, self.v2)
        return self.builder.text(), _sorted_entities(self.entities)

    def _step(self) -> None:
        src, i = self.source, self.index
        char = src[i]
        at_line_start = i == 0 or src[i - 1] == "\n"
        if char == "\\" and i + 1 < len(src) and (self.v2 or src[i + 1] in "_*`["):
            self.builder.add(src[i + 1])
            self.index += 2
        elif src.startswith("```", i):
            self._code_block()
        elif char == "`":
            self._inline_code()
        elif char == "[":
            self._open("[", "text_link")
        elif char == "]" and self.stack and self.stack[-1].tag == "[":
            self._close_link()
        elif marker := self._marker_at(i):
            self._toggle(marker)
        elif self.v2 and char == ">" and at_line_start:
            self.index += 1  # blockquote marker: no entity in this crude model
        elif self.v2 and char in _MD_RESERVED:
            raise EntityParseError(
                f"Character '{char}' is reserved and must be escaped with the preceding '\\'"
            )
        else:
            self.builder.add(char)
            self.index += 1

    def _marker_at(self, i: int) -> str | None:
        markers = _MD_V2_MARKERS if self.v2 else _MD_V1_MARKERS
        for marker in sorted(markers, key=len, reverse=True):
            if self.source.startswith(marker, i):
                return marker
        return None

    def _open(self, tag: str, entity_type: str) -> None:
        offset = _byte_offset(self.source, self.index)
        self.stack.append(_OpenEntity(tag, entity_type, self.builder.units, offset))
        self.index += len(tag)

    def _toggle(self, marker: str) -> None:
        if self.stack and self.stack[-1].tag == marker:
            _close_entity(self.stack.pop(), self.builder.units, self.entities)
            self.index += len(marker)
        else:
            markers = _MD_V2_MARKERS if self.v2 else _MD_V1_MARKERS
            self._open(marker, markers[marker])

    def _find_unescaped(self, needle: str, start: int) -> int:
        i = start
        while i < len(self.source):
            if self.source[i] == "\\" and self.v2:
                i += 2
                continue
            if self.source.startswith(needle, i):
                return i
            i += 1
        return -1

    def _unescape(self, text: str) -> str:
        return re.sub(r"\\(.)", r"\1", text, flags=re.DOTALL) if self.v2 else text

    def _inline_code(self) -> None:
        start = self.index
        end = self._find_unescaped("`", start + 1)
        if end == -1:
            raise _md_unclosed("code", _byte_offset(self.source, start), self.v2)
        self._emit_literal(self._unescape(self.source[start + 1 : end]), "code", {})
        self.index = end + 1

    def _code_block(self) -> None:
        start = self.index
        end = self._find_unescaped("```", start + 3)
        if end == -1:
            raise _md_unclosed("pre", _byte_offset(self.source, start), self.v2)
        body = self.source[start + 3 : end]
        extra: JsonDict = {}
        first_line, newline, rest = body.partition("\n")
        if newline and first_line.strip() and " " not in first_line.strip():
            extra["language"] = first_line.strip()
            body = rest
        self._emit_literal(self._unescape(body), "pre", extra)
        self.index = end + 3

    def _emit_literal(self, text: str, entity_type: str, extra: JsonDict) -> None:
        start = self.builder.units
        self.builder.add(text)
        _close_entity(
            _OpenEntity("", entity_type, start, 0, extra), self.builder.units, self.entities
        )

    def _close_link(self) -> None:
        opened = self.stack.pop()
        url_start = self.index + 1
        if not self.source.startswith("(", url_start):
            raise _md_unclosed("text_link", opened.byte_offset, self.v2)
        url_end = self._find_unescaped(")", url_start + 1)
        if url_end == -1:
            raise _md_unclosed("text_link", opened.byte_offset, self.v2)
        opened.extra["url"] = self._unescape(self.source[url_start + 1 : url_end])
        _close_entity(opened, self.builder.units, self.entities)
        self.index = url_end + 1


_ENTITY_TYPES: Final = frozenset(
    [
        "mention",
        "hashtag",
        "cashtag",
        "bot_command",
        "url",
        "email",
        "phone_number",
        "bold",
        "italic",
        "underline",
        "strikethrough",
        "spoiler",
        "blockquote",
        "expandable_blockquote",
        "code",
        "pre",
        "text_link",
        "text_mention",
        "custom_emoji",
        "date_time",
    ]
)


def validate_entities(text: str, entities: Any) -> list[JsonDict]:
    """Check explicit entities as the real server does (telegram.md §11): a bad entity is refused
    with its own text, never "can't parse entities" (that only comes from parse_mode parsing).
    A text_link's URL is checked and stored the way TDLib does (`check_link`)."""
    if not isinstance(entities, list):
        raise bad_request("can't parse entities JSON object")  # guess
    total = utf16_len(text)
    checked: list[JsonDict] = []
    for position, entity in enumerate(entities):
        if not isinstance(entity, dict) or entity.get("type") not in _ENTITY_TYPES:
            raise bad_request(f"unsupported entity at position {position}")  # guess
        offset, length = entity.get("offset"), entity.get("length")
        if not isinstance(offset, int) or not isinstance(length, int):
            raise bad_request(f"entity {position} has no offset or length")  # guess
        if offset < 0 or length <= 0 or offset + length > total:
            raise bad_request(
                f"entity {position} ({entity['type']}, offset {offset}, length {length}) "
                f"ends after the end of the text of {total} UTF-16 code units"  # guess
            )
        entity = dict(entity)
        if entity["type"] == "text_link":
            url = str(entity.get("url") or "")
            try:
                entity["url"] = check_link(url)
            except LinkError as exc:
                raise bad_request(f"entity URL '{url}' is invalid: {exc}") from exc
        checked.append(entity)
    return _sorted_entities(checked)


# --- what the server keeps of an entity list (td MessageEntity.cpp, LinkManager.cpp, HttpUrl.cpp)

MAX_USER_ENTITIES: Final = 100  # td: MAX_USER_ENTITY_COUNT, "server-side limit"
# Detected by the server from the text; entities of these types sent by a bot are not user entities.
_SERVER_DETECTED_TYPES: Final = frozenset(
    ["mention", "hashtag", "cashtag", "bot_command", "url", "email", "phone_number"]
)
_SPLITTABLE_TYPES: Final = frozenset(["bold", "italic", "underline", "strikethrough", "spoiler"])
_URL_PART_CHARS: Final = frozenset(".-_!$,~*'();&+=")


def applied_entities(entities: list[JsonDict]) -> list[JsonDict]:
    """The entities Telegram keeps: at most 100 user entities, the rest silently ignored.

    TDLib counts the non-splittable ones (code, pre, text_link, blockquote, ...) first, then
    bold/italic/underline/strikethrough/spoiler; custom emoji do not count. (TDLib first splits
    overlapping splittable entities into pieces, which can only lower what is kept; not modelled.)
    """
    kept: list[JsonDict] = []
    count = 0
    for splittable in (False, True):
        for entity in entities:
            kind = entity["type"]
            if kind in _SERVER_DETECTED_TYPES or (kind in _SPLITTABLE_TYPES) != splittable:
                continue
            if kind != "custom_emoji":
                if count >= MAX_USER_ENTITIES:
                    continue
                count += 1
            kept.append(entity)
    kept.extend(e for e in entities if e["type"] in _SERVER_DETECTED_TYPES)
    return _sorted_entities(kept)


class LinkError(Exception):
    """Why TDLib refuses a link (LinkManager::check_link_impl / parse_url)."""


def check_link(url: str) -> str:
    """The URL as TDLib stores a text_link to it, or LinkError with TDLib's reason.

    A host without a dot (``localhost``, ``intranet``) is "Wrong HTTP URL"; IPv4 literals have
    dots and pass; ``mailto:x@y.z`` parses as userinfo ``mailto:x`` and becomes
    ``http://mailto:x@y.z/``. tg:// and ton:// links are accepted as given (not modelled further).
    """
    if url.lower().startswith(("tg:", "ton:", "tonsite:")):
        return url
    protocol, rest = "http", url
    scheme = re.match(r"([^:/?#@\[\]]*)://", url)
    if scheme is not None:
        protocol = scheme.group(1).lower()
        if protocol not in ("http", "https"):
            raise LinkError("Unsupported URL protocol")
        rest = url[scheme.end() :]
    split = re.match(r"([^/?#]*)(.*)", rest, re.DOTALL)
    assert split is not None
    authority, query = split.groups()
    userinfo_host, port = _split_port(authority)
    userinfo, _, host = userinfo_host.rpartition("@")
    is_ipv6 = host.startswith("[") and host.endswith("]")
    if is_ipv6 and not _is_ipv6(host[1:-1]):
        raise LinkError("Wrong IPv6 address specified in the URL")
    if not host:
        raise LinkError("URL host is empty")
    if host == ".":
        raise LinkError("Host is invalid")
    host = host.lower()
    if not is_ipv6:
        _check_url_part(host, "host", allow_colon=False)
        _check_url_part(userinfo, "userinfo", allow_colon=True)
    if "." not in host and not is_ipv6:
        raise LinkError("Wrong HTTP URL")
    return f"{protocol}://{userinfo + '@' if userinfo else ''}{host}{port}{_url_query(query)}"


def _split_port(authority: str) -> tuple[str, str]:
    """(userinfo@host, ":port" or ""); the port is the part after the last ':' past any ']'/'@'."""
    index = len(authority) - 1
    while index > 0 and authority[index] not in ":]@":
        index -= 1
    if index <= 0 or authority[index] != ":":
        return authority, ""
    digits = authority[index + 1 :].lstrip("0") or "0"
    port = int(digits) if digits.isascii() and digits.isdigit() else 0
    if not 0 < port <= 65535:
        raise LinkError("Wrong port number specified in the URL")
    return authority[:index], f":{port}"


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _check_url_part(part: str, name: str, *, allow_colon: bool) -> None:
    index = 0
    while index < len(part):
        char = part[index]
        if char == "%":
            if not re.fullmatch(r"[0-9A-Fa-f]{2}", part[index + 1 : index + 3]):
                raise LinkError(f"Wrong percent-encoded symbol in URL {name}")
            index += 3
            continue
        allowed = (char.isascii() and char.isalnum()) or char in _URL_PART_CHARS
        if not (allowed or (allow_colon and char == ":") or ord(char) >= 128):
            raise LinkError(f"Disallowed character in URL {name}")
        index += 1


def _url_query(query: str) -> str:
    query = query.rstrip() or "/"
    encoded = "".join(f"%{ord(c):02X}" if ord(c) <= 0x20 else c for c in query)
    return encoded if encoded.startswith("/") else "/" + encoded


_PREVIEW_URL_RE: Final = re.compile(r"https?://[^\s]+", re.IGNORECASE)


def preview_url(
    text: str, entities: list[JsonDict], options: Any, legacy_disabled: bool
) -> str | None:
    """The page Telegram would show a link preview of, unless previews are disabled (§11)."""
    options = options if isinstance(options, dict) else {}
    if legacy_disabled or options.get("is_disabled"):
        return None
    if options.get("url"):
        return str(options["url"])
    links = [str(e["url"]) for e in entities if e["type"] == "text_link" and e.get("url")]
    found = _PREVIEW_URL_RE.search(text)
    return links[0] if links else (found.group(0) if found else None)


def parse_formatted(text: str, parse_mode: str | None, entities: Any) -> tuple[str, list[JsonDict]]:
    """Apply parse_mode or explicit entities; raise ApiError with Telegram's 'can't parse' text."""
    try:
        match (parse_mode or "").lower():
            case "html":
                return parse_html(text)
            case "markdownv2":
                return _MarkdownParser(text, v2=True).parse()
            case "markdown":
                return _MarkdownParser(text, v2=False).parse()
            case "":
                return text, validate_entities(text, entities) if entities is not None else []
            case _:
                raise bad_request(f"unsupported parse_mode {parse_mode}")  # guess
    except EntityParseError as exc:
        raise bad_request(f"can't parse entities: {exc}") from exc


# ================================================================================================
# State
# ================================================================================================


@dataclass(frozen=True)
class Call:
    """One Bot API request as the fake answered it. ``at`` is the fake's clock at arrival."""

    method: str
    params: JsonDict
    ok: bool
    result: Any
    error_code: int | None
    description: str | None
    at: float
    parameters: JsonDict | None = None

    def to_json(self) -> JsonDict:
        return {
            "method": self.method,
            "params": self.params,
            "ok": self.ok,
            "result": self.result,
            "error_code": self.error_code,
            "description": self.description,
            "at": self.at,
            "parameters": self.parameters,
        }

    def error_json(self) -> JsonDict:
        body: JsonDict = {
            "ok": False,
            "error_code": self.error_code,
            "description": self.description,
        }
        if self.parameters:
            body["parameters"] = self.parameters
        return body


@dataclass
class Fault:
    """Fails the next ``times`` calls of ``method`` whose params contain ``match``."""

    method: str
    error_code: int
    description: str
    retry_after: int | None = None
    times: int = 1
    match: JsonDict | None = None

    def matches(self, method: str, params: Mapping[str, Any]) -> bool:
        if self.times <= 0 or method.lower() != self.method.lower():
            return False
        return all(
            params.get(key) == value or str(params.get(key)) == str(value)
            for key, value in (self.match or {}).items()
        )

    def to_error(self) -> ApiError:
        parameters = {"retry_after": self.retry_after} if self.retry_after is not None else None
        return ApiError(self.error_code, self.description, parameters)


@dataclass
class ChatState:
    id: int
    type: str
    title: str | None = None
    is_forum: bool = False
    first_name: str | None = None
    username: str | None = None
    next_message_id: int = 1

    def take_message_id(self) -> int:
        message_id = self.next_message_id
        self.next_message_id += 1
        return message_id

    @property
    def is_group(self) -> bool:
        return self.type in ("group", "supergroup")

    def to_api(self) -> JsonDict:
        if self.type == "private":
            chat: JsonDict = {"id": self.id, "type": "private", "first_name": self.first_name}
            if self.username:
                chat["username"] = self.username
            return chat
        chat = {"id": self.id, "title": self.title, "type": self.type}
        if self.is_forum:
            chat["is_forum"] = True
        return chat

    def to_full_info(self) -> JsonDict:
        gifts = ("unlimited_gifts", "limited_gifts", "unique_gifts", "premium_subscription")
        return self.to_api() | {
            "accent_color_id": 0,
            "max_reaction_count": 11,
            "accepted_gift_types": dict.fromkeys((*gifts, "gifts_from_channels"), False),
        }


@dataclass
class Topic:
    thread_id: int
    name: str
    icon_color: int
    created_by: int
    icon_custom_emoji_id: str | None = None
    closed: bool = False
    deleted: bool = False

    def to_api(self) -> JsonDict:
        topic: JsonDict = {
            "message_thread_id": self.thread_id,
            "name": self.name,
            "icon_color": self.icon_color,
        }
        if self.icon_custom_emoji_id:
            topic["icon_custom_emoji_id"] = self.icon_custom_emoji_id
        return topic


@dataclass
class StoredFile:
    file_id: str
    file_unique_id: str
    file_path: str
    data: bytes
    file_name: str | None = None
    mime_type: str | None = None

    @property
    def size(self) -> int:
        return len(self.data)

    def to_api(self) -> JsonDict:
        return {
            "file_id": self.file_id,
            "file_unique_id": self.file_unique_id,
            "file_size": self.size,
            "file_path": self.file_path,
        }


@dataclass
class StoredMessage:
    """A message as the chat shows it now (after edits); ``versions`` keeps earlier texts."""

    chat_id: int
    message_id: int
    date: int
    sender: JsonDict
    thread_id: int | None
    is_topic_message: bool
    text: str | None = None
    entities: list[JsonDict] = field(default_factory=list)
    caption: str | None = None
    caption_entities: list[JsonDict] = field(default_factory=list)
    reply_markup: JsonDict | None = None
    reply_to_message_id: int | None = None
    sender_chat: JsonDict | None = None  # set when sent on behalf of a chat (anonymous admin)
    service: JsonDict | None = None
    media: JsonDict | None = None
    media_group_id: str | None = None
    deleted: bool = False
    edit_date: int | None = None
    versions: list[str | None] = field(default_factory=list)
    link_preview: str | None = None  # the URL Telegram shows a preview of
    by_our_bot: bool = False  # sent by the bot under test (GroupAnonymousBot is a bot too)
    sender_chat: JsonDict | None = None  # anonymous admins and channels send on behalf of a chat
    is_automatic_forward: bool = False
    media_group_id: str | None = None

    @property
    def from_bot(self) -> bool:
        return self.by_our_bot

    @property
    def edit_count(self) -> int:
        return len(self.versions)

    @property
    def buttons(self) -> list[JsonDict]:
        rows = (self.reply_markup or {}).get("inline_keyboard") or []
        return [button for row in rows for button in row]

    def content_key(self) -> tuple[Any, ...]:
        return (self.text, self.entities, self.caption, self.caption_entities, self.reply_markup)


@dataclass
class CallbackQueryState:
    id: str
    message_key: tuple[int, int]
    data: str
    user_id: int
    created_at: float
    answered: bool = False


@dataclass
class FloodLimits:
    per_chat_interval: float | None = 1.0
    per_group_per_minute: int | None = 20
    global_per_second: int | None = 30


class FloodEmulator:
    """Counts successful writes; tells how many seconds a new write must wait (None = allowed)."""

    def __init__(self, limits: FloodLimits, clock: Callable[[], float]):
        self.limits = limits
        self._clock = clock
        self._last_per_chat: dict[int, float] = {}
        self._per_group: dict[int, deque[float]] = {}
        self._global: deque[float] = deque()

    def retry_after(self, chat_id: int, is_group: bool) -> int | None:
        now = self._clock()
        waits: list[float] = []
        interval = self.limits.per_chat_interval
        last = self._last_per_chat.get(chat_id)
        if interval is not None and last is not None and now - last < interval:
            waits.append(last + interval - now)
        per_minute = self.limits.per_group_per_minute
        if is_group and per_minute is not None:
            window = self._pruned(self._per_group.setdefault(chat_id, deque()), now, 60.0)
            if len(window) >= per_minute:
                waits.append(window[0] + 60.0 - now)
        per_second = self.limits.global_per_second
        if per_second is not None:
            window = self._pruned(self._global, now, 1.0)
            if len(window) >= per_second:
                waits.append(window[0] + 1.0 - now)
        return max(1, math.ceil(max(waits))) if waits else None

    def record(self, chat_id: int, is_group: bool) -> None:
        now = self._clock()
        self._last_per_chat[chat_id] = now
        if is_group:
            self._per_group.setdefault(chat_id, deque()).append(now)
        self._global.append(now)

    @staticmethod
    def _pruned(window: deque[float], now: float, span: float) -> deque[float]:
        while window and window[0] <= now - span:
            window.popleft()
        return window


@dataclass(frozen=True)
class UploadedPart:
    filename: str | None
    content_type: str | None
    data: bytes

    def describe(self) -> JsonDict:
        return {
            "filename": self.filename,
            "content_type": self.content_type,
            "size": len(self.data),
        }


class Params:
    """Normalised request parameters with typed accessors raising Bot-API-style errors."""

    def __init__(self, values: JsonDict, client_gone: Callable[[], bool] = lambda: False):
        self.values = values
        self.client_gone = client_gone

    def has(self, name: str) -> bool:
        return self.values.get(name) is not None

    def opt_int(self, name: str) -> int | None:
        value = self.values.get(name)
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad_request(f"invalid {name} specified")  # guess
        return value

    def required_int(self, name: str) -> int:
        value = self.opt_int(name)
        if value is None:
            raise bad_request(f"{name} is empty")
        return value

    def opt_str(self, name: str) -> str | None:
        value = self.values.get(name)
        return None if value is None else str(value)

    def required_str(self, name: str, empty_error: str | None = None) -> str:
        value = self.opt_str(name)
        if value is None:
            raise bad_request(
                empty_error.removeprefix("Bad Request: ") if empty_error else f"{name} is empty"
            )
        return value

    def flag(self, name: str) -> bool:
        return self.values.get(name) is True

    def get(self, name: str) -> Any:
        return self.values.get(name)

    def recorded(self) -> JsonDict:
        return {
            key: value.describe() if isinstance(value, UploadedPart) else value
            for key, value in self.values.items()
        }


def normalise_params(raw: Mapping[str, Any]) -> JsonDict:
    """Coerce wire values: ids to int, nested JSON strings to objects, 'true'/'false' to bool."""
    values: JsonDict = {}
    for key, value in raw.items():
        if isinstance(value, str) and key in _INT_FIELDS:
            value = _int_or_str(value)
        elif isinstance(value, str) and key in _JSON_FIELDS:
            try:
                value = json.loads(value)
            except ValueError as exc:
                if key == "reply_markup":
                    raise bad_request(MARKUP_JSON_INVALID.removeprefix("Bad Request: ")) from exc
                raise bad_request(f"can't parse {key} JSON object") from exc  # guess
        elif isinstance(value, str) and key in _BOOL_FIELDS:
            value = value.lower() == "true"
        values[key] = value
    for key, value in list(values.items()):
        if isinstance(value, str) and value.startswith("attach://"):
            values[key] = values.get(value.removeprefix("attach://"), value)
    return values


async def read_request_params(request: web.Request) -> JsonDict:
    raw: dict[str, Any] = dict(request.query)
    content_type = request.content_type
    if request.can_read_body and content_type == "application/json":
        body = await request.json()
        if isinstance(body, dict):
            raw.update(body)
    elif request.can_read_body:
        form = await request.post()
        for key, value in form.items():
            if isinstance(value, web.FileField):
                raw[key] = UploadedPart(value.filename, value.content_type, value.file.read())
            else:
                raw[key] = value if isinstance(value, str) else bytes(value).decode()
    return normalise_params(raw)


def _png_size(data: bytes) -> tuple[int, int]:
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    return 100, 100


def _check_inline_keyboard(markup: Any) -> JsonDict | None:
    if markup is None:
        return None
    if not isinstance(markup, dict):
        raise bad_request(MARKUP_JSON_INVALID.removeprefix("Bad Request: "))
    rows = markup.get("inline_keyboard")
    if rows is None:
        return markup  # reply keyboards, ForceReply, ReplyKeyboardRemove: stored as sent
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise bad_request(MARKUP_JSON_INVALID.removeprefix("Bad Request: "))
    if sum(len(row) for row in rows) > MAX_BUTTONS or any(
        len(row) > MAX_BUTTONS_PER_ROW for row in rows
    ):
        raise bad_request(MARKUP_TOO_LONG.removeprefix("Bad Request: "))
    for button in (button for row in rows for button in row):
        _check_inline_button(button)
    return markup


_BUTTON_ACTIONS: Final = tuple(
    [
        "callback_data",
        "url",
        "switch_inline_query",
        "switch_inline_query_current_chat",
        "switch_inline_query_chosen_chat",
        "copy_text",
        "web_app",
        "login_url",
        "callback_game",
        "pay",
    ]
)


def _check_inline_button(button: Any) -> None:
    if not isinstance(button, dict) or not button.get("text"):
        raise bad_request("can't parse inline keyboard button: Text must be non-empty")  # guess
    if not any(action in button for action in _BUTTON_ACTIONS):
        raise bad_request(TEXT_BUTTONS_UNALLOWED.removeprefix("Bad Request: "))
    if "callback_data" in button:
        data = button["callback_data"]
        size = len(data.encode("utf-8")) if isinstance(data, str) else 0
        if not 1 <= size <= MAX_CALLBACK_DATA_BYTES:
            raise bad_request(BUTTON_DATA_INVALID.removeprefix("Bad Request: "))


def _scope_key(scope: Any, language_code: str | None) -> str:
    scope = scope if isinstance(scope, dict) else {"type": "default"}
    key = str(scope.get("type", "default"))
    for part in ("chat_id", "user_id"):
        if part in scope:
            key += f":{scope[part]}"
    return f"{key}/{language_code}" if language_code else key


def _error(description: str) -> ApiError:
    """bad_request from one of the full ``Bad Request: ...`` constants above."""
    return bad_request(description.removeprefix("Bad Request: "))


# ================================================================================================
# The server
# ================================================================================================

Handler = Callable[[Params], Awaitable[Any]]


class FakeTelegram:
    """Stateful fake Bot API: ``await start()``, ``url`` is TELEGRAM_API_URL, ``await stop()``."""

    def __init__(
        self,
        chat_id: int = -1001234567890,
        bot_token: str = "123456:TEST",
        *,
        bot_username: str = "outpost_test_bot",
        bot_first_name: str = "Outpost Test Bot",
        chat_title: str = "Outpost Test",
        is_forum: bool = True,
        bot_status: str = "administrator",
        can_manage_topics: bool = True,
        can_delete_messages: bool = True,
        can_pin_messages: bool = True,
        privacy_mode: bool = True,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        first_update_id: int = 1,
        callback_query_ttl: float | None = CALLBACK_QUERY_TTL_S,
    ):
        self.bot_token = bot_token
        bot_id_part = bot_token.split(":", 1)[0]
        self.bot_user: JsonDict = {
            "id": int(bot_id_part) if bot_id_part.isdigit() else 123456,
            "is_bot": True,
            "first_name": bot_first_name,
            "username": bot_username,
        }
        self.chat = ChatState(chat_id, "supergroup", chat_title, is_forum, next_message_id=2)
        self.chats: dict[int, ChatState] = {chat_id: self.chat}
        self.bot_status = bot_status
        self.can_manage_topics = can_manage_topics
        self.can_delete_messages = can_delete_messages
        self.can_pin_messages = can_pin_messages
        # BotFather's /setprivacy: on, a bot that is not an admin sees only commands in groups.
        self.privacy_mode = privacy_mode
        self.webhook_url = ""
        self.callback_query_ttl = callback_query_ttl
        self.deleted_topic_error = "TOPIC_ID_INVALID"  # or "TOPIC_DELETED"
        # The server remembers the last allowed_updates a getUpdates call gave (telegram.md §11).
        self.allowed_updates: frozenset[str] = DEFAULT_ALLOWED_UPDATES
        self._unacknowledged: int | None = None  # see keep_unacknowledged()
        self.topics: dict[int, Topic] = {}
        self.pinned: dict[int, int] = {}  # chat id -> its pinned message
        self.files: dict[str, StoredFile] = {}
        self.commands: dict[str, list[JsonDict]] = {}
        self.callback_answers: list[JsonDict] = []
        self.drafts: list[JsonDict] = []
        self.users: dict[int, JsonDict] = {}
        self._clock = clock
        self._wall_clock = wall_clock
        self._messages: dict[tuple[int, int], StoredMessage] = {}
        self._callback_queries: dict[str, CallbackQueryState] = {}
        self._calls: list[Call] = []
        self._faults: list[Fault] = []
        self._flood: FloodEmulator | None = None
        self._updates: list[JsonDict] = []
        self._next_update_id = first_update_id
        self._ids = itertools.count(1)
        self._cond: asyncio.Condition | None = None
        self._poll_generation = 0
        self._closing = False
        self._runner: web.AppRunner | None = None
        self.url = ""
        self._handlers: dict[str, tuple[str, Handler]] = {
            name.lower(): (name, handler) for name, handler in self._method_table().items()
        }

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> FakeTelegram:
        self._cond = asyncio.Condition()
        self._closing = False
        app = web.Application(client_max_size=MAX_UPLOAD_BYTES + 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._handle_download)
        app.router.add_post("/_test/message", self._http_test_message)
        app.router.add_post("/_test/topic", self._http_test_topic)
        app.router.add_post("/_test/click", self._http_test_click)
        app.router.add_get("/_test/calls", self._http_test_calls)
        app.router.add_post("/_test/fault", self._http_test_fault)
        app.router.add_post("/_test/flood", self._http_test_flood)
        app.router.add_get("/_test/state", self._http_test_state)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is None:
            return
        self._closing = True
        async with self._condition:
            self._condition.notify_all()
        await self._runner.cleanup()
        self._runner = None

    async def __aenter__(self) -> FakeTelegram:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def _condition(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    # --- configuration --------------------------------------------------------------------------

    def flood(
        self,
        per_chat_interval: float | None = 1.0,
        per_group_per_minute: int | None = 20,
        global_per_second: int | None = 30,
    ) -> None:
        """Enforce flood limits on ``FLOOD_METHODS``; a limit given as None is not enforced."""
        limits = FloodLimits(per_chat_interval, per_group_per_minute, global_per_second)
        self._flood = FloodEmulator(limits, self._clock)

    def flood_off(self) -> None:
        self._flood = None

    def add_fault(
        self,
        method: str,
        error_code: int,
        description: str | None = None,
        retry_after: int | None = None,
        times: int = 1,
        match: JsonDict | None = None,
    ) -> Fault:
        """Fail the next ``times`` calls of ``method`` whose params contain ``match``."""
        if description is None:
            description = (
                f"Too Many Requests: retry after {retry_after or 1}"
                if error_code == HTTPStatus.TOO_MANY_REQUESTS
                else HTTPStatus(error_code).phrase
            )
        if error_code == HTTPStatus.TOO_MANY_REQUESTS and retry_after is None:
            retry_after = 1
        fault = Fault(method, error_code, description, retry_after, times, match)
        self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        self._faults.clear()
        self._unacknowledged = None

    def keep_unacknowledged(self, update_id: int | None) -> None:
        """Every getUpdates that would acknowledge ``update_id`` (an offset past it) fails with
        502 before confirming anything: the bot gets the update but, as if it died before its
        next poll, never acknowledges it. None (or clear_faults()) ends that."""
        self._unacknowledged = update_id

    @property
    def next_update_id(self) -> int:
        """The id the next update will get."""
        return self._next_update_id

    # --- inspection -----------------------------------------------------------------------------

    def calls(self, method: str | None = None) -> list[Call]:
        """Recorded calls in completion order (a long poll is recorded when it returns)."""
        if method is None:
            return list(self._calls)
        return [call for call in self._calls if call.method.lower() == method.lower()]

    def messages(
        self,
        thread_id: int | _AnyThread | None = ANY,
        *,
        chat_id: int | None = None,
        include_service: bool = False,
        include_deleted: bool = True,
    ) -> list[StoredMessage]:
        """Messages of a chat (default: the forum) in send order; ``thread_id=None`` is General."""
        wanted_chat = self.chat.id if chat_id is None else chat_id
        return [
            message
            for (message_chat, _), message in self._messages.items()
            if message_chat == wanted_chat
            and (include_service or message.service is None)
            and (include_deleted or not message.deleted)
            and (isinstance(thread_id, _AnyThread) or message.thread_id == thread_id)
        ]

    def bot_messages(
        self,
        thread_id: int | _AnyThread | None = ANY,
        *,
        chat_id: int | None = None,
        include_deleted: bool = False,
    ) -> list[StoredMessage]:
        return [
            message
            for message in self.messages(
                thread_id, chat_id=chat_id, include_deleted=include_deleted
            )
            if message.from_bot
        ]

    def message(self, message_id: int, chat_id: int | None = None) -> StoredMessage:
        return self._messages[(self.chat.id if chat_id is None else chat_id, message_id)]

    @property
    def pending_updates(self) -> list[JsonDict]:
        return list(self._updates)

    def state(self) -> JsonDict:
        return {
            "chat": self.chat.to_api(),
            "bot": self.bot_user,
            "bot_status": self.bot_status,
            "topics": {str(tid): vars(topic) for tid, topic in self.topics.items()},
            "messages": [
                self._message_json(message) | {"deleted": message.deleted}
                for message in self._messages.values()
            ],
            "commands": self.commands,
            "callback_answers": self.callback_answers,
            "pending_updates": self._updates,
            "files": {
                fid: {"file_path": f.file_path, "size": f.size, "file_name": f.file_name}
                for fid, f in self.files.items()
            },
        }

    async def wait_for(
        self,
        predicate: Callable[[], T | None],
        timeout: float = 10.0,  # noqa: ASYNC109 - a polling deadline, not a cancellation scope
        what: str = "",
    ) -> T:
        """Poll ``predicate`` every 20 ms until it returns something truthy; else AssertionError."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if loop.time() >= deadline:
                label = f" ({what})" if what else ""
                raise AssertionError(
                    f"fake_telegram.wait_for timed out after {timeout}s{label}; recent calls:\n"
                    + self.dump_calls()
                )
            await asyncio.sleep(0.02)

    def dump_calls(self, last: int = 30) -> str:
        interesting = [
            call
            for call in self._calls
            if not (call.method == "getUpdates" and call.ok and not call.result)
        ]
        lines = []
        for call in interesting[-last:]:
            outcome = "ok" if call.ok else f"ERR {call.error_code} {call.description}"
            params = json.dumps(call.params, ensure_ascii=False, default=str)[:300]
            lines.append(f"  {call.method} {params} -> {outcome}")
        return "\n".join(lines) or "  (no calls)"

    # --- test control: simulated users ----------------------------------------------------------

    def user(
        self, user_id: int, username: str | None = None, first_name: str | None = None
    ) -> JsonDict:
        known = self.users.get(user_id)
        if known is None or username or first_name:
            known = {
                "id": user_id,
                "is_bot": False,
                "first_name": first_name or (known or {}).get("first_name") or f"User{user_id}",
                "username": username or (known or {}).get("username") or f"user{user_id}",
            }
            self.users[user_id] = known
        return known

    async def send_user_message(
        self,
        text: str | None = None,
        user_id: int = 1001,
        thread_id: int | None = None,
        chat_id: int | None = None,
        *,
        username: str | None = None,
        first_name: str | None = None,
        photo: bytes | None = None,
        document: bytes | tuple[str, bytes] | None = None,
        reply_to_message_id: int | None = None,
        voice: bytes | None = None,
        audio: tuple[str, bytes] | None = None,
    ) -> JsonDict:
        """Queue a ``message`` update from a human; ``chat_id=user_id`` is their private chat.

        ``voice`` is a voice note (OGG/Opus bytes), ``audio`` a music file (name, bytes)."""
        recordings = {"voice": voice, "audio": audio}
        if text is None and photo is None and document is None and not any(recordings.values()):
            raise ValueError("send_user_message needs text, photo, document, voice or audio")
        sender = self.user(user_id, username, first_name)
        chat = self._chat_for_user_message(chat_id, sender)
        message = self._incoming(chat, sender, thread_id, reply_to_message_id)
        if voice is not None or audio is not None:
            message.caption = text
            message.media = self._user_recording(voice, audio)
        elif photo is not None or document is not None:
            message.caption = text
            message.media = self._user_media(photo, document)
        else:
            self._set_user_text(message, text or "")
        return await self._deliver(message)

    async def send_long_text(
        self, text: str, user_id: int = 1001, thread_id: int | None = None
    ) -> list[JsonDict]:
        """Text over 4096 characters pasted in the app: the client sends it as several
        consecutive messages (telegram.md §11)."""
        chunks = [text[i : i + MAX_TEXT_UTF16] for i in range(0, len(text), MAX_TEXT_UTF16)]
        return [await self.send_user_message(chunk, user_id, thread_id) for chunk in chunks]

    async def send_album(
        self,
        files: list[bytes],
        caption: str | None = None,
        user_id: int = 1001,
        thread_id: int | None = None,
        *,
        as_documents: bool = False,
    ) -> list[JsonDict]:
        """An album: one message per photo (or document) sharing a ``media_group_id``, the
        caption on the first one, delivered as consecutive updates."""
        sender = self.user(user_id)
        group = str(13_000_000_000_000_000 + next(self._ids))
        payloads = []
        for index, data in enumerate(files):
            message = self._incoming(self.chat, sender, thread_id, None)
            message.media_group_id = group
            message.caption = caption if index == 0 else None
            document = (f"file{index + 1}.bin", data) if as_documents else None
            message.media = self._user_media(None if as_documents else data, document)
            payloads.append(await self._deliver(message))
        return payloads

    async def send_anonymous_admin_message(
        self, text: str, thread_id: int | None = None
    ) -> JsonDict:
        """An admin with "Remain anonymous" on: sent as GroupAnonymousBot on behalf of the
        group (telegram.md §11)."""
        sender = {
            "id": ANONYMOUS_ADMIN_ID,
            "is_bot": True,
            "first_name": "Group",
            "username": "GroupAnonymousBot",
        }
        message = self._incoming(self.chat, sender, thread_id, None)
        message.sender_chat = self.chat.to_api()
        self._set_user_text(message, text)
        return await self._deliver(message)

    async def send_channel_auto_forward(
        self, text: str, channel_id: int = -1009876543210
    ) -> JsonDict:
        """A post of the group's linked channel, forwarded into General by Telegram itself."""
        sender = {"id": SERVICE_USER_ID, "is_bot": False, "first_name": "Telegram"}
        message = self._incoming(self.chat, sender, None, None)
        message.sender_chat = {"id": channel_id, "title": "Channel", "type": "channel"}
        message.is_automatic_forward = True
        self._set_user_text(message, text)
        return await self._deliver(message)

    async def edit_user_message(self, message_id: int, text: str) -> JsonDict:
        """A person edits their message: Telegram delivers an ``edited_message`` update."""
        message = self._messages.get((self.chat.id, message_id))
        if message is None or message.deleted or message.from_bot or message.text is None:
            raise LookupError(f"no text message {message_id} of a person to edit")
        message.versions.append(message.text)
        self._set_user_text(message, text)
        message.edit_date = int(self._wall_clock())
        payload = self._message_json(message)
        await self._push_update("edited_message", payload)
        return payload

    def _incoming(
        self, chat: ChatState, sender: JsonDict, thread_id: int | None, reply_to: int | None
    ) -> StoredMessage:
        in_topic = self._user_thread(chat, thread_id)
        return self._store_message(chat, sender, thread_id, in_topic, reply_to=reply_to)

    @staticmethod
    def _set_user_text(message: StoredMessage, text: str) -> None:
        message.text = text
        message.entities = [
            {
                "type": "bot_command",
                "offset": utf16_len(text[: m.start()]),
                "length": len(m.group()),
            }
            for m in BOT_COMMAND_IN_TEXT_RE.finditer(text)
        ]

    async def _deliver(self, message: StoredMessage) -> JsonDict:
        payload = self._message_json(message)
        await self._push_update("message", payload)
        return payload

    async def create_topic_by_user(
        self, name: str, user_id: int = 1001, icon_color: int = DEFAULT_ICON_COLOR
    ) -> int:
        """A human creates a topic in the app (service message + update); returns its thread id."""
        sender = self.user(user_id)
        message = await self._create_topic(sender, name, icon_color, None)
        return message.message_id

    async def close_topic_by_user(self, thread_id: int, user_id: int = 1001) -> None:
        topic = self._live_topic(thread_id)
        topic.closed = True
        await self._topic_service(self.user(user_id), thread_id, {"forum_topic_closed": {}})

    async def delete_topic_by_user(self, thread_id: int) -> None:
        """A human deletes a topic: its history disappears; Telegram sends no update for that."""
        self._delete_topic(self._live_topic(thread_id))

    async def click(
        self,
        message_id: int,
        *,
        data: str | None = None,
        label: str | None = None,
        user_id: int = 1001,
        chat_id: int | None = None,
    ) -> str:
        """Press an inline button on a stored message; queue a ``callback_query``; return its id."""
        if data is None and label is None:
            raise ValueError("click() needs data= or label=")
        key = (self.chat.id if chat_id is None else chat_id, message_id)
        message = self._messages.get(key)
        if message is None or message.deleted:
            raise LookupError(f"no live message {key} to click")
        button = next(
            (
                b
                for b in message.buttons
                if "callback_data" in b
                and (data is None or b["callback_data"] == data)
                and (label is None or b["text"] == label)
            ),
            None,
        )
        if button is None:
            raise LookupError(
                f"message {key} has no callback button data={data!r} label={label!r}; "
                f"buttons: {message.buttons}"
            )
        query_id = str(4_000_000_000_000_000 + next(self._ids))
        sender = self.user(user_id)
        self._callback_queries[query_id] = CallbackQueryState(
            query_id, key, button["callback_data"], user_id, self._clock()
        )
        chat = self.chats[key[0]]
        payload = {
            "id": query_id,
            "from": sender,
            "message": self._message_json(message),
            "chat_instance": str(abs(chat.id) * 31 % 10**18),
            "data": button["callback_data"],
        }
        await self._push_update("callback_query", payload)
        return query_id

    def _chat_for_user_message(self, chat_id: int | None, sender: JsonDict) -> ChatState:
        if chat_id is None or chat_id == self.chat.id:
            return self.chat
        if chat_id == sender["id"]:
            return self.chats.setdefault(
                chat_id,
                ChatState(
                    chat_id, "private", first_name=sender["first_name"], username=sender["username"]
                ),
            )
        raise ValueError(f"unknown chat {chat_id}: use the forum chat or the user's private chat")

    def _user_thread(self, chat: ChatState, thread_id: int | None) -> bool:
        if thread_id is None:
            return False
        if not chat.is_forum:
            raise ValueError(f"chat {chat.id} is not a forum")
        topic = self._live_topic(thread_id)
        if topic.closed:
            raise ValueError(f"topic {thread_id} is closed; users cannot post")
        return True

    def _live_topic(self, thread_id: int) -> Topic:
        topic = self.topics.get(thread_id)
        if topic is None or topic.deleted:
            raise ValueError(f"no live topic {thread_id}")
        return topic

    def _user_media(
        self, photo: bytes | None, document: bytes | tuple[str, bytes] | None
    ) -> JsonDict:
        if photo is not None:
            return {
                "photo": self._photo_sizes(
                    self._store_file(photo, "photos", "photo.jpg", "image/jpeg")
                )
            }
        name, data = document if isinstance(document, tuple) else ("file.bin", document or b"")
        stored = self._store_file(data, "documents", name, "application/octet-stream")
        return {"document": self._document_json(stored)}

    def _user_recording(self, voice: bytes | None, audio: tuple[str, bytes] | None) -> JsonDict:
        if voice is not None:
            stored = self._store_file(voice, "voice", "voice.oga", "audio/ogg")
            voice_json = self._document_json(stored) | {"duration": 1}
            voice_json.pop("file_name")  # a Voice has none
            return {"voice": voice_json}
        assert audio is not None
        name, data = audio
        stored = self._store_file(data, "music", name, "audio/mpeg")
        return {"audio": self._document_json(stored) | {"duration": 1}}

    def file_bytes(self, message: StoredMessage) -> bytes:
        """The bytes of the file a message carries (a photo's largest size, a document, ...)."""
        media = message.media or {}
        for kind in ("document", "voice", "audio", "video"):
            if kind in media:
                return self.files[media[kind]["file_id"]].data
        if "photo" in media:
            return self.files[media["photo"][-1]["file_id"]].data
        raise LookupError(f"message {message.message_id} carries no file")

    # --- HTTP: Bot API --------------------------------------------------------------------------

    async def _handle_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if request.match_info["token"] != self.bot_token:
            error = ApiError(HTTPStatus.UNAUTHORIZED, "Unauthorized")
            return web.json_response(error.to_json(), status=error.error_code)
        at = self._clock()
        try:
            params = Params(await read_request_params(request), lambda: _client_gone(request))
        except ApiError as error:
            self._record(method, {}, error, None, at)
            return web.json_response(error.to_json(), status=error.error_code)
        call = await self.dispatch(method, params, at)
        if call.ok:
            return web.json_response({"ok": True, "result": call.result})
        return web.json_response(call.error_json(), status=call.error_code or 500)

    async def dispatch(self, method: str, params: Params, at: float | None = None) -> Call:
        """Run one Bot API method (HTTP route or in-process) and record the call."""
        at = self._clock() if at is None else at
        entry = self._handlers.get(method.lower())
        if entry is None:
            return self._record(method, params.recorded(), ApiError(404, "Not Found"), None, at)
        name, handler = entry
        try:
            self._apply_faults(name, params)
            flood_chat = self._flood_check(name, params)
            result = await handler(params)
        except ApiError as error:
            return self._record(name, params.recorded(), error, None, at)
        except Exception as exc:
            # A bug in the fake: answer 500 and keep it visible in the call log and the test output.
            _LOGGER.exception("fake Telegram crashed in %s with %s", name, params.recorded())
            crash = ApiError(HTTPStatus.INTERNAL_SERVER_ERROR, f"Internal Server Error: {exc!r}")
            return self._record(name, params.recorded(), crash, None, at)
        if flood_chat is not None and self._flood is not None:
            self._flood.record(flood_chat.id, flood_chat.is_group)
        return self._record(name, params.recorded(), None, result, at)

    def _record(
        self, method: str, params: JsonDict, error: ApiError | None, result: Any, at: float
    ) -> Call:
        call = Call(
            method=method,
            params=params,
            ok=error is None,
            result=result,
            error_code=None if error is None else error.error_code,
            description=None if error is None else error.description,
            at=at,
            parameters=None if error is None else error.parameters,
        )
        self._calls.append(call)
        return call

    def _apply_faults(self, method: str, params: Params) -> None:
        for fault in self._faults:
            if fault.matches(method, params.values):
                fault.times -= 1
                raise fault.to_error()

    def _flood_check(self, method: str, params: Params) -> ChatState | None:
        if self._flood is None or method not in FLOOD_METHODS:
            return None
        chat = self.chats.get(params.get("chat_id"))
        if chat is None:
            return None
        wait = self._flood.retry_after(chat.id, chat.is_group)
        if wait is not None:
            raise too_many_requests(wait)
        return chat

    async def _handle_download(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.bot_token:
            return web.json_response(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401
            )
        path = request.match_info["path"]
        stored = next((f for f in self.files.values() if f.file_path == path), None)
        if stored is None:
            return web.json_response(
                {"ok": False, "error_code": 404, "description": "Not Found"}, status=404
            )
        return web.Response(
            body=stored.data, content_type=stored.mime_type or "application/octet-stream"
        )

    # --- HTTP: test control ---------------------------------------------------------------------

    async def _http_test_message(self, request: web.Request) -> web.Response:
        body = await request.json()
        return await _test_reply(
            self.send_user_message(
                body.get("text"),
                user_id=int(body.get("user_id", 1001)),
                thread_id=_opt_int(body.get("thread_id")),
                chat_id=_opt_int(body.get("chat_id")),
                username=body.get("username"),
                reply_to_message_id=_opt_int(body.get("reply_to_message_id")),
            )
        )

    async def _http_test_topic(self, request: web.Request) -> web.Response:
        body = await request.json()
        return await _test_reply(
            self.create_topic_by_user(
                body["name"],
                int(body.get("user_id", 1001)),
                int(body.get("icon_color", DEFAULT_ICON_COLOR)),
            )
        )

    async def _http_test_click(self, request: web.Request) -> web.Response:
        body = await request.json()
        return await _test_reply(
            self.click(
                int(body["message_id"]),
                data=body.get("data"),
                label=body.get("label"),
                user_id=int(body.get("user_id", 1001)),
                chat_id=_opt_int(body.get("chat_id")),
            )
        )

    async def _http_test_calls(self, request: web.Request) -> web.Response:
        calls = self.calls(request.query.get("method"))
        return web.json_response({"ok": True, "result": [call.to_json() for call in calls]})

    async def _http_test_fault(self, request: web.Request) -> web.Response:
        body = await request.json()
        fault = self.add_fault(
            body["method"],
            int(body["error_code"]),
            body.get("description"),
            _opt_int(body.get("retry_after")),
            int(body.get("times", 1)),
            body.get("match"),
        )
        return web.json_response({"ok": True, "result": vars(fault)})

    async def _http_test_flood(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("off"):
            self.flood_off()
        else:
            self.flood(**{k: v for k, v in body.items() if k in vars(FloodLimits())})
        return web.json_response({"ok": True, "result": True})

    async def _http_test_state(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "result": self.state()})

    # --- updates --------------------------------------------------------------------------------

    async def _push_update(self, kind: str, payload: JsonDict) -> None:
        async with self._condition:
            self._updates.append({"update_id": self._next_update_id, kind: payload})
            self._next_update_id += 1
            self._condition.notify_all()

    def _confirm(self, offset: int | None) -> None:
        if offset is None:
            return
        if offset < 0:
            self._updates = self._updates[offset:]
        else:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]

    async def _get_updates(self, p: Params) -> list[JsonDict]:
        if self.webhook_url:
            raise ApiError(HTTPStatus.CONFLICT, CONFLICT_WEBHOOK)
        offset = p.opt_int("offset")
        if self._unacknowledged is not None and (offset or 0) > self._unacknowledged:
            raise ApiError(HTTPStatus.BAD_GATEWAY, "Bad Gateway")
        limit = min(max(p.opt_int("limit") or 100, 1), 100)
        timeout = max(p.opt_int("timeout") or 0, 0)
        allowed = p.get("allowed_updates")
        if isinstance(allowed, list):  # not given: the previous list stays; empty: the default
            self.allowed_updates = frozenset(allowed) or DEFAULT_ALLOWED_UPDATES
        self._poll_generation += 1
        generation = self._poll_generation
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with self._condition:
            self._confirm(p.opt_int("offset"))
            self._updates = [u for u in self._updates if _update_kind(u) in self.allowed_updates]
            self._condition.notify_all()  # wakes an older poll so it can see it was superseded
            while not self._updates and not self._closing and generation == self._poll_generation:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(remaining):
                        await self._condition.wait()
                except TimeoutError:
                    break
            if generation != self._poll_generation and not p.client_gone():
                raise ApiError(HTTPStatus.CONFLICT, CONFLICT_POLL)
            return self._updates[:limit]

    # --- Bot API methods ------------------------------------------------------------------------

    def _method_table(self) -> dict[str, Handler]:
        return {
            "getMe": self._get_me,
            "logOut": self._return_true,
            "close": self._return_true,
            "getUpdates": self._get_updates,
            "setWebhook": self._set_webhook,
            "deleteWebhook": self._delete_webhook,
            "getWebhookInfo": self._get_webhook_info,
            "setMyCommands": self._set_my_commands,
            "getMyCommands": self._get_my_commands,
            "deleteMyCommands": self._delete_my_commands,
            "getChat": self._get_chat,
            "getChatMember": self._get_chat_member,
            "sendChatAction": self._send_chat_action,
            "sendMessage": self._send_message,
            "sendMessageDraft": self._send_message_draft,
            "editMessageText": self._edit_message_text,
            "editMessageCaption": self._edit_message_caption,
            "editMessageReplyMarkup": self._edit_message_reply_markup,
            "deleteMessage": self._delete_message,
            "answerCallbackQuery": self._answer_callback_query,
            "createForumTopic": self._create_forum_topic,
            "editForumTopic": self._edit_forum_topic,
            "getForumTopicIconStickers": self._get_forum_topic_icon_stickers,
            "pinChatMessage": self._pin_chat_message,
            "closeForumTopic": self._close_forum_topic,
            "reopenForumTopic": self._reopen_forum_topic,
            "deleteForumTopic": self._delete_forum_topic,
            "sendDocument": self._send_document,
            "sendPhoto": self._send_photo,
            "sendMediaGroup": self._send_media_group,
            "getFile": self._get_file,
        }

    async def _return_true(self, p: Params) -> bool:
        return True

    async def _get_me(self, p: Params) -> JsonDict:
        return self.bot_user | {
            "can_join_groups": True,
            "can_read_all_group_messages": not self.privacy_mode,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    async def _set_webhook(self, p: Params) -> bool:
        self.webhook_url = p.required_str("url")
        return True

    async def _delete_webhook(self, p: Params) -> bool:
        self.webhook_url = ""
        if p.flag("drop_pending_updates"):
            self._updates.clear()
        return True

    async def _get_webhook_info(self, p: Params) -> JsonDict:
        return {
            "url": self.webhook_url,
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }

    async def _set_my_commands(self, p: Params) -> bool:
        commands = p.get("commands")
        if not isinstance(commands, list):
            raise bad_request("commands is empty")  # guess
        if len(commands) > MAX_COMMANDS:
            raise _error(COMMANDS_TOO_MUCH)
        for command in commands:
            if not isinstance(command, dict) or not COMMAND_NAME_RE.match(
                str(command.get("command", ""))
            ):
                raise _error(BOT_COMMAND_INVALID)
            if not 1 <= len(str(command.get("description", ""))) <= 256:
                raise _error(COMMAND_DESCRIPTION_INVALID)
        key = _scope_key(p.get("scope"), p.opt_str("language_code"))
        self.commands[key] = [
            {"command": c["command"], "description": c["description"]} for c in commands
        ]
        return True

    async def _get_my_commands(self, p: Params) -> list[JsonDict]:
        return self.commands.get(_scope_key(p.get("scope"), p.opt_str("language_code")), [])

    async def _delete_my_commands(self, p: Params) -> bool:
        self.commands.pop(_scope_key(p.get("scope"), p.opt_str("language_code")), None)
        return True

    async def _get_chat(self, p: Params) -> JsonDict:
        return self._chat(p).to_full_info()

    async def _get_chat_member(self, p: Params) -> JsonDict:
        chat = self._chat(p)
        user_id = p.required_int("user_id")
        if user_id == self.bot_user["id"]:
            return (
                self._bot_membership()
                if chat.is_group
                else {"status": "member", "user": self.bot_user}
            )
        if user_id not in self.users:
            raise _error(USER_NOT_FOUND)
        return {"status": "member", "user": self.users[user_id]}

    def _bot_membership(self) -> JsonDict:
        if self.bot_status != "administrator":
            return {"status": self.bot_status, "user": self.bot_user}
        rights = (
            "can_manage_chat",
            "can_manage_video_chats",
            "can_restrict_members",
            "can_invite_users",
        )
        return {
            "status": "administrator",
            "user": self.bot_user,
            "can_be_edited": False,
            "is_anonymous": False,
            **dict.fromkeys(rights, True),
            "can_delete_messages": self.can_delete_messages,
            "can_pin_messages": self.can_pin_messages,
            "can_promote_members": False,
            "can_change_info": False,
            "can_post_stories": False,
            "can_edit_stories": False,
            "can_delete_stories": False,
            "can_manage_topics": self.can_manage_topics,
        }

    async def _send_chat_action(self, p: Params) -> bool:
        chat = self._chat(p)
        if p.required_str("action") not in CHAT_ACTIONS:
            raise _error(WRONG_ACTION)
        self._placement(chat, p)
        return True

    async def _send_message(self, p: Params) -> JsonDict:
        chat = self._chat(p)
        text, entities = self._formatted(
            p, "text", "entities", MAX_TEXT_UTF16, TEXT_TOO_LONG_SEND, TEXT_EMPTY_SEND
        )
        markup = _check_inline_keyboard(p.get("reply_markup"))
        thread_id, in_topic, reply_to = self._placement(chat, p)
        message = self._store_message(chat, self.bot_user, thread_id, in_topic, reply_to=reply_to)
        message.text, message.entities, message.reply_markup = text, entities, markup
        message.link_preview = self._preview(p, text, entities)
        return self._message_json(message)

    async def _send_message_draft(self, p: Params) -> bool:
        chat = self._chat(p)
        if chat.type != "private":
            raise _error(DRAFT_PEER_INVALID)
        text, entities = self._formatted(
            p, "text", "entities", MAX_TEXT_UTF16, TEXT_TOO_LONG_SEND, None
        )
        draft = {"chat_id": chat.id, "draft_id": p.opt_int("draft_id"), "text": text}
        self.drafts.append(draft | {"entities": entities})
        return True

    async def _edit_message_text(self, p: Params) -> JsonDict:
        message = self._editable(p)
        if message.text is None:
            raise _error(NO_TEXT_TO_EDIT)
        text, entities = self._formatted(
            p, "text", "entities", MAX_TEXT_UTF16, TEXT_TOO_LONG_EDIT, TEXT_EMPTY_EDIT
        )
        markup = _check_inline_keyboard(p.get("reply_markup"))
        new_key = (text, entities, message.caption, message.caption_entities, markup)
        self._apply_edit(message, new_key)
        message.link_preview = self._preview(p, text, entities)
        return self._message_json(message)

    async def _edit_message_caption(self, p: Params) -> JsonDict:
        message = self._editable(p)
        if message.media is None:
            raise bad_request("there is no caption in the message to edit")  # guess
        caption, entities = self._formatted(
            p, "caption", "caption_entities", MAX_CAPTION_UTF16, CAPTION_TOO_LONG, None
        )
        markup = _check_inline_keyboard(p.get("reply_markup"))
        new_key = (message.text, message.entities, caption or None, entities, markup)
        self._apply_edit(message, new_key)
        return self._message_json(message)

    async def _edit_message_reply_markup(self, p: Params) -> JsonDict:
        message = self._editable(p)
        markup = _check_inline_keyboard(p.get("reply_markup"))
        new_key = (*message.content_key()[:4], markup)
        self._apply_edit(message, new_key)
        return self._message_json(message)

    def _apply_edit(self, message: StoredMessage, new_key: tuple[Any, ...]) -> None:
        # Omitting reply_markup in an edit removes the inline keyboard, as on Telegram.
        if new_key == message.content_key():
            raise _error(NOT_MODIFIED)
        message.versions.append(message.text if message.text is not None else message.caption)
        (
            message.text,
            message.entities,
            message.caption,
            message.caption_entities,
            message.reply_markup,
        ) = new_key
        message.edit_date = int(self._wall_clock())

    async def _delete_message(self, p: Params) -> bool:
        chat = self._chat(p)
        message = self._messages.get((chat.id, p.required_int("message_id")))
        if message is None or message.deleted:
            raise _error(DELETE_NOT_FOUND)
        if not message.from_bot and chat.is_group and self.bot_status != "administrator":
            raise _error(CANT_DELETE)
        if message.service is not None and not self._may_delete_service(message):
            raise _error(CANT_DELETE)
        message.deleted = True
        return True

    def _may_delete_service(self, message: StoredMessage) -> bool:
        """A topic's creation message can never be deleted; other service messages only by an
        admin with the right to delete messages."""
        if "forum_topic_created" in (message.service or {}):
            return False
        return self.bot_status == "administrator" and self.can_delete_messages

    async def _answer_callback_query(self, p: Params) -> bool:
        query = self._callback_queries.get(p.required_str("callback_query_id"))
        expired = (
            query is not None
            and self.callback_query_ttl is not None
            and self._clock() - query.created_at > self.callback_query_ttl
        )
        if query is None or query.answered or expired:
            raise _error(QUERY_TOO_OLD)
        text = p.opt_str("text")
        if text is not None and len(text) > MAX_ANSWER_TEXT:
            raise _error(ANSWER_TEXT_TOO_LONG)
        query.answered = True
        self.callback_answers.append(
            {
                "callback_query_id": query.id,
                "text": text,
                "show_alert": p.flag("show_alert"),
                "url": p.opt_str("url"),
                "cache_time": p.opt_int("cache_time"),
                "data": query.data,
                "message_id": query.message_key[1],
            }
        )
        return True

    async def _create_forum_topic(self, p: Params) -> JsonDict:
        self._forum_chat(p)
        if self.bot_status != "administrator" or not self.can_manage_topics:
            raise _error(NO_RIGHTS_CREATE_TOPIC)
        name = p.required_str("name", TOPIC_NAME_INVALID)
        if not 1 <= len(name) <= MAX_TOPIC_NAME:
            raise _error(TOPIC_NAME_INVALID)
        icon_color = p.opt_int("icon_color") or DEFAULT_ICON_COLOR
        if icon_color not in TOPIC_ICON_COLORS:
            raise _error(TOPIC_ICON_COLOR_INVALID)
        message = await self._create_topic(
            self.bot_user, name, icon_color, p.opt_str("icon_custom_emoji_id") or None
        )
        return self.topics[message.message_id].to_api()

    async def _edit_forum_topic(self, p: Params) -> bool:
        topic = self._managed_topic(p)
        changes: JsonDict = {}
        name = p.opt_str("name")
        if name and name != topic.name:
            if len(name) > MAX_TOPIC_NAME:
                raise _error(TOPIC_NAME_INVALID)
            changes["name"] = topic.name = name
        emoji = p.opt_str("icon_custom_emoji_id")
        if emoji and emoji not in {icon_id for _, icon_id in FORUM_ICONS}:
            raise _error(ICON_INVALID)
        if emoji is not None and (emoji or None) != topic.icon_custom_emoji_id:
            topic.icon_custom_emoji_id = emoji or None
            changes["icon_custom_emoji_id"] = emoji
        if not changes:
            raise _error(TOPIC_NOT_MODIFIED)
        await self._topic_service(self.bot_user, topic.thread_id, {"forum_topic_edited": changes})
        return True

    async def _get_forum_topic_icon_stickers(self, p: Params) -> list[JsonDict]:
        return [
            {
                "file_id": f"icon-file-{icon_id}",
                "file_unique_id": f"icon-{icon_id}",
                "type": "custom_emoji",
                "width": 512,
                "height": 512,
                "is_animated": False,
                "is_video": False,
                "emoji": emoji,
                "custom_emoji_id": icon_id,
                "set_name": "Topics",
            }
            for emoji, icon_id in FORUM_ICONS
        ]

    async def _pin_chat_message(self, p: Params) -> bool:
        """Pins (one pinned message is kept: the latest) and posts the "pinned" service message
        in the pinned message's thread, notification or not."""
        chat = self._chat(p)
        if chat.is_group and not (self.bot_status == "administrator" and self.can_pin_messages):
            raise _error(NO_RIGHTS_PIN)
        target = self._messages.get((chat.id, p.required_int("message_id")))
        if target is None or target.deleted:
            raise _error(PIN_NOT_FOUND)
        self.pinned[chat.id] = target.message_id
        service = {"pinned_message": self._message_json(target, with_reply=False)}
        message = self._store_message(
            chat, self.bot_user, target.thread_id, target.is_topic_message
        )
        message.service = service
        await self._push_update("message", self._message_json(message))
        return True

    async def _close_forum_topic(self, p: Params) -> bool:
        topic = self._managed_topic(p)
        if topic.closed:
            raise _error(TOPIC_NOT_MODIFIED)
        topic.closed = True
        await self._topic_service(self.bot_user, topic.thread_id, {"forum_topic_closed": {}})
        return True

    async def _reopen_forum_topic(self, p: Params) -> bool:
        topic = self._managed_topic(p)
        if not topic.closed:
            raise _error(TOPIC_NOT_MODIFIED)
        topic.closed = False
        await self._topic_service(self.bot_user, topic.thread_id, {"forum_topic_reopened": {}})
        return True

    async def _delete_forum_topic(self, p: Params) -> bool:
        topic = self._managed_topic(p, creator_may=False)
        self._delete_topic(topic)
        return True

    async def _send_document(self, p: Params) -> JsonDict:
        stored = self._incoming_file(p, "document", "documents", MAX_UPLOAD_BYTES)
        return await self._send_media(p, {"document": self._document_json(stored)})

    async def _send_photo(self, p: Params) -> JsonDict:
        stored = self._incoming_file(p, "photo", "photos", MAX_PHOTO_BYTES)
        return await self._send_media(p, {"photo": self._photo_sizes(stored)})

    async def _send_media(self, p: Params, media: JsonDict) -> JsonDict:
        chat = self._chat(p)
        caption, entities = self._formatted(
            p, "caption", "caption_entities", MAX_CAPTION_UTF16, CAPTION_TOO_LONG, None
        )
        markup = _check_inline_keyboard(p.get("reply_markup"))
        thread_id, in_topic, reply_to = self._placement(chat, p)
        message = self._store_message(chat, self.bot_user, thread_id, in_topic, reply_to=reply_to)
        message.caption, message.caption_entities = caption or None, entities
        message.reply_markup, message.media = markup, media
        return self._message_json(message)

    async def _send_media_group(self, p: Params) -> list[JsonDict]:
        chat = self._chat(p)
        items = p.get("media")
        if not isinstance(items, list) or len(items) not in MEDIA_GROUP_SIZES:
            raise _error(MEDIA_GROUP_SIZE_INVALID)
        kinds = {item.get("type") if isinstance(item, dict) else None for item in items}
        if not kinds <= {"photo", "video", "document", "audio"}:
            raise _error(MEDIA_TYPE_INVALID)
        if len(kinds) > 1 and kinds & {"document", "audio"}:
            raise _error(MEDIA_GROUP_MIXED)
        contents = [self._group_item(p, item) for item in items]
        thread_id, in_topic, reply_to = self._placement(chat, p)
        group_id = str(10**17 + next(self._ids))
        sent = []
        for media, caption, entities in contents:
            message = self._store_message(
                chat, self.bot_user, thread_id, in_topic, reply_to=reply_to
            )
            message.caption, message.caption_entities = caption or None, entities
            message.media, message.media_group_id = media, group_id
            sent.append(self._message_json(message))
        return sent

    def _group_item(self, p: Params, item: JsonDict) -> tuple[JsonDict, str, list[JsonDict]]:
        """(media, caption, caption entities) of one album item; its file is the part named by
        ``attach://<name>`` or a known file id."""
        kind = str(item["type"])
        reference = item.get("media")
        if isinstance(reference, str) and reference.startswith("attach://"):
            reference = p.get(reference.removeprefix("attach://"))
        value = Params({kind: reference})
        limit = MAX_PHOTO_BYTES if kind == "photo" else MAX_UPLOAD_BYTES
        stored = self._incoming_file(value, kind, f"{kind}s", limit)
        caption, entities = self._formatted(
            Params(item), "caption", "caption_entities", MAX_CAPTION_UTF16, CAPTION_TOO_LONG, None
        )
        media = (
            {"photo": self._photo_sizes(stored)}
            if kind == "photo"
            else {kind: self._document_json(stored)}
        )
        return media, caption, entities

    async def _get_file(self, p: Params) -> JsonDict:
        stored = self.files.get(p.required_str("file_id"))
        if stored is None:
            raise _error(INVALID_FILE_ID)
        if stored.size > MAX_DOWNLOAD_BYTES:
            raise _error(FILE_TOO_BIG)
        return stored.to_api()

    # --- helpers --------------------------------------------------------------------------------

    def _chat(self, p: Params) -> ChatState:
        if not p.has("chat_id"):
            raise bad_request("chat_id is empty")
        chat = self.chats.get(p.get("chat_id"))
        if chat is None:
            raise _error(CHAT_NOT_FOUND)
        return chat

    def _forum_chat(self, p: Params) -> ChatState:
        chat = self._chat(p)
        if not chat.is_forum:
            raise _error(NOT_A_FORUM)
        return chat

    def _managed_topic(self, p: Params, creator_may: bool = True) -> Topic:
        self._forum_chat(p)
        topic = self.topics.get(p.required_int("message_thread_id"))
        if topic is None or topic.deleted:
            # Only send methods say "message thread not found"; topic methods pass TDLib's raw
            # error through (telegram.md §11). Which of the two a deleted topic gets is not
            # known, so tests can choose.
            raise bad_request(self.deleted_topic_error)
        is_admin = self.bot_status == "administrator" and self.can_manage_topics
        if not is_admin and not (creator_may and topic.created_by == self.bot_user["id"]):
            raise _error(CHAT_ADMIN_REQUIRED)
        return topic

    def _formatted(
        self,
        p: Params,
        text_field: str,
        entities_field: str,
        limit: int,
        too_long: str,
        empty: str | None,
    ) -> tuple[str, list[JsonDict]]:
        raw = p.opt_str(text_field)
        if raw is None and empty is not None:
            raise _error(empty)
        text, entities = parse_formatted(raw or "", p.opt_str("parse_mode"), p.get(entities_field))
        entities = applied_entities(entities)
        if empty is not None and not text.strip():
            raise _error(empty)
        if utf16_len(text) > limit:
            raise _error(too_long)
        return text, entities

    @staticmethod
    def _preview(p: Params, text: str, entities: list[JsonDict]) -> str | None:
        return preview_url(
            text, entities, p.get("link_preview_options"), p.flag("disable_web_page_preview")
        )

    def _placement(self, chat: ChatState, p: Params) -> tuple[int | None, bool, int | None]:
        """(thread id, is_topic_message, replied message id) for an outgoing message."""
        reply_to = self._reply_target(chat, p)
        thread_id = p.opt_int("message_thread_id")
        if thread_id is None:
            if reply_to is not None and reply_to.is_topic_message:
                return reply_to.thread_id, True, reply_to.message_id
            return None, False, reply_to.message_id if reply_to else None
        if chat.is_forum:
            topic = self.topics.get(thread_id)
            if topic is None or topic.deleted:
                raise _error(THREAD_NOT_FOUND)
            if topic.closed:
                raise _error(TOPIC_CLOSED)
            return thread_id, True, reply_to.message_id if reply_to else None
        root = self._messages.get((chat.id, thread_id))
        if root is None or root.deleted:
            raise _error(THREAD_NOT_FOUND)
        return thread_id, False, reply_to.message_id if reply_to else None

    def _reply_target(self, chat: ChatState, p: Params) -> StoredMessage | None:
        parameters = p.get("reply_parameters")
        reply_id = p.opt_int("reply_to_message_id")
        allow_missing = p.flag("allow_sending_without_reply")
        if isinstance(parameters, dict) and parameters.get("message_id") is not None:
            reply_id = int(parameters["message_id"])
            allow_missing = bool(parameters.get("allow_sending_without_reply"))
        if reply_id is None:
            return None
        target = self._messages.get((chat.id, reply_id))
        if target is None or target.deleted:
            if allow_missing:
                return None
            raise _error(REPLY_NOT_FOUND)
        return target

    def _editable(self, p: Params) -> StoredMessage:
        chat = self._chat(p)
        if not p.has("message_id"):
            raise _error(MESSAGE_ID_MISSING)
        message = self._messages.get((chat.id, p.required_int("message_id")))
        if message is None or message.deleted:
            raise _error(EDIT_NOT_FOUND)
        if not message.from_bot or message.service is not None:
            raise _error(CANT_EDIT)
        return message

    def _store_message(
        self,
        chat: ChatState,
        sender: JsonDict,
        thread_id: int | None,
        is_topic_message: bool,
        *,
        reply_to: int | None = None,
    ) -> StoredMessage:
        message = StoredMessage(
            chat_id=chat.id,
            message_id=chat.take_message_id(),
            date=int(self._wall_clock()),
            sender=sender,
            thread_id=thread_id,
            is_topic_message=is_topic_message,
            reply_to_message_id=reply_to,
            by_our_bot=sender.get("id") == self.bot_user["id"],
        )
        self._messages[(chat.id, message.message_id)] = message
        return message

    async def _create_topic(
        self, sender: JsonDict, name: str, icon_color: int, emoji: str | None
    ) -> StoredMessage:
        if not self.chat.is_forum:
            raise ValueError(f"chat {self.chat.id} is not a forum")
        thread_id = self.chat.next_message_id
        message = self._store_message(self.chat, sender, thread_id, True)
        created: JsonDict = {"name": name, "icon_color": icon_color}
        if emoji:
            created["icon_custom_emoji_id"] = emoji
        message.service = {"forum_topic_created": created}
        self.topics[thread_id] = Topic(thread_id, name, icon_color, sender["id"], emoji)
        await self._push_update("message", self._message_json(message))
        return message

    async def _topic_service(self, sender: JsonDict, thread_id: int, service: JsonDict) -> None:
        message = self._store_message(self.chat, sender, thread_id, True)
        message.service = service
        await self._push_update("message", self._message_json(message))

    def _delete_topic(self, topic: Topic) -> None:
        topic.deleted = True
        for message in self.messages(topic.thread_id, include_service=True):
            message.deleted = True

    def _incoming_file(self, p: Params, field_name: str, folder: str, max_bytes: int) -> StoredFile:
        value = p.get(field_name)
        if isinstance(value, UploadedPart):
            if len(value.data) > max_bytes:
                if field_name == "photo":
                    raise _error(FILE_TOO_BIG)  # guess for photos over 10 MB
                raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "Request Entity Too Large")
            return self._store_file(value.data, folder, value.filename, value.content_type)
        if isinstance(value, str) and value in self.files:
            return self.files[value]
        if isinstance(value, str) and value.startswith(("http://", "https://")):
            return self._store_file(b"", folder, value.rsplit("/", 1)[-1] or None, None)
        if value is None:
            raise bad_request(f"there is no {field_name} in the request")
        raise _error(WRONG_FILE_ID)

    def _store_file(
        self, data: bytes, folder: str, file_name: str | None, mime_type: str | None
    ) -> StoredFile:
        number = next(self._ids)
        suffix = f".{file_name.rsplit('.', 1)[-1]}" if file_name and "." in file_name else ""
        stored = StoredFile(
            file_id=f"FILE{number:06d}{folder[:3].upper()}",
            file_unique_id=f"U{number:06d}",
            file_path=f"{folder}/file_{number}{suffix}",
            data=data,
            file_name=file_name,
            mime_type=mime_type,
        )
        self.files[stored.file_id] = stored
        return stored

    @staticmethod
    def _document_json(stored: StoredFile) -> JsonDict:
        document: JsonDict = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.size,
        }
        if stored.file_name:
            document["file_name"] = stored.file_name
        if stored.mime_type:
            document["mime_type"] = stored.mime_type
        return document

    @staticmethod
    def _photo_sizes(stored: StoredFile) -> list[JsonDict]:
        width, height = _png_size(stored.data)
        return [
            {
                "file_id": stored.file_id,
                "file_unique_id": stored.file_unique_id,
                "file_size": stored.size,
                "width": width,
                "height": height,
            }
        ]

    def _message_json(self, message: StoredMessage, with_reply: bool = True) -> JsonDict:
        chat = self.chats[message.chat_id]
        body: JsonDict = {
            "message_id": message.message_id,
            "from": message.sender,
            "chat": chat.to_api(),
            "date": message.date,
        }
        if message.sender_chat is not None:
            body["sender_chat"] = message.sender_chat
        if message.thread_id is not None:
            body["message_thread_id"] = message.thread_id
        if message.is_topic_message:
            body["is_topic_message"] = True
        if message.edit_date is not None:
            body["edit_date"] = message.edit_date
        if with_reply:
            reply = self._reply_json(message)
            if reply is not None:
                body["reply_to_message"] = reply
        preview = {"url": message.link_preview} if message.link_preview is not None else None
        optional = {
            "text": message.text,
            "entities": message.entities or None,
            "caption": message.caption,
            "caption_entities": message.caption_entities or None,
            "sender_chat": message.sender_chat,
            "is_automatic_forward": message.is_automatic_forward or None,
            "media_group_id": message.media_group_id,
            "link_preview_options": preview,
        }
        body |= {key: value for key, value in optional.items() if value is not None}
        body |= message.media or {}
        if message.media_group_id is not None:
            body["media_group_id"] = message.media_group_id
        body |= message.service or {}
        if message.reply_markup and "inline_keyboard" in message.reply_markup:
            body["reply_markup"] = message.reply_markup
        return body

    def _reply_json(self, message: StoredMessage) -> JsonDict | None:
        # In a topic, a message that replies to nothing carries the topic's creation message as
        # reply_to_message, as Telegram does.
        reply_id = message.reply_to_message_id
        if (
            reply_id is None
            and message.is_topic_message
            and message.thread_id != message.message_id
        ):
            reply_id = message.thread_id
        target = self._messages.get((message.chat_id, reply_id)) if reply_id is not None else None
        return None if target is None else self._message_json(target, with_reply=False)


def _int_or_str(value: str) -> int | str:
    """'-100123' -> -100123; '@channelname' stays a string (rejected later as an unknown chat)."""
    return int(value) if re.fullmatch(r"-?[0-9]+", value.strip()) else value


def _update_kind(update: JsonDict) -> str:
    return next(key for key in update if key != "update_id")


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


async def _test_reply(action: Awaitable[Any]) -> web.Response:
    try:
        result = await action
    except (ValueError, LookupError, KeyError) as exc:
        return web.json_response({"ok": False, "description": str(exc)}, status=400)
    return web.json_response({"ok": True, "result": result})
