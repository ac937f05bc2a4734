"""The HTTP API: auth, validation, errors and the OpenAPI contract (schemathesis).

These tests run the real FastAPI app over ASGI with real SQLite stores; the chat side is a
recording stand-in. Registering against a live OpenCode server is in tests/e2e/test_external.py.
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from oc_outpost.api.server import ApiConfig, ApiServer, ApiStartError, build_api
from oc_outpost.app import RunOptions, build_core
from oc_outpost.config import load_settings
from oc_outpost.core.chat import GoneTopics
from oc_outpost.core.journal import TurnJournal
from oc_outpost.metrics import Metrics
from oc_outpost.store.active_turns import ActiveTurnStore
from oc_outpost.store.db import Database
from oc_outpost.store.migrations import ORCHESTRATOR_MIGRATIONS, TOPIC_MIGRATIONS

KEY = "test-api-key"
CHAT = -100777
BASE_URL = "http://127.0.0.1:4200"
AUTH = {"Authorization": f"Bearer {KEY}"}


class RecordingChat:
    """Stands in for the Telegram side: records what core asked it to do."""

    def __init__(self) -> None:
        self.notices: list[tuple[int | None, str]] = []
        self.topics: list[str] = []

    async def create_topic(self, name: str) -> int:
        self.topics.append(name)
        return 100 + len(self.topics)

    async def notify(self, topic_id: int | None, text: str) -> None:
        self.notices.append((topic_id, text))


async def make_api(
    tmp_path: Path, config: ApiConfig | None = None, metrics: Metrics | None = None
) -> tuple[FastAPI, list[Database]]:
    """The API over the bot's real core (as the composition root wires it), no Telegram."""
    (tmp_path / "projects" / "demo").mkdir(parents=True)
    settings = load_settings(
        {
            "TELEGRAM_BOT_TOKEN": "1:test",
            "TELEGRAM_CHAT_ID": str(CHAT),
            "PROJECT_BASE_PATH": str(tmp_path / "projects"),
        },
        env_file=None,
    )
    orchestrator = await Database.open(tmp_path / "o.db", ORCHESTRATOR_MIGRATIONS)
    topics = await Database.open(tmp_path / "t.db", TOPIC_MIGRATIONS)
    chat: Any = RecordingChat()
    journal = TurnJournal(ActiveTurnStore(topics))
    counted = metrics or Metrics()
    core = build_core(
        settings, RunOptions(), chat, GoneTopics(), journal, orchestrator, topics, counted
    )
    api = build_api(core.controller, config or ApiConfig(api_key=KEY), counted)
    return api, [orchestrator, topics]


