"""Memory of N projects: one OpenCode server per project vs one shared server.

    uv run python bench/rss_bench.py            # N = 1, 3, 5
    uv run python bench/rss_bench.py --counts 2 4

Offline and hermetic, like the tests: the pinned OpenCode binary (installed into the test cache
on first use) and the mock LLM from tests/rig. For each mode and N the servers are started through
`InstanceManager` (the bot's own code path), every project gets a session and one answered prompt
(so each project's OpenCode instance is loaded), and then the resident set size of every server
process and its children is summed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.rig

from tests.rig.mock_llm import MockLLM
from tests.rig.opencode_bin import INHERITED_VARS_TO_DROP, ensure_opencode, hermetic_env

from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.opencode.wire import TextInput
from oc_outpost.servers.manager import InstanceManager, ManagerConfig
from oc_outpost.store.db import Database
from oc_outpost.store.instances import InstanceStore
from oc_outpost.store.migrations import ORCHESTRATOR_MIGRATIONS

MB = 1024 * 1024
TURN_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Measurement:
    mode: str
    projects: int
    servers: int
    rss_bytes: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tree_rss(pid: int) -> int:
    process = psutil.Process(pid)
    members = [process, *process.children(recursive=True)]
    return sum(p.memory_info().rss for p in members if p.is_running())


async def answer_one_prompt(client: OpenCodeClient) -> None:
    session = await client.create_session(title="rss bench")
    await client.prompt_async(session.id, [TextInput(text="hello")])
    async with asyncio.timeout(TURN_TIMEOUT_S):
        while True:
            await asyncio.sleep(0.2)
            if session.id not in await client.session_status():
                messages = await client.messages(session.id)
                if any(m.info.role == "assistant" and m.info.completed for m in messages):
                    return


async def measure(binary: Path, scratch: Path, projects: int, shared: bool) -> Measurement:
    base = scratch / "projects"
    paths = [base / f"project{i}" for i in range(projects)]
    for path in paths:
        path.mkdir(parents=True)
    async with await Database.open(scratch / "orchestrator.db", ORCHESTRATOR_MIGRATIONS) as db:
        manager = InstanceManager(
            ManagerConfig(
                binary=str(binary),
                port_start=free_port(),
                pool_size=projects + 10,
                max_instances=projects,
                startup_timeout_s=120.0,
                request_timeout_s=60.0,
                log_dir=scratch / "logs",
                shared_dir=base if shared else None,
            ),
            InstanceStore(db),
        )
        try:
            running = [await manager.ensure_running(path) for path in paths]
            await asyncio.gather(*(answer_one_prompt(r.client) for r in running))
            await asyncio.sleep(1.0)  # let the post-turn work (title, summary) settle
            pids = manager.managed_pids()
            rss = sum(tree_rss(pid) for pid in pids)
        finally:
            await manager.stop_all()
    return Measurement("shared" if shared else "per-project", projects, len(pids), rss)


async def main(counts: list[int]) -> None:
    binary = ensure_opencode()
    results = []
    with MockLLM() as llm:
        for shared in (False, True):
            for count in counts:
                with tempfile.TemporaryDirectory(prefix="oc-rss-") as tmp:
                    scratch = Path(tmp)
                    for name in INHERITED_VARS_TO_DROP:
                        os.environ.pop(name, None)
                    os.environ.update(hermetic_env(scratch / "oc", llm.base_url))
                    result = await measure(binary, scratch, count, shared)
                results.append(result)
                print_row(result, flush=True)


def print_row(m: Measurement, *, flush: bool = False) -> None:
    total = m.rss_bytes / MB
    print(
        f"{m.mode:<12} N={m.projects:<2} servers={m.servers:<2} "
        f"total RSS={total:8.0f} MB   per project={total / m.projects:6.0f} MB",
        flush=flush,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 3, 5])
    asyncio.run(main(parser.parse_args().counts))
