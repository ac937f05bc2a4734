"""Permission requests and questions: stored behind short tokens, answered by button.

Everything needed to answer a request and to redraw its message lives in the pending row
(SQLite), so a press after a bot restart still works; `PendingStore.resolve` lets exactly one
press through, so a replayed or doubled press changes nothing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from oc_outpost.core.chat import ChatPort, PermissionPrompt, QuestionPrompt
from oc_outpost.core.topic_states import TopicStates
from oc_outpost.model import TopicBinding
from oc_outpost.opencode import events as ev
from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.opencode.errors import OpenCodeError, OpenCodeNotFound
from oc_outpost.store.pending import PendingKind, PendingRequest, PendingStatus, PendingStore

log = logging.getLogger(__name__)

PERMISSION_REPLIES = {
    "o": ("once", "Allowed once"),
    "a": ("always", "Always allowed"),
    "r": ("reject", "Rejected"),
}
DETAIL_LIMIT = 3000  # characters of command or diff kept for the message

ClientLookup = Callable[[str], OpenCodeClient | None]


def permission_detail(metadata: Mapping[str, Any]) -> str:
    """What the agent wants to run or change: the command, else the diff, else the file."""
    for key in ("command", "diff", "filepath", "filePath", "path"):
        value = metadata.get(key)
        if isinstance(value, str) and value.strip():
            return value[:DETAIL_LIMIT]
    return ""


def permission_prompt(request: PendingRequest) -> PermissionPrompt:
    payload = request.payload
    return PermissionPrompt(
        request.token,
        str(payload.get("permission", "")),
        tuple(str(p) for p in payload.get("patterns", [])),
        str(payload.get("detail", "")),
    )


def question_prompt(request: PendingRequest) -> QuestionPrompt:
    payload = request.payload
    return QuestionPrompt(
        request.token,
        str(payload.get("question", "")),
        str(payload.get("header", "")),
        tuple(str(o) for o in payload.get("options", [])),
    )


def _payload(event: ev.PermissionAsked | ev.QuestionAsked) -> dict[str, Any]:
    """What answering and redrawing the request needs, kept in its row."""
    if isinstance(event, ev.PermissionAsked):
        return {
            "permission": event.request.permission,
            "patterns": list(event.request.patterns),
            "detail": permission_detail(event.request.metadata),
        }
    questions = event.request.questions
    question = questions[0]  # only the first of several questions gets buttons
    return {
        "question": question.question,
        "header": question.header,
        "options": [option.label for option in question.options],
        "count": len(questions),
    }


def _pressed_on(request: PendingRequest, message_id: int) -> bool:
    """A token pasted onto another message (a forged keyboard) answers nothing."""
    return request.message_id is None or request.message_id == message_id


class Approvals:
    def __init__(
        self, chat: ChatPort, pending: PendingStore, states: TopicStates | None = None
    ) -> None:
        self._chat = chat
        self._pending = pending
        self._states = states
        self._asking: set[str] = set()  # request ids whose prompt is being created or sent

    @contextlib.asynccontextmanager
    async def _asking_for(self, request_id: str) -> AsyncIterator[None]:
        self._asking.add(request_id)
        try:
            yield
        finally:
            self._asking.discard(request_id)

    async def on_event(self, instance_id: str, binding: TopicBinding, event: ev.Event) -> None:
        match event:
            case ev.PermissionAsked() | ev.QuestionAsked() if event.request_id in self._asking:
                return  # being shown right now (its event and a reconcile's listing met)
            case ev.PermissionAsked():
                async with self._asking_for(event.request_id):
                    await self._ask(instance_id, binding, event, PendingKind.PERMISSION)
            case ev.QuestionAsked() if event.request.questions:
                async with self._asking_for(event.request_id):
                    await self._ask(instance_id, binding, event, PendingKind.QUESTION)
            case ev.PermissionReplied() | ev.QuestionReplied() | ev.QuestionRejected():
                await self._answered_elsewhere(event.request_id)

    async def count_pending(self) -> int:
        return await self._pending.count_pending()

    async def expire_session(self, session_id: str) -> None:
        """The session's topic goes away: its open requests can no longer be answered here."""
        for request in await self._pending.pending_for_session(session_id):
            await self._close(request, "⌛ No longer answerable here.")
        await self._pending.expire_for_session(session_id)

    async def _ask(
        self,
        instance_id: str,
        binding: TopicBinding,
        event: ev.PermissionAsked | ev.QuestionAsked,
        kind: PendingKind,
    ) -> None:
        """Store the request behind a token (once per OpenCode request) and show it."""
        request = await self._pending.get_by_request_id(event.request_id)
        if request is None:
            request = await self._pending.create(
                kind=kind,
                request_id=event.request_id,
                session_id=event.session_id,
                instance_id=instance_id,
                chat_id=binding.chat_id,
                topic_id=binding.topic_id,
                payload=_payload(event),
            )
        if request.status == PendingStatus.PENDING and self._states is not None:
            self._states.asked(request.topic_id, request.request_id)
        await self._show(request)

    async def _show(self, request: PendingRequest) -> None:
        """Post the request's buttons unless they are out already. A row without a message
        (its send failed, or the bot died first) is sent again when OpenCode still asks."""
        if request.message_id is not None or request.status != PendingStatus.PENDING:
            return
        if request.kind == PendingKind.PERMISSION:
            message_id = await self._chat.ask_permission(
                request.topic_id, permission_prompt(request)
            )
        else:
            message_id = await self._chat.ask_question(request.topic_id, question_prompt(request))
        await self._pending.set_message_id(request.token, message_id)

    async def _answered_elsewhere(self, request_id: str) -> None:
        """Answered in the TUI or another client, or dropped by an abort: take the buttons away."""
        request = await self._pending.get_by_request_id(request_id)
        if request is not None and await self._pending.resolve(request.token, "elsewhere", "-"):
            await self._close(request, "☑️ OpenCode no longer waits for this (answered elsewhere).")

    async def answer_permission(
        self, token: str, choice: str, who: str, clients: ClientLookup, message_id: int
    ) -> str:
        """A button press on a permission request; returns the text for the button spinner.
        ``clients`` maps the request's instance id to the client of its running server;
        ``message_id`` is the message the pressed button is on (only its own counts)."""
        if choice not in PERMISSION_REPLIES:
            return "Unknown choice."
        request = await self._pending.get(token)
        if request is None or request.kind != PendingKind.PERMISSION:
            return "This request is not known."
        if not _pressed_on(request, message_id):
            return "This button is not for this request."
        reply, verb = PERMISSION_REPLIES[choice]
        client = await self._client_or_expire(request, clients)
        if client is None:
            return "This request has expired: its OpenCode server was restarted."
        if not await self._pending.resolve(token, reply, who):
            return "Already answered."
        try:
            await client.reply_permission(request.request_id, reply)  # type: ignore[arg-type]
        except OpenCodeNotFound:
            await self._close(request, "⌛ Expired: OpenCode no longer waits for this.")
            return "This request has expired."
        except OpenCodeError as exc:
            return await self._not_taken(request, exc)
        mark = "❌" if reply == "reject" else "✅"
        await self._close(request, f"{mark} {verb} by {who}.")
        return verb

    async def answer_question(
        self, token: str, option: int, who: str, clients: ClientLookup, message_id: int
    ) -> str:
        request = await self._pending.get(token)
        if request is None or request.kind != PendingKind.QUESTION:
            return "This question is not known."
        if not _pressed_on(request, message_id):
            return "This button is not for this request."
        options = question_prompt(request).options
        if not 0 <= option < len(options):
            return "Unknown option."
        client = await self._client_or_expire(request, clients)
        if client is None:
            return "This question has expired: its OpenCode server was restarted."
        label = options[option]
        if not await self._pending.resolve(token, label, who):
            return "Already answered."
        count = int(request.payload.get("count", 1))
        # One answer list per question; only the first question gets buttons, the others
        # are left unanswered (empty lists).
        answers = [[label]] + [[] for _ in range(count - 1)]
        try:
            await client.reply_question(request.request_id, answers)
        except OpenCodeNotFound:
            await self._close(request, "⌛ Expired: OpenCode no longer waits for this.")
            return "This question has expired."
        except OpenCodeError as exc:
            return await self._not_taken(request, exc)
        await self._close(request, f"✅ {who} answered: {label}")
        return label

    async def _not_taken(self, request: PendingRequest, exc: OpenCodeError) -> str:
        """The answer did not reach OpenCode: the request stays open, its buttons stay, and
        the person who pressed is told why (the press can simply be repeated)."""
        log.warning("the answer to %s did not reach OpenCode: %s", request.request_id, exc)
        await self._pending.reopen(request.token)
        note = f"OpenCode did not take the answer ({exc}); press again to retry."
        await self._chat.notify(request.topic_id, f"⚠️ {note}")
        return note

    async def _client_or_expire(
        self, request: PendingRequest, clients: ClientLookup
    ) -> OpenCodeClient | None:
        client = clients(request.instance_id or "")
        if client is None and await self._pending.resolve(request.token, "expired", "-"):
            await self._close(request, "⌛ Expired: its OpenCode server is not running any more.")
        return client

    async def _close(self, request: PendingRequest, decision: str) -> None:
        if self._states is not None:
            self._states.answered(request.topic_id, request.request_id)
        if request.message_id is None:
            return
        prompt = (
            permission_prompt(request)
            if request.kind == PendingKind.PERMISSION
            else question_prompt(request)
        )
        await self._chat.show_answered(request.topic_id, request.message_id, prompt, decision)
