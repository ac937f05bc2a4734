"""A scripted, streaming, OpenAI-compatible LLM server for driving a real OpenCode server.

The server runs on its own event loop in a background thread, so one instance can be shared by
a whole test session and used from any test's loop. Replies are chosen from the *last user
message* of each `POST /v1/chat/completions` request (reference §13):

1. title-generator requests (no tools, system prompt "You are a title generator…") get the title;
2. the first rule added with `when()` whose substring occurs in that text;
3. the built-in keywords RUN_BASH, ASK_QUESTION and WRITE_FILE (tool calls);
4. the default echo "Hello from mock! You said: <text>".

A `ToolCall` reply calls its tool on the first request and answers its `then` text once a `tool`
role message follows the user message (otherwise the agent would call the tool forever).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

DEFAULT_TITLE = "Mock session title"
DEFAULT_MODEL = "mock-model"
TITLE_PROMPT_PREFIX = "You are a title generator"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0

RUN_BASH = "RUN_BASH"
ASK_QUESTION = "ASK_QUESTION"
WRITE_FILE = "WRITE_FILE"
BASH_COMMAND = "echo hello-from-bash"
QUESTION_TEXT = "Pick a color"
QUESTION_OPTIONS = ("Red", "Blue")
WRITE_FILE_NAME = "new.txt"
WRITE_FILE_CONTENT = "hello from the mock\n"


@dataclass(frozen=True)
class Text:
    """Stream `text` in pieces of `chunk_size` characters, after optional reasoning."""

    text: str
    reasoning: str | None = None
    chunk_size: int = 8
    delay_s: float = 0.0


@dataclass(frozen=True)
class Reasoning:
    """Shorthand for reasoning followed by an (optional) text answer."""

    reasoning: str
    text: str = ""
    chunk_size: int = 8
    delay_s: float = 0.0

    def as_text(self) -> Text:
        return Text(self.text, self.reasoning, self.chunk_size, self.delay_s)


@dataclass(frozen=True)
class ToolCall:
    """Call tool `name` with `arguments`; answer `then` after the tool result came back."""

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    then: str | Text | None = None
    chunk_size: int = 16
    delay_s: float = 0.0  # before the call starts (the turn runs this long first)

    def follow_up(self) -> Text:
        if isinstance(self.then, Text):
            return self.then
        return Text(self.then if self.then is not None else f"Tool finished; {self.name} done.")


@dataclass(frozen=True)
class HttpError:
    """Answer with an HTTP error and an OpenAI-style error body."""

    status: int
    message: str = "mock upstream failure"


Reply = Text | Reasoning | ToolCall | HttpError


@dataclass(frozen=True)
class Rule:
    contains: str
    reply: Reply


def builtin_reply(text: str) -> Reply | None:
    """The convenience keywords understood without any rule."""
    if RUN_BASH in text:
        return ToolCall("bash", {"command": BASH_COMMAND, "description": "Print a greeting"})
    if ASK_QUESTION in text:
        return ToolCall("question", {"questions": [question_argument()]})
    if WRITE_FILE in text:
        return ToolCall("write", {"filePath": WRITE_FILE_NAME, "content": WRITE_FILE_CONTENT})
    return None


def question_argument() -> dict[str, Any]:
    return {
        "question": QUESTION_TEXT,
        "header": "Color",
        "options": [
            {"label": label, "description": f"The color {label.lower()}"}
            for label in QUESTION_OPTIONS
        ],
    }


def content_text(content: Any) -> str:
    """Text of a message `content`, which is a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        pieces = [
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type", "text") == "text"
        ]
        return "\n".join(pieces)
    return ""


def last_user_index(messages: list[dict[str, Any]]) -> int | None:
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].get("role") == "user":
            return index
    return None


def is_title_request(body: Mapping[str, Any]) -> bool:
    if body.get("tools"):
        return False
    messages = body.get("messages") or []
    return any(
        message.get("role") == "system"
        and content_text(message.get("content")).lstrip().startswith(TITLE_PROMPT_PREFIX)
        for message in messages
    )


