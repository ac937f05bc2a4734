"""Context use and compaction: how full the topic's model context is ("ctx 63%", from the
model's context limit and the last answer's tokens), one hint with a **Compact** button once it
reaches 80%, and `/compact` (OpenCode's summarize, with the topic's model), confirmed once
OpenCode reports the compaction; a compaction OpenCode did by itself is told too."""

from __future__ import annotations

import asyncio
import logging

from oc_outpost.core.bindings import Bindings
from oc_outpost.core.chat import ChatPort, Menu
from oc_outpost.core.compactions import Compactions
from oc_outpost.core.context_gauge import ContextGauge
from oc_outpost.core.control_buttons import ControlButtons
from oc_outpost.core.controls import Controls
from oc_outpost.core.errors import BadRequest, Conflict, Unavailable
from oc_outpost.core.prompting import Prompter
from oc_outpost.core.tracker import TurnTracker
from oc_outpost.core.turn import context_percent
from oc_outpost.model import TopicBinding
from oc_outpost.opencode.errors import OpenCodeError

log = logging.getLogger(__name__)

HINT_PERCENT = 80
COMPACT = "compact"
CONFIRM_S = 30.0  # after summarize returned: how long `session.compacted` may take to arrive
SELF_COMPACTED = (
    "🗜 OpenCode compacted this session by itself (its context was full): it goes on from a summary."
)


class ContextWatch:
    def __init__(
        self,
        bindings: Bindings,
        controls: Controls,
        prompter: Prompter,
        tracker: TurnTracker,
        buttons: ControlButtons,
        chat: ChatPort,
        compactions: Compactions,
        gauge: ContextGauge,
        confirm_s: float = CONFIRM_S,
    ) -> None:
        self._compactions = compactions
        self._gauge = gauge
        self._confirm_s = confirm_s
        self._bindings = bindings
        self._controls = controls
        self._prompter = prompter
        self._tracker = tracker
        self._buttons = buttons
        self._chat = chat
        self._hinted: set[str] = set()  # sessions shown the hint since their last compaction

    async def percent(self, binding: TopicBinding) -> int | None:
        """How full the context is, in percent (None: the model's limit is unknown)."""
        assert binding.session_id is not None
        client = (await self._prompter.connect(binding)).client
        try:
            limit = await self._gauge.limit(client, binding)
            used = await self._gauge.used(client, binding.session_id) if limit else 0
        except OpenCodeError as exc:
            raise Unavailable(f"Could not read the session's context: {exc}") from exc
        return context_percent(used, limit)

    async def after_turn(self, session_id: str) -> None:
        """One hint with a Compact button when the context is ≥ 80% full."""
        binding = self._bindings.by_session(session_id)
        if binding is None or session_id in self._hinted:
            return
        percent = await self.percent(binding)
        if percent is None or percent < HINT_PERCENT:
            return
        self._hinted.add(session_id)
        compact = await self._buttons.button(
            COMPACT, binding.topic_id, "🗜 Compact", session_id=session_id
        )
        await self._chat.show_menu(
            binding.topic_id,
            Menu(
                f"📦 The context is {percent}% full. Compacting summarizes the session so far.",
                ((compact,),),
            ),
        )

    async def compact(self, binding: TopicBinding) -> str:
        """`/compact` or the Compact button: summarize with the topic's model."""
        assert binding.session_id is not None
        if self._tracker.is_busy(binding.session_id):
            raise Conflict("OpenCode is working; /compact when the turn has ended.")
        model = await self._controls.model_details(binding)
        if model is None:
            raise BadRequest("No model is configured for this topic; choose one with /model.")
        client = (await self._prompter.connect(binding)).client
        await self._chat.notify(
            binding.topic_id, f"🗜 Compacting with {model.provider_id}/{model.id}…"
        )
        reported = self._compactions.expect(binding.session_id)
        try:
            done = await client.summarize(binding.session_id, (model.provider_id, model.id))
            if not done:
                raise Unavailable("OpenCode did not compact the session.")
            await asyncio.wait_for(reported, self._confirm_s)
        except OpenCodeError as exc:
            raise Unavailable(f"Compaction failed: {exc}") from exc
        except TimeoutError as exc:
            raise Unavailable("OpenCode did not report the compaction; see /session.") from exc
        finally:
            self._compactions.forget(binding.session_id)
        self._hinted.discard(binding.session_id)
        percent = await self.percent(binding)
        shown = f" Context now {percent}%." if percent is not None else ""
        return f"✅ Compacted.{shown}"

    async def compacted_by_opencode(self, session_id: str) -> None:
        binding = self._bindings.by_session(session_id)
        if binding is None:
            return
        self._hinted.discard(session_id)
        await self._chat.notify(binding.topic_id, SELF_COMPACTED)
