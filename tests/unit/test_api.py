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

from oc_outpost.api.server import ApiServer, ApiStartError, build_api
from oc_outpost.core.bindings import Bindings
from oc_outpost.core.external import ExternalServers
from oc_outpost.core.streams import EventStreams
from oc_outpost.metrics import Metrics
from oc_outpost.store.db import Database
from oc_outpost.store.instances import InstanceStore
from oc_outpost.store.migrations import ORCHESTRATOR_MIGRATIONS, TOPIC_MIGRATIONS
from oc_outpost.store.topics import TopicStore

KEY = "test-api-key"
CHAT = -100777


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


async def _no_events(*_: Any) -> None:
    return None


async def make_api(
    tmp_path: Path, api_key: str | None, metrics: Metrics | None = None
) -> tuple[FastAPI, list[Database]]:
    (tmp_path / "projects" / "demo").mkdir(parents=True)
    orchestrator = await Database.open(tmp_path / "o.db", ORCHESTRATOR_MIGRATIONS)
    topics = await Database.open(tmp_path / "t.db", TOPIC_MIGRATIONS)
    bindings = Bindings(TopicStore(topics), CHAT)
    externals = ExternalServers(
        project_base=tmp_path / "projects",
        chat=RecordingChat(),  # type: ignore[arg-type]
        bindings=bindings,
        streams=EventStreams(_no_events),
        store=InstanceStore(orchestrator),
    )
    return build_api(externals, api_key, metrics), [orchestrator, topics]


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app, dbs = await make_api(tmp_path, KEY)
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://api", headers=headers) as c:
        yield c
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
    app, dbs = asyncio.run(make_api(root, KEY))
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


schema = schemathesis.openapi.from_asgi("/openapi.json", _contract_app())


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
    case.call_and_validate(
        headers={"Authorization": f"Bearer {KEY}"}, excluded_checks=[positive_data_acceptance]
    )


async def test_a_busy_port_is_reported_not_fatal(tmp_path: Path) -> None:
    app, dbs = await make_api(tmp_path, None)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = ApiServer(app, "127.0.0.1", taken.getsockname()[1])
        with pytest.raises(ApiStartError, match=r"cannot listen on 127\.0\.0\.1"):
            await server.start()
        await server.stop()
    for db in dbs:
        await db.close()
