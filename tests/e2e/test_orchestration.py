"""Orchestration end to end: the real OpenCode binary, the mock LLM, the fake Bot API, the bot.

Crash restarts, idle stops and wake-ups, adoption after a bot restart with the final answer of a
turn that ended meanwhile, and the event-stream watchdog with reconciliation.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from oc_outpost.app import RunOptions
from oc_outpost.config import Settings
from oc_outpost.model import InstanceKind, InstanceState
from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.servers import manager as manager_module
from tests.rig.app_bot import AppBot, opencode_servers_in
from tests.rig.bot_fixtures import bot_settings
from tests.rig.fake_telegram import FakeTelegram
from tests.rig.mock_llm import MockLLM, Text
from tests.rig.tcp_proxy import PausableProxy

pytestmark = pytest.mark.timeout(90)

WAIT_S = 30.0

MakeBot = Callable[..., Awaitable[AppBot]]


@pytest.fixture
async def make_bot(
    fake_telegram: FakeTelegram, opencode_bin: Path, opencode_env: dict[str, str], tmp_path: Path
) -> AsyncIterator[MakeBot]:
    """Start bots on the test's fake Telegram; all are stopped at the end (servers too)."""
    started: list[AppBot] = []

    async def make(
        options: RunOptions | None = None, settings: Settings | None = None, **env: str
    ) -> AppBot:
        bot = AppBot(
            fake_telegram,
            settings or bot_settings(fake_telegram, opencode_bin, tmp_path, **env),
            options=options or RunOptions(poll_timeout_s=1),
        )
        await bot.start()
        started.append(bot)
        return bot

    yield make
    for bot in reversed(started):
        await bot.stop()


