"""Contract tests: the opencode/ adapter against the real OpenCode 1.18.33 binary.

One server and one `/global/event` connection (via `iter_events`) are shared by the module;
every test filters the recorded events by its own session id, looking only at events that
arrived after it started. The mock LLM answers "Hello from mock! You said: <text>", calls bash
on RUN_BASH and asks "Pick a color" on ASK_QUESTION.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import pytest_asyncio

from oc_outpost.opencode import events as ev
from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.opencode.errors import OpenCodeAuthError, OpenCodeNotFound
from oc_outpost.opencode.stream import EventStream, iter_events
from oc_outpost.opencode.wire import TextInput
from oc_outpost.servers.managed import ManagedServer
from oc_outpost.servers.pool import find_free_port
from tests.rig.mock_llm import BASH_COMMAND, QUESTION_TEXT, MockLLM, Text
from tests.rig.opencode_bin import OPENCODE_VERSION
from tests.rig.opencode_fixtures import apply_hermetic_env

pytestmark = pytest.mark.asyncio(loop_scope="module")

TURN_TIMEOUT_S = 30.0
E = TypeVar("E", bound=ev.Event)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        start: int = sock.getsockname()[1]
    return find_free_port(start, 100)


class EventLog:
    """Collects every event of one `iter_events` connection in a background task."""

    def __init__(self, client: OpenCodeClient) -> None:
        self.events: list[ev.Event] = []
        self.failure: BaseException | None = None
        self._client = client
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._consume())
        await self.wait_for(lambda e: isinstance(e, ev.ServerConnected), since=0)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def mark(self) -> int:
        return len(self.events)

    async def _consume(self) -> None:
        try:
            async for event in iter_events(self._client):
                self.events.append(event)
                self._changed.set()
        except Exception as exc:
            self.failure = exc
            self._changed.set()
            raise

    async def wait_for(
        self, predicate: Callable[[ev.Event], bool], *, since: int, within: float = TURN_TIMEOUT_S
    ) -> ev.Event:
        async with asyncio.timeout(within):
            while True:
                for event in self.events[since:]:
                    if predicate(event):
                        return event
                if self.failure is not None:
                    raise AssertionError(f"event stream failed: {self.failure!r}")
                self._changed.clear()
                await self._changed.wait()

    async def wait_for_type(
        self,
        kind: type[E],
        *,
        since: int,
        where: Callable[[E], bool] = lambda _event: True,
    ) -> E:
        event = await self.wait_for(lambda e: isinstance(e, kind) and where(e), since=since)
        assert isinstance(event, kind)
        return event

    def of_session(self, session_id: str, since: int) -> list[ev.Event]:
        return [e for e in self.events[since:] if getattr(e, "session_id", None) == session_id]


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def module_env(tmp_path_factory: pytest.TempPathFactory, mock_llm: MockLLM) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        scratch = tmp_path_factory.mktemp("oc-contract-env")
        apply_hermetic_env(monkeypatch, scratch, mock_llm.base_url)
        yield


@pytest.fixture(scope="module")
def project_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("contract-project")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(
    module_env: None, opencode_bin: Path, project_dir: Path
) -> AsyncIterator[ManagedServer]:
    managed = await ManagedServer.start(
        opencode_bin, project_dir, free_port(), startup_timeout_s=60
    )
    yield managed
    await managed.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(server: ManagedServer) -> AsyncIterator[OpenCodeClient]:
    async with OpenCodeClient(server.base_url, password=server.password, timeout=30) as oc:
        yield oc


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def event_log(client: OpenCodeClient) -> AsyncIterator[EventLog]:
    log = EventLog(client)
    await log.start()
    yield log
    await log.stop()


@pytest.fixture
def fresh_llm(llm: MockLLM) -> MockLLM:
    """The shared mock LLM with rules reset (function scope, usable from module-loop tests)."""
    return llm


async def start_turn(client: OpenCodeClient, event_log: EventLog, text: str) -> tuple[str, int]:
    session = await client.create_session(title=f"contract: {text[:20]}")
    since = event_log.mark()
    await client.prompt_async(session.id, [TextInput(text=text)])
    return session.id, since


def same_path(reported: str, expected: Path) -> bool:
    return Path(reported).resolve() == expected.resolve()


def is_idle(session_id: str) -> Callable[[ev.Event], bool]:
    return lambda e: isinstance(e, ev.SessionIdle) and e.session_id == session_id


def final_text(events: list[ev.Event], message_id: str | None = None) -> str:
    """The last full text part of the events, or the concatenated deltas of the last text part."""
    texts = [e for e in events if isinstance(e, ev.PartUpdated) and isinstance(e.part, ev.TextPart)]
    if message_id is not None:
        texts = [e for e in texts if e.message_id == message_id]
    part = texts[-1].part if texts else None
    return part.text if isinstance(part, ev.TextPart) else ""


# --- tests ---------------------------------------------------------------------------------------


async def test_health(client: OpenCodeClient) -> None:
    health = await client.health()
    assert health.healthy is True
    assert health.version == OPENCODE_VERSION


async def test_create_get_and_list_sessions(client: OpenCodeClient, project_dir: Path) -> None:
    created = await client.create_session(title="contract session")
    assert created.id.startswith("ses_")
    assert created.title == "contract session"
    assert same_path(created.directory, project_dir)
    assert created.parent_id is None
    fetched = await client.get_session(created.id)
    assert (fetched.id, fetched.title, fetched.slug) == (created.id, created.title, created.slug)
    listed = await client.list_sessions()
    assert created.id in [s.id for s in listed]
    assert len(await client.list_sessions(limit=1)) == 1


async def test_prompt_streams_the_answer_and_ends_idle(
    client: OpenCodeClient, event_log: EventLog, fresh_llm: MockLLM
) -> None:
    session_id, since = await start_turn(client, event_log, "hello")
    await event_log.wait_for(is_idle(session_id), since=since)

    events = event_log.of_session(session_id, since)
    updates = [e.info for e in events if isinstance(e, ev.MessageUpdated)]
    assert any(u.role == "user" for u in updates)
    finished = [u for u in updates if u.role == "assistant" and u.completed]
    assert finished and finished[-1].finish == "stop"
    answer = "Hello from mock! You said: hello"
    assert final_text(events, finished[-1].id) == answer
    deltas = [e for e in events if isinstance(e, ev.PartDelta)]
    assert deltas and all(d.field == "text" for d in deltas)
    assert "".join(d.delta for d in deltas) == answer
    statuses = [e for e in events if isinstance(e, ev.SessionStatusChanged)]
    assert any(s.status.type == "busy" for s in statuses)

    assert session_id not in await client.session_status()

    messages = await client.messages(session_id)
    assert [m.info.role for m in messages] == ["user", "assistant"]
    assistant = messages[-1].info
    assert assistant.role == "assistant" and assistant.completed
    assert assistant.finish == "stop" and assistant.error is None
    texts = [p.text for p in messages[-1].parts if isinstance(p, ev.TextPart)]
    assert texts == [answer]
    assert len(await client.messages(session_id, limit=1)) == 1


async def test_bash_permission_once_runs_the_tool_and_continues(
    client: OpenCodeClient, event_log: EventLog, fresh_llm: MockLLM
) -> None:
    session_id, since = await start_turn(client, event_log, "Please RUN_BASH then summarize")
    asked = await event_log.wait_for_type(
        ev.PermissionAsked, since=since, where=lambda e: e.session_id == session_id
    )
    assert asked.request.permission == "bash"
    assert asked.request.patterns == (BASH_COMMAND,)
    assert asked.request.metadata["command"] == BASH_COMMAND
    assert asked.request.call_id is not None
    pending = await client.list_permissions()
    assert asked.request in pending  # the listed request is the one the event carried

    await client.reply_permission(asked.request_id, "once")
    replied = await event_log.wait_for_type(
        ev.PermissionReplied, since=since, where=lambda e: e.request_id == asked.request_id
    )
    assert replied.reply == "once"
    await event_log.wait_for(is_idle(session_id), since=since)

    events = event_log.of_session(session_id, since)
    tools = [
        e.part for e in events if isinstance(e, ev.PartUpdated) and isinstance(e.part, ev.ToolPart)
    ]
    done = [t for t in tools if t.status == "completed"]
    assert done and done[-1].tool == "bash" and done[-1].call_id == asked.request.call_id
    assert done[-1].output == "hello-from-bash\n"
    assert final_text(events) == "Tool finished; bash done."
    assert asked.request_id not in [p.id for p in await client.list_permissions()]

    messages = await client.messages(session_id)
    tool_parts = [p for m in messages for p in m.parts if isinstance(p, ev.ToolPart)]
    assert tool_parts[0].status == "completed"


async def test_question_reply_completes_the_tool(
    client: OpenCodeClient, event_log: EventLog, fresh_llm: MockLLM
) -> None:
    session_id, since = await start_turn(client, event_log, "ASK_QUESTION please")
    asked = await event_log.wait_for_type(
        ev.QuestionAsked, since=since, where=lambda e: e.session_id == session_id
    )
    (question,) = asked.request.questions
    assert question.question == QUESTION_TEXT
    assert [option.label for option in question.options] == ["Red", "Blue"]
    assert question.multiple is False
    assert asked.request in await client.list_questions()

    await client.reply_question(asked.request_id, [["Blue"]])
    replied = await event_log.wait_for_type(
        ev.QuestionReplied, since=since, where=lambda e: e.request_id == asked.request_id
    )
    assert replied.answers == (("Blue",),)
    await event_log.wait_for(is_idle(session_id), since=since)
    tools = [
        e.part
        for e in event_log.of_session(session_id, since)
        if isinstance(e, ev.PartUpdated) and isinstance(e.part, ev.ToolPart)
    ]
    assert tools[-1].tool == "question" and tools[-1].status == "completed"
    assert "Blue" in (tools[-1].output or "")


async def test_abort_mid_stream(
    client: OpenCodeClient, event_log: EventLog, fresh_llm: MockLLM
) -> None:
    fresh_llm.when("SLOW", Text("slow " * 60, chunk_size=5, delay_s=0.1))
    session_id, since = await start_turn(client, event_log, "SLOW answer")
    await event_log.wait_for_type(
        ev.PartDelta, since=since, where=lambda e: e.session_id == session_id
    )
    status = await client.session_status()
    assert status[session_id].type == "busy"

    assert await client.abort(session_id) is True
    error = await event_log.wait_for_type(
        ev.SessionError, since=since, where=lambda e: e.session_id == session_id
    )
    assert error.name == "MessageAbortedError"
    await event_log.wait_for(is_idle(session_id), since=since)
    aborted = await event_log.wait_for_type(
        ev.MessageUpdated,
        since=since,
        where=lambda e: e.session_id == session_id and e.info.error is not None,
    )
    assert aborted.info.completed and aborted.info.error is not None
    assert aborted.info.error.name == "MessageAbortedError"
    assert session_id not in await client.session_status()


async def test_wrong_password_is_an_auth_error(server: ManagedServer) -> None:
    async with OpenCodeClient(server.base_url, password="wrong-password") as wrong:
        with pytest.raises(OpenCodeAuthError) as caught:
            await wrong.health()
        assert "wrong-password" not in str(caught.value)
        with pytest.raises(OpenCodeAuthError):
            async for _ in iter_events(wrong):
                pass
    async with OpenCodeClient(server.base_url) as anonymous:
        with pytest.raises(OpenCodeAuthError):
            await anonymous.list_sessions()


async def test_unknown_ids_are_not_found(client: OpenCodeClient) -> None:
    with pytest.raises(OpenCodeNotFound) as caught:
        await client.get_session("ses_doesnotexist0000000000")
    assert caught.value.name == "NotFoundError"
    assert "ses_doesnotexist0000000000" in caught.value.message
    with pytest.raises(OpenCodeNotFound) as permission:
        await client.reply_permission("per_doesnotexist", "once")
    assert permission.value.name == "PermissionNotFoundError"
    with pytest.raises(OpenCodeNotFound) as question:
        await client.reject_question("que_doesnotexist")
    assert question.value.name == "QuestionNotFoundError"


async def test_global_stream_sees_sessions_of_other_directories(
    server: ManagedServer, event_log: EventLog, tmp_path: Path
) -> None:
    other = tmp_path / "other-project"
    other.mkdir()
    since = event_log.mark()
    async with OpenCodeClient(
        server.base_url, password=server.password, directory=str(other), timeout=30
    ) as elsewhere:
        session = await elsewhere.create_session(title="elsewhere")
        assert same_path(session.directory, other)
        assert session.id in [s.id for s in await elsewhere.list_sessions()]
    created = await event_log.wait_for_type(
        ev.SessionCreated, since=since, where=lambda e: e.session_id == session.id
    )
    assert created.title == "elsewhere"


async def test_event_stream_helper_delivers_events(
    client: OpenCodeClient, fresh_llm: MockLLM
) -> None:
    received: list[ev.Event] = []
    idle = asyncio.Event()
    session = await client.create_session(title="via EventStream")

    async def on_event(event: ev.Event) -> None:
        received.append(event)
        if isinstance(event, ev.SessionIdle) and event.session_id == session.id:
            idle.set()

    stream = EventStream(client, on_event)
    stream.start()
    try:
        async with asyncio.timeout(TURN_TIMEOUT_S):
            await stream.wait_connected()
            await client.prompt_async(session.id, [TextInput(text="via stream")])
            await idle.wait()
    finally:
        await stream.stop()
    assert isinstance(received[0], ev.ServerConnected)
    ours = [e for e in received if getattr(e, "session_id", None) == session.id]
    assert final_text(ours) == "Hello from mock! You said: via stream"
    assert not stream.running


async def test_global_stream_carries_heartbeats(event_log: EventLog) -> None:
    """The watchdog relies on these: a heartbeat every 10 s on /global/event."""
    heartbeat = await event_log.wait_for(
        lambda e: isinstance(e, ev.ServerHeartbeat), since=0, within=15
    )
    assert heartbeat == ev.ServerHeartbeat()
