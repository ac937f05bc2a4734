"""The metrics: what the Outbox counts, and `/metrics` behind the API key like every route."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from telegram.error import RetryAfter

from oc_outpost.api.server import ApiConfig
from oc_outpost.metrics import CONTENT_TYPE, Metrics
from oc_outpost.telegram.outbox import Outbox, Priority
from tests.unit.test_api import KEY, make_api
from tests.unit.test_outbox import CHAT, FAST, RecordingBot


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return samples((await metrics.render()).decode())


async def test_the_outbox_counts_calls_and_429s_by_method_and_its_queue_by_priority() -> None:
    metrics = Metrics()
    bot = RecordingBot()
    outbox = Outbox(bot, FAST, metrics=metrics)  # type: ignore[arg-type]
    refused = [RetryAfter(timedelta(seconds=0))]

    async def edit_once_refused(_: Any) -> str:
        if refused:
            raise refused.pop()
        return "edited"

    queued = [
        outbox.enqueue(bot.call("a"), method="sendMessage", chat_id=CHAT, priority=Priority.FINAL),
        outbox.enqueue(bot.call("b"), method="sendMessage", chat_id=CHAT, priority=Priority.FINAL),
        outbox.enqueue(
            edit_once_refused, method="editMessageText", chat_id=CHAT, priority=Priority.PROGRESS
        ),
    ]
    before = await scrape(metrics)
    assert before[("oc_outpost_outbox_queue_depth", (("priority", "final"),))] == 2
    assert before[("oc_outpost_outbox_queue_depth", (("priority", "progress"),))] == 1
    assert before[("oc_outpost_outbox_queue_depth", (("priority", "interactive"),))] == 0

    outbox.start()
    await asyncio.gather(*queued)
    after = await scrape(metrics)
    await outbox.close(0.5)

    calls = "oc_outpost_bot_api_calls_total"
    assert after[(calls, (("method", "sendMessage"),))] == 2
    assert after[(calls, (("method", "editMessageText"),))] == 2  # the refused try counts too
    assert after[("oc_outpost_bot_api_retry_after_total", (("method", "editMessageText"),))] == 1
    assert ("oc_outpost_bot_api_retry_after_total", (("method", "sendMessage"),)) not in after
    assert after[("oc_outpost_outbox_queue_depth", (("priority", "final"),))] == 0


async def test_servers_are_counted_at_scrape_time() -> None:
    counts = {("managed", "running"): 1}

    async def servers() -> dict[tuple[str, str], int]:
        return dict(counts)

    metrics = Metrics(servers=servers)
    assert (await scrape(metrics))[
        ("oc_outpost_servers", (("kind", "managed"), ("state", "running")))
    ] == 1
    counts[("managed", "running")] = 3
    counts[("external", "running")] = 1
    now = await scrape(metrics)
    assert now[("oc_outpost_servers", (("kind", "managed"), ("state", "running")))] == 3
    assert now[("oc_outpost_servers", (("kind", "external"), ("state", "running")))] == 1


async def test_two_bots_in_one_process_have_their_own_numbers() -> None:
    first, second = Metrics(), Metrics()
    first.turn_started()
    first.turn_ended(failed=False)
    second.turn_started()
    second.turn_ended(failed=True)
    one, two = await scrape(first), await scrape(second)
    assert one[("oc_outpost_turns_finished_total", ())] == 1
    assert one[("oc_outpost_turns_failed_total", ())] == 0
    assert two[("oc_outpost_turns_failed_total", ())] == 1


async def test_metrics_need_the_api_key(tmp_path: Path) -> None:
    metrics = Metrics()
    metrics.stream_reconnected()
    app, dbs = await make_api(tmp_path, ApiConfig(api_key=KEY), metrics)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            refused = await http.get("/metrics")
            wrong = await http.get("/metrics", headers={"Authorization": "Bearer nope"})
            scraped = await http.get("/metrics", headers={"Authorization": f"Bearer {KEY}"})
    finally:
        for db in dbs:
            await db.close()
    assert refused.status_code == wrong.status_code == 401
    assert "oc_outpost" not in refused.text + wrong.text
    assert scraped.status_code == 200
    assert scraped.headers["content-type"] == CONTENT_TYPE
    assert samples(scraped.text)[("oc_outpost_event_stream_reconnects_total", ())] == 1
