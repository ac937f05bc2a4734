"""Undo, redo and fork of a topic's session, by command (the last turn) or by a final answer's
button (that turn). Undo stops a running turn, reverts the session to before the turn's prompt
(files too; OpenCode undoes that message and everything after it) and posts that prompt so it
can be copied and edited, with a **Redo** button; redo brings it back; fork copies the session
(up to the end of that turn) into a new topic "<name> (fork)"."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oc_outpost.core.chat import ChatPort, Menu
from oc_outpost.core.control_buttons import ControlButtons
from oc_outpost.core.errors import BadRequest, NotFound, Unavailable
from oc_outpost.core.linking import Linker, LinkRequest
from oc_outpost.core.prompt_text import prompt_text
from oc_outpost.core.prompting import Prompter
from oc_outpost.core.tracker import TurnTracker
from oc_outpost.model import TopicBinding
from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.opencode.errors import OpenCodeError
from oc_outpost.opencode.wire import MessageWithParts, Session

log = logging.getLogger(__name__)

REDO = "redo"
GONE = (
    "That turn is not in the session any more (it was undone and a new prompt followed); "
    "nothing changed."
)


@dataclass(frozen=True)
class TurnRef:
    """A turn of a final answer's buttons: its first and last prompt (user message ids)."""

    first: str
    last: str

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> TurnRef:
        return cls(str(payload["message_id"]), str(payload["last_message_id"]))


def prompts(messages: list[MessageWithParts], before: str | None) -> list[MessageWithParts]:
    """The user messages (older than `before`, the current revert point, if any)."""
    users = [m for m in messages if m.info.role == "user"]
    return [m for m in users if before is None or m.info.id < before]


def revert_point(session: Session) -> str | None:
    return session.revert.message_id if session.revert else None


def undo_target(
    messages: list[MessageWithParts], before: str | None, turn: TurnRef | None
) -> MessageWithParts:
    """The prompt to revert to: the turn's first, or (no turn) the newest not undone."""
    if turn is None:
        shown = prompts(messages, before)
        if not shown:
            raise NotFound("Nothing to undo: the session has no earlier prompt.")
        return shown[-1]
    target = next((m for m in messages if m.info.id == turn.first), None)
    if target is None:
        raise NotFound(GONE)
    if before is not None and before <= turn.first:
        raise BadRequest("This turn is undone already; ↪️ Redo brings it back.")
    return target


def fork_point(messages: list[MessageWithParts], before: str | None, turn: TurnRef) -> str | None:
    """The message a fork copies up to (not including): the first prompt after the turn
    (None: the turn is the last one, the whole session is copied)."""
    if not any(m.info.id == turn.first for m in messages):
        raise NotFound(GONE)
    if before is not None and before <= turn.first:
        raise BadRequest("This turn is undone; ↪️ Redo it first, or fork from an earlier answer.")
    later = [m.info.id for m in prompts(messages, None) if m.info.id > turn.last]
    return later[0] if later else None


class History:
    def __init__(
        self,
        prompter: Prompter,
        tracker: TurnTracker,
        linker: Linker,
        buttons: ControlButtons,
        chat: ChatPort,
    ) -> None:
        self._prompter = prompter
        self._tracker = tracker
        self._linker = linker
        self._buttons = buttons
        self._chat = chat

    async def undo(self, binding: TopicBinding, turn: TurnRef | None = None) -> None:
        """Revert to before the turn's prompt (no turn: the last prompt) and post it."""
        session_id = binding.session_id
        assert session_id is not None
        client = await self._client(binding)
        try:
            session, messages = await self._read(client, session_id)
            before = revert_point(session)
            prompt = undo_target(messages, before, turn)
            if self._tracker.is_busy(session_id):
                await self._tracker.abort(session_id)
            await client.revert(session_id, prompt.info.id)
        except OpenCodeError as exc:
            raise Unavailable(f"Undo failed: {exc}") from exc
        last = turn.last if turn is not None else prompt.info.id
        later = len([m for m in prompts(messages, before) if m.info.id > last])
        redo = await self._buttons.button(
            REDO, binding.topic_id, "↪️ Redo", session_id=session_id, message_id=prompt.info.id
        )
        plural = "s" if later > 1 else ""
        what = f"Undone from this turn on ({later} later prompt{plural} too)" if later else "Undone"
        text = prompt_text(prompt) or "(the prompt had no text)"
        await self._chat.show_menu(
            binding.topic_id,
            Menu(f"↩️ {what}, file changes included. The prompt was:\n\n{text}", ((redo,),)),
        )

    async def redo(self, binding: TopicBinding, undone: str | None = None) -> str:
        """Bring back what was undone (`undone`: only if that undo is the one in place)."""
        session_id = binding.session_id
        assert session_id is not None
        client = await self._client(binding)
        try:
            session = await client.get_session(session_id)
            before = revert_point(session)
            if before is None:
                raise NotFound("Nothing to redo: nothing was undone (or a new prompt followed).")
            if undone is not None and before != undone:
                raise NotFound("A later undo is in place; the Redo of its message brings it back.")
            await client.unrevert(session_id)
        except OpenCodeError as exc:
            raise Unavailable(f"Redo failed: {exc}") from exc
        return "↪️ Redone: the undone turn is back."

    async def fork(self, binding: TopicBinding, turn: TurnRef | None = None) -> None:
        """Copy the session (up to the end of the turn, if given) into a topic "<name> (fork)"."""
        session_id = binding.session_id
        assert session_id is not None
        client = await self._client(binding)
        try:
            at = None
            if turn is not None:
                session, messages = await self._read(client, session_id)
                at = fork_point(messages, revert_point(session), turn)
            copy = await client.fork(session_id, at)
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

    @staticmethod
    async def _read(
        client: OpenCodeClient, session_id: str
    ) -> tuple[Session, list[MessageWithParts]]:
        return await client.get_session(session_id), await client.messages(session_id)

    async def _client(self, binding: TopicBinding) -> OpenCodeClient:
        return (await self._prompter.connect(binding)).client
