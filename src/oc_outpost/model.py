"""The shared vocabulary of every layer: servers (instances), topic bindings, session summaries.

A leaf: it imports nothing of ours. An *instance* is one OpenCode server the bot can talk to, of
one of three kinds: managed (started and supervised by the bot), discovered (found running on
this machine) or external (registered over the HTTP API). Times are UTC seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class InstanceState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    ERROR = "error"


class InstanceKind(StrEnum):
    MANAGED = "managed"
    DISCOVERED = "discovered"
    EXTERNAL = "external"


@dataclass(frozen=True)
class InstanceInfo:
    """One OpenCode server known to the bot. Times are UTC seconds."""

    id: str
    kind: InstanceKind
    project_path: str
    state: InstanceState
    created_at: int
    updated_at: int
    port: int | None = None
    url: str | None = None
    pid: int | None = None
    session_id: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        if self.url:
            return self.url.rstrip("/")
        if self.port is None:
            raise ValueError(f"instance {self.id} has neither url nor port")
        return f"http://127.0.0.1:{self.port}"


@dataclass(frozen=True)
class TopicBinding:
    """A forum topic bound to a project directory and an OpenCode session. Times are UTC seconds."""

    chat_id: int
    topic_id: int
    project_path: str
    created_at: int
    updated_at: int
    session_id: str | None = None
    instance_id: str | None = None
    streaming_enabled: bool = True
    topic_name_updated: bool = False


@dataclass(frozen=True)
class SessionSummary:
    """An OpenCode session as listed by a server (for `/sessions` and `/connect`)."""

    session_id: str
    title: str
    directory: str
    updated_at: int


@dataclass(frozen=True)
class ReceivedUpdate:
    """A Telegram update as the Bot API delivered it, kept until it was handled."""

    update_id: int
    data: str  # JSON
