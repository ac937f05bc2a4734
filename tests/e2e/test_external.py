"""External OpenCode servers end to end: an `opencode serve` started outside the bot is handed to
Telegram through the HTTP API and through `oc-outpost link`, answers prompts typed in its topic,
and keeps running after it is unregistered."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from oc_outpost.api_key import api_key_file
from oc_outpost.servers.managed import ManagedServer
from oc_outpost.servers.pool import find_free_port
from tests.rig.bot_fixtures import RunningBot

pytestmark = pytest.mark.timeout(120)

CLI = Path(sys.executable).parent / "oc-outpost"


@pytest.fixture
async def desk_server(bot: RunningBot, opencode_bin: Path) -> AsyncIterator[ManagedServer]:
    """An OpenCode server the bot did not start, like a TUI at the developer's desk."""
    project = bot.projects / "desk"
    project.mkdir()
    server = await ManagedServer.start(
        opencode_bin, project, find_free_port(20000, 2000), startup_timeout_s=30
    )
    yield server
    await server.stop()


def api_key(bot: RunningBot) -> str:
    """The key the bot generated at its start (no API_KEY is configured)."""
    return api_key_file(bot.settings.orchestrator_db_path).read_text().strip()


def is_ours(instance: dict[str, object]) -> bool:
    """Managed or registered, not an OpenCode server merely found running on the machine."""
    return instance["kind"] != "discovered"


def api(bot: RunningBot) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{bot.settings.api_port}",
        headers={"Authorization": f"Bearer {api_key(bot)}"},
        timeout=30,
    )


async def test_register_prompt_duplicate_unregister(
    bot: RunningBot, desk_server: ManagedServer
) -> None:
    body = {"projectPath": "desk", "port": desk_server.port, "password": desk_server.password}
    async with api(bot) as client:
        first = await client.post("/api/register", json=body)
        assert first.status_code == 201, first.text
        registered = first.json()
        topic = registered["topic_id"]
        assert registered["created"] is True
        assert registered["session_id"].startswith("ses_")
        await bot.wait_message(topic, "Connected to the OpenCode session")

        await bot.say("hello desk", topic)
        await bot.wait_message(topic, lambda m: m.text == "Hello from mock! You said: hello desk")

        again = await client.post(
            "/api/register", json=body | {"session_id": registered["session_id"]}
        )
        assert again.status_code == 200
        assert again.json()["topic_id"] == topic and again.json()["created"] is False

        # (servers found running on this machine are listed too: other test runs, a TUI)
        listed = [i for i in (await client.get("/api/instances")).json() if is_ours(i)]
        assert [i["kind"] for i in listed] == ["external"]
        assert "password" not in listed[0]
        status = (await client.get("/api/status/desk")).json()
        assert status["registered"] is True and status["topics"][0]["topic_id"] == topic

        gone = await client.post("/api/unregister", json={"project_path": "desk"})
        assert gone.status_code == 200 and gone.json()["topic_ids"] == [topic]
        await bot.wait_message(topic, "unregistered; the OpenCode server keeps running")
        assert (await client.get("/api/status/desk")).json()["registered"] is False

    assert desk_server.is_alive()
    async with httpx.AsyncClient(auth=desk_server.auth, timeout=5) as direct:
        health = await direct.get(f"{desk_server.base_url}/global/health")
    assert health.json()["healthy"] is True


async def test_link_command_sends_the_desk_session(
    bot: RunningBot, desk_server: ManagedServer
) -> None:
    async with httpx.AsyncClient(auth=desk_server.auth, timeout=10) as direct:
        created = await direct.post(f"{desk_server.base_url}/session", json={"title": "at my desk"})
    session_id = created.json()["id"]
    env = os.environ | {
        "API_PORT": str(bot.settings.api_port),
        # link finds the generated key beside the bot's database
        "ORCHESTRATOR_DB_PATH": str(bot.settings.orchestrator_db_path),
        "OPENCODE_SERVER_PASSWORD": desk_server.password,
    }
    process = await asyncio.create_subprocess_exec(
        str(CLI),
        "link",
        cwd=desk_server.project_dir,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    assert f"Sent session {session_id} of {desk_server.project_dir}" in out.decode()
    topic = next(tid for tid, t in bot.fake.topics.items() if t.name == "desk · at my desk")
    await bot.wait_message(topic, f"Connected to the OpenCode session {session_id}")
    await bot.say("hello from the phone", topic)
    await bot.wait_message(
        topic, lambda m: m.text == "Hello from mock! You said: hello from the phone"
    )


async def test_a_session_bound_to_another_server_cannot_be_moved_by_registering_it(
    bot: RunningBot, desk_server: ManagedServer
) -> None:
    """Any local process may call the API with the key; it must not take over a topic."""
    topic = await bot.new_topic("demo")
    welcome = await bot.wait_message(topic, "Session: ses_")
    session_id = (welcome.text or "").split("Session: ")[1].split()[0]
    body = {"project_path": "demo", "port": desk_server.port, "password": desk_server.password}
    async with api(bot) as client:
        # the desk server shares OpenCode's storage, so it knows the managed session too
        moved = await client.post("/api/register", json=body | {"session_id": session_id})
        assert moved.status_code == 409, moved.text
        assert "already linked" in moved.json()["error"]
        listed = [i for i in (await client.get("/api/instances")).json() if is_ours(i)]
        status = (await client.get("/api/status/demo")).json()

    assert [i["kind"] for i in listed] == ["managed"]  # no external row was left behind
    assert status["registered"] is False and status["topics"] == []
    await bot.say("still mine?", topic)  # the topic still talks to its own server
    await bot.wait_message(topic, lambda m: m.text == "Hello from mock! You said: still mine?")


async def test_a_failed_registration_leaves_no_row_client_or_stream(
    bot: RunningBot, desk_server: ManagedServer
) -> None:
    body = {"project_path": "desk", "port": desk_server.port, "password": desk_server.password}
    async with api(bot) as client:
        missing = await client.post("/api/register", json=body | {"session_id": "ses_nothere"})
        listed = [i for i in (await client.get("/api/instances")).json() if is_ours(i)]

    assert missing.status_code == 404, missing.text
    assert listed == []
