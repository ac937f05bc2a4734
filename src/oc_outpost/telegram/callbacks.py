"""Inline-button callback data: short tokens (≤ 64 bytes) pointing at stored state.

p:<token>:<o|a|r>  permission reply        q:<token>:<i>  question option
x:<session>:<n>    stop the turn (n: its  l:<key>        link this topic to a project (picker)
                   progress message's nonce)
o:<key>            open a project's topic   c:<session id> connect a session to a new topic
b:<token>:<action> a /ls browser button: e<i> entry, u back, n/p next/previous page, z zip
d:<token>          a final answer's Diff button
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_CALLBACK_BYTES = 64
_KEY = re.compile(r"[0-9a-f]{12}")
_SESSION = re.compile(r"ses_[A-Za-z0-9]{1,56}")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,24}")
_BROWSE_ACTION = re.compile(r"e[0-9]{1,3}|[unpz]")


@dataclass(frozen=True)
class PermissionPress:
    token: str
    choice: str  # o(nce) | a(lways) | r(eject)


@dataclass(frozen=True)
class QuestionPress:
    token: str
    option: int


@dataclass(frozen=True)
class StopPress:
    session_id: str
    nonce: str  # of the progress message the button was sent with: an old Stop stops nothing


@dataclass(frozen=True)
class LinkPress:
    key: str


@dataclass(frozen=True)
class OpenPress:
    key: str


@dataclass(frozen=True)
class ConnectPress:
    session_id: str


@dataclass(frozen=True)
class BrowsePress:
    token: str
    action: str


@dataclass(frozen=True)
class DiffPress:
    token: str


Press = (
    PermissionPress
    | QuestionPress
    | StopPress
    | LinkPress
    | OpenPress
    | ConnectPress
    | BrowsePress
    | DiffPress
)


def permission_data(token: str, choice: str) -> str:
    return _checked(f"p:{token}:{choice}")


def question_data(token: str, option: int) -> str:
    return _checked(f"q:{token}:{option}")


def stop_data(session_id: str, nonce: str) -> str:
    return _checked(f"x:{session_id}:{nonce}")


def link_data(key: str) -> str:
    return _checked(f"l:{key}")


def open_data(key: str) -> str:
    return _checked(f"o:{key}")


def connect_data(session_id: str) -> str:
    return _checked(f"c:{session_id}")


def browse_data(token: str, action: str) -> str:
    return _checked(f"b:{token}:{action}")


def diff_data(token: str) -> str:
    return _checked(f"d:{token}")


def parse(data: str | None) -> Press | None:
    """The press a callback's data describes, or None for anything we did not issue."""
    match (data or "").split(":"):
        case ["p", token, choice] if token and choice in ("o", "a", "r"):
            return PermissionPress(token, choice)
        case ["q", token, option] if token and option.isdigit() and len(option) < 4:
            return QuestionPress(token, int(option))
        case ["x", session_id, nonce] if _SESSION.fullmatch(session_id) and _TOKEN.fullmatch(nonce):
            return StopPress(session_id, nonce)
        case ["l", key] if _KEY.fullmatch(key):
            return LinkPress(key)
        case ["o", key] if _KEY.fullmatch(key):
            return OpenPress(key)
        case ["c", session_id] if _SESSION.fullmatch(session_id):
            return ConnectPress(session_id)
        case ["b", token, action] if _TOKEN.fullmatch(token) and _BROWSE_ACTION.fullmatch(action):
            return BrowsePress(token, action)
        case ["d", token] if _TOKEN.fullmatch(token):
            return DiffPress(token)
        case _:
            return None


def _checked(data: str) -> str:
    if len(data.encode()) > MAX_CALLBACK_BYTES:
        raise ValueError(f"callback data over {MAX_CALLBACK_BYTES} bytes: {data!r}")
    return data
