"""Chaos soak: N turns over M topics through the whole product while faults are injected at random.

    uv run python bench/chaos.py                  # --turns 200 --topics 4 --seed 1

What runs: the bot as its own `oc-outpost` process (tests/rig/process_bot.py) on the fake Bot API
(tests/rig/fake_telegram.py, presses expire after 15 s as on Telegram), reached through a proxy
that can cut the line; real `opencode serve` processes driven by the mock LLM. Topics 1 … M-1 are
projects created with `/new` (managed servers); the last topic is an external server registered
over the HTTP API behind a second proxy that can stall its event stream (so the bot's watchdog
and reconciliation are exercised). One person writes in every topic at once; in each topic one
turn at a time: a prompt, and for an approval turn a press on "Allow once", then the next turn
once the turn is resolved (see below) or after a timeout, and the topic was quiet for 2 s (as a
person reading the answer: a late notice about a turn is then counted for it, and two prompts
are never close enough for the bot to join them into one).

Every turn's prompt carries a unique marker; the mock LLM answers it with a unique text (an
approval turn first calls `bash` with `echo ok-<marker>`, then answers), so the fake's call log
tells how often each answer reached Telegram.

Faults, one at a time per kind, a random 5–12 s apart; the first six are one of each kind, then
they are drawn with weights 3:2:2:2:1:2 in this order:
server kill -9 (a managed topic's `opencode serve`), bot kill -9 + restart, Bot API outage (every
call fails with a connection error for 5–20 s), 429 burst (sendMessage, editMessageText and
answerCallbackQuery refused 2–6 times each with retry_after 1–3 s, refusals not used within
5–15 s expire), stream stall (the external
server's event stream frozen for 35–45 s, longer than the bot's 30 s watchdog), approval pending
across a restart (the next permission prompt shown is pressed while the bot is killed; the bot is
started again after the press). Bot restarts and outages never overlap (a start during an outage
is about start-up retries, measured elsewhere).

Figures (counted at the end, after a settle time, from the fake's call log and the mock LLM):

* accepted: the mock LLM saw the turn's prompt (OpenCode got it). A prompt sent while the bot was
  dead is not sent again by the bench: Telegram keeps unacknowledged updates, and so does the
  fake, so the restarted bot receives it.
* delivered once / duplicates: the answer text was sent exactly once / more than once
  (duplicates counts the surplus sends).
* told: the turn got no answer but the topic got a notice about it after its prompt (the turn
  did not finish, the prompt was not accepted, a request expired, …).
* cut by a server kill: told, and a kill -9 of the topic's server happened during the turn
  (the answer may never have been written: that is not a loss).
* lost: accepted, the answer never reached the fake, and nothing told the user.
* dropped: not accepted and nothing told (the bot received the prompt but did nothing with it).
* approvals: asked (OpenCode got the tool call), shown (permission messages sent; > 1 for one
  request is a duplicate), ran (the command's output reached the model), lost (asked and not
  told, but never shown, or shown and pressed and the command never ran).
* bot crashes: the bot exited without being killed (it is started again and the run goes on).
* error posts: "⚠️ Something went wrong" messages; progress left live: messages that still carry
  a Stop button at the end (no turn runs then).

A run is clean with no turn lost, dropped or duplicated, no approval lost or shown twice, no
progress message left live and no bot crash. One that is not keeps its work directory (the
bot's log, `diagnosis.txt`, `faults.txt`, `calls.jsonl`: the Bot API calls) and prints, for
every turn not delivered exactly once, what its topic showed meanwhile, and every message left
with a Stop button.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

if __package__ in (None, ""):  # run as a script: make `bench` and `tests.rig` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.rig.app_bot import opencode_servers_in, start_outside_server, stop_outside_server
from tests.rig.bot_fixtures import free_port
from tests.rig.fake_telegram import ANY, FakeTelegram, StoredMessage
from tests.rig.mock_llm import MockLLM, Text, ToolCall
from tests.rig.opencode_bin import INHERITED_VARS_TO_DROP, ensure_opencode, hermetic_env
from tests.rig.process_bot import ProcessBot, start_process_bot
from tests.rig.tcp_proxy import PausableProxy
from tests.rig.telegram_fixtures import (
    ALLOWED_USER_ID,
    TEST_BOT_TOKEN,
    TEST_BOT_USERNAME,
    TEST_CHAT_ID,
)

log = logging.getLogger("chaos")

PRESS_TTL_S = 15.0  # Telegram refuses to answer a press older than this
TURN_TIMEOUT_S = 150.0
SETTLE_S = 20.0
SETUP_WAIT_S = 60.0
QUIET_S = 2.0  # a topic this long without a new message has shown what the last turn brought
QUIET_MAX_S = 10.0
ALLOW = "✅ Allow once"
# A server killed this long before a prompt still counts as killed during its turn: the bot
# takes the prompt from Telegram a moment later, and notices the crash a moment after that.
KILL_BEFORE_S = 5.0
NOTICE_MARKS = ("did not finish", "not accepted", "has no answer", "not available", "❌", "⌛")
ERROR_POST = "Something went wrong"
KINDS = (
    "server_kill",
    "bot_kill",
    "api_outage",
    "burst_429",
    "stream_stall",
    "approval_restart",
)
WEIGHTS = (3, 2, 2, 2, 1, 2)  # how often each kind is picked after the first round
KIND_NAMES = {
    "server_kill": "server kill -9",
    "bot_kill": "bot kill -9 + restart",
    "api_outage": "Bot API outage",
    "burst_429": "429 burst",
    "stream_stall": "stream stall",
    "approval_restart": "approval pending across a restart",
}


@dataclass(frozen=True)
class ChaosConfig:
    turns: int = 200
    topics: int = 4
    seed: int = 1
    approval_share: float = 0.3
    fault_gap_s: tuple[float, float] = (5.0, 12.0)
    outage_s: tuple[float, float] = (5.0, 20.0)
    stall_s: tuple[float, float] = (35.0, 45.0)
    burst_s: tuple[float, float] = (5.0, 15.0)
    bot_down_s: tuple[float, float] = (0.2, 3.0)


@dataclass
class Turn:
    number: int
    topic: int  # index into the topics
    approval: bool
    answer: str
    sent_at: float = 0.0
    ended_at: float = 0.0
    after_id: int = 0  # the last message id of the chat before its prompt
    until_id: int = 0  # the last message id of the chat before the topic's next prompt
    pressed: bool = False

    @property
    def marker(self) -> str:
        return f"chaos-{self.number:04d}"

    @property
    def prompt(self) -> str:
        return f"{self.marker} please"

    @property
    def command_output(self) -> str:
        return f"ok-{self.number:04d}"


@dataclass(frozen=True)
class FaultEvent:
    kind: str
    started: float
    ended: float
    topic: int | None = None  # the topic whose server was killed


# --- the rig ---------------------------------------------------------------------------------


@dataclass
class Rig:
    """Everything the soak runs; `topic_ids[i]` is topic i's thread id."""

    workdir: Path
    llm: MockLLM
    fake: FakeTelegram
    bot: ProcessBot
    external: subprocess.Popen[bytes]  # the outside server, started like a developer would
    stream_line: PausableProxy
    topic_ids: list[int]
    project_dirs: list[Path]
    stopping: asyncio.Event = field(default_factory=asyncio.Event)  # SIGTERM: wind down

    @property
    def managed(self) -> list[int]:
        return list(range(len(self.topic_ids) - 1))


