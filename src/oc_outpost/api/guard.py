"""Checks every request passes before the app sees it: its Host header and its body size.

* Host: only loopback names (localhost, 127.0.0.1, [::1], with or without a port) or API_HOST.
  A web page the user visits can point its own domain at 127.0.0.1 (DNS rebinding); its
  requests then carry that domain as Host and are refused (421).
* Body: at most `max_body_bytes`. A larger Content-Length is refused before anything is read;
  a body without one (chunked) is counted while it streams and refused once it is too big (413).
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from oc_outpost.api.errors import error_response
from oc_outpost.config import is_loopback_host

MISDIRECTED = 421
TOO_LARGE = 413


def host_of(header: str) -> str:
    """The host name of a Host header value: `[::1]:4200` → `::1`, `Localhost:80` → `localhost`."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value  # a name, an IPv4 address or a bare IPv6 address


class RequestGuard:
    """Pure ASGI middleware (outermost), so nothing runs for a refused request."""

    def __init__(self, app: ASGIApp, *, api_host: str, max_body_bytes: int) -> None:
        self.app = app
        self._api_host = host_of(api_host)
        self._max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self._host_refusal(headers.get("host")) or self._length_refusal(
            headers.get("content-length")
        )
        if refusal is not None:
            await error_response(*refusal)(scope, receive, send)
            return
        await self.app(scope, self._counting(receive), send)

    def _host_refusal(self, header: str | None) -> tuple[int, str] | None:
        if not header:
            return 400, "The request has no Host header."
        host = host_of(header)
        if is_loopback_host(host) or host == self._api_host:
            return None
        return MISDIRECTED, (
            f"Host {header!r} is not served here: use localhost, 127.0.0.1, [::1] or the "
            "API_HOST address (other names are refused against DNS rebinding)."
        )

    def _length_refusal(self, header: str | None) -> tuple[int, str] | None:
        if header is None:
            return None
        if not header.strip().isdigit():
            return 400, "The Content-Length header is not a number."
        if int(header) > self._max_body_bytes:
            return TOO_LARGE, self._too_large_message()
        return None

    def _too_large_message(self) -> str:
        return f"The request body is larger than {self._max_body_bytes // 1024} KB."

    def _counting(self, receive: Receive) -> Receive:
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self._max_body_bytes:
                    # An HTTPException reaches the app's JSON error handler (FastAPI re-raises
                    # it from body parsing instead of turning it into a 400).
                    raise HTTPException(TOO_LARGE, self._too_large_message())
            return message

        return counted