def client_of(app: FastAPI, base_url: str = BASE_URL) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url=base_url, headers=AUTH)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app, dbs = await make_api(tmp_path)
    async with client_of(app) as client:
        yield client
    for db in dbs:
        await db.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_health_needs_the_key(api: httpx.AsyncClient) -> None:
    ok = await api.get("/api/health")
    assert ok.status_code == 200 and ok.json()["status"] == "ok"
    missing = await api.get("/api/health", headers={"Authorization": ""})
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert "API key" in missing.json()["error"]
    wrong = await api.get("/api/health", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401


async def test_malformed_json_is_a_400(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/api/register", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "The request body is not valid JSON."


async def test_out_of_range_port_is_refused_with_the_field_named(api: httpx.AsyncClient) -> None:
    response = await api.post("/api/register", json={"projectPath": "demo", "port": 70000})
    assert response.status_code == 422
    assert any(d.startswith("port:") for d in response.json()["details"])


async def test_exactly_one_of_port_or_url(api: httpx.AsyncClient) -> None:
    both = await api.post(
        "/api/register", json={"project_path": "demo", "port": 4096, "url": "http://x:1"}
    )
    neither = await api.post("/api/register", json={"project_path": "demo"})
    for response in (both, neither):
        assert response.status_code == 422
        assert "exactly one of port or url" in " ".join(response.json()["details"])


async def test_unreachable_server_is_refused_clearly(api: httpx.AsyncClient) -> None:
    port = closed_port()
    for body in ({"projectPath": "demo", "port": port}, {"project_path": "demo", "port": port}):
        response = await api.post("/api/register", json=body)
        assert response.status_code == 422
        assert f"No OpenCode server answers at http://127.0.0.1:{port}" in response.json()["error"]


async def test_paths_outside_the_project_base_are_refused(
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    response = await api.post("/api/register", json={"projectPath": "/etc", "port": 4096})
    assert response.status_code == 422
    assert "outside the project base directory" in response.json()["error"]
    escape = await api.post("/api/register", json={"projectPath": "../..", "port": 4096})
    assert escape.status_code == 422


async def test_unregister_of_an_unknown_path_is_a_404(api: httpx.AsyncClient) -> None:
    response = await api.post("/api/unregister", json={"projectPath": "demo"})
    assert response.status_code == 404
    assert "no registered external OpenCode session" in response.json()["error"]


async def test_status_and_instances_when_nothing_is_registered(api: httpx.AsyncClient) -> None:
    status = await api.get("/api/status/demo")
    assert status.status_code == 200
    assert status.json()["registered"] is False
    instances = await api.get("/api/instances")
    assert instances.status_code == 200 and instances.json() == []


async def test_openapi_document_is_served(api: httpx.AsyncClient) -> None:
    doc = (await api.get("/openapi.json")).json()
    assert set(doc["paths"]) == {
        "/api/health",
        "/api/register",
        "/api/unregister",
        "/api/status/{project_path}",
        "/api/instances",
        "/metrics",
    }


# --- schemathesis: the served OpenAPI document against the app --------------------------------


_CONTRACT_DBS: list[Database] = []


def _contract_app() -> FastAPI:
    # schemathesis reads the schema when the module is collected, so the app is built here;
    # its databases are closed by `close_contract_databases` when the module is done.
    root = Path(tempfile.mkdtemp(prefix="oc-outpost-api-"))
    app, dbs = asyncio.run(make_api(root))
    _CONTRACT_DBS.extend(dbs)
    return app


@pytest.fixture(scope="module", autouse=True)
def close_contract_databases() -> Iterator[None]:
    yield

    async def close_all() -> None:
        for db in _CONTRACT_DBS:
            await db.close()

    asyncio.run(close_all())
    _CONTRACT_DBS.clear()


# schemathesis' ASGI client says "Host: testserver", which the API refuses (DNS rebinding).
CONTRACT_HEADERS = AUTH | {"Host": "127.0.0.1"}
schema = schemathesis.openapi.from_asgi("/openapi.json", _contract_app(), headers=CONTRACT_HEADERS)


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_api_conforms_to_its_openapi_document(case: Any) -> None:
    # No 5xx, documented status codes, responses matching their schemas. Schema-valid input may
    # still be refused with a 4xx by rules a schema cannot state (the directory must exist, the
    # server must answer), so the "positive data is accepted" check does not apply here.
    case.call_and_validate(headers=CONTRACT_HEADERS, excluded_checks=[positive_data_acceptance])


async def test_a_busy_port_is_reported_not_fatal(tmp_path: Path) -> None:
    app, dbs = await make_api(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = ApiServer(app, "127.0.0.1", taken.getsockname()[1])
        with pytest.raises(ApiStartError, match=r"cannot listen on 127\.0\.0\.1"):
            await server.start()
        await server.stop()
    for db in dbs:
        await db.close()


# --- an API that cannot be abused -------------------------------------------------------------


def test_the_api_cannot_be_built_without_a_key() -> None:
    with pytest.raises(ValueError, match="needs a key"):
        build_api(None, ApiConfig(api_key=""))  # type: ignore[arg-type]


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
async def test_docs_and_openapi_need_the_key(api: httpx.AsyncClient, path: str) -> None:
    refused = await api.get(path, headers={"Authorization": ""})
    assert refused.status_code == 401
    assert "API key" in refused.json()["error"]
    served = await api.get(path)
    assert served.status_code == 200
    assert ("openapi" in served.text) if path == "/openapi.json" else ("<html" in served.text)


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:4200", "127.0.0.1.nip.io", "localhost.evil.example"]
)
async def test_a_foreign_host_header_is_refused(api: httpx.AsyncClient, host: str) -> None:
    response = await api.get("/api/health", headers={"Host": host})
    assert response.status_code == 421
    assert "DNS rebinding" in response.json()["error"]


@pytest.mark.parametrize(
    "host", ["localhost", "LocalHost:4200", "127.0.0.1", "127.0.0.1:4200", "[::1]:4200", "::1"]
)
async def test_loopback_host_headers_are_served(api: httpx.AsyncClient, host: str) -> None:
    response = await api.get("/api/health", headers={"Host": host})
    assert response.status_code == 200, response.text


async def test_the_configured_api_host_is_served(tmp_path: Path) -> None:
    app, dbs = await make_api(tmp_path, ApiConfig(api_key=KEY, api_host="192.168.1.5"))
    async with client_of(app, "http://192.168.1.5:4200") as client:
        assert (await client.get("/api/health")).status_code == 200
        other = await client.get("/api/health", headers={"Host": "192.168.1.6:4200"})
        assert other.status_code == 421
    for db in dbs:
        await db.close()


async def test_a_large_content_length_is_refused_before_the_body_is_read(
    api: httpx.AsyncClient,
) -> None:
    read: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        for _ in range(70):
            read.append(1)
            yield b"x" * 1024

    response = await api.post(
        "/api/register", content=body(), headers={"Content-Length": str(70 * 1024)}
    )
    assert response.status_code == 413
    assert response.json()["error"] == "The request body is larger than 64 KB."
    assert read == []


async def test_a_chunked_body_is_cut_off_at_64_kb(api: httpx.AsyncClient) -> None:
    sent: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        yield b'{"projectPath": "demo", "port": 4096, "sessionId": "'
        for _ in range(200):
            sent.append(1)
            yield b"a" * 1024
        yield b'"}'

    response = await api.post(
        "/api/register", content=body(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["error"] == "The request body is larger than 64 KB."
    assert len(sent) < 70  # not read to the end


async def test_a_body_at_the_limit_is_read(api: httpx.AsyncClient) -> None:
    padding = " " * (64 * 1024 - 40)
    body = f'{{"projectPath": "demo"{padding}}}'.encode()
    assert len(body) <= 64 * 1024
    response = await api.post(
        "/api/register", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422  # read and validated: neither port nor url
    assert "exactly one of port or url" in " ".join(response.json()["details"])


@pytest.mark.parametrize(
    "url", ["http://10.0.0.7:4096", "http://build-box.lan:4096", "https://[2001:db8::1]:443"]
)
async def test_a_server_off_this_machine_is_refused(api: httpx.AsyncClient, url: str) -> None:
    response = await api.post("/api/register", json={"projectPath": "demo", "url": url})
    assert response.status_code == 422
    error = response.json()["error"]
    assert "must be on loopback" in error and "API_ALLOWED_SERVER_HOSTS" in error


async def test_a_listed_server_host_may_be_registered(tmp_path: Path) -> None:
    port = closed_port()
    config = ApiConfig(api_key=KEY, allowed_server_hosts=frozenset({"box.invalid"}))
    app, dbs = await make_api(tmp_path, config)
    async with client_of(app) as client:
        for url in (f"http://box.invalid:{port}", f"http://localhost:{port}"):
            response = await client.post("/api/register", json={"projectPath": "demo", "url": url})
            assert response.status_code == 422
            # past the host rule: the server itself was tried
            assert "No OpenCode server answers" in response.json()["error"], url
    for db in dbs:
        await db.close()


async def test_credentials_in_a_server_url_are_refused(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/api/register", json={"projectPath": "demo", "url": "http://opencode:pw@127.0.0.1:4096"}
    )
    assert response.status_code == 422
    assert "must not contain credentials" in response.json()["error"]
