"""The sessions the bot can offer for `/sessions` and `/connect`: those of the running managed
servers and of the OpenCode servers discovered on this machine (plain data for the chat layer).

A discovered server's instance id works with `InstanceManager.get()` (so `/connect` can bind one
of its sessions and approvals can be answered); a password-protected one is listed with
`auth_required` and no sessions.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace

from oc_outpost.core.types import InstanceKind
from oc_outpost.opencode.errors import OpenCodeError
from oc_outpost.orchestrator.manager import InstanceManager, RunningInstance
from oc_outpost.orchestrator.status import DiscoveredServer, SessionInfo

log = logging.getLogger(__name__)

SESSIONS_PER_SERVER = 50

__all__ = ["ServerSessions", "SessionInfo", "list_sessions"]


@dataclass(frozen=True)
class ServerSessions:
    instance_id: str
    kind: InstanceKind
    project_path: str
    url: str | None
    auth_required: bool = False
    error: str | None = None
    sessions: tuple[SessionInfo, ...] = ()


async def list_sessions(instances: InstanceManager) -> list[ServerSessions]:
    managed = await asyncio.gather(*(_managed(r) for r in instances.running()))
    discovered = [_discovered(d) for d in await instances.discover()]
    return [*managed, *discovered]


async def _managed(running: RunningInstance) -> ServerSessions:
    info = running.info
    listing = ServerSessions(info.id, info.kind, info.project_path, running.client.base_url)
    try:
        sessions = await running.client.list_sessions(limit=SESSIONS_PER_SERVER)
    except OpenCodeError as exc:
        log.warning("listing the sessions of %s failed: %s", info.id, exc)
        return replace(listing, error=str(exc))
    # A per-project server's cwd is its project; OpenCode may also list other directories'
    # sessions kept in the same database ("global" project), which belong to other servers.
    mine = running.client.directory or info.project_path
    found = tuple(
        SessionInfo(s.id, s.title, s.directory, (s.time.updated or s.time.created) // 1000)
        for s in sessions
        if s.parent_id is None and s.directory == mine
    )
    return replace(listing, sessions=found)


def _discovered(server: DiscoveredServer) -> ServerSessions:
    return ServerSessions(
        instance_id=server.instance_id,
        kind=InstanceKind.DISCOVERED,
        project_path=server.cwd or "",
        url=server.url,
        auth_required=server.auth_required,
        error=server.error,
        sessions=server.sessions,
    )
