"""What the controller returns to the chat layer: plain data to render."""

from __future__ import annotations

from dataclasses import dataclass

from oc_outpost.model import InstanceInfo, InstanceKind, TopicBinding
from oc_outpost.servers.status import OrchestratorStatus


@dataclass(frozen=True)
class SessionEntry:
    session_id: str
    title: str
    project: str
    directory: str
    instance_id: str
    kind: InstanceKind
    updated_s: int
    topic_id: int | None = None


@dataclass(frozen=True)
class SessionList:
    entries: tuple[SessionEntry, ...]
    unreachable: tuple[str, ...] = ()  # projects whose server did not answer


@dataclass(frozen=True)
class SessionDetails:
    binding: TopicBinding
    instance: InstanceInfo | None
    title: str | None = None
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    busy: bool = False
    note: str | None = None


@dataclass(frozen=True)
class StatusReport:
    orchestrator: OrchestratorStatus  # servers by kind and state, port pool, uptime
    pending: int
    topics: int
    busy_turns: int


@dataclass(frozen=True)
class ClearReport:
    removed: tuple[tuple[TopicBinding, str], ...]
    kept: int
