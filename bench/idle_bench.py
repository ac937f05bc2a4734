"""The bot's CPU while nothing happens: 10 bound topics, one turn done, then idle.

    uv run python bench/idle_bench.py                  # 10 topics, 5 windows of 30 s
    uv run python bench/idle_bench.py --topics 3 --windows 3 --window-s 20

Offline and hermetic, like the tests: the fake Bot API (tests/rig/fake_telegram.py) and the mock
LLM run in this process; the bot runs as a separate process through its real entry point
(`oc-outpost`), with its managed OpenCode servers (the pinned binary) as its children. Settings
are the defaults (poll timeout, health checks, idle timeout, stream watchdog, one OpenCode server
per project), except Telegram's rate limits, loosened as in the tests so that setting up ten
topics takes seconds: with nothing to send the Outbox makes no call, so they cost nothing idle.

Steps: `/new` ten projects, answer one prompt in the first topic, let the after-turn work settle,
then measure the bot process's own CPU (its threads' run time from /proc/<pid>/task/*/schedstat,
or psutil `cpu_times`; not its children) over `--windows` windows of `--window-s` seconds.
Printed: ms of CPU per second per window, and the median.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.rig

from tests.rig.fake_telegram import FakeTelegram
from tests.rig.mock_llm import MockLLM, Text
from tests.rig.opencode_bin import INHERITED_VARS_TO_DROP, ensure_opencode, hermetic_env
from tests.rig.telegram_fixtures import (
    ALLOWED_USER_ID,
    TEST_BOT_TOKEN,
    TEST_BOT_USERNAME,
    TEST_CHAT_ID,
)

SETUP_TIMEOUT_S = 120.0
ANSWER = "Hello from mock! You said: hello"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bot_environment(fake: FakeTelegram, llm: MockLLM, scratch: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in INHERITED_VARS_TO_DROP}
    env.update(hermetic_env(scratch / "opencode", llm.base_url))
    projects = scratch / "projects"
    projects.mkdir()
    env.update(
        {
            "TELEGRAM_BOT_TOKEN": TEST_BOT_TOKEN,
            "TELEGRAM_CHAT_ID": str(TEST_CHAT_ID),
            "TELEGRAM_ALLOWED_USERS": str(ALLOWED_USER_ID),
            "TELEGRAM_API_URL": fake.url,
            "PROJECT_BASE_PATH": str(projects),
            "OPENCODE_PATH": str(ensure_opencode()),
            "OPENCODE_PORT_START": str(free_port()),
            "API_PORT": str(free_port()),
            "TELEGRAM_RATE_PER_CHAT_INTERVAL_MS": "50",
            "TELEGRAM_RATE_GROUP_PER_MINUTE": "600",
            "TELEGRAM_RATE_GLOBAL_PER_SECOND": "100",
            "ORCHESTRATOR_DB_PATH": str(scratch / "data/orchestrator.db"),
            "TOPIC_DB_PATH": str(scratch / "data/topics.db"),
        }
    )
    return env


async def new_topic(fake: FakeTelegram, name: str) -> int:
    await fake.send_user_message(f"/new {name}", user_id=ALLOWED_USER_ID)
    topic = await fake.wait_for(
        lambda: next((tid for tid, t in fake.topics.items() if t.name == name), None),
        timeout=SETUP_TIMEOUT_S,
        what=f"topic {name}",
    )
    await fake.wait_for(
        lambda: any("is ready" in (m.text or "") for m in fake.bot_messages(topic)),
        timeout=SETUP_TIMEOUT_S,
        what=f"{name} ready",
    )
    return int(topic)


async def answer_one_prompt(fake: FakeTelegram, llm: MockLLM, topic: int) -> None:
    llm.when("hello", Text(ANSWER, chunk_size=4, delay_s=0.05))
    await fake.send_user_message("hello", user_id=ALLOWED_USER_ID, thread_id=topic)
    await fake.wait_for(
        lambda: any(c.ok and c.params.get("text") == ANSWER for c in fake.calls("sendMessage")),
        timeout=SETUP_TIMEOUT_S,
        what="the answer",
    )


def start_bot(env: dict[str, str], scratch: Path) -> subprocess.Popen[bytes]:
    """The bot through its real entry point, as a process of its own; its log in scratch."""
    command = [str(Path(sys.executable).parent / "oc-outpost")]
    with (scratch / "bot.log").open("wb") as log:
        return subprocess.Popen(command, env=env, cwd=scratch, stdout=log, stderr=log)


def cpu_s(process: psutil.Process) -> float:
    """CPU time of the process's threads: from /proc/<pid>/task/*/schedstat (nanoseconds)
    where Linux has it, else psutil's `cpu_times` (clock ticks: 10 ms, too coarse for a
    figure under 1 ms/s over 30 s)."""
    tasks = Path(f"/proc/{process.pid}/task")
    try:
        return sum(int((t / "schedstat").read_text().split()[0]) for t in tasks.iterdir()) / 1e9
    except OSError:
        times = process.cpu_times()
        return float(times.user + times.system)


async def measure(process: psutil.Process, windows: int, window_s: float) -> list[float]:
    figures = []
    for _ in range(windows):
        before = cpu_s(process)
        await asyncio.sleep(window_s)
        figures.append((cpu_s(process) - before) * 1000 / window_s)
        print(f"  window: {figures[-1]:.2f} ms/s", flush=True)
    return figures


async def main(topics: int, windows: int, window_s: float, settle_s: float) -> None:
    fake = FakeTelegram(
        chat_id=TEST_CHAT_ID, bot_token=TEST_BOT_TOKEN, bot_username=TEST_BOT_USERNAME
    )
    fake.user(ALLOWED_USER_ID, username="alice", first_name="Alice")
    await fake.start()
    with MockLLM() as llm, tempfile.TemporaryDirectory(prefix="oc-idle-") as tmp:
        scratch = Path(tmp)
        env = bot_environment(fake, llm, scratch)
        bot = start_bot(env, scratch)
        try:
            await fake.wait_for(
                lambda: fake.calls("setMyCommands"), timeout=SETUP_TIMEOUT_S, what="bot start"
            )
            bound = [await new_topic(fake, f"project{i}") for i in range(1, topics + 1)]
            await answer_one_prompt(fake, llm, bound[0])
            await asyncio.sleep(settle_s)
            process = psutil.Process(bot.pid)
            servers = len(process.children())
            print(f"{topics} topics bound, {servers} OpenCode servers; idle:", flush=True)
            figures = await measure(process, windows, window_s)
        finally:
            bot.terminate()
            bot.wait(60)
            await fake.stop()
    print(f"idle CPU of the bot: {statistics.median(figures):.2f} ms/s (median of {windows})")
    print(f"  all windows at once: {statistics.mean(figures):.2f} ms/s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topics", type=int, default=10)
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--window-s", type=float, default=30.0)
    parser.add_argument("--settle-s", type=float, default=15.0)
    a = parser.parse_args()
    asyncio.run(main(a.topics, a.windows, a.window_s, a.settle_s))
