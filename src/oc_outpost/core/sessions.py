"""Sessions: what every server the bot can reach offers (`/sessions`, `/connect`), finding one by
project or id, a session's usage (`/session`) and the tail of its history.

Listed are the sessions of the running managed servers, of the OpenCode servers discovered on
this machine (a password-protected one is listed as such, without sessions) and of the external
servers registered through the API.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from oc_outpost.core.bindings import Bindings
from oc_outpost.core.chat import HistoryEntry
from oc_outpost.core.errors import Conflict, NotFound, Unavailable
from oc_outpost.core.projects import find_project, project_key
from oc_outpost.core.replies import SessionDetails, SessionEntry, SessionList
from oc_outpost.model import InstanceInfo, InstanceKind, SessionSummary, TopicBinding
from oc_outpost.opencode import events as ev
from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.opencode.errors import OpenCodeError
from oc_outpost.opencode.wire import MessageWithParts, Session
from oc_outpost.servers.registry import ServerRegistry
from oc_outpost.servers.status import DiscoveredServer

log = logging.getLogger(__name__)

SESSIONS_PER_SERVER = 50
HISTORY_MESSAGES = 6
HISTORY_CHARS = 700


@dataclass(frozen=True)
class ServerSessions:
    instance_id: str
    kind: InstanceKind
    project_path: str
    url: str | None
    auth_required: bool = False
    error: str | None = None
    sessions: tuple[SessionSummary, ...] = ()


class SessionCatalog:
    def __init__(self, registry: ServerRegistry, bindings: Bindings, project_base: Path) -> None:
        self._registry = registry
        self._bindings = bindings
        self._base = project_base

    async def listing(self) -> SessionList:
        """Sessions of every server the bot can reach, newest first."""
        entries: list[SessionEntry] = []
        unreachable: list[str] = []
        for server in await self.servers():
            name = Path(server.project_path).name or server.url or server.instance_id
            if server.auth_required:
                unreachable.append(f"{name} (protected by a password the bot does not know)")
            elif server.error:
                unreachable.append(f"{name} ({server.error})")
            entries.extend(self._entry(server, session) for session in server.sessions)
        entries.sort(key=lambda e: e.updated_s, reverse=True)
        return SessionList(tuple(entries), tuple(unreachable))

    async def servers(self) -> list[ServerSessions]:
        """Each reachable server with its sessions (or why it cannot be asked)."""
        managed = [
            listed(r.info, r.client, own_directory=True) for r in self._registry.running_managed()
        ]
        external = [
            listed(info, client, own_directory=False)
            for info in await self._registry.external_instances()
            if (client := self._registry.client(info.id)) is not None
        ]
        found = await asyncio.gather(*managed, *external)
        discovered = [_discovered(d) for d in await self._registry.discover()]
        return [*found, *discovered]

    def _entry(self, server: ServerSessions, session: SessionSummary) -> SessionEntry:
        bound = self._bindings.by_session(session.session_id)
        directory = session.directory or server.project_path
        return SessionEntry(
            session_id=session.session_id,
            title=session.title,
            project=Path(directory).name,
            directory=directory,
            instance_id=server.instance_id,
            kind=server.kind,
            updated_s=session.updated_at,
            topic_id=bound.topic_id if bound else None,
        )

    async def find(self, query: str) -> SessionEntry:
        """The free session named by ``query``: a session id, or a project's newest session.
        A project whose server is stopped is woken to list its sessions."""
        listing = await self.listing()
        if query.startswith("ses_"):
            entry = next((e for e in listing.entries if e.session_id == query), None)
            if entry is None:
                raise NotFound(
                    f"No running OpenCode server has session {query}. /sessions lists them."
                )
            _refuse_bound(entry)
            return entry
        candidates = [e for e in listing.entries if e.project == query]
        is_project = find_project(self._base, project_key(query)) is not None
        if not candidates and is_project:
            candidates = await self._sessions_of_project((self._base / query).resolve())
        free = [e for e in candidates if e.topic_id is None]
        if free:
            return free[0]
        if candidates:
            _refuse_bound(candidates[0])
        if is_project:
            raise NotFound(f"{query} has no OpenCode session yet: /new {query} starts one.")
        raise NotFound(f"No project or session named {query}. /sessions lists them.")

    async def _sessions_of_project(self, path: Path) -> list[SessionEntry]:
        running = await self._registry.connect(None, path)
        server = await listed(running.info, running.client, own_directory=True)
        if server.error:
            raise Unavailable(f"Could not list the sessions of {path.name}: {server.error}")
        found = [self._entry(server, s) for s in server.sessions]
        return sorted(found, key=lambda e: e.updated_s, reverse=True)

    async def info(self, binding: TopicBinding, *, busy: bool) -> SessionDetails:
        """`/session`: the binding, its server, and the session's title, model and usage."""
        assert binding.session_id is not None
        instances = await self._registry.all_instances()
        instance = next((i for i in instances if i.id == binding.instance_id), None)
        client = self._registry.client(binding.instance_id)
        if client is None:
            note = "Its OpenCode server is stopped; it starts on your next message."
            return SessionDetails(binding, instance, busy=busy, note=note)
        try:
            session = await client.get_session(binding.session_id)
            messages = await client.messages(binding.session_id)
        except OpenCodeError as exc:
            return SessionDetails(
                binding, instance, busy=busy, note=f"OpenCode did not answer: {exc}"
            )
        return _usage(binding, instance, session, messages, busy)