async def start_rig(config: ChaosConfig, workdir: Path) -> Rig:
    opencode_bin = ensure_opencode()  # before HOME changes: the binary is cached under it
    llm = MockLLM().start()
    use_hermetic_opencode(workdir / "opencode-scratch", llm.base_url)
    fake = FakeTelegram(
        chat_id=TEST_CHAT_ID,
        bot_token=TEST_BOT_TOKEN,
        bot_username=TEST_BOT_USERNAME,
        callback_query_ttl=PRESS_TTL_S,
    )
    fake.user(ALLOWED_USER_ID, username="alice", first_name="Alice")
    await fake.start()
    api_key = secrets.token_urlsafe(24)
    bot = await start_process_bot(fake, opencode_bin, workdir, API_KEY=api_key)
    topic_ids, dirs = [], []
    for index in range(config.topics - 1):
        topic_ids.append(await bot.new_topic(f"chaos{index}"))
        dirs.append(bot.projects / f"chaos{index}")
    external_dir = bot.projects / "outside"
    external_dir.mkdir()
    password = secrets.token_urlsafe(16)
    port = free_port()
    external = await start_outside_server(
        opencode_bin, external_dir, port, password=password, log=workdir / "outside.log"
    )
    stream_line = PausableProxy(port)
    topic_ids.append(await register(bot, api_key, external_dir, stream_line.url, password))
    dirs.append(external_dir)
    return Rig(workdir, llm, fake, bot, external, stream_line, topic_ids, dirs)


