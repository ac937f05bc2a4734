"""Plain snapshots of the OpenCode side for `/status`, `/sessions` and `/connect`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from oc_outpost.model import InstanceKind, InstanceState, SessionSummary


@dataclass(frozen=True)
class ServerStatus:
    """One OpenCode server known to the bot. Durations are seconds."""

    instance_id: str
    kind: InstanceKind
    state: InstanceState
    project_path: str
    port: int | None = None
    url: str | None = None
    pid: int | None = None
    uptime_s: float | None = None  # since this process started (or was adopted)
    idle_s: float | None = None  # since the last prompt or agent activity (managed only)
    projects: int = 1  # directories served: more than one for the shared server


@dataclass(frozen=True)
class OrchestratorStatus:
    servers: tuple[ServerStatus, ...]
    ports_used: int
    ports_total: int
    uptime_s: float  # of the instance manager, i.e. of the bot
    shared_server: bool
    max_instances: int

    def counts(self) -> dict[tuple[InstanceKind, InstanceState], int]:
        """How many servers there are of each (kind, state)."""
        return dict(Counter((s.kind, s.state) for s in self.servers))


@dataclass(frozen=True)
class DiscoveredServer:
    """An OpenCode server on this machine that the bot did not start."""

    instance_id: str
    pid: int
    port: int
    url: str
    cwd: str | None
    auth_required: bool  # protected by a password we do not know: listed, not usable
    version: str | None = None
    error: str | None = None
    sessions: tuple[SessionSummary, ...] = ()
