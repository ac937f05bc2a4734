"""Pool ports and foreign servers, with the real binary: an orphaned OpenCode server on a pool
port that our records attribute to us is stopped at start-up; an unrelated program on a pool port
is left alone and its port skipped; OpenCode servers started outside the bot are discovered with
their sessions (a password-protected one is listed as such)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from oc_outpost.app import RunOptions
from oc_outpost.config import Settings
from oc_outpost.model import InstanceInfo, InstanceKind, InstanceState
from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.store.db import Database
from oc_outpost.store.instances import InstanceStore
from oc_outpost.store.migrations import ORCHESTRATOR_MIGRATIONS
from tests.rig.app_bot import AppBot, start_outside_server, stop_outside_server
from tests.rig.bot_fixtures import bot_settings, free_port
from tests.rig.fake_telegram import FakeTelegram

pytestmark = pytest.mark.timeout(90)

LISTENER = """
import socket, sys, time
sock = socket.socket()
sock.bind(("127.0.0.1", int(sys.argv[1])))
sock.listen()
print("listening", flush=True)
time.sleep(300)
"""


def unrelated_listener(port: int) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", LISTENER, str(port)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "listening"
    return process


def is_running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def record_as_ours(db_path: Path, info: InstanceInfo) -> None:
    async with await Database.open(db_path, ORCHESTRATOR_MIGRATIONS) as db:
        await InstanceStore(db).save(info)


@dataclass
class Outsiders:
    """Processes the test starts outside the bot: a non-OpenCode listener and three servers."""

    stranger: subprocess.Popen[str]
    orphan: subprocess.Popen[bytes]
    outside: subprocess.Popen[bytes]
    locked: subprocess.Popen[bytes]
    ports: dict[str, int]


@pytest.fixture
async def outsiders(
    fake_telegram: FakeTelegram, opencode_bin: Path, opencode_env: dict[str, str], tmp_path: Path
) -> AsyncIterator[tuple[Settings, Outsiders]]:
    settings = bot_settings(fake_telegram, opencode_bin, tmp_path, OPENCODE_PORT_POOL_SIZE="5")
    ports = {
        "stranger": settings.port_range[0],
        "orphan": settings.port_range[1],
        "outside": free_port(),
        "locked": free_port(),
    }
    logs = tmp_path / "logs"
    for name in ("stray", "outside", "locked", "logs"):
        (tmp_path / name).mkdir()
    servers: list[subprocess.Popen[bytes]] = []
    stranger = unrelated_listener(ports["stranger"])
    try:
        # The first start creates OpenCode's database; starting on a new one together can fail
        # with "database is locked".
        servers.append(
            await start_outside_server(
                opencode_bin, tmp_path / "stray", ports["orphan"], password="x", log=logs / "1"
            )
        )
        servers += await asyncio.gather(
            start_outside_server(
                opencode_bin, tmp_path / "outside", ports["outside"], log=logs / "2"
            ),
            start_outside_server(
                opencode_bin, tmp_path / "locked", ports["locked"], password="y", log=logs / "3"
            ),
        )
        orphan, outside, locked = servers
        yield settings, Outsiders(stranger, orphan, outside, locked, ports)
    finally:
        for server in servers:
            stop_outside_server(server)
        stranger.kill()
        stranger.wait()


async def test_orphans_are_stopped_strangers_skipped_and_outside_servers_discovered(
    fake_telegram: FakeTelegram, outsiders: tuple[Settings, Outsiders], tmp_path: Path
) -> None:
    settings, out = outsiders
    orphan, stranger = out.orphan, out.stranger
    orphan_port, outside_port, locked_port = (out.ports[k] for k in ("orphan", "outside", "locked"))
    bot = AppBot(fake_telegram, settings, options=RunOptions(poll_timeout_s=1))
    try:
        async with OpenCodeClient(f"http://127.0.0.1:{outside_port}", timeout=30) as client:
            session = await client.create_session(title="work started in a terminal")
        now = int(time.time())
        await record_as_ours(
            settings.orchestrator_db_path,
            InstanceInfo(
                id="inst_0rphan00",
                kind=InstanceKind.MANAGED,
                project_path=str(tmp_path / "stray"),
                state=InstanceState.RUNNING,
                created_at=now,
                updated_at=now,
                port=orphan_port,
                pid=orphan.pid,
                password="a-password-it-does-not-have",  # so it cannot be adopted
            ),
        )

        await bot.start()

        assert not is_running(orphan.pid)  # ours by the records but not adoptable: stopped
        assert is_running(stranger.pid)  # not OpenCode: left alone
        topic = await bot.new_topic("demo")
        running = bot.running_app.core.registry.manager.get(bot.instance_id(topic))
        assert running is not None and running.info.port == orphan_port  # stranger's port skipped
        assert is_running(stranger.pid)

        listing = {entry.url: entry for entry in await bot.running_app.core.catalog.servers()}
        found = listing[f"http://127.0.0.1:{outside_port}"]
        assert found.kind == InstanceKind.DISCOVERED and not found.auth_required
        assert Path(found.project_path) == tmp_path / "outside"
        assert [s.session_id for s in found.sessions] == [session.id]
        assert found.sessions[0].title == "work started in a terminal"
        protected = listing[f"http://127.0.0.1:{locked_port}"]
        assert protected.auth_required and protected.sessions == ()
        ours = [e for e in listing.values() if e.instance_id == running.info.id]
        assert [e.kind for e in ours] == [InstanceKind.MANAGED]
        assert running.client.base_url not in {
            e.url for e in listing.values() if e.kind == InstanceKind.DISCOVERED
        }
        registry = bot.running_app.core.registry
        discovered = registry.client(found.instance_id)
        assert (
            discovered is not None and registry.kind(found.instance_id) == InstanceKind.DISCOVERED
        )
        assert [s.id for s in await discovered.list_sessions()] == [session.id]
        status = await bot.running_app.core.registry.status()
        kinds = status.counts()
        assert kinds[(InstanceKind.MANAGED, InstanceState.RUNNING)] == 1
        assert kinds[(InstanceKind.DISCOVERED, InstanceState.RUNNING)] >= 2
        assert (status.ports_used, status.ports_total) == (1, 5)
    finally:
        await bot.stop()
