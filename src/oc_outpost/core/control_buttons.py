"""Control buttons: the pickers, Send now and Drop, Compact, a command, Redo, and a final
answer's Undo, Fork and Build it. Each is a short token in SQLite (store/buttons.py) naming its
kind, topic and payload, so a press after a bot restart still works. A press is acted on once:
Telegram delivering it twice, or a double tap, does nothing more; a button whose action must
not run twice (``once``) answers a later press that it was done already."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from oc_outpost.core.bindings import Bindings
from oc_outpost.core.chat import Button
from oc_outpost.core.errors import BadRequest, NotFound
from oc_outpost.model import TopicBinding
from oc_outpost.store.buttons import ButtonStore, Claim

OUT_OF_DATE = "This button is no longer valid; open it again (/help lists the commands)."
OLDER_SESSION = "This button is of an older session of this topic."
SPENT = "This button has done its work already; it acts once."


@dataclass(frozen=True)
class Pressed:
    """A control button pressed in its own topic, to act on."""

    kind: str
    binding: TopicBinding
    payload: Mapping[str, Any]


class ControlButtons:
    def __init__(self, store: ButtonStore, bindings: Bindings) -> None:
        self._store = store
        self._bindings = bindings

    async def button(self, kind: str, topic_id: int, label: str, **payload: Any) -> Button:
        """A new button; a ``session_id`` in the payload ties it to that session of the topic."""
        return Button(label, await self._store.create(kind, topic_id, payload))

    @asynccontextmanager
    async def pressed(
        self, topic_id: int, token: str, press_id: str, *, once: Collection[str]
    ) -> AsyncIterator[Pressed | None]:
        """The press to act on in the block, or None for a repeat of one (say nothing). A
        press whose work fails is released, so pressing again is not ignored."""
        row = await self._store.get(token)
        if row is None or row.topic_id != topic_id:
            raise NotFound(OUT_OF_DATE)
        binding = self._bindings.by_topic(topic_id)
        if binding is None or binding.session_id is None:
            raise NotFound("This topic is not linked any more.")
        if row.payload.get("session_id", binding.session_id) != binding.session_id:
            raise NotFound(OLDER_SESSION)
        async with self._store.pressed(press_id, token, once=row.kind in once) as claim:
            if claim is Claim.SPENT:
                raise BadRequest(SPENT)
            yield Pressed(row.kind, binding, row.payload) if claim is Claim.FRESH else None
