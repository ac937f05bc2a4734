"""Unlinking: `/disconnect`, `/clear` and topics deleted in the app.

Unbinding stops the topic's running turn, expires its open requests and releases its server if
nothing else uses it (a managed one is stopped, an external one forgotten). Never deletes a user
file: the topic is closed and its history stays.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from oc_outpost.core.approvals import Approvals
from oc_outpost.core.bindings import Bindings
from oc_outpost.core.chat import ChatPort, TopicGone
from oc_outpost.core.replies import ClearReport
from oc_outpost.core.tracker import TurnTracker
from oc_outpost.model import InstanceKind, TopicBinding
from oc_outpost.opencode.errors import OpenCodeError, OpenCodeNotFound
from oc_outpost.servers.registry import ServerRegistry

log = logging.getLogger(__name__)


class Unlinker:
    def __init__(
        self,
        *,
        chat: ChatPort,
        bindings: Bindings,
        registry: ServerRegistry,
        tracker: TurnTracker,
        approvals: Approvals,
    ) -> None:
        self._chat = chat
        self._bindings = bindings
        self._registry = registry
        self._tracker = tracker
        self._approvals = approvals

    async def disconnect(self, binding: TopicBinding) -> None:
        await self.release(binding, "the topic was disconnected")
        await self._chat.notify(
            binding.topic_id,
            f"🔌 Disconnected. The project files stay in {binding.project_path}. "
            "This topic is now closed; its history stays.",
        )
        with contextlib.suppress(TopicGone):
            await self._chat.close_topic(binding.topic_id)

    async def clear(self) -> ClearReport:
        """Unbind topics whose topic, directory, session or server is gone; never touches
        files."""
        removed: list[tuple[TopicBinding, str]] = []
        bindings = self._bindings.all()
        for binding in bindings:
            reason = await self._stale_reason(binding)
            if reason is None:
                continue
            removed.append((binding, reason))
            await self.release(binding, reason)
            with contextlib.suppress(TopicGone):
                await self._chat.notify(
                    binding.topic_id, f"🧹 Unlinked by /clear: {reason}. No file was touched."
                )
                await self._chat.close_topic(binding.topic_id)
        return ClearReport(tuple(removed), len(bindings) - len(removed))

    async def _stale_reason(self, binding: TopicBinding) -> str | None:
        if not await self._chat.topic_exists(binding.topic_id):
            return "its topic was deleted"
        if not _is_dir(binding.project_path):
            return f"its directory {binding.project_path} no longer exists"
        if binding.session_id is None:
            return "it has no OpenCode session"
        kind = await self._registry.recorded_kind(binding.instance_id)
        client = self._registry.client(binding.instance_id)
        if kind is not None and kind != InstanceKind.MANAGED and client is None:
            return f"its {kind} OpenCode server is gone"
        if client is None:
            return None  # a stopped managed server starts again on the next message
        try:
            await client.get_session(binding.session_id)
        except OpenCodeNotFound:
            return "its OpenCode session no longer exists"
        except OpenCodeError as exc:
            log.warning("could not check session %s: %s", binding.session_id, exc)
        return None

    async def topic_gone(self, topic_id: int) -> None:
        """The topic was deleted in the app (a send found no thread): unbind it, say so."""
        binding = self._bindings.by_topic(topic_id)
        if binding is None:
            return
        await self.release(binding, "its topic was deleted")
        name = Path(binding.project_path).name
        await self._chat.notify(
            None,
            f"🗑 The topic of {name} was deleted, so it is unlinked. The project files stay in "
            f"{binding.project_path}; /projects opens it again.",
        )

    async def release(self, binding: TopicBinding, reason: str) -> None:
        session_id = binding.session_id
        if session_id is not None:
            if self._tracker.is_busy(session_id):
                await self._tracker.abort(session_id)
                with contextlib.suppress(TopicGone):
                    await self._tracker.fail(session_id, binding.topic_id, f"Stopped: {reason}.")
            with contextlib.suppress(TopicGone):
                await self._approvals.expire_session(session_id)
        await self._bindings.unbind(binding.topic_id)
        instance_id = binding.instance_id
        if instance_id and not self._bindings.by_instance(instance_id):
            await self._registry.release(instance_id)


def _is_dir(path: str) -> bool:
    return Path(path).is_dir()
