"""A mock OpenAI-compatible transcription server (`POST /v1/audio/transcriptions`).

It runs on the test's event loop (aiohttp on 127.0.0.1:0), checks each request the way the
real APIs would refuse a bad one (multipart with an audio `file`, the expected `model`, the key
when one is set; our voice notes must be OGG/Opus), records it, and answers the configured
transcript as `{"text": ...}`. `fail_with` and `delay_s` script failures and timeouts.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import TracebackType

from aiohttp import BodyPartReader, web

from tests.rig.audio import is_ogg_opus


@dataclass(frozen=True)
class Transcription:
    """One request as the mock received it."""

    filename: str | None
    content_type: str | None
    data: bytes
    model: str
    prompt: str | None
    response_format: str | None
    authorization: str | None


@dataclass
class MockSTT:
    transcript: str = "add a hello world script"
    model: str = "whisper-1"
    api_key: str | None = None
    delay_s: float = 0.0
    fail_with: int | None = None  # answer this HTTP status instead
    requests: list[Transcription] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # why requests were refused
    _runner: web.AppRunner | None = None
    url: str = ""  # the base URL, like https://api.openai.com/v1

    async def start(self) -> MockSTT:
        app = web.Application()
        app.router.add_post("/v1/audio/transcriptions", self._transcribe)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/v1"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> MockSTT:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _models(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _error(401, "Incorrect API key provided")
        return web.json_response({"object": "list", "data": [{"id": self.model}]})

    async def _transcribe(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _error(401, "Incorrect API key provided")
        if not request.content_type.startswith("multipart/form-data"):
            return self._reject("the body must be multipart/form-data")
        received = await _read_form(request)
        problem = self._problem(received)
        if problem is not None:
            return self._reject(problem)
        file = received["file"]
        assert isinstance(file, tuple)
        self.requests.append(
            Transcription(
                filename=file[0],
                content_type=file[1],
                data=file[2],
                model=str(received["model"]),
                prompt=_text(received.get("prompt")),
                response_format=_text(received.get("response_format")),
                authorization=request.headers.get("Authorization"),
            )
        )
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail_with is not None:
            return _error(self.fail_with, "mock transcription failure")
        return web.json_response({"text": self.transcript})

    def _authorized(self, request: web.Request) -> bool:
        return self.api_key is None or request.headers.get("Authorization") == (
            f"Bearer {self.api_key}"
        )

    def _problem(
        self, received: dict[str, str | tuple[str | None, str | None, bytes]]
    ) -> str | None:
        file = received.get("file")
        if not isinstance(file, tuple):
            return "no file part"
        name, content_type, data = file
        if not name or not (content_type or "").startswith("audio/"):
            return f"file part needs a name and an audio/* type, got {name!r} {content_type!r}"
        if not is_ogg_opus(data):
            return "the file is not OGG/Opus"
        if received.get("model") != self.model:
            return f"model must be {self.model!r}, got {received.get('model')!r}"
        return None

    def _reject(self, reason: str) -> web.Response:
        self.rejected.append(reason)
        return _error(400, reason)


async def _read_form(
    request: web.Request,
) -> dict[str, str | tuple[str | None, str | None, bytes]]:
    fields: dict[str, str | tuple[str | None, str | None, bytes]] = {}
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        assert isinstance(part, BodyPartReader)
        data = await part.read()
        if part.filename is not None:
            fields[str(part.name)] = (part.filename, part.headers.get("Content-Type"), bytes(data))
        else:
            fields[str(part.name)] = bytes(data).decode()
    return fields


def _text(value: str | tuple[str | None, str | None, bytes] | None) -> str | None:
    return value if isinstance(value, str) else None


def _error(status: int, message: str) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": None}}
    return web.json_response(body, status=status)
