"""Permission requests and questions: stored behind short tokens, answered by button."""

from __future__ import annotations

import logging
from collections.abc import Callable

from oc_outpost.core.ports import ChatPort, PermissionPrompt, QuestionPrompt
from oc_outpost.core.types import TopicBinding
from oc_outpost.opencode import events as ev
from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.opencode.errors import OpenCodeError, OpenCodeNotFound
from oc_outpost.store.pending import PendingKind, PendingStore

log = logging.getLogger(__name__)

PERMISSION_REPLIES = {
    "o": ("once", "Allowed once"),
    "a": ("always", "Always allowed"),
    "r": ("reject", "Rejected"),
}

ClientLookup = Callable[[str], OpenCodeClient | None]


class Approvals:
    def __init__(self, chat: ChatPort, pending: PendingStore, clients: ClientLookup) -> None:
        self._chat = chat
        self._pending = pending
        self._clients = clients  # instance id -> client of the running server, if any

    async def on_event(self, instance_id: str, binding: TopicBinding, event: ev.Event) -> None:
        match event:
            case ev.PermissionAsked():
                await self._ask_permission(instance_id, binding, event)
            case ev.QuestionAsked():
                await self._ask_question(instance_id, binding, event)

    async def _ask_permission(
        self, instance_id: str, binding: TopicBinding, event: ev.PermissionAsked
    ) -> None:
        if await self._pending.get_by_request_id(event.request_id) is not None:
            return  # already shown
        request = await self._pending.create(
            kind=PendingKind.PERMISSION,
            request_id=event.request_id,
            session_id=event.session_id,
            instance_id=instance_id,
            chat_id=binding.chat_id,
            topic_id=binding.topic_id,
            payload={"permission": event.permission, "patterns": list(event.patterns)},
        )
        detail = str(event.metadata.get("command") or event.metadata.get("diff") or "")
        prompt = PermissionPrompt(request.token, event.permission, tuple(event.patterns), detail)
        message_id = await self._chat.ask_permission(binding.topic_id, prompt)
        await self._pending.set_message_id(request.token, message_id)

    async def _ask_question(
        self, instance_id: str, binding: TopicBinding, event: ev.QuestionAsked
    ) -> None:
        if not event.questions or await self._pending.get_by_request_id(event.request_id):
            return
        question = event.questions[0]
        options = [option.label for option in question.options]
        request = await self._pending.create(
            kind=PendingKind.QUESTION,
            request_id=event.request_id,
            session_id=event.session_id,
            instance_id=instance_id,
            chat_id=binding.chat_id,
            topic_id=binding.topic_id,
            payload={"question": question.question, "options": options},
        )
        prompt = QuestionPrompt(request.token, question.question, question.header, tuple(options))
        message_id = await self._chat.ask_question(binding.topic_id, prompt)
        await self._pending.set_message_id(request.token, message_id)

    async def answer_permission(self, token: str, choice: str, who: str) -> str:
        """A button press on a permission request; returns the text for the button spinner."""
        if choice not in PERMISSION_REPLIES:
            return "Unknown choice."
        request = await self._pending.get(token)
        if request is None or request.kind != PendingKind.PERMISSION:
            return "This request is no longer known."
        reply, verb = PERMISSION_REPLIES[choice]
        client = self._clients(request.instance_id or "")
        if client is None:
            return "The OpenCode server of this request is not running any more."
        if not await self._pending.resolve(token, reply, who):
            return "Already answered."
        try:
            await client.reply_permission(request.request_id, reply)  # type: ignore[arg-type]
        except OpenCodeNotFound:
            await self._decided(request.topic_id, request.message_id, "⌛ Expired.")
            return "This request has expired."
        except OpenCodeError as exc:
            log.warning("permission reply failed: %s", exc)
            return f"OpenCode did not take the answer: {exc}"
        mark = "❌" if reply == "reject" else "✅"
        await self._decided(request.topic_id, request.message_id, f"{mark} {verb} by {who}.")
        return verb

    async def answer_question(self, token: str, option: int, who: str) -> str:
        request = await self._pending.get(token)
        if request is None or request.kind != PendingKind.QUESTION:
            return "This question is no longer known."
        options: list[str] = list(request.payload.get("options", []))
        if not 0 <= option < len(options):
            return "Unknown option."
        client = self._clients(request.instance_id or "")
        if client is None:
            return "The OpenCode server of this question is not running any more."
        label = options[option]
        if not await self._pending.resolve(token, label, who):
            return "Already answered."
        try:
            await client.reply_question(request.request_id, [[label]])
        except OpenCodeError as exc:
            log.warning("question reply failed: %s", exc)
            return f"OpenCode did not take the answer: {exc}"
        await self._decided(request.topic_id, request.message_id, f"✅ {who} answered: {label}")
        return label

    async def _decided(self, topic_id: int, message_id: int | None, text: str) -> None:
        if message_id is not None:
            await self._chat.show_decision(topic_id, message_id, text)
