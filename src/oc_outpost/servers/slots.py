"""The manager's bookkeeping: a *slot* is one managed server process (running or not), a *view*
one project it serves under its own instance id. Per-project mode has one view per slot; the
shared server has one view per project, each with a client that sends `?directory=<project>`."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from oc_outpost.model import InstanceInfo
from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.servers.process import ServerProcess


@dataclass(eq=False)
class View:
    """One project served by a slot: its instance id and its client."""

    instance_id: str
    directory: Path
    client: OpenCodeClient | None = None


@dataclass(eq=False)
class Slot:
    """One managed server process (running or not) and the projects it serves."""

    info: InstanceInfo  # the stored row
    cwd: Path
    shared: bool
    views: dict[str, View] = field(default_factory=dict)
    server: ServerProcess | None = None
    client: OpenCodeClient | None = None  # no directory: health checks, the cwd's sessions
    client_key: tuple[str, str] | None = None  # (base url, password) the clients were made for
    last_active: float = 0.0
    started_at: float | None = None
    health_failures: int = 0
    failing_since: float | None = None
    crashed: bool = False
    recovery: asyncio.Task[None] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def alive(self) -> bool:
        return self.server is not None and self.server.is_alive()

    def clients(self) -> list[OpenCodeClient]:
        """The clients that ask OpenCode about this slot's projects (views first)."""
        views = [v.client for v in self.views.values() if v.client is not None]
        return views or ([self.client] if self.client is not None else [])


def new_instance_id() -> str:
    return f"inst_{secrets.token_hex(4)}"


def shared_view_id(directory: Path) -> str:
    return "inst_" + hashlib.sha256(str(directory).encode()).hexdigest()[:8]
