"""What the servers layer tells core, and asks it. Core implements `ServerListener`; the
composition root hands it to the event streams and the instance manager at construction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from oc_outpost.model import InstanceInfo
from oc_outpost.opencode import events as ev
from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.servers.process import ServerProcess


@dataclass(frozen=True)
class RunningInstance:
    info: InstanceInfo
    client: OpenCodeClient
    server: ServerProcess | None  # None for servers the bot did not start


class ServerListener(Protocol):
    async def on_event(self, instance_id: str, client: OpenCodeClient, event: ev.Event) -> None:
        """One typed event of the instance's stream, in order."""

    async def on_reconnect(self, instance_id: str, client: OpenCodeClient) -> None:
        """The stream came back; nothing missed is replayed, so catch up (reconcile)."""

    def is_busy(self, instance_id: str) -> bool:
        """A turn is running or waiting for a permission/question answer."""

    async def instance_down(self, instance_ids: Sequence[str], reason: str) -> None:
        """The server crashed or hung; a restart is coming."""

    async def instance_up(self, instances: Sequence[RunningInstance]) -> None:
        """The server is back after a crash (same instance ids), its streams reconnected."""

    async def instance_failed(self, instance_ids: Sequence[str], reason: str) -> None:
        """Every restart attempt failed; the instances are in error state."""

    async def instance_stopped(self, instance_ids: Sequence[str], reason: str) -> None:
        """Stopped on purpose (idle, evicted, shut down); the next message wakes it."""
