"""Context use and compaction: how full the topic's model context is ("ctx 63%", from the
model's context limit and the last answer's tokens), one hint with a **Compact** button once it
reaches 80%, and `/compact` (OpenCode's summarize, with the topic's model)."""

from __future__ import annotations

import logging

from oc_outpost.core.bindings import Bindings
from oc_outpost.core.chat import ChatPort, Menu
from oc_outpost.core.control_buttons import ControlButtons
from oc_outpost.core.controls import Controls
from oc_outpost.core.errors import BadRequest, Conflict, Unavailable
from oc_outpost.core.prompting import Prompter
from oc_outpost.core.tracker import TurnTracker
from oc_outpost.model import TopicBinding
from oc_outpost.opencode.errors import OpenCodeError
from oc_outpost.opencode.events import TokenUsage
from oc_outpost.opencode.wire import MessageWithParts

log = logging.getLogger(__name__)

HINT_PERCENT = 80
RECENT_MESSAGES = 10
COMPACT = "compact"


def used_tokens(tokens: TokenUsage) -> int:
    return tokens.input + tokens.output + tokens.reasoning + tokens.cache_read + tokens.cache_write


def last_usage(messages: list[MessageWithParts]) -> int:
    """The tokens of the newest assistant message that reported any (its whole context)."""
    for message in reversed(messages):
        info = message.info
        if info.role == "assistant" and used_tokens(info.tokens):
            return used_tokens(info.tokens)
    return 0


class ContextWatch:
    def __init__(
        self,
        bindings: Bindings,
        controls: Controls,
        prompter: Prompter,
        tracker: TurnTracker,
        buttons: ControlButtons,
        chat: ChatPort,
    ) -> None:
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
        model = await self._controls.model_details(binding)
        if model is None or model.limit.context <= 0:
            return None
        client = (await self._prompter.connect(binding)).client
        try:
            messages = await client.messages(binding.session_id, limit=RECENT_MESSAGES)
        except OpenCodeError as exc:
            raise Unavailable(f"Could not read the session: {exc}") from exc
        return round(100 * last_usage(messages) / model.limit.context)

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
        try:
            done = await client.summarize(binding.session_id, (model.provider_id, model.id))
        except OpenCodeError as exc:
            raise Unavailable(f"Compaction failed: {exc}") from exc
        if not done:
            raise Unavailable("OpenCode did not compact the session.")
        self._hinted.discard(binding.session_id)
        percent = await self.percent(binding)
        shown = f" Context now {percent}%." if percent is not None else ""
        return f"✅ Compacted.{shown}"