def chunk_text(text: str, size: int) -> Iterator[str]:
    step = max(1, size)
    for start in range(0, len(text), step):
        yield text[start : start + step]


class _Stream:
    """Writes `chat.completion.chunk` frames of one streamed completion."""

    def __init__(self, response: web.StreamResponse, model: str) -> None:
        self._response = response
        self._model = model
        self._id = f"chatcmpl-{secrets.token_hex(8)}"
        self._created = int(time.time())

    async def send(
        self, delta: dict[str, Any], finish_reason: str | None = None, delay_s: float = 0.0
    ) -> None:
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        await self._frame(self._envelope(choices=[choice]))

    async def usage(self, completion_chars: int) -> None:
        completion_tokens = max(1, completion_chars // 4)
        usage = {
            "prompt_tokens": 10,
            "completion_tokens": completion_tokens,
            "total_tokens": 10 + completion_tokens,
        }
        await self._frame(self._envelope(choices=[], usage=usage))

    async def done(self) -> None:
        await self._response.write(b"data: [DONE]\n\n")

    def _envelope(self, **fields: Any) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            **fields,
        }

    async def _frame(self, payload: dict[str, Any]) -> None:
        data = json.dumps(payload, separators=(",", ":"))
        await self._response.write(f"data: {data}\n\n".encode())