async def eventually(probe: Callable[[], Any], what: str, within: float = WAIT_S) -> Any:
    """Poll `probe` until it returns something truthy (bounded by `within` seconds)."""
    deadline = time.monotonic() + within
    while True:
        if value := probe():
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def eventually_async(probe: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while True:
        if await probe():
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def all_idle(client: OpenCodeClient) -> bool:
    return not await client.session_status()


def asked_llm(llm: MockLLM, text: str) -> bool:
    return any(text in json.dumps(body["messages"][-1]) for body in llm.agent_requests)


async def test_kill_9_mid_turn_is_told_restarted_under_the_same_binding_and_answers(
    make_bot: MakeBot, llm: MockLLM
) -> None:
    bot = await make_bot(OPENCODE_HEALTH_CHECK_INTERVAL_MS="300")
    topic = await bot.new_topic("demo")
    instance_id, pid = bot.instance_id(topic), bot.server_pid(topic)
    assert pid is not None
    llm.when("slow", Text("one two three four five six seven eight", chunk_size=4, delay_s=0.4))
    await bot.say("slow please", topic)
    await eventually(lambda: asked_llm(llm, "slow please"), "the turn to reach the LLM")

    os.kill(pid, signal.SIGKILL)

    await bot.wait_message(topic, "stopped unexpectedly (the process exited with code -9)")
    await bot.wait_message(topic, "OpenCode is running again")
    await bot.wait_message(topic, "stopped during this turn")  # the cut-off turn's final
    assert bot.instance_id(topic) == instance_id
    new_pid = bot.server_pid(topic)
    assert new_pid is not None and new_pid != pid
    llm.when("again", Text("answered after the restart"))
    await bot.say("again please", topic)
    await bot.wait_message(topic, "answered after the restart")
    assert len(opencode_servers_in(bot.projects / "demo")) == 1


async def test_idle_stop_spares_busy_and_waiting_servers_and_the_next_message_wakes_it(
    make_bot: MakeBot, llm: MockLLM
) -> None:
    bot = await make_bot(OPENCODE_IDLE_TIMEOUT_MS="1000", OPENCODE_HEALTH_CHECK_INTERVAL_MS="250")
    topic = await bot.new_topic("demo")
    instances = bot.running_app.core.registry.manager
    instance_id = bot.instance_id(topic)
    # idle after /new: stopped
    await eventually(lambda: instances.get(instance_id) is None, "the idle stop")
    await eventually(lambda: opencode_servers_in(bot.projects / "demo") == [], "the process exit")

    async def recorded_stopped() -> bool:
        row = await instances._store.get(instance_id)
        return row is not None and row.state == InstanceState.STOPPED and row.pid is None

    await eventually_async(recorded_stopped, "the stopped state in the store")

    # the next message wakes it (with a notice if slow); a pending permission keeps it alive
    await bot.say("please RUN_BASH", topic)
    ask = await bot.wait_message(topic, "permission: bash")
    pid = bot.server_pid(topic)
    await asyncio.sleep(1.5)  # > idle timeout + one health check interval
    assert bot.server_pid(topic) == pid
    await bot.fake.click(ask.message_id, label="✅ Allow once", user_id=1001)
    await bot.wait_message(topic, "Tool finished; bash done.")

    # a turn that is silent for longer than the idle timeout is not cut short
    llm.when("quiet", Text("quiet but busy", chunk_size=100, delay_s=1.5))  # 2 silent gaps
    await bot.say("quiet please", topic)
    await eventually(lambda: asked_llm(llm, "quiet please"), "the quiet turn to reach the LLM")
    # (on a slow machine the server may have idled between the two turns and been woken again)
    quiet_pid = bot.server_pid(topic)
    await bot.wait_message(topic, "quiet but busy")
    assert quiet_pid is not None and bot.server_pid(topic) == quiet_pid

    assert bot.instance_id(topic) == instance_id


async def test_bot_restart_adopts_the_running_server_and_delivers_a_missed_final_once(
    make_bot: MakeBot, llm: MockLLM
) -> None:
    first = await make_bot(RunOptions(poll_timeout_s=1, keep_servers_running=True))
    topic = await first.new_topic("demo")
    pid, session_id = first.server_pid(topic), first.session_id(topic)
    instance = first.running_app.core.registry.manager.get(first.instance_id(topic))
    assert instance is not None and pid is not None
    answer = "finished while the bot was away"
    llm.when("long", Text(answer, chunk_size=4, delay_s=0.3))
    await first.say("long task", topic)
    await first.wait_message(topic, lambda m: (m.text or "").startswith("⏳ Working"))
    journal = first.running_app.core.journal
    await eventually(lambda: journal.is_open(session_id), "the turn in the journal")

    await first.stop()  # the bot goes away, its server keeps working
    assert instance.server is not None
    async with OpenCodeClient(instance.client.base_url, password=instance.server.password) as oc:
        await eventually_async(lambda: all_idle(oc), "the end of the turn (no bot listening)")
    assert first.finals(topic, answer) == 0

    second = await make_bot(settings=first.settings)

    assert second.server_pid(topic) == pid  # adopted, not restarted
    assert [p.pid for p in opencode_servers_in(second.projects / "demo")] == [pid]
    await second.wait_message(topic, answer)
    await asyncio.sleep(1.0)
    assert second.finals(topic, answer) == 1
    llm.when("still", Text("the adopted server answers"))
    await second.say("still there?", topic)
    await second.wait_message(topic, "the adopted server answers")
    rows = await second.running_app.core.registry.all_instances()
    managed = [r for r in rows if r.kind == InstanceKind.MANAGED]  # not servers found running
    assert len(managed) == 1 and managed[0].state == InstanceState.RUNNING


async def test_a_stalled_event_stream_is_caught_by_the_watchdog_and_the_final_arrives(
    make_bot: MakeBot,
    llm: MockLLM,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxies: dict[int, PausableProxy] = {}

    def via_proxy(base_url: str, **kwargs: Any) -> OpenCodeClient:
        port = int(base_url.rsplit(":", 1)[1])
        proxy = proxies.setdefault(port, PausableProxy(port))
        return OpenCodeClient(proxy.url, **kwargs)

    monkeypatch.setattr(manager_module, "OpenCodeClient", via_proxy)
    caplog.set_level(logging.WARNING, logger="oc_outpost.opencode.stream")
    caplog.set_level(logging.INFO, logger="oc_outpost.core.recovery")
    watchdog_s = 1.5
    bot = await make_bot(RunOptions(poll_timeout_s=1, stream_watchdog_s=watchdog_s))
    try:
        topic = await bot.new_topic("demo")
        (proxy,) = proxies.values()
        answer = "the answer that ended during the stall"
        llm.when("stall", Text(answer, chunk_size=4, delay_s=0.15))
        await bot.say("stall please", topic)
        await eventually(lambda: asked_llm(llm, "stall please"), "the turn to reach the LLM")

        proxy.pause()
        paused_at = time.time()
        direct = OpenCodeClient(
            f"http://127.0.0.1:{proxy.target[1]}",
            password=bot.running_app.core.registry.manager.get(
                bot.instance_id(topic)
            ).server.password,  # type: ignore[union-attr]
        )
        async with direct:
            await eventually_async(lambda: all_idle(direct), "the end of the turn (stream stalled)")
        detected = await eventually(
            lambda: next((r for r in caplog.records if "(watchdog)" in r.getMessage()), None),
            "the watchdog",
        )
        assert bot.finals(topic, answer) == 0
        proxy.resume()

        await bot.wait_message(topic, answer)
        await asyncio.sleep(1.0)
        assert bot.finals(topic, answer) == 1
        assert detected.created - paused_at < watchdog_s + 1.0
        # settled by the reconcile after the reconnect, as complete; or, when the stalled
        # connection's own events got through first, by the stream (nothing to settle then)
        settled = [r.getMessage() for r in caplog.records if "ended unwatched" in r.getMessage()]
        assert settled in (
            [],
            [f"turn of {bot.session_id(topic)} ended unwatched: answer complete"],
        )
    finally:
        await bot.stop()
        for proxy in proxies.values():
            await proxy.stop()
