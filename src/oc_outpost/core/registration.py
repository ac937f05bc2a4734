"""External OpenCode servers registered over the HTTP API (SPEC §6), never managed.

A developer working in the OpenCode TUI hands that session to Telegram: the server is checked,
recorded as an external instance, a topic is bound to the session (created if none was given)
through the one linking flow, and the recent history is posted there. The bot never starts,
stops or signals an external server. A registration that fails leaves no row, client or stream
behind; a session already bound to another server is refused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from oc_outpost.core.bindings import Bindings
from oc_outpost.core.chat import ChatPort
from oc_outpost.core.errors import BadRequest, Conflict, NotFound, Unavailable
from oc_outpost.core.linking import Linker, LinkRequest
from oc_outpost.core.naming import topic_name
from oc_outpost.core.projects import ProjectError, resolve_inside
from oc_outpost.model import InstanceInfo, TopicBinding
from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.opencode.errors import OpenCodeAuthError, OpenCodeError, OpenCodeNotFound
from oc_outpost.opencode.wire import Session
from oc_outpost.servers.registry import ServerRegistry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Registration:
    project_path: str
    topic_id: int
    session_id: str
    instance_id: str
    url: str
    created: bool


class Registrations:
    def __init__(
        self,
        registry: ServerRegistry,
        bindings: Bindings,
        linker: Linker,
        chat: ChatPort,
        project_base: Path,
    ) -> None:
        self._registry = registry
        self._chat = chat
        self._bindings = bindings
        self._linker = linker
        self._base = project_base

    async def register(
        self, project_path: str, url: str, session_id: str | None, password: str | None
    ) -> Registration:
        path = self._project(project_path)
        client = await self._reachable(url, password)
        try:
            session = await _session(client, session_id)
        except BaseException:
            await client.aclose()
            raise
        existing = self._bindings.by_session(session.id)
        if existing is not None:
            return await self._already_bound(existing, client, path, password)
        known = {i.id for i in await self._registry.external_instances()}
        instance = await self._registry.add_external(client, path, password, session.id)
        try:
            binding = await self._linker.link(
                LinkRequest(
                    path,
                    topic_name(path.name, session.title),
                    lambda b: (
                        f"🔗 Connected to the OpenCode session {b.session_id} at "
                        f"{instance.base_url}. Write here to continue it; its turns stream "
                        "here from now on."
                    ),
                    instance_id=instance.id,
                    session_id=session.id,
                    session_title=session.title,
                    show_history=True,
                )
            )
        except BaseException:
            if instance.id not in known and not self._bindings.by_instance(instance.id):
                await self._registry.forget_external(instance.id, delete=True)
            raise
        return _registration(binding, instance, created=True)

    async def _already_bound(
        self, binding: TopicBinding, client: OpenCodeClient, path: Path, password: str | None
    ) -> Registration:
        """The same session registered again: fine from the same server (followed again),
        refused from another (it would move someone's topic to a server they do not control)."""
        info = next(
            (i for i in await self._registry.external_instances() if i.id == binding.instance_id),
            None,
        )
        if info is None or info.base_url != client.base_url.rstrip("/"):
            await client.aclose()
            raise Conflict(
                f"Session {binding.session_id} is already linked to topic {binding.topic_id} "
                "through another OpenCode server; it cannot be registered from this one."
            )
        assert binding.session_id is not None
        info = await self._registry.add_external(client, path, password, binding.session_id)
        return _registration(binding, info, created=False)

    async def unregister(self, project_path: str) -> list[int]:
        """Unbind every topic of externally served ``project_path``; the server keeps running."""
        path = self._project(project_path)
        externals = {i.id for i in await self._registry.external_instances()}
        bound = [b for b in self._bindings.by_path(path) if b.instance_id in externals]
        if not bound:
            raise NotFound(f"{path} has no registered external OpenCode session.")
        for binding in bound:
            await self._bindings.unbind(binding.topic_id)
            await self._chat.notify(
                binding.topic_id,
                "🔌 This session was unregistered; the OpenCode server keeps running. "
                "Messages here are no longer sent to it.",
            )
        for instance_id in {b.instance_id for b in bound if b.instance_id}:
            if not self._bindings.by_instance(instance_id):
                await self._registry.forget_external(instance_id)
        return [b.topic_id for b in bound]

    async def status(self, project_path: str) -> tuple[list[TopicBinding], list[InstanceInfo]]:
        """The external registrations of ``project_path`` (managed servers are not shown)."""
        path = self._project(project_path)
        instances = [
            i for i in await self._registry.external_instances() if i.project_path == str(path)
        ]
        ids = {i.id for i in instances}
        return [b for b in self._bindings.by_path(path) if b.instance_id in ids], instances

    def _project(self, project_path: str) -> Path:
        try:
            path = resolve_inside(self._base, project_path)
        except ProjectError as exc:
            raise BadRequest(str(exc)) from exc
        try:
            is_dir = path.is_dir()
        except OSError as exc:
            raise BadRequest(f"{path} cannot be read: {exc.strerror}") from exc
        if not is_dir:
            raise BadRequest(f"{path} is not a directory.")
        return path

    async def _reachable(self, url: str, password: str | None) -> OpenCodeClient:
        client = self._registry.probe_client(url, password)
        try:
            await client.health()
        except OpenCodeAuthError as exc:
            await client.aclose()
            raise Unavailable(
                f"The OpenCode server at {url} refused the credentials: {exc}"
            ) from exc
        except OpenCodeError as exc:
            await client.aclose()
            raise Unavailable(f"No OpenCode server answers at {url}: {exc}") from exc
        return client


async def _session(client: OpenCodeClient, session_id: str | None) -> Session:
    try:
        if session_id is None:
            return await client.create_session()
        return await client.get_session(session_id)
    except OpenCodeNotFound as exc:
        raise NotFound(f"Session {session_id} does not exist on that server.") from exc
    except OpenCodeError as exc:
        raise Unavailable(f"The OpenCode server failed: {exc}") from exc


def _registration(binding: TopicBinding, instance: InstanceInfo, *, created: bool) -> Registration:
    return Registration(
        project_path=binding.project_path,
        topic_id=binding.topic_id,
        session_id=binding.session_id or "",
        instance_id=instance.id,
        url=instance.base_url,
        created=created,
    )
