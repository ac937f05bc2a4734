"""Typed errors raised by the OpenCode client, stream and event parser."""

from __future__ import annotations

import json
from typing import Any

import httpx


class OpenCodeError(Exception):
    """Base class for every failure talking to an OpenCode server."""


class OpenCodeTimeout(OpenCodeError):
    """A request (or connecting the event stream) did not finish in time."""


class OpenCodeUnavailable(OpenCodeError):
    """The server could not be reached: refused, reset or closed mid-request."""


class OpenCodeResponseError(OpenCodeError):
    """The server answered with a body that does not match the expected shape."""


class EventParseError(OpenCodeError, ValueError):
    """A frame of a known event type is malformed (missing or mistyped fields)."""


class OpenCodeHTTPError(OpenCodeError):
    """The server answered with an HTTP error status.

    `name` is the server's error name (`NotFoundError`, `PermissionNotFoundError`, `BadRequest`,
    ...) or `HTTP <status>` when the body carries none.
    """

    def __init__(self, status: int, name: str, message: str, *, context: str = "") -> None:
        self.status = status
        self.name = name
        self.message = message
        self.context = context
        prefix = f"{context}: " if context else ""
        detail = f": {message}" if message else ""
        super().__init__(f"{prefix}HTTP {status} {name}{detail}")


class OpenCodeAuthError(OpenCodeHTTPError):
    """401: the password is missing or wrong."""


class OpenCodeNotFound(OpenCodeHTTPError):
    """404: unknown session, permission request or question."""


_MAX_MESSAGE_CHARS = 500


def http_error(status: int, body: bytes | str, *, context: str = "") -> OpenCodeHTTPError:
    """Build the typed error for an HTTP error answer.

    Understands both body shapes of 1.18: Effect-style `{"_tag": name, "message": ...}` and
    `{"name": name, "data": {"message": ...}}`; anything else becomes the (truncated) raw text.
    """
    name, message = _error_name_and_message(body)
    name = name or f"HTTP {status}"
    if status == 401:
        return OpenCodeAuthError(status, name, message or "unauthorized", context=context)
    if status == 404:
        return OpenCodeNotFound(status, name, message, context=context)
    return OpenCodeHTTPError(status, name, message, context=context)


def _error_name_and_message(body: bytes | str) -> tuple[str, str]:
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    try:
        parsed: Any = json.loads(text) if text.strip() else None
    except json.JSONDecodeError:
        return "", text.strip()[:_MAX_MESSAGE_CHARS]
    if not isinstance(parsed, dict):
        return "", text.strip()[:_MAX_MESSAGE_CHARS]
    name = parsed.get("_tag") or parsed.get("name") or ""
    message = parsed.get("message")
    data = parsed.get("data")
    if not isinstance(message, str) and isinstance(data, dict):
        message = data.get("message")
    if not isinstance(message, str):
        message = ""
    return str(name), message[:_MAX_MESSAGE_CHARS]


def transport_error(
    exc: httpx.HTTPError, context: str, *, secrets: tuple[str, ...] = ()
) -> OpenCodeError:
    """Map an httpx failure to our error types; no secret appears in the message."""
    detail = mask_secrets(f"{type(exc).__name__}: {exc}", secrets)
    if isinstance(exc, httpx.TimeoutException):
        return OpenCodeTimeout(f"{context}: timed out ({detail})")
    if isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError):
        return OpenCodeUnavailable(f"{context}: server unavailable ({detail})")
    return OpenCodeError(f"{context}: {detail}")


def mask_secrets(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
