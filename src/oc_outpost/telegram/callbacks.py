"""Inline-button callback data: short tokens (≤ 64 bytes) pointing at stored state."""

from __future__ import annotations

from dataclasses import dataclass

MAX_CALLBACK_BYTES = 64


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


Press = PermissionPress | QuestionPress | StopPress


def permission_data(token: str, choice: str) -> str:
    return _checked(f"p:{token}:{choice}")


def question_data(token: str, option: int) -> str:
    return _checked(f"q:{token}:{option}")


def stop_data(session_id: str) -> str:
    return _checked(f"x:{session_id}")


def parse(data: str | None) -> Press | None:
    """The press a callback's data describes, or None for anything we did not issue."""
    match (data or "").split(":"):
        case ["p", token, choice] if token and choice in ("o", "a", "r"):
            return PermissionPress(token, choice)
        case ["q", token, option] if token and option.isdigit():
            return QuestionPress(token, int(option))
        case ["x", session_id] if session_id.startswith("ses_"):
            return StopPress(session_id)
        case _:
            return None


def _checked(data: str) -> str:
    if len(data.encode()) > MAX_CALLBACK_BYTES:
        raise ValueError(f"callback data over {MAX_CALLBACK_BYTES} bytes: {data!r}")
    return data
