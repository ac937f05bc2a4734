"""The first Bot API calls of a start are retried through 429s and outages (fake Bot API)."""

from __future__ import annotations

import pytest
import telegram

from oc_outpost.telegram.startup import StartupFailed, StartupRetry, with_retries
from tests.rig.fake_telegram import FakeTelegram
from tests.rig.telegram_fixtures import ptb_bot

POLICY = StartupRetry(attempts=5, first_delay_s=1.0, max_delay_s=30.0, max_retry_after_s=60.0)


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


async def test_get_me_is_retried_through_429s_and_an_outage(
    fake_telegram: FakeTelegram, fake_telegram_bot: telegram.Bot
) -> None:
    fake_telegram.add_fault("getMe", 429, retry_after=3, times=2)
    fake_telegram.add_fault("getMe", 502, times=2)
    sleeps = Sleeps()
    me = await with_retries("getMe", fake_telegram_bot.get_me, POLICY, sleeps)
    assert me.username == fake_telegram.bot_user["username"]
    assert sleeps.waits == [3.0, 3.0, 1.0, 2.0]
    # (the first getMe is the fixture's own, before the faults)
    assert [c.ok for c in fake_telegram.calls("getMe")] == [True, False, False, False, False, True]


async def test_a_lasting_outage_ends_the_start_with_a_clear_error(
    fake_telegram: FakeTelegram, fake_telegram_bot: telegram.Bot
) -> None:
    fake_telegram.add_fault("getMe", 502, times=100)
    sleeps = Sleeps()
    with pytest.raises(StartupFailed, match=r"getMe failed 5 times over 15 s, last: Bad Gateway"):
        await with_retries("getMe", fake_telegram_bot.get_me, POLICY, sleeps)
    assert sleeps.waits == [1.0, 2.0, 4.0, 8.0]


async def test_a_flood_wait_longer_than_the_cap_is_not_waited_out(
    fake_telegram: FakeTelegram, fake_telegram_bot: telegram.Bot
) -> None:
    fake_telegram.add_fault("setMyCommands", 429, retry_after=900)
    sleeps = Sleeps()
    with pytest.raises(StartupFailed, match=r"asks to wait 900 s"):
        await with_retries(
            "setMyCommands", lambda: fake_telegram_bot.set_my_commands([]), POLICY, sleeps
        )
    assert sleeps.waits == []


async def test_a_refused_token_is_not_retried_and_not_quoted(fake_telegram: FakeTelegram) -> None:
    secret = "999:not-the-token"
    sleeps = Sleeps()
    bot = ptb_bot(fake_telegram, token=secret)
    try:
        with pytest.raises(StartupFailed) as caught:
            await with_retries("getMe", bot.initialize, POLICY, sleeps)
    finally:
        await bot.shutdown()
    assert "TELEGRAM_BOT_TOKEN" in str(caught.value)
    assert secret not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert sleeps.waits == []
