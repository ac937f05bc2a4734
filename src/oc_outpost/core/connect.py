"""`/sessions` and `/connect`: the sessions of every server the bot can reach, and binding one
of them to a new topic with the tail of its history."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from oc_outpost.core.catalog import ServerSessions
from oc_outpost.core.catalog import SessionInfo as CatalogSession
from oc_outpost.core.chat import Chat, HistoryEntry
from oc_outpost.core.naming import is_placeholder, topic_name
from oc_outpost.core.ports import TopicGone
from oc_outpost.core.projects import ProjectError, find_project, project_key, resolve_inside
from oc_outpost.core.replies import CommandError, SessionEntry, SessionList
from oc_outpost.core.types import InstanceKind
from oc_outpost.opencode import events as ev
from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.opencode.errors import OpenCodeError
from oc_outpost.opencode.wire import MessageWithParts, Session
from oc_outpost.orchestrator.manager import InstanceError, InstanceManager
from oc_outpost.store.instances import InstanceStore

if TYPE_CHECKING:
    from oc_outpost.core.outpost import Outpost

HISTORY_MESSAGES = 6
HISTORY_CHARS = 700
SESSIONS_PER_SERVER = 30
SERVER_ERRORS = (InstanceError, OpenCodeError, OSError, TimeoutError)


class Connector:
    def __init__(
        self,
        outpost: Outpost,
        *,
        instances: InstanceManager,
        instance_store: InstanceStore,
        chat: Chat,
        project_base: Path,
    ) -> None:
        self._outpost = outpost
        self._bindings = outpost.bindings
        self._instances = instances
        self._instance_store = instance_store
        self._chat = chat
        self.base = project_base

    async def sessions(self) -> SessionList:
        """Sessions of every server the bot can reach: running managed ones, ones discovered
        on this machine, and external ones registered through the API."""
        listings = [*await self._outpost.list_sessions(), *await self._external_sessions()]
        entries: list[SessionEntry] = []
        unreachable: list[str] = []
        for listing in listings:
            name = Path(listing.project_path).name or listing.url or listing.instance_id
            if listing.auth_required:
                unreachable.append(f"{name} (protected by a password the bot does not know)")
            elif listing.error:
                unreachable.append(f"{name} ({listing.error})")
            entries.extend(self._entry(listing, session) for session in listing.sessions)
        entries.sort(key=lambda e: e.updated_s, reverse=True)
        return SessionList(tuple(entries), tuple(unreachable))

    def _entry(self, listing: ServerSessions, session: CatalogSession) -> SessionEntry:
        bound = self._bindings.by_session(session.session_id)
        directory = session.directory or listing.project_path
        return SessionEntry(
            session_id=session.session_id,
            title=session.title,
            project=Path(directory).name,
            directory=directory,
            instance_id=listing.instance_id,
            kind=listing.kind,
            updated_s=session.updated_at,
            topic_id=bound.topic_id if bound else None,
        )

    async def _external_sessions(self) -> list[ServerSessions]:
        listings = []
        for info in await self._instance_store.all():
            client = self._outpost.externals.client(info.id)
            if info.kind != InstanceKind.EXTERNAL or client is None:
                continue
            listing = ServerSessions(info.id, info.kind, info.project_path, info.url)
            try:
                sessions = await client.list_sessions(limit=SESSIONS_PER_SERVER)
            except OpenCodeError as exc:
                listings.append(replace(listing, error=str(exc)))
                continue
            found = tuple(_catalog_session(s) for s in sessions if s.parent_id is None)
            listings.append(replace(listing, sessions=found))
        return listings

    async def connect(self, query: str) -> None:
        """`/connect <project | session id>`: bind an existing session to a new topic."""
        query = query.strip()
        if not query:
            raise CommandError(
                "Usage: /connect <project name | session id>. /sessions lists the sessions."
            )
        entry = await self._find_session(query)
        try:
            path = resolve_inside(self.base, entry.directory)
        except ProjectError:
            raise CommandError(
                f"The session's directory {entry.directory} is outside {self.base}; "
                "only projects inside it can be connected."
            ) from None
        client = await self._client_for(entry)
        title = "" if is_placeholder(entry.title) else entry.title
        topic_id = await self._chat.create_topic(topic_name(path.name, title))
        try:
            binding = await self._bindings.bind(topic_id, path, entry.session_id, entry.instance_id)
            if title:
                await self._bindings.save(replace(binding, topic_name_updated=True))
            messages = await client.messages(entry.session_id, limit=4 * HISTORY_MESSAGES)
            await self._chat.show_history(topic_id, history_tail(messages))
        except (OpenCodeError, OSError) as exc:
            await self._bindings.unbind(topic_id)
            with contextlib.suppress(TopicGone):
                await self._chat.delete_topic(topic_id)
            raise CommandError(f"Could not connect the session: {exc}") from exc
        await self._chat.notify(
            topic_id,
            f"🔗 Connected to “{title or entry.session_id}” of {path.name}. Messages here go to "
            "this session and its activity is shown here.",
        )
        await self._chat.notify(None, f"✅ {title or entry.session_id} is connected in its topic.")

    async def _find_session(self, query: str) -> SessionEntry:
        listing = await self.sessions()
        if query.startswith("ses_"):
            entry = next((e for e in listing.entries if e.session_id == query), None)
            if entry is None:
                raise CommandError(
                    f"No running OpenCode server has session {query}. /sessions lists them."
                )
            self._refuse_bound(entry)
            return entry
        candidates = [e for e in listing.entries if e.project == query]
        if not candidates and find_project(self.base, project_key(query)) is not None:
            candidates = await self._sessions_of_project(self.base / query)
        free = [e for e in candidates if e.topic_id is None]
        if free:
            return free[0]
        if candidates:
            self._refuse_bound(candidates[0])
        if find_project(self.base, project_key(query)) is not None:
            raise CommandError(f"{query} has no OpenCode session yet: /new {query} starts one.")
        raise CommandError(f"No project or session named {query}. /sessions lists them.")

    async def _sessions_of_project(self, path: Path) -> list[SessionEntry]:
        try:
            running = await self._outpost.ensure_server(resolved(path))
            sessions = await running.client.list_sessions(limit=SESSIONS_PER_SERVER)
        except SERVER_ERRORS as exc:
            raise CommandError(f"Could not start OpenCode for {path.name}: {exc}") from exc
        info = running.info
        listing = ServerSessions(info.id, info.kind, info.project_path, running.client.base_url)
        found = [self._entry(listing, _catalog_session(s)) for s in sessions if not s.parent_id]
        return sorted(found, key=lambda e: e.updated_s, reverse=True)

    @staticmethod
    def _refuse_bound(entry: SessionEntry) -> None:
        if entry.topic_id is not None:
            raise CommandError(
                f"“{entry.title}” is already connected in its topic; continue there "
                "(or /disconnect it first)."
            )

    async def _client_for(self, entry: SessionEntry) -> OpenCodeClient:
        """The entry's server, with its event stream connected."""
        if entry.kind == InstanceKind.EXTERNAL:
            client = self._outpost.externals.client(entry.instance_id)
            if client is None:
                raise CommandError("That external OpenCode server is not reachable any more.")
            return client
        try:
            if entry.kind == InstanceKind.DISCOVERED:
                running = self._instances.get(entry.instance_id)
                if running is None:
                    raise CommandError("That OpenCode server is gone; see /sessions again.")
                await self._outpost.streams.ensure(running.info.id, running.client)
                return running.client
            return (await self._outpost.ensure_server(resolved(entry.directory))).client
        except SERVER_ERRORS as exc:
            raise CommandError(f"Could not reach OpenCode for {entry.project}: {exc}") from exc


def _catalog_session(session: Session) -> CatalogSession:
    updated = (session.time.updated or session.time.created) // 1000
    return CatalogSession(session.id, session.title, session.directory, updated)


def resolved(path: Path | str) -> Path:
    return Path(path).resolve()


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
