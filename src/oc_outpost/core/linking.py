"""Linking: the one flow that binds an OpenCode session to a forum topic.

`/new`, `/link`, the project picker, the Open and Connect buttons, `/connect` and the API's
register all come here. One lock per project path and one per session id are held around the
whole check-then-act, so two fast taps (or two `/new x`) give one topic. Every step that fails is
rolled back: a topic created here is deleted, a binding made here is removed, a managed server
started for nothing is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path

from oc_outpost.core.bindings import Bindings
from oc_outpost.core.chat import ChatPort, TopicGone
from oc_outpost.core.errors import Conflict, Unavailable
from oc_outpost.core.naming import is_placeholder
from oc_outpost.core.sessions import HISTORY_MESSAGES, history_tail
from oc_outpost.model import InstanceKind, TopicBinding
from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.opencode.errors import OpenCodeError
from oc_outpost.servers.errors import InstanceBusy, InstanceError
from oc_outpost.servers.listener import RunningInstance
from oc_outpost.servers.registry import ServerRegistry

log = logging.getLogger(__name__)

SERVER_ERRORS = (InstanceError, OpenCodeError, OSError, TimeoutError)

Greeting = Callable[[TopicBinding], str]


@dataclass(frozen=True)
class LinkRequest:
    """What to bind: ``path``'s server (``instance_id``; None: the managed one for the path),
    ``session_id`` on it (None: a new session), to ``topic_id`` (None: a new topic named
    ``topic_name``). ``one_topic_per_project`` refuses a path that already has a topic;
    ``show_history`` posts the session's recent messages after the greeting."""

    path: Path
    topic_name: str
    greeting: Greeting
    topic_id: int | None = None
    instance_id: str | None = None
    session_id: str | None = None
    session_title: str = ""
    one_topic_per_project: bool = False
    show_history: bool = False


class Linker:
    def __init__(self, registry: ServerRegistry, bindings: Bindings, chat: ChatPort) -> None:
        self._registry = registry
        self._bindings = bindings
        self._chat = chat
        self._path_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._session_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def link(self, request: LinkRequest) -> TopicBinding:
        """Bind (see `LinkRequest`); raises a UserError subclass with nothing left behind."""
        async with self._flight(), self._locked(request):
            self._refuse_taken(request)
            running = await self._server(request)
            created_topic: int | None = None
            binding: TopicBinding | None = None
            try:
                session_id = request.session_id or (await running.client.create_session()).id
                if request.topic_id is None:
                    created_topic = await self._chat.create_topic(request.topic_name)
                topic_id = request.topic_id if request.topic_id is not None else created_topic
                assert topic_id is not None
                binding = await self._bindings.bind(
                    topic_id, request.path, session_id, running.info.id
                )
                if request.session_title and not is_placeholder(request.session_title):
                    binding = await self._bindings.save(replace(binding, topic_name_updated=True))
                await self._chat.notify(binding.topic_id, request.greeting(binding))
            except (*SERVER_ERRORS, TopicGone) as exc:
                log.warning("linking %s failed: %s", request.path, exc)
                await self._roll_back(created_topic, binding, request, running)
                raise Unavailable(f"Could not set up {request.path.name}: {exc}") from exc
            except BaseException:
                await self._roll_back(created_topic, binding, request, running)
                raise
        if request.show_history:
            await self._post_history(binding, running.client)
        return binding

    async def wait_idle(self, timeout_s: float) -> None:
        """Wait (bounded) until no link is in flight: a message in a topic that is still being
        set up waits for it instead of getting a project picker."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)

    @contextlib.asynccontextmanager
    async def _flight(self) -> AsyncIterator[None]:
        self._running += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._running -= 1
            if not self._running:
                self._idle.set()

    @contextlib.asynccontextmanager
    async def _locked(self, request: LinkRequest) -> AsyncIterator[None]:
        async with self._path_locks[str(request.path)]:
            if request.session_id is None:
                yield
                return
            async with self._session_locks[request.session_id]:
                yield

    def _refuse_taken(self, request: LinkRequest) -> None:
        """Checked under the locks, so the second of two concurrent requests sees the first."""
        if request.session_id is not None:
            bound = self._bindings.by_session(request.session_id)
            if bound is not None:
                raise Conflict(
                    f"That session is already linked to a topic ({bound.topic_id}); "
                    "continue there, or /disconnect it first."
                )
        if request.one_topic_per_project and self._bindings.by_path(request.path):
            raise Conflict(f"Project {request.path.name} already has a topic; continue there.")
        if request.topic_id is not None and self._bindings.by_topic(request.topic_id):
            raise Conflict("This topic is already linked; /link <path> changes it.")

    async def _server(self, request: LinkRequest) -> RunningInstance:
        try:
            return await self._registry.connect(request.instance_id, request.path)
        except InstanceBusy as exc:
            raise Unavailable(str(exc)) from exc
        except SERVER_ERRORS as exc:
            raise Unavailable(f"Could not start OpenCode for {request.path.name}: {exc}") from exc

    async def _roll_back(
        self,
        created_topic: int | None,
        binding: TopicBinding | None,
        request: LinkRequest,
        running: RunningInstance,
    ) -> None:
        if binding is not None:
            await self._bindings.unbind(binding.topic_id)
        if created_topic is not None:
            with contextlib.suppress(TopicGone):
                await self._chat.delete_topic(created_topic)
        unused = not self._bindings.by_instance(running.info.id)
        if unused and running.info.kind == InstanceKind.MANAGED:
            await self._registry.release(running.info.id)

    async def _post_history(self, binding: TopicBinding, client: OpenCodeClient) -> None:
        assert binding.session_id is not None
        try:
            messages = await client.messages(binding.session_id, limit=4 * HISTORY_MESSAGES)
            await self._chat.show_history(binding.topic_id, history_tail(messages))
        except (OpenCodeError, TopicGone) as exc:
            log.warning("the history of %s was not shown: %s", binding.session_id, exc)
