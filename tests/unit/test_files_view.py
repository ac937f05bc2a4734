"""The chat side of files: a final answer's Diff button (on the summary line, or on the answer
when there is no progress message) and the turn's images after it; the /ls page; through the
real Outbox and python-telegram-bot against the fake Bot API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
import telegram

from oc_outpost.core.chat import GoneTopics
from oc_outpost.core.file_port import ListingEntry, ListingPage
from oc_outpost.core.outputs import DiffStat, OutFile, TurnOutput
from oc_outpost.core.turn import TurnPhase, TurnSnapshot
from oc_outpost.telegram.outbox import Limits, Outbox
from oc_outpost.telegram.view import TelegramChat
from tests.rig.fake_telegram import FakeTelegram
from tests.rig.telegram_fixtures import TEST_CHAT_ID
from tests.unit.test_view import NoProgressLog

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16
OUTPUT = TurnOutput(
    images=(OutFile("shot.png", "image/png", PNG),),
    changes=DiffStat(3, 1, 2),
    diff_token="Tok_en-12345",
)
DIFF_LABEL = "📄 Diff +3 \u22121 · 2 files"


@pytest.fixture
async def chat(fake_telegram_bot: telegram.Bot) -> AsyncIterator[TelegramChat]:
    outbox = Outbox(fake_telegram_bot, Limits(per_chat_interval_s=0.0))
    outbox.start()
    yield TelegramChat(outbox, TEST_CHAT_ID, GoneTopics(), NoProgressLog())
    await outbox.close(1.0)


def finished(turn_id: int) -> TurnSnapshot:
    turn = TurnSnapshot(turn_id, "ses_1", 0.0, texts=(("t", "All done."),))
    return replace(turn, phase=TurnPhase.DONE, finished_at=1.0, output=OUTPUT)


async def test_without_progress_the_answer_carries_the_diff_button_then_the_image_follows(
    chat: TelegramChat, fake_telegram: FakeTelegram
) -> None:
    topic = await chat.create_topic("demo")
    await chat.show_final(topic, finished(1), streaming=False)
    answer, photo = fake_telegram.bot_messages(topic)
    assert answer.text == "All done."
    assert [(b["text"], b["callback_data"]) for b in answer.buttons] == [
        (DIFF_LABEL, "d:Tok_en-12345")
    ]
    assert fake_telegram.file_bytes(photo) == PNG and photo.caption == "shot.png"


async def test_with_progress_the_summary_line_carries_the_diff_button(
    chat: TelegramChat, fake_telegram: FakeTelegram
) -> None:
    topic = await chat.create_topic("demo")
    turn = TurnSnapshot(2, "ses_1", 0.0)
    chat.show_progress(topic, turn)
    await fake_telegram.wait_for(lambda: fake_telegram.bot_messages(topic), what="progress")
    await asyncio.sleep(0.05)  # the progress message's id is recorded
    await chat.show_final(topic, finished(2), streaming=True)
    progress, answer, photo = fake_telegram.bot_messages(topic)
    await fake_telegram.wait_for(
        lambda: (progress.text or "").startswith("✅ Done"), what="summary line"
    )
    assert [b["text"] for b in progress.buttons] == [DIFF_LABEL]
    assert not answer.buttons and photo.caption == "shot.png"


async def test_a_listing_page_is_posted_then_edited_in_place(
    chat: TelegramChat, fake_telegram: FakeTelegram
) -> None:
    topic = await chat.create_topic("demo")
    page = ListingPage("Tok_en-12345", "demo", "", (ListingEntry("src", True),), 0, 1, 1, False)
    message_id = await chat.show_listing(topic, page, None)
    shown = fake_telegram.message(message_id)
    assert shown.text is not None and shown.text.startswith("📂 demo/")
    assert [b["text"] for b in shown.buttons] == ["📁 src/", "📦 Zip"]
    inner = replace(page, path="src", entries=(ListingEntry("main.py", False),))
    assert await chat.show_listing(topic, inner, message_id) == message_id
    assert shown.text.startswith("📂 demo/src")
    assert [b["text"] for b in shown.buttons] == ["📄 main.py", "‹ Back", "📦 Zip"]
