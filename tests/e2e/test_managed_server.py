"""ManagedServer against the real OpenCode 1.18.33 binary and the mock LLM.

One server is shared by the read-mostly tests of this module (each OpenCode start costs about
2 s); tests that need their own process (stop, start failures) start it themselves. Start
failures use tiny fake binaries, so they are fast and deterministic.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil
import pytest
import pytest_asyncio

from oc_outpost.servers.managed import ManagedServer, ServerStartError
from oc_outpost.servers.pool import PortsExhausted, find_free_port, is_port_free
from tests.rig.mock_llm import BASH_COMMAND, QUESTION_TEXT, MockLLM
from tests.rig.opencode_bin import DEAD_REGISTRY, OPENCODE_VERSION
from tests.rig.opencode_fixtures import apply_hermetic_env

module_loop = pytest.mark.asyncio(loop_scope="module")
REQUEST_TIMEOUT_S = 60.0
TURN_TIMEOUT_S = 30.0
T = TypeVar("T")


def ephemeral_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def server_processes(binary: Path | None = None) -> list[psutil.Process]:
    """Live descendants of this process that look like `<binary> serve --port N`."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            cmdline = child.cmdline()
            alive = child.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            continue
        is_server = "serve" in cmdline and "--port" in cmdline
        if alive and is_server and (binary is None or str(binary) in cmdline):
            found.append(child)
    return found


@pytest.fixture(scope="module")
def no_leaked_servers() -> Iterator[None]:
    yield
    leaked = server_processes()
    for process in leaked:
        process.kill()
    assert not leaked, f"server processes survived the tests: {[p.cmdline() for p in leaked]}"


@pytest.fixture(scope="module")
def module_env(tmp_path_factory: pytest.TempPathFactory, mock_llm: MockLLM) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        apply_hermetic_env(monkeypatch, tmp_path_factory.mktemp("oc-scratch"), mock_llm.base_url)
        yield


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(
    no_leaked_servers: None,
    module_env: None,
    opencode_bin: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[ManagedServer]:
    project = tmp_path_factory.mktemp("project")
    managed = await ManagedServer.start(
        opencode_bin, project, ephemeral_port(), startup_timeout_s=60
    )
    yield managed
    await managed.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def client(server: ManagedServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=server.base_url, auth=server.auth, timeout=REQUEST_TIMEOUT_S
    ) as http:
        yield http


async def new_session(client: httpx.AsyncClient) -> str:
    response = await client.post("/session", json={})
    response.raise_for_status()
    session_id: str = response.json()["id"]
    return session_id


async def prompt_async(client: httpx.AsyncClient, session_id: str, text: str) -> None:
    body = {"parts": [{"type": "text", "text": text}]}
    response = await client.post(f"/session/{session_id}/prompt_async", json=body)
    assert response.status_code == 204


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str) -> T:
    """Poll `probe` until it returns something other than None (bounded by TURN_TIMEOUT_S)."""
    try:
        async with asyncio.timeout(TURN_TIMEOUT_S):
            while True:
                result = await probe()
                if result is not None:
                    return result
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"no {what} within {TURN_TIMEOUT_S} s") from None


