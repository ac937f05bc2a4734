"""End-to-end tests: after the whole session, no OpenCode server started by a test may be left.

A test's OpenCode runs with HOME under pytest's base temporary directory (the hermetic
environment), which is how its processes are recognised here, whoever started them (the bot, a
test, a fixture). Survivors are killed and reported as an error of the last test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from oc_outpost.servers.process import is_opencode_server


def opencode_servers_under(base: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        try:
            if not is_opencode_server(process) or process.status() == psutil.STATUS_ZOMBIE:
                continue
            home = process.environ().get("HOME", "")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if home and Path(home).is_relative_to(base):
            found.append(process)
    return found


@pytest.fixture(scope="session", autouse=True)
def no_opencode_left_behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    yield
    base = tmp_path_factory.getbasetemp()
    leftovers = opencode_servers_under(base)
    described = [f"pid {p.pid}: {' '.join(p.cmdline())}" for p in leftovers]
    for process in leftovers:
        process.kill()
    psutil.wait_procs(leftovers, timeout=5)
    assert not leftovers, f"OpenCode servers outlived the test session: {described}"
