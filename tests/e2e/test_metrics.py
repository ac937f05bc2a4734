"""End to end: `/metrics` of the running bot moves with what it does (real OpenCode, mock LLM)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.rig.bot_fixtures import RunningBot, bot_settings
from tests.rig.fake_telegram import FakeTelegram
from tests.rig.mock_llm import MockLLM, Text

pytestmark = pytest.mark.timeout(90)

API_KEY = "metrics-test-key"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
async def bot(
    fake_telegram: FakeTelegram, opencode_bin: Path, opencode_env: dict[str, str], tmp_path: Path
) -> AsyncIterator[RunningBot]:
    settings = bot_settings(fake_telegram, opencode_bin, tmp_path, API_KEY=API_KEY)
    running = RunningBot(fake_telegram, settings)
    await running.start()  # returns once setMyCommands was sent; the API comes up after that
    try:
        await api_listening(running)
        yield running
    finally:
        await running.shutdown()


async def api_listening(bot: RunningBot) -> None:
    async with asyncio.timeout(15):
        while True:
            try:
                await scrape(bot, key=None)
                return
            except httpx.ConnectError:
                await asyncio.sleep(0.05)  # not listening yet


async def scrape(bot: RunningBot, key: str | None = API_KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    url = f"http://127.0.0.1:{bot.settings.api_port}/metrics"
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.get(url, headers=headers)


async def samples(bot: RunningBot) -> Samples:
    response = await scrape(bot)
    assert response.status_code == 200, response.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def calls(found: Samples, method: str) -> float:
    return found.get(("oc_outpost_bot_api_calls_total", (("method", method),)), 0)


async def test_a_scrape_after_one_turn_shows_the_counters_moved(
    bot: RunningBot, llm: MockLLM
) -> None:
    assert (await scrape(bot, key=None)).status_code == 401
    assert (await scrape(bot, key="wrong")).status_code == 401
    before = await samples(bot)
    assert before[("oc_outpost_turns_started_total", ())] == 0
    assert before[("oc_outpost_finals_delivered_total", ())] == 0
    assert calls(before, "setMyCommands") == 1

    answer = "Counted and answered."
    llm.when("count me", Text(answer))
    topic = await bot.new_topic("demo")
    bot.fake.add_fault("sendMessage", 429, retry_after=1, times=1, match={"text": answer})
    await bot.say("count me", topic)
    await bot.wait_message(topic, answer)
    await bot.wait_message(topic, "✅ Done in")

    after = await samples(bot)
    assert after[("oc_outpost_turns_started_total", ())] == 1
    assert after[("oc_outpost_turns_finished_total", ())] == 1
    assert after[("oc_outpost_turns_failed_total", ())] == 0
    assert after[("oc_outpost_finals_delivered_total", ())] == 1
    assert calls(after, "createForumTopic") == 1
    sent = sum(1 for c in bot.fake.calls("sendMessage"))  # every try, the refused one included
    assert calls(after, "sendMessage") == sent
    retry = ("oc_outpost_bot_api_retry_after_total", (("method", "sendMessage"),))
    assert after[retry] == 1
    managed = ("oc_outpost_servers", (("kind", "managed"), ("state", "running")))
    assert after[managed] == 1
    for priority in ("interactive", "final", "progress"):
        assert after[("oc_outpost_outbox_queue_depth", (("priority", priority),))] >= 0
    assert after[("oc_outpost_event_stream_reconnects_total", ())] == 0
