"""After a bot restart: OpenCode servers on pool ports that our records attribute to us but
that no slot runs (orphans of an earlier run that could not be adopted) are stopped. Anything
else on a pool port is left alone (the pool skips that port). Adopting the healthy ones is
`InstanceManager.start`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence

from oc_outpost.model import InstanceInfo
from oc_outpost.servers.process import is_opencode_server_pid, listeners_on, process_cwd, terminate

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


async def reclaim_orphans(
    ports: Iterable[int],
    ours: Collection[int],
    rows: Sequence[InstanceInfo],
    *,
    grace_s: float,
    sleep: Sleep = asyncio.sleep,
) -> None:
    listeners = await asyncio.to_thread(listeners_on, ports)
    for port, pid in sorted(listeners.items()):
        if pid is None or pid in ours:
            continue
        owner = await asyncio.to_thread(attributed_row, rows, port, pid)
        if owner is None or not await asyncio.to_thread(is_opencode_server_pid, pid):
            log.info("pool port %d is used by pid %s, which is not ours; skipping it", port, pid)
            continue
        log.warning(
            "stopping orphan OpenCode pid %d on pool port %d (recorded as %s for %s)",
            pid, port, owner.id, owner.project_path,
        )  # fmt: skip
        await terminate(pid, grace_s, sleep=sleep)


def attributed_row(rows: Sequence[InstanceInfo], port: int, pid: int) -> InstanceInfo | None:
    """The managed row that says the process on `port` is ours: same port and pid, or same port
    and directory when the pid was never recorded."""
    for row in rows:
        if row.port != port:
            continue
        if row.pid == pid or (row.pid is None and process_cwd(pid) == row.project_path):
            return row
    return None
