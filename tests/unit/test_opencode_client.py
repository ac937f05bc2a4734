"""OpenCodeClient, iter_events and EventStream against httpx.MockTransport."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import httpx
import pytest

from oc_outpost.opencode import events as ev
from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.opencode.errors import (
    OpenCodeAuthError,
    OpenCodeError,
    OpenCodeHTTPError,
    OpenCodeNotFound,
    OpenCodeResponseError,
    OpenCodeTimeout,
    OpenCodeUnavailable,
)
from oc_outpost.opencode.stream import EventStream, iter_events
from oc_outpost.opencode.wire import FileInput, TextInput

PASSWORD = "s3cr3t-Pa55word"
BASIC_TOKEN = base64.b64encode(f"opencode:{PASSWORD}".encode()).decode()
BASE = "http://opencode.test"

SESSION = {
    "id": "ses_abc",
    "slug": "calm-lake",
    "projectID": "global",
    "directory": "/projects/demo",
    "title": "demo",
    "version": "1.18.33",
    "cost": 0,
    "tokens": {"input": 1, "output": 2, "reasoning": 0, "cache": {"read": 0, "write": 0}},
    "time": {"created": 1, "updated": 2},
}

Handler = Callable[[httpx.Request], Coroutine[Any, Any, httpx.Response]]


def make_client(handler: Handler, **kwargs: Any) -> OpenCodeClient:
    return OpenCodeClient(BASE, transport=httpx.MockTransport(handler), **kwargs)


class Recorder:
    """A handler that answers every request with one response and keeps the requests."""

    def __init__(self, status: int = 200, body: Any = None, *, raw: bytes | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self._status = status
        self._content = raw if raw is not None else json.dumps(body).encode()
        if body is None and raw is None:
            self._content = b""

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self._status, content=self._content)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]

    def last_json(self) -> Any:
        return json.loads(self.last.content)


# --- auth, routing, bodies -----------------------------------------------------------------------


async def test_basic_auth_header_is_sent_when_a_password_is_set() -> None:
    recorder = Recorder(body={"healthy": True, "version": "1.18.33"})
    async with make_client(recorder, password=PASSWORD) as client:
        health = await client.health()
    assert health.healthy and health.version == "1.18.33"
    assert recorder.last.headers["authorization"] == f"Basic {BASIC_TOKEN}"
    assert recorder.last.url.path == "/global/health"


async def test_no_auth_header_without_password() -> None:
    recorder = Recorder(body=[SESSION])
    async with make_client(recorder) as client:
        sessions = await client.list_sessions()
    assert "authorization" not in recorder.last.headers
    assert [s.id for s in sessions] == ["ses_abc"]


async def test_custom_username() -> None:
    recorder = Recorder(body={"healthy": True})
    async with make_client(recorder, password="pw", username="alice") as client:
        await client.health()
    expected = base64.b64encode(b"alice:pw").decode()
    assert recorder.last.headers["authorization"] == f"Basic {expected}"


async def test_directory_goes_to_instance_routes_only() -> None:
    recorder = Recorder(body={"healthy": True})
    async with make_client(recorder, directory="/projects/demo") as client:
        await client.health()
        assert "directory" not in recorder.last.url.params
        recorder._content = json.dumps([SESSION]).encode()
        await client.list_sessions(limit=5)
    assert recorder.last.url.params["directory"] == "/projects/demo"
    assert recorder.last.url.params["limit"] == "5"


async def test_create_get_and_parse_session() -> None:
    recorder = Recorder(body=SESSION)
    async with make_client(recorder) as client:
        session = await client.create_session(
            title="demo", permission=[{"permission": "bash", "pattern": "*", "action": "allow"}]
        )
        assert recorder.last.method == "POST" and recorder.last.url.path == "/session"
        assert recorder.last_json() == {
            "title": "demo",
            "permission": [{"permission": "bash", "pattern": "*", "action": "allow"}],
        }
        await client.create_session()
        assert recorder.last_json() == {}
        fetched = await client.get_session("ses_abc")
    assert recorder.last.url.path == "/session/ses_abc"
    assert session == fetched
    assert (session.project_id, session.directory, session.parent_id) == (
        "global",
        "/projects/demo",
        None,
    )
    assert session.time.created == 1 and session.tokens is not None
    assert session.tokens.output == 2


async def test_prompt_async_body() -> None:
    recorder = Recorder(status=204)
    async with make_client(recorder) as client:
        await client.prompt_async(
            "ses_abc",
            [
                TextInput(text="hello"),
                FileInput(mime="text/plain", url="file:///tmp/a.txt", filename="a.txt"),
                FileInput(mime="text/plain", url="data:text/plain;base64,aGk="),
            ],
            model=("mock", "mock-model"),
            agent="plan",
        )
    assert recorder.last.url.path == "/session/ses_abc/prompt_async"
    assert recorder.last_json() == {
        "parts": [
            {"type": "text", "text": "hello"},
            {"type": "file", "mime": "text/plain", "url": "file:///tmp/a.txt", "filename": "a.txt"},
            {"type": "file", "mime": "text/plain", "url": "data:text/plain;base64,aGk="},
        ],
        "model": {"providerID": "mock", "modelID": "mock-model"},
        "agent": "plan",
    }


async def test_prompt_async_minimal_body() -> None:
    recorder = Recorder(status=204)
    async with make_client(recorder) as client:
        await client.prompt_async("ses_abc", [TextInput(text="hi")])
    assert recorder.last_json() == {"parts": [{"type": "text", "text": "hi"}]}


async def test_abort_returns_the_server_boolean() -> None:
    recorder = Recorder(body=True)
    async with make_client(recorder) as client:
        assert await client.abort("ses_abc") is True
    assert (recorder.last.method, recorder.last.url.path) == ("POST", "/session/ses_abc/abort")


async def test_session_status_absent_means_idle() -> None:
    body = {
        "ses_a": {"type": "busy"},
        "ses_b": {"type": "retry", "attempt": 2, "message": "boom", "next": 123},
    }
    async with make_client(Recorder(body=body)) as client:
        statuses = await client.session_status()
    assert statuses["ses_a"].type == "busy"
    assert (statuses["ses_b"].attempt, statuses["ses_b"].message, statuses["ses_b"].next) == (
        2,
        "boom",
        123,
    )
    assert "ses_c" not in statuses


async def test_messages_parse_known_and_unknown_parts() -> None:
    body = [
        {
            "info": {
                "id": "msg_u",
                "sessionID": "ses_abc",
                "role": "user",
                "time": {"created": 1},
                "agent": "build",
                "model": {"providerID": "mock", "modelID": "mock-model"},
            },
            "parts": [{"id": "prt_1", "sessionID": "ses_abc", "messageID": "msg_u", "type": "text",
                       "text": "hello"}],
        },
        {
            "info": {
                "id": "msg_a",
                "sessionID": "ses_abc",
                "role": "assistant",
                "parentID": "msg_u",
                "providerID": "mock",
                "modelID": "mock-model",
                "time": {"created": 2, "completed": 3},
                "finish": "stop",
                "cost": 0.5,
                "tokens": {"input": 11, "output": 7, "reasoning": 0,
                           "cache": {"read": 1, "write": 2}},
                "error": {"name": "APIError", "data": {"message": "bad", "statusCode": 400}},
            },
            "parts": [
                {"id": "prt_2", "messageID": "msg_a", "type": "tool", "callID": "call_1",
                 "tool": "bash", "state": {"status": "completed", "input": {"command": "ls"},
                                           "output": "x\n", "title": "ls", "metadata": {},
                                           "time": {"start": 1, "end": 2}}},
                {"id": "prt_3", "messageID": "msg_a", "type": "patch", "hash": "h", "files": []},
                {"id": "prt_4", "messageID": "msg_a", "type": "text", "text": "answer",
                 "time": {"start": 1, "end": 2}},
            ],
        },
    ]  # fmt: skip
    recorder = Recorder(body=body)
    async with make_client(recorder) as client:
        messages = await client.messages("ses_abc", limit=10)
    assert recorder.last.url.path == "/session/ses_abc/message"
    assert recorder.last.url.params["limit"] == "10"
    user, assistant = messages
    assert user.info.role == "user" and user.info.completed
    assert assistant.info.role == "assistant" and assistant.info.completed
    assert assistant.info.error is not None and assistant.info.error.message == "bad"
    assert assistant.info.tokens == ev.TokenUsage(11, 7, 0, cache_read=1, cache_write=2)
    assert (assistant.info.provider_id, assistant.info.model_id) == ("mock", "mock-model")
    assert user.parts == (ev.TextPart("prt_1", "hello"),)
    tool, patch, text = assistant.parts
    assert patch == ev.OtherPart("prt_3", "patch")
    assert text == ev.TextPart("prt_4", "answer", ended_at=2)
    assert text.ended
    assert isinstance(tool, ev.ToolPart)
    assert (tool.call_id, tool.status, tool.title, tool.output, tool.input) == (
        "call_1",
        "completed",
        "ls",
        "x\n",
        {"command": "ls"},
    )


async def test_permission_and_question_routes() -> None:
    recorder = Recorder(body=True)
    async with make_client(recorder) as client:
        await client.reply_permission("per_1", "once")
        assert recorder.last.url.path == "/permission/per_1/reply"
        assert recorder.last_json() == {"reply": "once"}
        await client.reply_permission("per_1", "reject", message="no, use git")
        assert recorder.last_json() == {"reply": "reject", "message": "no, use git"}
        await client.reply_question("que_1", [["Blue"]])
        assert recorder.last.url.path == "/question/que_1/reply"
        assert recorder.last_json() == {"answers": [["Blue"]]}
        await client.reject_question("que_1")
        assert (recorder.last.method, recorder.last.url.path) == ("POST", "/question/que_1/reject")


async def test_list_permissions_and_questions() -> None:
    permission = {
        "id": "per_1",
        "sessionID": "ses_abc",
        "permission": "bash",
        "patterns": ["ls"],
        "metadata": {"command": "ls"},
        "always": ["ls *"],
        "tool": {"messageID": "msg_1", "callID": "call_1"},
    }
    question = {
        "id": "que_1",
        "sessionID": "ses_abc",
        "questions": [
            {"question": "Pick", "header": "H", "options": [{"label": "A", "description": "a"}]}
        ],
    }
    async with make_client(Recorder(body=[permission])) as client:
        (request,) = await client.list_permissions()
    assert request.permission == "bash" and request.patterns == ("ls",)
    assert (request.message_id, request.call_id) == ("msg_1", "call_1")
    async with make_client(Recorder(body=[question])) as client:
        (asked,) = await client.list_questions()
    assert asked.questions[0].options[0].label == "A"
    assert asked.questions[0].custom is True and asked.questions[0].multiple is False


# --- errors --------------------------------------------------------------------------------------


async def test_timeout_maps_to_opencode_timeout() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    async with make_client(handler) as client:
        with pytest.raises(OpenCodeTimeout, match="GET /session/status"):
            await client.session_status()


async def test_connection_refused_maps_to_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with OpenCodeClient(f"http://127.0.0.1:{port}", password=PASSWORD, timeout=2) as client:
        with pytest.raises(OpenCodeUnavailable) as caught:
            await client.health()
    assert PASSWORD not in str(caught.value)


async def test_not_found_error_body_is_parsed() -> None:
    body = {"name": "NotFoundError", "data": {"message": "Session not found: ses_x"}}
    async with make_client(Recorder(status=404, body=body)) as client:
        with pytest.raises(OpenCodeNotFound) as caught:
            await client.get_session("ses_x")
    error = caught.value
    assert (error.status, error.name, error.message) == (
        404,
        "NotFoundError",
        "Session not found: ses_x",
    )
    assert "GET /session/ses_x" in str(error)


async def test_tagged_error_body_is_parsed() -> None:
    body = {
        "_tag": "PermissionNotFoundError",
        "requestID": "per_nope",
        "message": "Permission request not found: per_nope",
    }
    async with make_client(Recorder(status=404, body=body)) as client:
        with pytest.raises(OpenCodeNotFound) as caught:
            await client.reply_permission("per_nope", "once")
    assert caught.value.name == "PermissionNotFoundError"
    assert caught.value.message == "Permission request not found: per_nope"


async def test_bad_request_and_server_errors() -> None:
    body = {"name": "BadRequest", "data": {"message": 'bad at ["parts"][0]', "kind": "Payload"}}
    async with make_client(Recorder(status=400, body=body)) as client:
        with pytest.raises(OpenCodeHTTPError) as caught:
            await client.prompt_async("ses_abc", [TextInput(text="x")])
    assert (caught.value.status, caught.value.name) == (400, "BadRequest")
    async with make_client(Recorder(status=500, raw=b"Internal boom")) as client:
        with pytest.raises(OpenCodeHTTPError) as caught:
            await client.abort("ses_abc")
    assert (caught.value.status, caught.value.name, caught.value.message) == (
        500,
        "HTTP 500",
        "Internal boom",
    )


async def test_401_maps_to_auth_error() -> None:
    async with make_client(Recorder(status=401), password="wrong") as client:
        with pytest.raises(OpenCodeAuthError) as caught:
            await client.list_sessions()
    assert caught.value.status == 401


async def test_invalid_body_is_a_clear_response_error() -> None:
    async with make_client(Recorder(body=[{"id": "ses_1"}])) as client:
        with pytest.raises(OpenCodeResponseError, match=r"GET /session: unexpected response"):
            await client.list_sessions()
    async with make_client(Recorder(raw=b"<html>")) as client:
        with pytest.raises(OpenCodeResponseError, match="not JSON"):
            await client.health()


async def test_password_never_appears_in_errors_or_reprs() -> None:
    async def leaky(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/global/health":
            raise httpx.ConnectError(f"cannot reach opencode:{PASSWORD}@host ({BASIC_TOKEN})")
        if path == "/session/status":
            raise httpx.ReadTimeout(f"slow {PASSWORD}", request=request)
        return httpx.Response(500, text=f"echo of {PASSWORD} and {BASIC_TOKEN}")

    client = make_client(leaky, password=PASSWORD)
    errors: list[OpenCodeError] = []
    for call in (client.health, client.session_status, client.list_sessions):
        with pytest.raises(OpenCodeError) as caught:
            await call()
        errors.append(caught.value)
    texts = [str(e) for e in errors] + [repr(e) for e in errors] + [repr(client)]
    texts.append(client.mask(f"x {PASSWORD} y"))
    await client.aclose()
    assert [type(e) for e in errors] == [OpenCodeUnavailable, OpenCodeTimeout, OpenCodeHTTPError]
    for text in texts:
        assert PASSWORD not in text
        assert BASIC_TOKEN not in text
    assert "***" in str(errors[0])
    assert "password=set" in repr(client)


# --- iter_events ---------------------------------------------------------------------------------


def sse(*frames: dict[str, Any] | str) -> bytes:
    chunks = []
    for frame in frames:
        data = frame if isinstance(frame, str) else json.dumps(frame)
        chunks.append(f"data: {data}\n\n")
    return "".join(chunks).encode()


CONNECTED = {"payload": {"id": "evt_0", "type": "server.connected", "properties": {}}}
HEARTBEAT = {"payload": {"id": "evt_1", "type": "server.heartbeat", "properties": {}}}


def idle(session_id: str) -> dict[str, Any]:
    return {
        "directory": "/p",
        "project": "global",
        "payload": {"id": "evt_2", "type": "session.idle", "properties": {"sessionID": session_id}},
    }


SSE_HEADERS = {"content-type": "text/event-stream"}


async def test_iter_events_yields_parsed_events_and_skips_the_rest() -> None:
    body = sse(
        CONNECTED,
        {"directory": "/p", "payload": {"type": "sync", "syncEvent": {}}},
        "not json",
        {"type": "session.idle", "properties": {}},
        idle("ses_1"),
        HEARTBEAT,
    )
    requests: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, headers=SSE_HEADERS, content=body)

    async with make_client(handler, password=PASSWORD, directory="/p") as client:
        received = [event async for event in iter_events(client)]
    assert received == [ev.ServerConnected(), ev.SessionIdle("ses_1"), ev.ServerHeartbeat()]
    assert requests[0].url.path == "/global/event"
    assert "directory" not in requests[0].url.params
    assert requests[0].headers["accept"] == "text/event-stream"
    assert requests[0].headers["authorization"] == f"Basic {BASIC_TOKEN}"


async def test_iter_events_on_instance_route_sends_directory() -> None:
    requests: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, headers=SSE_HEADERS, content=sse({"type": "server.connected"}))

    async with make_client(handler, directory="/p") as client:
        received = [event async for event in iter_events(client, path="/event")]
    assert received == [ev.ServerConnected()]
    assert requests[0].url.params["directory"] == "/p"


async def test_iter_events_401_raises_auth_error() -> None:
    async with make_client(Recorder(status=401), password="bad") as client:
        with pytest.raises(OpenCodeAuthError):
            async for _ in iter_events(client):
                pass


async def test_iter_events_rejects_a_non_sse_response() -> None:
    async with make_client(Recorder(body={"healthy": True})) as client:
        with pytest.raises(OpenCodeError, match="text/event-stream"):
            async for _ in iter_events(client):
                pass


async def test_iter_events_connect_failure_is_unavailable() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with make_client(handler) as client:
        with pytest.raises(OpenCodeUnavailable):
            async for _ in iter_events(client):
                pass


async def test_iter_events_bounds_the_handshake() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(10)
        raise AssertionError("unreachable")

    async with make_client(handler) as client:
        with pytest.raises(OpenCodeTimeout, match="no response within"):
            async for _ in iter_events(client, connect_timeout=0.05):
                pass


# --- EventStream ---------------------------------------------------------------------------------


class FakeServer:
    """Serves one scripted SSE body per connection; `None` refuses the connection and a body
    ending with `HANG` keeps the connection open until the client goes away."""

    HANG = "HANG"

    def __init__(self, script: list[list[dict[str, Any] | str] | None]) -> None:
        self.script = list(script)
        self.connections = 0
        self.closed_hanging = 0
        self.changed = asyncio.Event()

    async def handler(self, request: httpx.Request) -> httpx.Response:
        index = self.connections
        self.connections += 1
        self.changed.set()
        frames: list[dict[str, Any] | str] | None = (
            self.script[index] if index < len(self.script) else [self.HANG]
        )
        if frames is None:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, headers=SSE_HEADERS, content=self._body(frames))

    async def _body(self, frames: list[dict[str, Any] | str]) -> AsyncIterator[bytes]:
        for frame in frames:
            if frame == self.HANG:
                try:
                    await asyncio.Event().wait()
                finally:
                    self.closed_hanging += 1
            yield sse(frame)

    async def wait_connections(self, count: int) -> None:
        async with asyncio.timeout(5):
            while self.connections < count:
                self.changed.clear()
                await self.changed.wait()


class Collector:
    def __init__(self) -> None:
        self.events: list[ev.Event] = []
        self.reconnects = 0
        self.sleeps: list[float] = []
        self.changed = asyncio.Event()

    async def on_event(self, event: ev.Event) -> None:
        self.events.append(event)
        self.changed.set()

    async def on_reconnect(self) -> None:
        self.reconnects += 1
        self.changed.set()

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        await asyncio.sleep(0)

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(5):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


def make_stream(server: FakeServer, collector: Collector, **kwargs: Any) -> EventStream:
    client = make_client(server.handler)
    return EventStream(
        client,
        collector.on_event,
        on_reconnect=collector.on_reconnect,
        sleep=collector.sleep,
        **kwargs,
    )


async def test_event_stream_reconnects_after_the_server_closes_and_calls_on_reconnect() -> None:
    server = FakeServer([[CONNECTED, idle("ses_1")], [CONNECTED, idle("ses_2"), FakeServer.HANG]])
    collector = Collector()
    stream = make_stream(server, collector)
    stream.start()
    try:
        await collector.wait_for(lambda: ev.SessionIdle("ses_2") in collector.events)
        await stream.wait_connected()
        assert stream.connected
    finally:
        await stream.stop()
        await stream.client.aclose()
    assert collector.events == [
        ev.ServerConnected(),
        ev.SessionIdle("ses_1"),
        ev.ServerConnected(),
        ev.SessionIdle("ses_2"),
    ]
    assert collector.reconnects == 1
    assert collector.sleeps == [0.5]
    assert not stream.running and not stream.connected
    assert server.closed_hanging == 1


async def test_event_stream_backs_off_and_resets_after_a_successful_connect() -> None:
    server = FakeServer([None, None, None, [CONNECTED], None, [CONNECTED, FakeServer.HANG]])
    collector = Collector()
    stream = make_stream(server, collector, backoff=(0.5, 1, 2))
    stream.start()
    try:
        await server.wait_connections(6)
        await collector.wait_for(lambda: collector.reconnects == 2)
    finally:
        await stream.stop()
        await stream.client.aclose()
    # three refusals (0.5, 1, 2), a good connection closes (reset: 0.5), one refusal (1)
    assert collector.sleeps == [0.5, 1, 2, 0.5, 1]
    assert collector.events == [ev.ServerConnected(), ev.ServerConnected()]
    assert stream.connections == 2


async def test_event_stream_watchdog_reconnects_a_silent_connection() -> None:
    server = FakeServer([[CONNECTED, FakeServer.HANG], [CONNECTED, idle("ses_9"), FakeServer.HANG]])
    collector = Collector()
    stream = make_stream(server, collector, watchdog_s=0.05)
    stream.start()
    try:
        await collector.wait_for(lambda: ev.SessionIdle("ses_9") in collector.events)
        assert server.connections == 2
        assert server.closed_hanging == 1
        assert collector.reconnects == 1
        assert collector.sleeps == [0.5]
    finally:
        await stream.stop()
        await stream.client.aclose()
    assert server.closed_hanging == 2


async def test_event_stream_heartbeats_keep_the_watchdog_quiet() -> None:
    server = FakeServer([])
    collector = Collector()

    async def slow_beats(request: httpx.Request) -> httpx.Response:
        async def body() -> AsyncIterator[bytes]:
            yield sse(CONNECTED)
            for _ in range(6):
                await asyncio.sleep(0.1)
                yield sse(HEARTBEAT)
            await asyncio.Event().wait()
            yield b""

        server.connections += 1
        return httpx.Response(200, headers=SSE_HEADERS, content=body())

    stream = EventStream(
        make_client(slow_beats),
        collector.on_event,
        sleep=collector.sleep,
        watchdog_s=0.3,
        read_pause_s=0,  # only reconnect delays go to `sleep`
    )
    stream.start()
    try:
        await collector.wait_for(lambda: len(collector.events) == 7)
    finally:
        await stream.stop()
        await stream.client.aclose()
    assert server.connections == 1
    assert collector.sleeps == []


async def test_event_stream_survives_a_failing_handler() -> None:
    server = FakeServer([[CONNECTED, idle("ses_1"), idle("ses_2"), FakeServer.HANG]])
    seen: list[ev.Event] = []
    done = asyncio.Event()

    async def flaky(event: ev.Event) -> None:
        seen.append(event)
        if event == ev.SessionIdle("ses_1"):
            raise RuntimeError("handler bug")
        if event == ev.SessionIdle("ses_2"):
            done.set()

    stream = EventStream(make_client(server.handler), flaky, sleep=Collector().sleep)
    stream.start()
    try:
        async with asyncio.timeout(5):
            await done.wait()
    finally:
        await stream.stop()
        await stream.client.aclose()
    assert seen == [ev.ServerConnected(), ev.SessionIdle("ses_1"), ev.SessionIdle("ses_2")]
    assert server.connections == 1


async def test_event_stream_records_the_last_error_and_keeps_trying_on_401() -> None:
    attempts = 0
    collector = Collector()

    async def unauthorized(request: httpx.Request) -> httpx.Response:
        nonlocal attempts
        attempts += 1
        collector.changed.set()
        return httpx.Response(401)

    stream = EventStream(
        make_client(unauthorized, password=PASSWORD), collector.on_event, sleep=collector.sleep
    )
    stream.start()
    try:
        await collector.wait_for(lambda: attempts >= 3)
    finally:
        await stream.stop()
        await stream.client.aclose()
    assert stream.last_error is not None and "401" in stream.last_error
    assert PASSWORD not in stream.last_error
    assert collector.sleeps[:2] == [0.5, 1.0]
    assert not collector.events


async def test_stop_without_start_is_a_no_op() -> None:
    stream = EventStream(make_client(Recorder()), Collector().on_event)
    await stream.stop()
    assert not stream.running
    await stream.client.aclose()


async def test_answers_and_stream_data_are_proof_of_life() -> None:
    now = [100.0]
    async with make_client(Recorder(body={"healthy": True}), clock=lambda: now[0]) as client:
        assert not client.answered_within(30)
        await client.health()
        now[0] += 29
        assert client.answered_within(30)
        now[0] += 2
        assert not client.answered_within(30)
    body = sse(CONNECTED, HEARTBEAT)

    async def stream_handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=SSE_HEADERS, content=body)

    async with make_client(stream_handler, clock=lambda: now[0]) as streaming:
        assert [e async for e in iter_events(streaming)] == [
            ev.ServerConnected(),
            ev.ServerHeartbeat(),
        ]
        assert streaming.answered_within(1)
