"""Inline-button callback data: short tokens (≤ 64 bytes) pointing at stored state.

p:<token>:<o|a|r>  permission reply        q:<token>:<i>  question option
x:<session id>     stop the running turn    l:<key>        link this topic to a project (picker)
o:<key>            open a project's topic   c:<session id> connect a session to a new topic
k:<token>          a control picker button (model, agent, …; core/controls.py)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_CALLBACK_BYTES = 64
_KEY = re.compile(r"[0-9a-f]{12}")
_SESSION = re.compile(r"ses_[A-Za-z0-9]{1,56}")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{4,32}")


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
class ControlPress:
    token: str


Press = (
    PermissionPress
    | QuestionPress
    | StopPress
    | LinkPress
    | OpenPress
    | ConnectPress
    | ControlPress
)


def permission_data(token: str, choice: str) -> str:
    return _checked(f"p:{token}:{choice}")


def question_data(token: str, option: int) -> str:
    return _checked(f"q:{token}:{option}")


def stop_data(session_id: str) -> str:
    return _checked(f"x:{session_id}")


def link_data(key: str) -> str:
    return _checked(f"l:{key}")


def open_data(key: str) -> str:
    return _checked(f"o:{key}")


def connect_data(session_id: str) -> str:
    return _checked(f"c:{session_id}")


def control_data(token: str) -> str:
    return _checked(f"k:{token}")


def parse(data: str | None) -> Press | None:
    """The press a callback's data describes, or None for anything we did not issue."""
    match (data or "").split(":"):
        case ["p", token, choice] if token and choice in ("o", "a", "r"):
            return PermissionPress(token, choice)
        case ["q", token, option] if token and option.isdigit() and len(option) < 4:
            return QuestionPress(token, int(option))
        case ["x", session_id] if _SESSION.fullmatch(session_id):
            return StopPress(session_id)
        case ["l", key] if _KEY.fullmatch(key):
            return LinkPress(key)
        case ["o", key] if _KEY.fullmatch(key):
            return OpenPress(key)
        case ["c", session_id] if _SESSION.fullmatch(session_id):
            return ConnectPress(session_id)
        case ["k", token] if _TOKEN.fullmatch(token):
            return ControlPress(token)
        case _:
            return None


def _checked(data: str) -> str:
    if len(data.encode()) > MAX_CALLBACK_BYTES:
        raise ValueError(f"callback data over {MAX_CALLBACK_BYTES} bytes: {data!r}")
    return data
