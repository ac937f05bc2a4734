"""Undo, redo and fork of a topic's session: `/undo` stops a running turn, reverts the session
to before its last prompt (files too) and posts that prompt so it can be copied and edited, with
a **Redo** button; `/redo` brings it back; `/fork` copies the session into a new topic."""

from __future__ import annotations

import logging
from pathlib import Path

from oc_outpost.core.chat import Button, ChatPort, Menu
from oc_outpost.core.errors import NotFound, Unavailable
from oc_outpost.core.linking import Linker, LinkRequest
from oc_outpost.core.prompting import Prompter
from oc_outpost.core.tracker import TurnTracker
from oc_outpost.model import TopicBinding
from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.opencode.errors import OpenCodeError
from oc_outpost.opencode.events import TextPart
from oc_outpost.opencode.wire import MessageWithParts
from oc_outpost.store.control_tokens import ControlTokenStore

log = logging.getLogger(__name__)

REDO = "redo"


def prompt_text(message: MessageWithParts) -> str:
    return "\n".join(
        p.text for p in message.parts if isinstance(p, TextPart) and not p.synthetic
    ).strip()


def last_prompt(messages: list[MessageWithParts], before: str | None) -> MessageWithParts | None:
    """The newest user message (older than `before`, the current revert point, if any)."""
    users = [m for m in messages if m.info.role == "user"]
    if before is not None:
        users = [m for m in users if m.info.id < before]
    return users[-1] if users else None


class History:
    def __init__(
        self,
        prompter: Prompter,
        tracker: TurnTracker,
        linker: Linker,
        tokens: ControlTokenStore,
        chat: ChatPort,
    ) -> None:
        self._prompter = prompter
        self._tracker = tracker
        self._linker = linker
        self._tokens = tokens
        self._chat = chat

    async def undo(self, binding: TopicBinding) -> None:
        session_id = binding.session_id
        assert session_id is not None
        client = await self._client(binding)
        if self._tracker.is_busy(session_id):
            await self._tracker.abort(session_id)
        try:
            session = await client.get_session(session_id)
            messages = await client.messages(session_id)
            before = session.revert.message_id if session.revert else None
            prompt = last_prompt(messages, before)
            if prompt is None:
                raise NotFound("Nothing to undo: the session has no earlier prompt.")
            await client.revert(session_id, prompt.info.id)
        except OpenCodeError as exc:
            raise Unavailable(f"Undo failed: {exc}") from exc
        token = await self._tokens.create(binding.topic_id, REDO, session_id)
        text = prompt_text(prompt) or "(the prompt had no text)"
        await self._chat.show_menu(
            binding.topic_id,
            Menu(
                f"↩️ Undone (its file changes too). The prompt was:\n\n{text}",
                ((Button("↪️ Redo", token.token),),),
            ),
        )

    async def redo(self, binding: TopicBinding) -> str:
        session_id = binding.session_id
        assert session_id is not None
        client = await self._client(binding)
        try:
            session = await client.get_session(session_id)
            if session.revert is None:
                raise NotFound("Nothing to redo: nothing was undone (or a new prompt followed).")
            await client.unrevert(session_id)
        except OpenCodeError as exc:
            raise Unavailable(f"Redo failed: {exc}") from exc
        return "↪️ Redone: the undone turn is back."

    async def fork(self, binding: TopicBinding) -> None:
        """Copy the session into a new topic "<name> (fork)"."""
        session_id = binding.session_id
        assert session_id is not None
        client = await self._client(binding)
        try:
            copy = await client.fork(session_id)
        except OpenCodeError as exc:
            raise Unavailable(f"Fork failed: {exc}") from exc
        path = Path(binding.project_path)

        def forked(_: TopicBinding) -> str:
            return f"🍴 Forked from the session of {path.name}: continue here independently."

        await self._linker.link(
            LinkRequest(
                path,
                f"{path.name} (fork)",
                forked,
                instance_id=binding.instance_id,
                session_id=copy.id,
                session_title=copy.title,
            )
        )
        await self._chat.notify(binding.topic_id, f"🍴 Forked into the topic “{path.name} (fork)”.")

    async def _client(self, binding: TopicBinding) -> OpenCodeClient:
        return (await self._prompter.connect(binding)).client
