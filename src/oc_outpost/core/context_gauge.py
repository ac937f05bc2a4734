"""How full a session's context is: the tokens of its newest answer against its model's context
limit. Both `/session` (core/context.py) and the progress message (the tracker) read it here."""

from __future__ import annotations

from oc_outpost.core.model_offer import chosen_model, fetch_offer
from oc_outpost.core.turn import used_tokens
from oc_outpost.model import TopicBinding
from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.opencode.wire import MessageWithParts

RECENT_MESSAGES = 10


def last_usage(messages: list[MessageWithParts]) -> int:
    """The tokens of the newest assistant message that reported any (its whole context)."""
    for message in reversed(messages):
        info = message.info
        if info.role == "assistant" and used_tokens(info.tokens):
            return used_tokens(info.tokens)
    return 0


class ContextGauge:
    """Reads context use from a server; a model's limit is looked up once per server and model
    (the provider list is large, and a turn needs it at its start)."""

    def __init__(self) -> None:
        self._limits: dict[tuple[str, str | None], int | None] = {}

    async def limit(self, client: OpenCodeClient, binding: TopicBinding) -> int | None:
        """The context window of the topic's model (None: unknown). Raises OpenCodeError."""
        key = (client.base_url, binding.model)
        if key not in self._limits:
            model = chosen_model(await fetch_offer(client), binding)
            known = model is not None and model.limit.context > 0
            self._limits[key] = model.limit.context if model is not None and known else None
        return self._limits[key]

    async def used(self, client: OpenCodeClient, session_id: str) -> int:
        """The context the session's newest answer used. Raises OpenCodeError."""
        return last_usage(await client.messages(session_id, limit=RECENT_MESSAGES))
