"""Async typed client for the OpenCode 1.18.33 v1 HTTP API.

Every call has a timeout; failures raise the types in errors.py and never mention the password.
With `directory` set, instance routes (everything outside `/global/*`) get `?directory=`; without
it the server uses its process cwd, which for a managed server is the project directory.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx
from pydantic import TypeAdapter, ValidationError

from oc_outpost.logs import hide
from oc_outpost.opencode.errors import (
    OpenCodeError,
    OpenCodeResponseError,
    http_error,
    mask_secrets,
    transport_error,
)
from oc_outpost.opencode.events import PermissionRequest, QuestionRequest, SessionStatus
from oc_outpost.opencode.files import (
    FileDiff,
    FileNode,
    FileTooLarge,
    OutputMessage,
    VcsInfo,
)
from oc_outpost.opencode.wire import (
    FileInput,
    Health,
    MessageWithParts,
    PromptPart,
    Session,
    TextInput,
)

__all__ = ["FileInput", "OpenCodeClient", "PermissionReply", "PromptPart", "TextInput"]

PermissionReply = Literal["once", "always", "reject"]

_T = TypeVar("_T")

_SESSIONS = TypeAdapter(list[Session])
_MESSAGES = TypeAdapter(list[MessageWithParts])
_STATUSES = TypeAdapter(dict[str, SessionStatus])
_PERMISSIONS = TypeAdapter(list[PermissionRequest])
_QUESTIONS = TypeAdapter(list[QuestionRequest])
_SESSION = TypeAdapter(Session)
_HEALTH = TypeAdapter(Health)
_BOOL = TypeAdapter(bool)
_FILE_NODES = TypeAdapter(list[FileNode])
_FILE_DIFFS = TypeAdapter(list[FileDiff])
_PATHS = TypeAdapter(list[str])
_VCS = TypeAdapter(VcsInfo)
_OUTPUT_MESSAGES = TypeAdapter(list[OutputMessage])


class OpenCodeClient:
    def __init__(
        self,
        base_url: str,
        *,
        password: str | None = None,
        username: str = "opencode",
        timeout: float = 10.0,
        health_timeout: float = 2.0,
        directory: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._clock = clock
        self._answered_at: float | None = None
        self.directory = directory
        self.timeout = timeout
        self.health_timeout = health_timeout
        self._secrets = _secrets_of(username, password)
        hide(*self._secrets)
        auth = httpx.BasicAuth(username, password) if password else None
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            auth=auth,
            timeout=httpx.Timeout(timeout),
            transport=transport,
        )

    def __repr__(self) -> str:
        has_password = "set" if self._secrets else "none"
        return (
            f"OpenCodeClient({self.mask(self.base_url)!r}, password={has_password}, "
            f"directory={self.directory!r})"
        )

    @property
    def http(self) -> httpx.AsyncClient:
        """The underlying client (used by stream.py for the SSE connection)."""
        return self._http

    def mask(self, text: str) -> str:
        """`text` with the password (and its Basic token) replaced by `***`."""
        return mask_secrets(text, self._secrets)

    def transport_error(self, exc: httpx.HTTPError, context: str) -> OpenCodeError:
        """The typed error for an httpx failure, with secrets masked."""
        return transport_error(exc, context, secrets=self._secrets)

    def note_answer(self) -> None:
        """The server just answered (a response, or data on an event stream)."""
        self._answered_at = self._clock()

    def answered_within(self, seconds: float) -> bool:
        """Whether the server answered in the last `seconds`: an event stream's heartbeats
        (every 10 s) show that it is alive, so a health check can be skipped."""
        return self._answered_at is not None and self._clock() - self._answered_at < seconds

    def instance_params(self) -> dict[str, str]:
        return {"directory": self.directory} if self.directory else {}

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> OpenCodeClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- routes ---------------------------------------------------------------------------------

    async def health(self) -> Health:
        body = await self._request("GET", "/global/health", timeout_s=self.health_timeout)
        return self._parse(_HEALTH, body, "GET /global/health")

    async def create_session(
        self, title: str | None = None, permission: list[dict[str, Any]] | None = None
    ) -> Session:
        payload: dict[str, Any] = {}
        if title is not None:
            payload["title"] = title
        if permission is not None:
            payload["permission"] = permission
        body = await self._request("POST", "/session", json=payload)
        return self._parse(_SESSION, body, "POST /session")

    async def get_session(self, session_id: str) -> Session:
        body = await self._request("GET", f"/session/{session_id}")
        return self._parse(_SESSION, body, "GET /session/{id}")

    async def list_sessions(self, limit: int | None = None) -> list[Session]:
        params = {"limit": str(limit)} if limit is not None else {}
        body = await self._request("GET", "/session", params=params)
        return self._parse(_SESSIONS, body, "GET /session")

    async def prompt_async(
        self,
        session_id: str,
        parts: Sequence[PromptPart],
        *,
        model: tuple[str, str] | None = None,
        agent: str | None = None,
    ) -> None:
        """Queue a prompt (204 at once); follow the event stream for the answer.

        `model` is `(provider_id, model_id)`."""
        payload: dict[str, Any] = {
            "parts": [part.model_dump(exclude_none=True) for part in parts],
        }
        if model is not None:
            payload["model"] = {"providerID": model[0], "modelID": model[1]}
        if agent is not None:
            payload["agent"] = agent
        await self._request("POST", f"/session/{session_id}/prompt_async", json=payload)

    async def abort(self, session_id: str) -> bool:
        body = await self._request("POST", f"/session/{session_id}/abort")
        return self._parse(_BOOL, body, "POST /session/{id}/abort")

    async def messages(self, session_id: str, limit: int | None = None) -> list[MessageWithParts]:
        """Messages of a session, oldest first (with `limit`, the most recent ones)."""
        params = {"limit": str(limit)} if limit is not None else {}
        body = await self._request("GET", f"/session/{session_id}/message", params=params)
        return self._parse(_MESSAGES, body, "GET /session/{id}/message")

    async def session_status(self) -> dict[str, SessionStatus]:
        """Status of non-idle sessions; a session that is absent is idle."""
        body = await self._request("GET", "/session/status")
        return self._parse(_STATUSES, body, "GET /session/status")

    async def reply_permission(
        self, request_id: str, reply: PermissionReply, message: str | None = None
    ) -> None:
        payload: dict[str, Any] = {"reply": reply}
        if message is not None:
            payload["message"] = message
        await self._request("POST", f"/permission/{request_id}/reply", json=payload)

    async def list_permissions(self) -> list[PermissionRequest]:
        body = await self._request("GET", "/permission")
        return self._parse(_PERMISSIONS, body, "GET /permission")

    async def reply_question(self, request_id: str, answers: list[list[str]]) -> None:
        """`answers` holds one list of chosen labels (or custom text) per question, in order."""
        await self._request("POST", f"/question/{request_id}/reply", json={"answers": answers})

    async def reject_question(self, request_id: str) -> None:
        await self._request("POST", f"/question/{request_id}/reject")

    async def list_questions(self) -> list[QuestionRequest]:
        body = await self._request("GET", "/question")
        return self._parse(_QUESTIONS, body, "GET /question")

    # -- files and changes (see opencode/files.py for what each route does) ---------------------

    async def list_files(self, path: str) -> list[FileNode]:
        """The entries of the directory ``path`` (relative to the project)."""
        body = await self._request("GET", "/file", params={"path": path or "."})
        return self._parse(_FILE_NODES, body, "GET /file")

    async def read_file(self, path: str, max_bytes: int) -> bytes:
        """The exact bytes of the file ``path``; FileTooLarge beyond ``max_bytes``."""
        context = self.mask("GET /api/fs/read")
        params = {"location[directory]": self.directory} if self.directory else {}
        try:
            async with self._http.stream(
                "GET", f"/api/fs/read/{quote(path)}", params=params
            ) as response:
                if response.status_code >= 400:
                    body = await response.aread()
                    raise http_error(
                        response.status_code,
                        self.mask(body.decode(errors="replace")),
                        context=context,
                    )
                declared = int(response.headers.get("content-length") or 0)
                if declared > max_bytes:
                    raise FileTooLarge(path, declared, max_bytes)
                return await _read_capped(response, path, max_bytes)
        except httpx.HTTPError as exc:
            raise self.transport_error(exc, context) from exc

    async def find_files(self, query: str, limit: int = 10) -> list[str]:
        params = {"query": query, "limit": str(limit)}
        body = await self._request("GET", "/find/file", params=params)
        return self._parse(_PATHS, body, "GET /find/file")

    async def vcs(self) -> VcsInfo:
        body = await self._request("GET", "/vcs")
        return self._parse(_VCS, body, "GET /vcs")

    async def vcs_diff(self) -> list[FileDiff]:
        """The working tree against HEAD (untracked files included)."""
        body = await self._request("GET", "/vcs/diff", params={"mode": "git"})
        return self._parse(_FILE_DIFFS, body, "GET /vcs/diff")

    async def session_diff(self, session_id: str, message_id: str) -> list[FileDiff]:
        """What the turn of the user message ``message_id`` changed."""
        body = await self._request(
            "GET", f"/session/{session_id}/diff", params={"messageID": message_id}
        )
        return self._parse(_FILE_DIFFS, body, "GET /session/{id}/diff")

    async def output_messages(self, session_id: str, limit: int) -> list[OutputMessage]:
        """The newest ``limit`` messages, parsed only for the files they produced."""
        body = await self._request(
            "GET", f"/session/{session_id}/message", params={"limit": str(limit)}
        )
        return self._parse(_OUTPUT_MESSAGES, body, "GET /session/{id}/message")

    # -- plumbing -------------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        """Send one request; return the decoded JSON body (None for an empty body)."""
        context = self.mask(f"{method} {path}")
        query = dict(params or {})
        if not path.startswith("/global/"):
            query.update(self.instance_params())
        try:
            response = await self._http.request(
                method,
                path,
                json=json,
                params=query,
                timeout=timeout_s if timeout_s is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as exc:
            raise self.transport_error(exc, context) from exc
        self.note_answer()
        if response.status_code >= 400:
            raise http_error(response.status_code, self.mask(response.text), context=context)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise OpenCodeResponseError(f"{context}: body is not JSON ({exc})") from exc

    def _parse(self, adapter: TypeAdapter[_T], body: Any, context: str) -> _T:
        try:
            return adapter.validate_python(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            location = ".".join(str(item) for item in first["loc"]) or "<body>"
            raise OpenCodeResponseError(
                f"{context}: unexpected response body at {location}: {first['msg']} "
                f"({exc.error_count()} error(s))"
            ) from exc


async def _read_capped(response: httpx.Response, path: str, max_bytes: int) -> bytes:
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data.extend(chunk)
        if len(data) > max_bytes:
            raise FileTooLarge(path, len(data), max_bytes)
    return bytes(data)


def _secrets_of(username: str, password: str | None) -> tuple[str, ...]:
    if not password:
        return ()
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return (password, token)