async def pending_for(client: httpx.AsyncClient, route: str, session_id: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        response = await client.get(route)
        response.raise_for_status()
        mine = [item for item in response.json() if item["sessionID"] == session_id]
        return mine[0] if mine else None

    return await eventually(probe, f"pending {route} item")


async def idle_messages(client: httpx.AsyncClient, session_id: str) -> list[dict[str, Any]]:
    async def probe() -> list[dict[str, Any]] | None:
        status = (await client.get("/session/status")).json()
        if session_id in status:
            return None
        messages: list[dict[str, Any]] = (await client.get(f"/session/{session_id}/message")).json()
        return messages

    return await eventually(probe, "session idle")


def parts_of(messages: list[dict[str, Any]], part_type: str) -> list[dict[str, Any]]:
    return [part for message in messages for part in message["parts"] if part["type"] == part_type]


# -- the shared real server ---------------------------------------------------------------


@module_loop
async def test_every_route_requires_credentials(server: ManagedServer) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as anonymous:
        response = await anonymous.get("/global/health")

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")


@module_loop
async def test_health_answers_with_credentials(client: httpx.AsyncClient) -> None:
    response = await client.get("/global/health")

    assert response.status_code == 200
    assert response.json() == {"healthy": True, "version": OPENCODE_VERSION}


@module_loop
async def test_sync_prompt_returns_the_mock_answer(client: httpx.AsyncClient, llm: MockLLM) -> None:
    session_id = await new_session(client)

    response = await client.post(
        f"/session/{session_id}/message", json={"parts": [{"type": "text", "text": "hi"}]}
    )

    assert response.status_code == 200
    texts = [part["text"] for part in response.json()["parts"] if part["type"] == "text"]
    assert texts == ["Hello from mock! You said: hi"]
    assert any(body["messages"][-1]["role"] == "user" for body in llm.agent_requests)


@module_loop
async def test_bash_runs_after_a_permission_reply(client: httpx.AsyncClient, llm: MockLLM) -> None:
    session_id = await new_session(client)
    await prompt_async(client, session_id, "RUN_BASH")

    asked = await pending_for(client, "/permission", session_id)
    reply = await client.post(f"/permission/{asked['id']}/reply", json={"reply": "once"})
    messages = await idle_messages(client, session_id)

    assert (asked["permission"], asked["patterns"]) == ("bash", [BASH_COMMAND])
    assert reply.json() is True
    (tool,) = parts_of(messages, "tool")
    assert (tool["tool"], tool["state"]["status"]) == ("bash", "completed")
    assert tool["state"]["output"] == "hello-from-bash\n"
    assert parts_of(messages, "text")[-1]["text"] == "Tool finished; bash done."
    assert any(m["role"] == "tool" for m in llm.agent_requests[-1]["messages"])


@module_loop
async def test_question_tool_is_pending_until_answered(client: httpx.AsyncClient) -> None:
    session_id = await new_session(client)
    await prompt_async(client, session_id, "ASK_QUESTION")

    asked = await pending_for(client, "/question", session_id)
    (question,) = asked["questions"]
    assert question["question"] == QUESTION_TEXT
    assert [option["label"] for option in question["options"]] == ["Red", "Blue"]

    answer = await client.post(f"/question/{asked['id']}/reply", json={"answers": [["Blue"]]})
    messages = await idle_messages(client, session_id)

    assert answer.json() is True
    assert parts_of(messages, "tool")[0]["state"]["metadata"]["answers"] == [["Blue"]]
    assert parts_of(messages, "text")[-1]["text"] == "Tool finished; question done."


@module_loop
async def test_output_is_kept_with_the_password_masked(server: ManagedServer) -> None:
    output = server.recent_output()

    assert any(f"listening on {server.base_url}" in line for line in output)
    assert not any(server.password in line for line in output)
    assert server.password not in repr(server)
    assert server.is_alive() and server.returncode is None


# -- servers of their own -----------------------------------------------------------------


@module_loop
async def test_stop_terminates_the_process_and_is_idempotent(
    no_leaked_servers: None,
    opencode_bin: Path,
    opencode_env: dict[str, str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # No extra_env: the server inherits the hermetic environment from os.environ.
    port = ephemeral_port()
    caplog.set_level(logging.INFO, logger=f"oc_outpost.opencode.{port}")
    project = tmp_path / "project"
    project.mkdir()
    started = time.monotonic()
    managed = await ManagedServer.start(opencode_bin, project, port)
    startup_s = time.monotonic() - started

    await asyncio.gather(managed.stop(), managed.stop())
    await managed.stop()

    assert startup_s < 30
    assert not managed.is_alive()
    assert managed.returncode is not None
    assert await managed.wait() == managed.returncode
    assert not psutil.pid_exists(managed.pid)
    assert is_port_free(port)
    assert f"listening on http://127.0.0.1:{port}" in caplog.text
    assert managed.password not in caplog.text


@module_loop
async def test_busy_port_fails_fast(opencode_bin: Path, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        started = time.monotonic()
        with pytest.raises(ServerStartError, match="already in use"):
            await ManagedServer.start(opencode_bin, tmp_path, busy.getsockname()[1])

    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("kind", ["missing", "not-executable"])
@module_loop
async def test_bad_binary_path_is_a_clear_error(tmp_path: Path, kind: str) -> None:
    binary = tmp_path / "no-such-opencode"
    if kind == "not-executable":
        binary.write_text("not a program")

    with pytest.raises(ServerStartError, match="cannot run the OpenCode binary") as raised:
        await ManagedServer.start(binary, tmp_path, ephemeral_port())

    assert str(binary) in str(raised.value)


@module_loop
async def test_missing_project_directory_is_a_clear_error(
    opencode_bin: Path, tmp_path: Path
) -> None:
    with pytest.raises(ServerStartError, match="does not exist"):
        await ManagedServer.start(opencode_bin, tmp_path / "gone", ephemeral_port())


def fake_binary(tmp_path: Path, body: str) -> Path:
    """A Python script standing in for `opencode`, invoked as `<script> serve --port N ...`."""
    script = tmp_path / "fake-opencode"
    script.write_text(f"#!{sys.executable}\nimport os, socket, sys, time\n{body}\n")
    script.chmod(0o755)
    return script


@module_loop
async def test_exit_before_listening_reports_masked_output(
    no_leaked_servers: None, tmp_path: Path
) -> None:
    binary = fake_binary(
        tmp_path,
        'print("Error: boom " + os.environ["OPENCODE_SERVER_PASSWORD"], file=sys.stderr)\n'
        "sys.exit(3)",
    )

    with pytest.raises(ServerStartError) as raised:
        await ManagedServer.start(binary, tmp_path, ephemeral_port())

    message = str(raised.value)
    assert "exited with code 3 before listening" in message
    assert "stderr: Error: boom ***" in message


@module_loop
async def test_hanging_health_check_times_out_and_kills_the_process(
    no_leaked_servers: None, tmp_path: Path
) -> None:
    # Listens but never answers: like the early-request hang of the real server.
    binary = fake_binary(
        tmp_path,
        "port = int(sys.argv[sys.argv.index('--port') + 1])\n"
        "sock = socket.socket(); sock.bind(('127.0.0.1', port)); sock.listen(16)\n"
        "print(f'opencode server listening on http://127.0.0.1:{port}', flush=True)\n"
        "time.sleep(60)",
    )
    started = time.monotonic()

    with pytest.raises(ServerStartError) as raised:
        await ManagedServer.start(
            binary, tmp_path, ephemeral_port(), startup_timeout_s=1.5, health_request_timeout_s=0.3
        )

    assert time.monotonic() - started < 5
    assert "not ready within 1.5 s (waiting for the health check" in str(raised.value)
    assert "ReadTimeout" in str(raised.value)
    assert server_processes(binary) == []


@module_loop
async def test_silent_process_times_out_waiting_for_listening(
    no_leaked_servers: None, tmp_path: Path
) -> None:
    binary = fake_binary(tmp_path, "time.sleep(60)")

    with pytest.raises(ServerStartError, match="waiting for the 'listening' line"):
        await ManagedServer.start(binary, tmp_path, ephemeral_port(), startup_timeout_s=0.5)

    assert server_processes(binary) == []


FAKE_HEALTHY_SERVER = """
import http.server, json, signal, subprocess
if "--ignore-sigterm" in os.environ.get("FAKE_MODE", ""):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
port = int(sys.argv[sys.argv.index("--port") + 1])

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"healthy": True}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

httpd = http.server.HTTPServer(("127.0.0.1", port), Health)
helper = subprocess.Popen(["sleep", "60"])
print(f"helper pid {helper.pid}", flush=True)
print(f"opencode server listening on http://127.0.0.1:{port}", flush=True)
httpd.serve_forever()
"""


def helper_pid(server: ManagedServer) -> int:
    (line,) = [line for line in server.recent_output() if "helper pid" in line]
    return int(line.rsplit(" ", 1)[1])


@module_loop
async def test_stop_also_kills_what_the_server_spawned(
    no_leaked_servers: None, tmp_path: Path
) -> None:
    binary = fake_binary(tmp_path, FAKE_HEALTHY_SERVER)
    managed = await ManagedServer.start(binary, tmp_path, ephemeral_port())
    spawned = psutil.Process(helper_pid(managed))

    await managed.stop()

    assert managed.returncode == -15
    assert not spawned.is_running() or spawned.status() == psutil.STATUS_ZOMBIE


@module_loop
async def test_stop_kills_a_server_that_ignores_sigterm(
    no_leaked_servers: None, tmp_path: Path
) -> None:
    binary = fake_binary(tmp_path, FAKE_HEALTHY_SERVER)
    env = {"FAKE_MODE": "--ignore-sigterm"}
    managed = await ManagedServer.start(binary, tmp_path, ephemeral_port(), extra_env=env)
    started = time.monotonic()

    await managed.stop(grace_s=0.3)

    assert managed.returncode == -9
    assert 0.3 <= time.monotonic() - started < 3
    assert server_processes(binary) == []


def test_opencode_env_is_applied_to_os_environ(
    opencode_env: dict[str, str], llm: MockLLM, tmp_path: Path
) -> None:
    config = json.loads(os.environ["OPENCODE_CONFIG_CONTENT"])
    home = Path(os.environ["HOME"])

    assert home.is_relative_to(tmp_path)
    assert all(os.environ[name] == value for name, value in opencode_env.items())
    assert (home / ".npmrc").read_text() == f"registry={DEAD_REGISTRY}\n"
    assert opencode_env["npm_config_registry"] == DEAD_REGISTRY
    assert config["provider"]["mock"]["options"]["baseURL"] == llm.base_url
    assert config["permission"] == {"bash": "ask", "edit": "ask"}
    assert "OPENCODE_SERVER_PASSWORD" not in os.environ


# -- port helper ----------------------------------------------------------------------------


def test_find_free_port_skips_busy_and_excluded_ports() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        busy_port = busy.getsockname()[1]
        next_free = find_free_port(busy_port, 50, exclude={busy_port + 1})

    assert next_free > busy_port + 1


def test_find_free_port_raises_when_the_range_is_exhausted() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(PortsExhausted, match=f"{port}-{port}"):
            find_free_port(port, 1)