def use_hermetic_opencode(scratch: Path, llm_url: str) -> None:
    """Every OpenCode of the run (the bot's children inherit this process's environment)
    lives under ``scratch`` and talks to the mock LLM."""
    scratch.mkdir(parents=True)
    for name in INHERITED_VARS_TO_DROP:
        os.environ.pop(name, None)
    os.environ.update(hermetic_env(scratch, llm_url))


async def register(bot: ProcessBot, key: str, path: Path, url: str, password: str) -> int:
    port = bot.settings.api_port
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
        response = await http.post(
            "/api/register",
            json={"project_path": str(path), "url": url, "password": password},
            headers={"Authorization": f"Bearer {key}"},
        )
    response.raise_for_status()
    return int(response.json()["topic_id"])


async def stop_rig(rig: Rig) -> int:
    stop_outside_server(rig.external)
    code = await rig.bot.terminate() if rig.bot.running_process.running else -1
    await rig.bot.line.stop()
    await rig.stream_line.stop()
    await rig.fake.stop()
    rig.llm.stop()
    return code


# --- faults ----------------------------------------------------------------------------------


class Faults:
    """Injects one fault of each kind at a time; bot restarts and outages never overlap."""

    def __init__(self, rig: Rig, config: ChaosConfig, rng: random.Random) -> None:
        self._rig = rig
        self._config = config
        self._rng = rng
        self.events: list[FaultEvent] = []
        self.skipped: Counter[str] = Counter()
        self._line = asyncio.Lock()  # the bot's process and its Bot API line
        self._busy: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.approval_restart_armed = False
        self.failed: Counter[str] = Counter()  # faults whose own action failed
        self.crashes: list[int | None] = []  # exit codes of the bot exiting by itself

    def counts(self) -> Counter[str]:
        return Counter(event.kind for event in self.events)

    async def run(self, done: asyncio.Event) -> None:
        order = list(KINDS)
        self._rng.shuffle(order)
        watcher = asyncio.create_task(self._watch_bot(done))
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), self._rng.uniform(*self._config.fault_gap_s))
            if done.is_set():
                break
            kind = order.pop(0) if order else self._rng.choices(KINDS, WEIGHTS)[0]
            if kind in self._busy or (kind == "approval_restart" and self.approval_restart_armed):
                self.skipped[kind] += 1
                continue
            self._spawn(kind)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await watcher

    async def _watch_bot(self, done: asyncio.Event) -> None:
        """A bot that exits when nobody killed it is a crash: counted, and started again."""
        while not done.is_set():
            await asyncio.sleep(0.5)
            if self._line.locked() or self._rig.bot.running_process.running:
                continue
            async with self._line:
                code = self._rig.bot.running_process.process.returncode
                log.error("the bot exited by itself (code %s); starting it again", code)
                self.crashes.append(code)
                await self._rig.bot.start()

    def _spawn(self, kind: str) -> None:
        actions: dict[str, Callable[[], Awaitable[None]]] = {
            "server_kill": self.server_kill,
            "bot_kill": self.bot_kill,
            "api_outage": self.api_outage,
            "burst_429": self.burst_429,
            "stream_stall": self.stream_stall,
            "approval_restart": self.arm_approval_restart,
        }
        self._busy.add(kind)

        async def run() -> None:
            try:
                await actions[kind]()
            finally:
                self._busy.discard(kind)

        task = asyncio.create_task(run(), name=f"fault-{kind}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.failed[task.get_name()] += 1
            log.error("%s failed: %s", task.get_name(), str(task.exception())[:300])

    def _record(self, kind: str, started: float, topic: int | None = None) -> None:
        self.events.append(FaultEvent(kind, started, time.monotonic(), topic))
        log.info("fault %s done (%.1f s)", kind, time.monotonic() - started)

    async def server_kill(self) -> None:
        topic = self._rng.choice(self._rig.managed)
        pid = server_pid(self._rig.project_dirs[topic])
        if pid is None:  # being restarted after an earlier kill
            self.skipped["server_kill"] += 1
            return
        started = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        self._record("server_kill", started, topic)

    async def bot_kill(self) -> None:
        async with self._line:
            started = time.monotonic()
            await self._rig.bot.kill()
            await asyncio.sleep(self._rng.uniform(*self._config.bot_down_s))
            await self._rig.bot.start()
            self._record("bot_kill", started)

    async def restart_with_press(self, press: Callable[[], Awaitable[None]]) -> None:
        """The armed fault: kill -9 the bot, press while it is down, start it again."""
        async with self._line:
            self.approval_restart_armed = False
            started = time.monotonic()
            await self._rig.bot.kill()
            await press()
            await asyncio.sleep(self._rng.uniform(*self._config.bot_down_s))
            await self._rig.bot.start()
            self._record("approval_restart", started)

    async def arm_approval_restart(self) -> None:
        self.approval_restart_armed = True

    async def api_outage(self) -> None:
        async with self._line:
            started = time.monotonic()
            self._rig.bot.line.cut()
            try:
                await asyncio.sleep(self._rng.uniform(*self._config.outage_s))
            finally:
                self._rig.bot.line.restore()
            self._record("api_outage", started)

    async def burst_429(self) -> None:
        """Refusals last as long as the burst: a method the bot did not call meanwhile is not
        refused later (refusals piling up over bursts would be no Telegram behaviour)."""
        started = time.monotonic()
        refusals = [
            self._rig.fake.add_fault(
                method, 429, retry_after=self._rng.randint(1, 3), times=self._rng.randint(2, 6)
            )
            for method in ("sendMessage", "editMessageText", "answerCallbackQuery")
        ]
        try:
            await asyncio.sleep(self._rng.uniform(*self._config.burst_s))
        finally:
            for refusal in refusals:
                refusal.times = 0
        self._record("burst_429", started)

    async def stream_stall(self) -> None:
        started = time.monotonic()
        self._rig.stream_line.pause_streams()
        try:
            await asyncio.sleep(self._rng.uniform(*self._config.stall_s))
        finally:
            self._rig.stream_line.resume_streams()
        self._record("stream_stall", started, len(self._rig.topic_ids) - 1)


def server_pid(directory: Path) -> int | None:
    servers = opencode_servers_in(directory)
    return servers[0].pid if servers else None


# --- the person writing ----------------------------------------------------------------------


class Writer:
    """Writes the turns of one topic, one at a time, pressing Allow on approvals."""

    def __init__(self, rig: Rig, faults: Faults, rng: random.Random) -> None:
        self._rig = rig
        self._faults = faults
        self._rng = rng
        self._unpressed: list[Turn] = []  # approval turns of this topic, pressed or not yet

    async def run(self, turns: list[Turn]) -> None:
        previous: Turn | None = None
        for turn in turns:
            if self._rig.stopping.is_set():
                break
            if previous is not None:
                await self._read_what_came(turn.topic)
                previous.until_id = last_message_id(self._rig.fake)
            await self.turn(turn)
            previous = turn
        if previous is not None:
            previous.until_id = 1 << 62

    async def _read_what_came(self, topic: int) -> None:
        """Before the next prompt, wait until the topic is quiet for a moment, as a person
        reading the answer would: a notice about the turn that just ended is then its own (not
        the next turn's), and two prompts are never close enough to be joined into one."""
        thread = self._rig.topic_ids[topic]
        deadline = time.monotonic() + QUIET_MAX_S
        newest, quiet_since = -1, time.monotonic()
        while time.monotonic() < deadline and not self._rig.stopping.is_set():
            shown = [m.message_id for m in self._rig.fake.bot_messages(thread)]
            if (max(shown) if shown else 0) != newest:
                newest, quiet_since = max(shown) if shown else 0, time.monotonic()
            elif time.monotonic() - quiet_since >= QUIET_S:
                return
            await asyncio.sleep(0.1)

    async def turn(self, turn: Turn) -> None:
        rig = self._rig
        reply = Text(turn.answer, chunk_size=6, delay_s=self._rng.uniform(0.02, 0.12))
        if turn.approval:
            rig.llm.when(
                turn.marker,
                ToolCall("bash", {"command": f"echo {turn.command_output}"}, then=reply),
            )
        else:
            rig.llm.when(turn.marker, reply)
        turn.after_id = last_message_id(rig.fake)
        turn.sent_at = time.monotonic()
        await rig.fake.send_user_message(
            turn.prompt, user_id=ALLOWED_USER_ID, thread_id=rig.topic_ids[turn.topic]
        )
        deadline = turn.sent_at + TURN_TIMEOUT_S
        if turn.approval:
            await self._approve(turn, deadline)
            self._unpressed.append(turn)
        done = await self._resolution(turn, deadline)
        turn.ended_at = time.monotonic()
        outcome = "answered" if times_sent(rig.fake, turn.answer) else "told" if done else "open"
        log.info(
            "turn %s (topic %d%s): %s after %.1f s",
            turn.marker,
            turn.topic,
            ", approval" if turn.approval else "",
            outcome,
            turn.ended_at - turn.sent_at,
        )

    async def _resolution(self, turn: Turn, deadline: float) -> bool:
        """Wait for the turn's answer or notice; meanwhile press a permission prompt of an
        earlier turn that shows up late (as a person would; the session waits for it)."""
        while time.monotonic() < deadline and not self._rig.stopping.is_set():
            if resolved(self._rig, turn):
                return True
            for earlier in [t for t in self._unpressed if not t.pressed]:
                ask = permission_shown(self._rig.fake, earlier)
                if ask is not None:
                    await self._press(ask, earlier)
            await asyncio.sleep(0.2)
        return False

    async def _press(self, ask: StoredMessage, turn: Turn) -> None:
        with contextlib.suppress(LookupError):  # answered or expired meanwhile
            await self._rig.fake.click(ask.message_id, label=ALLOW, user_id=ALLOWED_USER_ID)
            turn.pressed = True

    async def _approve(self, turn: Turn, deadline: float) -> None:
        fake = self._rig.fake
        ask = await until(
            lambda: permission_shown(fake, turn) or resolved(self._rig, turn),
            deadline,
            self._rig.stopping,
        )
        if not isinstance(ask, StoredMessage):
            return
        await asyncio.sleep(self._rng.uniform(0.0, 2.0))

        async def press() -> None:
            await self._press(ask, turn)

        if self._faults.approval_restart_armed:
            await self._faults.restart_with_press(press)
        else:
            await press()


async def until(probe: Callable[[], object], deadline: float, stopping: asyncio.Event) -> object:
    while time.monotonic() < deadline and not stopping.is_set():
        if value := probe():
            return value
        await asyncio.sleep(0.1)
    return None


def last_message_id(fake: FakeTelegram) -> int:
    return fake.chat.next_message_id - 1


def is_permission(text: str, turn: Turn) -> bool:
    """The turn's permission prompt (its progress message names the command too)."""
    return text.startswith("🔐") and turn.command_output in text


def permission_shown(fake: FakeTelegram, turn: Turn) -> StoredMessage | None:
    return next(
        (m for m in fake.bot_messages(ANY) if is_permission(m.text or "", turn) and m.buttons),
        None,
    )


def resolved(rig: Rig, turn: Turn) -> bool:
    return times_sent(rig.fake, turn.answer) > 0 or bool(notices(rig, turn))


def times_sent(fake: FakeTelegram, text: str) -> int:
    return sum(1 for call in fake.calls("sendMessage") if call.ok and call.params["text"] == text)


def notices(rig: Rig, turn: Turn) -> list[str]:
    """Notices in the turn's topic after its prompt (and before the topic's next prompt)."""
    upper = turn.until_id or (1 << 62)
    return [
        m.text or ""
        for m in rig.fake.bot_messages(rig.topic_ids[turn.topic])
        if turn.after_id < m.message_id <= upper
        and any(mark in (m.text or "") for mark in NOTICE_MARKS)
        and turn.command_output not in (m.text or "")  # the permission message itself
    ]


# --- figures ---------------------------------------------------------------------------------


@dataclass
class Figures:
    turns: int = 0
    unsent: int = 0
    approvals: int = 0
    accepted: int = 0
    once: int = 0
    duplicates: int = 0
    lost: int = 0
    told: int = 0
    cut_by_kill: int = 0
    told_without_kill: int = 0
    dropped: int = 0
    approvals_asked: int = 0
    approvals_shown_once: int = 0
    approvals_shown_twice: int = 0
    approvals_ran: int = 0
    approvals_ran_twice: int = 0
    approvals_lost: int = 0
    error_posts: int = 0
    progress_left_live: int = 0
    bot_crashes: int = 0  # the bot exited by itself (and was started again)
    examples: dict[str, list[int]] = field(default_factory=dict)

    def note(self, what: str, turn: Turn) -> None:
        self.examples.setdefault(what, []).append(turn.number)


def tally(rig: Rig, turns: list[Turn], events: list[FaultEvent]) -> Figures:
    figures = Figures(turns=len(turns))
    prompts = asked_prompts(rig.llm)
    for turn in turns:
        count_turn(figures, rig, turn, prompts, events)
    messages = rig.fake.bot_messages(ANY)
    figures.error_posts = sum(1 for m in messages if ERROR_POST in (m.text or ""))
    figures.progress_left_live = sum(
        1 for m in messages if any(b["text"] == "⏹ Stop" for b in m.buttons)
    )
    return figures


def diagnosis(rig: Rig, turns: list[Turn], figures: Figures, base: float) -> str:
    """What the topic showed around every turn that was not delivered exactly once."""
    wanted = {n for numbers in figures.examples.values() for n in numbers}
    prompts = asked_prompts(rig.llm)
    lines = []
    for turn in (t for t in turns if t.number in wanted):
        upper = turn.until_id or (1 << 62)
        shown = [
            f"    #{m.message_id}: {(m.text or '')[:160]!r}{' [buttons]' if m.buttons else ''}"
            for m in rig.fake.bot_messages(rig.topic_ids[turn.topic], include_deleted=True)
            if turn.after_id < m.message_id <= upper
        ]
        lines.append(
            f"{turn.marker} topic {turn.topic} approval={turn.approval} pressed={turn.pressed} "
            f"accepted={turn.marker in prompts} sent at +{turn.sent_at - base:.1f} s, "
            f"waited until +{turn.ended_at - base:.1f} s, answer sent "
            f"{times_sent(rig.fake, turn.answer)}x"
        )
        lines.extend(shown or ["    (no bot message in the topic meanwhile)"])
    lines.extend(live_progress(rig, base))
    return "\n".join(lines)


def live_progress(rig: Rig, base: float) -> list[str]:
    """Every message still carrying a Stop button, with when it was sent."""
    sent_at = {
        call.result["message_id"]: call.at
        for call in rig.fake.calls("sendMessage")
        if call.ok and isinstance(call.result, dict)
    }
    return [
        f"live progress #{m.message_id} in thread {m.thread_id}, sent at "
        f"+{sent_at.get(m.message_id, base) - base:.1f} s: {(m.text or '')[:120]!r}"
        for m in rig.fake.bot_messages(ANY)
        if any(b["text"] == "⏹ Stop" for b in m.buttons)
    ]


def bot_api_calls(fake: FakeTelegram) -> str:
    """The fake's call log without long polls, one JSON object a line."""
    return "\n".join(
        json.dumps(call.to_json(), default=str)
        for call in fake.calls()
        if call.method != "getUpdates"
    )


def asked_prompts(llm: MockLLM) -> str:
    """Every last message OpenCode sent to the model, as one searchable text."""
    return "\n".join(json.dumps(body["messages"][-1]) for body in llm.agent_requests)


def count_turn(
    figures: Figures, rig: Rig, turn: Turn, prompts: str, events: list[FaultEvent]
) -> None:
    if not turn.sent_at:  # the run was stopped before its turn came
        figures.unsent += 1
        return
    sent = times_sent(rig.fake, turn.answer)
    accepted = turn.marker in prompts
    told = bool(notices(rig, turn)) and sent == 0
    figures.accepted += accepted
    if sent == 1:
        figures.once += 1
    elif sent > 1:
        figures.duplicates += sent - 1
        figures.note("duplicate", turn)
    elif told:
        figures.told += 1
        if killed_during(turn, events):
            figures.cut_by_kill += 1
        else:
            figures.told_without_kill += 1
            figures.note("told without a server kill", turn)
    elif accepted:
        figures.lost += 1
        figures.note("lost", turn)
    else:
        figures.dropped += 1
        figures.note("dropped", turn)
    if turn.approval:
        count_approval(figures, rig, turn, accepted=accepted, told=told)


def count_approval(figures: Figures, rig: Rig, turn: Turn, *, accepted: bool, told: bool) -> None:
    figures.approvals += 1
    shown = sum(
        1
        for call in rig.fake.calls("sendMessage")
        if call.ok and is_permission(call.params["text"], turn)
    )
    ran = max(
        (
            sum(
                1
                for m in body["messages"]
                if m.get("role") == "tool" and turn.command_output in json.dumps(m)
            )
            for body in rig.llm.agent_requests
        ),
        default=0,
    )
    figures.approvals_asked += accepted
    figures.approvals_shown_once += shown == 1
    figures.approvals_shown_twice += shown > 1
    figures.approvals_ran += ran >= 1
    figures.approvals_ran_twice += ran > 1
    if shown > 1 or ran > 1:
        figures.note("approval twice", turn)
    if accepted and not told and (shown == 0 or (turn.pressed and ran == 0)):
        figures.approvals_lost += 1
        figures.note("approval lost", turn)


def killed_during(turn: Turn, events: list[FaultEvent]) -> bool:
    end = turn.ended_at or time.monotonic()
    return any(
        e.kind == "server_kill"
        and e.topic == turn.topic
        and turn.sent_at - KILL_BEFORE_S <= e.started <= end
        for e in events
    )


# --- the run ---------------------------------------------------------------------------------


def plan(config: ChaosConfig, rng: random.Random) -> list[Turn]:
    turns = []
    for number in range(1, config.turns + 1):
        nonce = secrets.token_hex(4)
        turns.append(
            Turn(
                number,
                (number - 1) % config.topics,
                rng.random() < config.approval_share,
                f"Chaos answer {number:04d}: done, reference {nonce}.",
            )
        )
    return turns


async def soak(config: ChaosConfig, workdir: Path) -> tuple[Figures, Counter[str], float, int]:
    rng = random.Random(config.seed)
    turns = plan(config, rng)
    rig = await start_rig(config, workdir)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, rig.stopping.set)
    exit_code = -1
    try:
        started = time.monotonic()
        faults = Faults(rig, config, random.Random(rng.random()))
        writers_done = asyncio.Event()
        injector = asyncio.create_task(faults.run(writers_done))
        writers = [
            Writer(rig, faults, random.Random(rng.random())).run(
                [t for t in turns if t.topic == topic]
            )
            for topic in range(config.topics)
        ]
        await asyncio.gather(*writers)
        writers_done.set()
        await injector
        settled = time.monotonic() + SETTLE_S
        await until(lambda: all(resolved(rig, t) for t in turns), settled, rig.stopping)
        await asyncio.sleep(2.0)  # a late duplicate would show now
        wall = time.monotonic() - started
        figures = tally(rig, turns, faults.events)
        figures.bot_crashes = len(faults.crashes)
        counts = faults.counts()
        (workdir / "diagnosis.txt").write_text(diagnosis(rig, turns, figures, started))
        (workdir / "calls.jsonl").write_text(bot_api_calls(rig.fake))
        (workdir / "faults.txt").write_text(
            "\n".join(
                f"{e.kind} +{e.started - started:.1f}..+{e.ended - started:.1f} s topic {e.topic}"
                for e in faults.events
            )
        )
    finally:
        exit_code = await stop_rig(rig)
    return figures, counts, wall, exit_code