def _refuse_bound(entry: SessionEntry) -> None:
    if entry.topic_id is not None:
        raise Conflict(
            f"“{entry.title}” is already connected in its topic; continue there "
            "(or /disconnect it first)."
        )


async def listed(
    info: InstanceInfo, client: OpenCodeClient, *, own_directory: bool
) -> ServerSessions:
    """The server's top-level sessions (``own_directory``: only those of its project)."""
    listing = ServerSessions(info.id, info.kind, info.project_path, client.base_url)
    try:
        sessions = await client.list_sessions(limit=SESSIONS_PER_SERVER)
    except OpenCodeError as exc:
        log.warning("listing the sessions of %s failed: %s", info.id, exc)
        return replace(listing, error=str(exc))
    # A per-project server's cwd is its project; OpenCode may also list other directories'
    # sessions kept in the same database ("global" project), which belong to other servers.
    mine = client.directory or info.project_path
    found = tuple(
        summary(s)
        for s in sessions
        if s.parent_id is None and (not own_directory or s.directory == mine)
    )
    return replace(listing, sessions=found)


def summary(session: Session) -> SessionSummary:
    updated = (session.time.updated or session.time.created) // 1000
    return SessionSummary(session.id, session.title, session.directory, updated)


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


def history_tail(
    messages: Sequence[MessageWithParts], count: int = HISTORY_MESSAGES
) -> list[HistoryEntry]:
    """The last ``count`` messages that carry text, each cut to a readable length."""
    entries: list[HistoryEntry] = []
    for message in messages:
        texts = [
            part.text.strip()
            for part in message.parts
            if isinstance(part, ev.TextPart) and not part.synthetic and part.text.strip()
        ]
        if texts:
            text = "\n\n".join(texts)
            if len(text) > HISTORY_CHARS:
                text = text[: HISTORY_CHARS - 1] + "…"
            entries.append(HistoryEntry(message.info.role, text))
    return entries[-count:]


def _usage(
    binding: TopicBinding,
    instance: InstanceInfo | None,
    session: Session,
    messages: Sequence[MessageWithParts],
    busy: bool,
) -> SessionDetails:
    model = None
    input_tokens = output_tokens = 0
    cost = 0.0
    for message in messages:
        if message.info.role != "assistant":
            continue
        if message.info.model_id:
            model = f"{message.info.provider_id}/{message.info.model_id}"
        input_tokens += message.info.tokens.input
        output_tokens += message.info.tokens.output
        cost += message.info.cost
    return SessionDetails(
        binding,
        instance,
        title=session.title,
        model=model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost=cost,
        busy=busy,
    )
