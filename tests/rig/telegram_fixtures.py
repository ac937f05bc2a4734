"""Fixtures for the fake Telegram Bot API server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest_asyncio
import telegram

from tests.rig.fake_telegram import FakeTelegram

TEST_CHAT_ID = -1001234567890
TEST_BOT_TOKEN = "123456:TEST"
TEST_BOT_USERNAME = "outpost_test_bot"
ALLOWED_USER_ID = 1001
OTHER_USER_ID = 2002


def ptb_bot(fake: FakeTelegram, token: str = TEST_BOT_TOKEN) -> telegram.Bot:
    """A real PTB Bot on the fake, with the URLs the product builds from TELEGRAM_API_URL."""
    return telegram.Bot(
        token,
        base_url=f"{fake.url}/bot",
        base_file_url=f"{fake.url}/file/bot",
    )


@asynccontextmanager
async def running_fake(bot_token: str = TEST_BOT_TOKEN) -> AsyncIterator[FakeTelegram]:
    """A started FakeTelegram with the test forum supergroup and users; stopped at the end."""
    fake = FakeTelegram(chat_id=TEST_CHAT_ID, bot_token=bot_token, bot_username=TEST_BOT_USERNAME)
    fake.user(ALLOWED_USER_ID, username="alice", first_name="Alice")
    fake.user(OTHER_USER_ID, username="mallory", first_name="Mallory")
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest_asyncio.fixture
async def fake_telegram() -> AsyncIterator[FakeTelegram]:
    """A started FakeTelegram with the test forum supergroup; stopped on teardown."""
    async with running_fake() as fake:
        yield fake


@pytest_asyncio.fixture
async def fake_telegram_bot(fake_telegram: FakeTelegram) -> AsyncIterator[telegram.Bot]:
    """An initialised real ``telegram.Bot`` talking to ``fake_telegram``; shut down on teardown."""
    bot = ptb_bot(fake_telegram)
    async with bot:
        yield bot