def report(config: ChaosConfig, f: Figures, counts: Counter[str], wall: float, code: int) -> str:
    faults = ", ".join(f"{KIND_NAMES[k]} {counts[k]}" for k in KINDS)
    examples = "; ".join(f"{k}: {v[:10]}" for k, v in f.examples.items()) or "none"
    return "\n".join(
        [
            f"chaos soak: seed {config.seed}, {f.turns} turns over {config.topics} topics "
            f"({config.topics - 1} managed, 1 external), {f.approvals} with an approval"
            + (f", {f.unsent} not sent (the run was stopped)" if f.unsent else ""),
            f"faults injected: {faults} (total {sum(counts.values())})",
            f"turns: accepted {f.accepted}, delivered exactly once {f.once}, duplicates "
            f"{f.duplicates}, lost {f.lost}, told {f.told} (cut by a server kill "
            f"{f.cut_by_kill}, without one {f.told_without_kill}), dropped {f.dropped}",
            f"approvals: asked {f.approvals_asked}, shown once {f.approvals_shown_once}, shown "
            f"twice {f.approvals_shown_twice}, ran {f.approvals_ran}, ran twice "
            f"{f.approvals_ran_twice}, lost {f.approvals_lost}",
            f"error posts {f.error_posts}, progress messages left live {f.progress_left_live}, "
            f"bot crashes {f.bot_crashes}, bot exit code at SIGTERM {code}",
            f"turn numbers: {examples}",
            f"wall time {wall:.0f} s",
        ]
    )


