"""Approvals with a chat fake and a fake client over the real pending store: one message per
request, one answer per request, a failed send or reply never loses the request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from oc_outpost.core.approvals import Approvals
from oc_outpost.model import TopicBinding
from oc_outpost.opencode import events as ev
from oc_outpost.opencode.errors import OpenCodeTimeout
from oc_outpost.store.db import Database
from oc_outpost.store.migrations import TOPIC_MIGRATIONS
from oc_outpost.store.pending import PendingStatus, PendingStore

BINDING = TopicBinding(-100, 7, "/p/demo", 1, 1, session_id="ses_1", instance_id="inst_1")
ASKED = ev.PermissionAsked(
    ev.PermissionRequest(
        id="per_1",
        session_id="ses_1",
        permission="bash",
        patterns=("git status",),
        metadata={"command": "git status"},
    )
)


class FakeChat:
    def __init__(self) -> None:
        self.asked: list[str] = []
        self.answered: list[str] = []
        self.notices: list[str] = []
        self.fail_next_ask = False

    async def ask_permission(self, topic_id: int, prompt: Any) -> int:
        if self.fail_next_ask:
            self.fail_next_ask = False
            raise OSError("Bot API unreachable")
        self.asked.append(prompt.token)
        return 500 + len(self.asked)

    async def show_answered(self, topic_id: int, message_id: int, prompt: Any, text: str) -> None:
        self.answered.append(text)

    async def notify(self, topic_id: int | None, text: str) -> None:
        self.notices.append(text)


class FakeClient:
    def __init__(self) -> None:
        self.replies: list[tuple[str, str]] = []
        self.fail_next = False

    async def reply_permission(self, request_id: str, reply: str) -> None:
        if self.fail_next:
            self.fail_next = False
            raise OpenCodeTimeout("POST /permission/per_1/reply: no response within 10s")
        self.replies.append((request_id, reply))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[PendingStore]:
    async with await Database.open(tmp_path / "topics.db", TOPIC_MIGRATIONS) as db:
        yield PendingStore(db)


async def test_a_request_is_shown_once_however_often_it_is_seen(store: PendingStore) -> None:
    chat = FakeChat()
    approvals = Approvals(chat, store)  # type: ignore[arg-type]

    await approvals.on_event("inst_1", BINDING, ASKED)
    await approvals.on_event("inst_1", BINDING, ASKED)  # e.g. listed again by a reconcile

    assert len(chat.asked) == 1


class SlowChat(FakeChat):
    """Telegram makes the bot wait (a 429) while the request is seen a second time."""

    async def ask_permission(self, topic_id: int, prompt: Any) -> int:
        await asyncio.sleep(0.05)
        return await super().ask_permission(topic_id, prompt)


async def test_a_request_seen_twice_while_its_prompt_is_being_sent_is_shown_once(
    store: PendingStore,
) -> None:
    chat = SlowChat()
    approvals = Approvals(chat, store)  # type: ignore[arg-type]

    await asyncio.gather(  # its event, and a reconcile after a restart listing it
        approvals.on_event("inst_1", BINDING, ASKED),
        approvals.on_event("inst_1", BINDING, ASKED),
    )

    assert len(chat.asked) == 1


async def test_a_prompt_whose_send_failed_is_sent_when_seen_again(store: PendingStore) -> None:
    chat = FakeChat()
    chat.fail_next_ask = True
    approvals = Approvals(chat, store)  # type: ignore[arg-type]

    with pytest.raises(OSError):
        await approvals.on_event("inst_1", BINDING, ASKED)
    await approvals.on_event("inst_1", BINDING, ASKED)  # the recovery's reconcile

    request = await store.get_by_request_id("per_1")
    assert request is not None and request.message_id == 501
    assert chat.asked == [request.token]


async def test_one_press_answers_and_a_replayed_press_does_nothing(store: PendingStore) -> None:
    chat, client = FakeChat(), FakeClient()
    approvals = Approvals(chat, store)  # type: ignore[arg-type]
    await approvals.on_event("inst_1", BINDING, ASKED)
    token = chat.asked[0]

    first = await approvals.answer_permission(token, "o", "Ann", lambda _: client, 501)
    again = await approvals.answer_permission(token, "a", "Bob", lambda _: client, 501)

    assert (first, again) == ("Allowed once", "Already answered.")
    assert client.replies == [("per_1", "once")]
    assert chat.answered == ["✅ Allowed once by Ann."]


async def test_a_reply_that_failed_leaves_the_request_open_for_another_press(
    store: PendingStore,
) -> None:
    chat, client = FakeChat(), FakeClient()
    client.fail_next = True
    approvals = Approvals(chat, store)  # type: ignore[arg-type]
    await approvals.on_event("inst_1", BINDING, ASKED)
    token = chat.asked[0]

    failed = await approvals.answer_permission(token, "o", "Ann", lambda _: client, 501)
    request = await store.get(token)
    assert request is not None and request.status == PendingStatus.PENDING
    assert chat.answered == []  # the buttons stay
    assert "did not take the answer" in failed and "press again" in failed
    assert chat.notices == [f"⚠️ {failed}"]  # said in the topic (the press was answered already)

    retried = await approvals.answer_permission(token, "o", "Ann", lambda _: client, 501)
    assert retried == "Allowed once" and client.replies == [("per_1", "once")]


async def test_a_press_for_a_server_that_is_gone_expires_the_request(store: PendingStore) -> None:
    chat = FakeChat()
    approvals = Approvals(chat, store)  # type: ignore[arg-type]
    await approvals.on_event("inst_1", BINDING, ASKED)

    answer = await approvals.answer_permission(chat.asked[0], "o", "Ann", lambda _: None, 501)

    assert "expired" in answer
    assert chat.answered == ["⌛ Expired: its OpenCode server is not running any more."]


async def test_a_token_pressed_on_another_message_answers_nothing(store: PendingStore) -> None:
    chat, client = FakeChat(), FakeClient()
    approvals = Approvals(chat, store)  # type: ignore[arg-type]
    await approvals.on_event("inst_1", BINDING, ASKED)

    forged = await approvals.answer_permission(chat.asked[0], "a", "Eve", lambda _: client, 999)

    assert forged == "This button is not for this request."
    assert client.replies == [] and chat.answered == []
    request = await store.get(chat.asked[0])
    assert request is not None and request.status == PendingStatus.PENDING
