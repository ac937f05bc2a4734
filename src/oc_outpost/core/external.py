"""External OpenCode servers: registered over the HTTP API, bound to a topic, never managed.

A developer working in the OpenCode TUI hands that session to Telegram: the server is checked,
recorded as an external instance, a topic is bound to the session (created if none was given),
the recent history is posted there, and the session streams like any other from then on. The
bot never starts, stops or signals an external server.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from oc_outpost.core.bindings import Bindings
from oc_outpost.core.chat import Chat
from oc_outpost.core.connect import HISTORY_MESSAGES, history_tail
from oc_outpost.core.naming import is_placeholder, topic_name
from oc_outpost.core.projects import ProjectError, resolve_inside
from oc_outpost.core.streams import EventStreams
from oc_outpost.core.types import InstanceInfo, InstanceKind, InstanceState, TopicBinding
from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.opencode.errors import OpenCodeAuthError, OpenCodeError, OpenCodeNotFound
from oc_outpost.opencode.wire import Session
from oc_outpost.store.instances import InstanceStore

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 10.0


class RegistrationError(Exception):
    """The request cannot be honoured; the message says why, fit for the caller."""

    status = 422


class NotRegistered(RegistrationError):
    status = 404


class ServerUnreachable(RegistrationError):
    status = 422


@dataclass(frozen=True)
class Registration:
    project_path: str
    topic_id: int
    session_id: str
    instance_id: str
    url: str
    created: bool


ClientFactory = Callable[[str, str | None], OpenCodeClient]


def _default_client(url: str, password: str | None) -> OpenCodeClient:
    return OpenCodeClient(url, password=password, timeout=REQUEST_TIMEOUT_S)


class ExternalServers:
    def __init__(
        self,
        *,
        project_base: Path,
        chat: Chat,
        bindings: Bindings,
        streams: EventStreams,
        store: InstanceStore,
        client_factory: ClientFactory = _default_client,
        now: Callable[[], int] = lambda: int(time.time()),
    ) -> None:
        self._base = project_base
        self._chat = chat
        self._bindings = bindings
        self._streams = streams
        self._store = store
        self._client_factory = client_factory
        self._now = now
        self._clients: dict[str, OpenCodeClient] = {}  # by instance id

    def client(self, instance_id: str) -> OpenCodeClient | None:
        return self._clients.get(instance_id)

    async def register(
        self, project_path: str, url: str, session_id: str | None, password: str | None
    ) -> Registration:
        path = self._project(project_path)
        client = await self._reachable(url, password)
        try:
            session = await self._session(client, session_id)
        except RegistrationError:
            await client.aclose()
            raise
        existing = self._bindings.by_session(session.id)
        instance = await self._record(path, url, password, session.id)
        await self._use_client(instance.id, client)
        await self._streams.ensure(instance.id, client)
        if existing is not None:
            if existing.instance_id != instance.id:
                existing = await self._bindings.save(replace(existing, instance_id=instance.id))
            return self._registration(existing, instance, created=False)
        topic_id = await self._chat.create_topic(topic_name(path.name, session.title))
        binding = await self._bindings.bind(topic_id, path, session.id, instance.id)
        if not is_placeholder(session.title):
            binding = await self._bindings.save(replace(binding, topic_name_updated=True))
        await self._post_history(binding, client, url)
        return self._registration(binding, instance, created=True)

    async def unregister(self, project_path: str) -> list[int]:
        """Unbind every topic of externally served ``project_path``; the server keeps running."""
        path = self._project(project_path)
        externals = {i.id for i in await self._store.all() if i.kind == InstanceKind.EXTERNAL}
        bound = [b for b in self._bindings.by_path(path) if b.instance_id in externals]
        if not bound:
            raise NotRegistered(f"{path} has no registered external OpenCode session.")
        for binding in bound:
            await self._bindings.unbind(binding.topic_id)
            await self._chat.notify(
                binding.topic_id,
                "🔌 This session was unregistered; the OpenCode server keeps running. "
                "Messages here are no longer sent to it.",
            )
        for instance_id in {b.instance_id for b in bound if b.instance_id}:
            if not self._bindings.by_instance(instance_id):
                await self._forget(instance_id)
        return [b.topic_id for b in bound]

    async def status(self, project_path: str) -> tuple[list[TopicBinding], list[InstanceInfo]]:
        path = self._project(project_path)
        instances = [i for i in await self._store.all() if i.project_path == str(path)]
        return self._bindings.by_path(path), instances

    async def all_instances(self) -> list[InstanceInfo]:
        """Every server the bot knows, of every kind."""
        return await self._store.all()

    async def restore(self) -> None:
        """After a bot restart: reconnect to the external servers that still have topics."""
        for info in await self._store.all():
            if info.kind != InstanceKind.EXTERNAL or not self._bindings.by_instance(info.id):
                continue
            client = self._client_factory(info.base_url, info.password)
            await self._use_client(info.id, client)
            try:
                await self._streams.ensure(info.id, client)
            except (OpenCodeError, TimeoutError) as exc:
                log.warning("external server %s is not reachable yet: %s", info.base_url, exc)

    async def close(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()

    # --- steps ----------------------------------------------------------------------------------

    def _project(self, project_path: str) -> Path:
        try:
            path = resolve_inside(self._base, project_path)
        except ProjectError as exc:
            raise RegistrationError(str(exc)) from exc
        try:
            is_dir = path.is_dir()
        except OSError as exc:
            raise RegistrationError(f"{path} cannot be read: {exc.strerror}") from exc
        if not is_dir:
            raise RegistrationError(f"{path} is not a directory.")
        return path

    async def _reachable(self, url: str, password: str | None) -> OpenCodeClient:
        client = self._client_factory(url, password)
        try:
            await client.health()
        except OpenCodeAuthError as exc:
            await client.aclose()
            raise ServerUnreachable(
                f"The OpenCode server at {url} refused the credentials: {exc}"
            ) from exc
        except OpenCodeError as exc:
            await client.aclose()
            raise ServerUnreachable(f"No OpenCode server answers at {url}: {exc}") from exc
        return client

    @staticmethod
    async def _session(client: OpenCodeClient, session_id: str | None) -> Session:
        try:
            if session_id is None:
                return await client.create_session()
            return await client.get_session(session_id)
        except OpenCodeNotFound as exc:
            raise RegistrationError(f"Session {session_id} does not exist on that server.") from exc
        except OpenCodeError as exc:
            raise ServerUnreachable(f"The OpenCode server failed: {exc}") from exc

    async def _record(
        self, path: Path, url: str, password: str | None, session_id: str
    ) -> InstanceInfo:
        known = next(
            (
                i
                for i in await self._store.all()
                if i.kind == InstanceKind.EXTERNAL and i.base_url == url.rstrip("/")
            ),
            None,
        )
        now = self._now()
        info = InstanceInfo(
            id=known.id if known else f"ext_{secrets.token_hex(4)}",
            kind=InstanceKind.EXTERNAL,
            project_path=str(path),
            state=InstanceState.RUNNING,
            created_at=known.created_at if known else now,
            updated_at=now,
            url=url.rstrip("/"),
            session_id=session_id,
            password=password,
        )
        return await self._store.save(info)

    async def _use_client(self, instance_id: str, client: OpenCodeClient) -> None:
        old = self._clients.get(instance_id)
        self._clients[instance_id] = client
        if old is not None and old is not client:
            await self._streams.drop(instance_id)  # its stream still uses the old client
            await old.aclose()

    async def _forget(self, instance_id: str) -> None:
        await self._streams.drop(instance_id)
        client = self._clients.pop(instance_id, None)
        if client is not None:
            await client.aclose()
        info = await self._store.get(instance_id)
        if info is not None:
            await self._store.save(replace(info, state=InstanceState.STOPPED))

    async def _post_history(self, binding: TopicBinding, client: OpenCodeClient, url: str) -> None:
        assert binding.session_id is not None
        await self._chat.notify(
            binding.topic_id,
            f"🔗 Connected to the OpenCode session {binding.session_id} at {url}. Write here to "
            "continue it; its turns stream here from now on.",
        )
        try:
            messages = await client.messages(binding.session_id, limit=4 * HISTORY_MESSAGES)
        except OpenCodeError as exc:
            log.warning("history of %s not available: %s", binding.session_id, exc)
            return
        await self._chat.show_history(binding.topic_id, history_tail(messages))

    @staticmethod
    def _registration(
        binding: TopicBinding, instance: InstanceInfo, *, created: bool
    ) -> Registration:
        return Registration(
            project_path=binding.project_path,
            topic_id=binding.topic_id,
            session_id=binding.session_id or "",
            instance_id=instance.id,
            url=instance.base_url,
            created=created,
        )