def parse_args(argv: list[str] | None) -> tuple[ChaosConfig, bool]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=ChaosConfig.turns)
    parser.add_argument("--topics", type=int, default=ChaosConfig.topics)
    parser.add_argument("--seed", type=int, default=ChaosConfig.seed)
    parser.add_argument(
        "--outage-max-s", type=float, default=ChaosConfig.outage_s[1], help="longest outage"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)
    if args.topics < 2:
        parser.error("--topics must be at least 2 (managed ones and one external)")
    outage = (min(ChaosConfig.outage_s[0], args.outage_max_s), args.outage_max_s)
    return ChaosConfig(args.turns, args.topics, args.seed, outage_s=outage), args.keep


def is_clean(figures: Figures) -> bool:
    turns = figures.lost + figures.duplicates + figures.dropped
    approvals = figures.approvals_lost + figures.approvals_shown_twice
    return turns + approvals + figures.progress_left_live + figures.bot_crashes == 0


def main(argv: list[str] | None = None) -> int:
    config, keep = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    workdir = Path(tempfile.mkdtemp(prefix="oc-outpost-chaos-"))
    figures: Figures | None = None
    try:
        figures, counts, wall, code = asyncio.run(soak(config, workdir))
    finally:
        clean = figures is not None and is_clean(figures)
        if keep or not clean:  # a failed run's bot log and diagnosis are in it
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if not clean and (workdir / "diagnosis.txt").exists():
        print((workdir / "diagnosis.txt").read_text())
    print(report(config, figures, counts, wall, code))
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
