"""Topic names: after the first turn, a topic is renamed once from its session's title."""

from __future__ import annotations

import logging
import re
from dataclasses import replace

from oc_outpost.core.bindings import Bindings
from oc_outpost.core.chat import ChatPort, TopicGone
from oc_outpost.model import TopicBinding
from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.opencode.errors import OpenCodeError

log = logging.getLogger(__name__)

TOPIC_NAME_LIMIT = 128
# OpenCode's title until its small model names the session: "New session - 2026-01-01T10:00:00Z"
_PLACEHOLDER = re.compile(r"^\s*New session - \d{4}-\d{2}-\d{2}T")


def is_placeholder(title: str) -> bool:
    return not title.strip() or bool(_PLACEHOLDER.match(title))


def topic_name(project: str, title: str, limit: int = TOPIC_NAME_LIMIT) -> str:
    """`<project> · <title>`, cut to Telegram's limit; just the project for a placeholder."""
    title = " ".join(title.split())
    name = project if is_placeholder(title) or title == project else f"{project} · {title}"
    return name if len(name) <= limit else name[: limit - 1] + "…"


class TopicNamer:
    def __init__(self, chat: ChatPort, bindings: Bindings) -> None:
        self._chat = chat
        self._bindings = bindings
        self._turn_done: set[str] = set()  # sessions whose first turn has ended
        self._renaming: set[int] = set()  # topics being renamed right now

    async def after_turn(self, session_id: str, client: OpenCodeClient) -> None:
        self._turn_done.add(session_id)
        binding = self._bindings.by_session(session_id)
        if binding is None or binding.topic_name_updated:
            return
        try:
            session = await client.get_session(session_id)
        except OpenCodeError as exc:
            log.info("no title for %s yet: %s", session_id, exc)
            return
        await self._rename(binding, session.title)

    async def on_title(self, session_id: str, title: str) -> None:
        """A session was renamed; use the title if the first turn is over and it is real."""
        if session_id not in self._turn_done:
            return
        binding = self._bindings.by_session(session_id)
        if binding is not None and not binding.topic_name_updated:
            await self._rename(binding, title)

    async def _rename(self, binding: TopicBinding, title: str) -> None:
        if is_placeholder(title) or binding.topic_id in self._renaming:
            return
        self._renaming.add(binding.topic_id)  # the end of a turn and a title event may race
        try:
            current = self._bindings.by_topic(binding.topic_id)
            if current is None or current.session_id != binding.session_id:
                return  # unbound or rebound meanwhile
            if current.topic_name_updated:
                return
            project = binding.project_path.rstrip("/").rsplit("/", 1)[-1]
            await self._bindings.save(replace(current, topic_name_updated=True))
            await self._chat.rename_topic(binding.topic_id, topic_name(project, title))
        except TopicGone:
            log.info("topic %s is gone; not renamed", binding.topic_id)
        finally:
            self._renaming.discard(binding.topic_id)