class MockLLM:
    """OpenAI-compatible streaming mock; `start()`/`stop()` run it in a background thread."""

    def __init__(
        self, *, host: str = "127.0.0.1", model: str = DEFAULT_MODEL, log_path: Path | None = None
    ) -> None:
        self.host = host
        self.model = model
        self.title = DEFAULT_TITLE
        self.requests: list[dict[str, Any]] = []
        self._log_path = log_path
        self._rules: list[Rule] = []
        self._lock = threading.Lock()
        self._port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # -- scripting -------------------------------------------------------------------------

    def when(self, contains: str, reply: Reply) -> None:
        """Answer `reply` when the last user message contains `contains` (first rule wins)."""
        with self._lock:
            self._rules.append(Rule(contains, reply))

    def reset(self) -> None:
        """Forget all rules, the request log and a custom title."""
        with self._lock:
            self._rules.clear()
            self.requests.clear()
            self.title = DEFAULT_TITLE

    @property
    def agent_requests(self) -> list[dict[str, Any]]:
        """Logged chat requests that are not title-generator requests."""
        with self._lock:
            logged = list(self.requests)
        return [body for body in logged if body.get("messages") and not is_title_request(body)]

    def choose_reply(self, body: Mapping[str, Any]) -> Reply:
        """The reply for one chat-completions request body (pure; used by the handler)."""
        if is_title_request(body):
            return Text(self.title)
        messages: list[dict[str, Any]] = list(body.get("messages") or [])
        user_at = last_user_index(messages)
        text = "" if user_at is None else content_text(messages[user_at].get("content"))
        reply = (
            self._scripted(text)
            or builtin_reply(text)
            or Text(f"Hello from mock! You said: {text}")
        )
        tool_result_follows = user_at is not None and any(
            message.get("role") == "tool" for message in messages[user_at + 1 :]
        )
        if isinstance(reply, ToolCall) and tool_result_follows:
            return reply.follow_up()
        return reply

    def _scripted(self, text: str) -> Reply | None:
        with self._lock:
            rules = list(self._rules)
        return next((rule.reply for rule in rules if rule.contains in text), None)

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("MockLLM is not started")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> MockLLM:
        if self._thread is not None:
            raise RuntimeError("MockLLM is already started")
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=self._serve, args=(loop, ready, failure), name="mock-llm", daemon=True
        )
        self._thread.start()
        if not ready.wait(START_TIMEOUT_S):
            raise RuntimeError(f"MockLLM did not start within {START_TIMEOUT_S} s")
        if failure:
            self._thread.join(STOP_TIMEOUT_S)
            self._thread = None
            raise RuntimeError("MockLLM failed to start") from failure[0]
        return self

    def stop(self) -> None:
        loop, thread, runner = self._loop, self._thread, self._runner
        if loop is None or thread is None:
            return
        if runner is not None:
            future = asyncio.run_coroutine_threadsafe(runner.cleanup(), loop)
            future.result(STOP_TIMEOUT_S)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(STOP_TIMEOUT_S)
        if thread.is_alive():
            raise RuntimeError(f"MockLLM thread did not stop within {STOP_TIMEOUT_S} s")
        loop.close()
        self._loop = self._thread = self._runner = None
        self._port = None

    def __enter__(self) -> MockLLM:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _serve(
        self, loop: asyncio.AbstractEventLoop, ready: threading.Event, failure: list[BaseException]
    ) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._open_site())
        except Exception as exc:  # noqa: BLE001 - re-raised by start() in the caller's thread
            failure.append(exc)
            ready.set()
            return
        ready.set()
        loop.run_forever()

    async def _open_site(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((self.host, 0))
        self._port = sock.getsockname()[1]
        await web.SockSite(runner, sock).start()
        self._runner = runner

    # -- HTTP handlers ---------------------------------------------------------------------

    async def _models(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "mock"}]}
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return _error_response(400, "request body is not JSON")
        if not isinstance(body, dict):
            return _error_response(400, "request body must be a JSON object")
        self._log_request(body)
        reply = self.choose_reply(body)
        if isinstance(reply, HttpError):
            return _error_response(reply.status, reply.message)
        if isinstance(reply, Reasoning):
            reply = reply.as_text()
        if not body.get("stream"):
            return web.json_response(self._completion(reply))
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        try:
            await self._stream(_Stream(response, self.model), reply)
            await response.write_eof()
        except ConnectionResetError:
            log.debug("client went away mid-stream (abort)")
        return response

    def _log_request(self, body: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(body)
        if self._log_path is not None:
            with self._log_path.open("a") as handle:
                handle.write(json.dumps(body) + "\n")

    async def _stream(self, stream: _Stream, reply: Text | ToolCall) -> None:
        await stream.send({"role": "assistant", "content": ""})
        if isinstance(reply, ToolCall):
            arguments = json.dumps(dict(reply.arguments))
            call = {
                "index": 0,
                "id": f"call_{secrets.token_hex(12)}",
                "type": "function",
                "function": {"name": reply.name, "arguments": ""},
            }
            await stream.send({"tool_calls": [call]}, delay_s=reply.delay_s)
            for piece in chunk_text(arguments, reply.chunk_size):
                await stream.send({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
            await stream.send({}, finish_reason="tool_calls")
            await stream.usage(len(arguments))
        else:
            for piece in chunk_text(reply.reasoning or "", reply.chunk_size):
                await stream.send({"reasoning_content": piece}, delay_s=reply.delay_s)
            for piece in chunk_text(reply.text, reply.chunk_size):
                await stream.send({"content": piece}, delay_s=reply.delay_s)
            await stream.send({}, finish_reason="stop", delay_s=reply.delay_s)
            await stream.usage(len(reply.text) + len(reply.reasoning or ""))
        await stream.done()

    def _completion(self, reply: Text | ToolCall) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": None}
        if isinstance(reply, ToolCall):
            message["tool_calls"] = [
                {
                    "id": f"call_{secrets.token_hex(12)}",
                    "type": "function",
                    "function": {
                        "name": reply.name,
                        "arguments": json.dumps(dict(reply.arguments)),
                    },
                }
            ]
            finish = "tool_calls"
        else:
            message["content"] = reply.text
            if reply.reasoning:
                message["reasoning_content"] = reply.reasoning
            finish = "stop"
        return {
            "id": f"chatcmpl-{secrets.token_hex(8)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }


def _error_response(status: int, message: str) -> web.Response:
    error_type = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": message, "type": error_type, "param": None, "code": None}}
    return web.json_response(body, status=status)
