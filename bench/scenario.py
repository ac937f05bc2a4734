"""One benchmark run: N topics stream a long answer at once through the bot's Telegram path.

The path is the product's: ``TelegramChat`` (the ChatPort implementation) over an outbox policy
over a real PTB ``Bot`` talking HTTP to the fake Bot API with its flood rule on. The turns are
synthetic ``TurnSnapshot``s (a growing answer with tool lines every few events), fed through
``show_progress`` as OpenCode events would, then ``show_final`` when the session goes idle.
All topics go idle at the same moment: the worst case for a shared budget.

Time is Telegram time: the fake and the outbox share one ``Clock`` running ``speedup`` times
faster than the wall clock, so Telegram's real limits (1 s per chat, 20 per minute per group,
30 per second) apply unchanged in Telegram seconds.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import statistics
from collections.abc import Callable
from dataclasses import dataclass, replace

from telegram import Bot
from telegram.request import HTTPXRequest
from tests.rig.fake_telegram import FORUM_ICONS, Call, FakeTelegram

from bench.glance import Glance
from oc_outpost.core.chat import ClosingProgress, GoneTopics
from oc_outpost.core.topic_states import TopicState
from oc_outpost.core.turn import ToolLine, TurnPhase, TurnSnapshot
from oc_outpost.telegram.outbox import MINUTE_S, Clock, Limits, Outbox
from oc_outpost.telegram.view import TelegramChat

CHAT_ID = -1001234567890
BOT_TOKEN = "123456:BENCH"
END_MARK = "— end of answer {topic} —"
HTTP_TIMEOUT_S = 10.0

log = logging.getLogger(__name__)

OutboxFactory = Callable[[Bot, Clock], Outbox]
DONE_ICON = next(icon_id for emoji, icon_id in FORUM_ICONS if emoji == "✅")


class NoProgressLog:
    """Progress messages need not survive a restart here."""

    async def progress_shown(self, session_id: str, message_id: int) -> None:
        return None

    async def progress_closing(self, closing: ClosingProgress) -> None:
        return None

    async def progress_closed(self, message_id: int) -> None:
        return None

    async def progress_left_closing(self) -> list[ClosingProgress]:
        return []


@dataclass(frozen=True)
class Scenario:
    topics: int
    stream_s: float = 90.0  # Telegram seconds from the prompt to the session going idle
    event_interval_s: float = 0.5  # an OpenCode event (text delta or tool update) this often
    tool_every: int = 8  # every n-th event is a tool call
    answer_chars: int = 3000  # one message: the final fits in 4096 UTF-16 units
    settle_cap_s: float = 300.0  # after idle, stop waiting for finals and clean-up edits
    glance: bool = False  # topic icons and the board on (TOPIC_STATUS=icons, BOARD=on)


@dataclass(frozen=True)
class RunResult:
    policy: str
    topics: int
    retry_after_429s: int
    finals_delivered: int
    final_latencies_s: list[float]  # per delivered final, from idle to its last part arriving
    progress_edits_per_topic_min: float
    longest_stale_s: float  # longest time any topic's progress message went unchanged
    calls_per_turn: float
    round_trip_s: float
    icon_calls_per_min: float = 0.0  # icon edits and their service-message deletes
    icons_done: int = 0  # topics whose icon shows "done" at the end
    board_calls_per_min: float = 0.0  # board posts, edits, pin and its notice's delete


def answer_text(topic: int, chars: int) -> str:
    words = (
        "The budget, not OpenCode, is the bottleneck when several projects stream at once; "
        "every edit counts like a send and all topics share the group's minute. "
    )
    body = (words * (chars // len(words) + 1))[:chars]
    paragraphs = [body[i : i + 400] for i in range(0, len(body), 400)]
    return "\n\n".join([f"Answer for topic {topic}.", *paragraphs, END_MARK.format(topic=topic)])


class StreamingTurn:
    """A synthetic turn: its answer grows with time; tool lines appear every few events."""

    def __init__(self, topic: int, turn_id: int, scenario: Scenario, started_at: float) -> None:
        self.topic = topic
        self.answer = answer_text(topic, scenario.answer_chars)
        self.scenario = scenario
        self.snapshot = TurnSnapshot(turn_id, f"ses_bench_{turn_id}", started_at)
        self.events = 0

    def advance(self, now: float) -> TurnSnapshot:
        self.events += 1
        share = min(1.0, (now - self.snapshot.started_at) / self.scenario.stream_s)
        text = self.answer[: int(len(self.answer) * share)]
        snapshot = replace(self.snapshot, texts=(("text", text),))
        if self.events % self.scenario.tool_every == 0:
            call_id = f"call_{self.events}"
            tool = ToolLine(call_id, "bash", "completed", f"pytest -q tests/step_{self.events}")
            snapshot = replace(snapshot, steps=snapshot.steps + 1, tools=(*snapshot.tools, tool))
        self.snapshot = snapshot
        return snapshot

    def finished(self, now: float) -> TurnSnapshot:
        return replace(
            self.snapshot, texts=(("text", self.answer),), phase=TurnPhase.DONE, finished_at=now
        )


def make_bot(fake: FakeTelegram) -> Bot:
    request = HTTPXRequest(
        connection_pool_size=64,
        connect_timeout=HTTP_TIMEOUT_S,
        read_timeout=HTTP_TIMEOUT_S,
        write_timeout=HTTP_TIMEOUT_S,
        pool_timeout=HTTP_TIMEOUT_S,
    )
    return Bot(
        BOT_TOKEN,
        base_url=f"{fake.url}/bot",
        base_file_url=f"{fake.url}/file/bot",
        request=request,
    )


async def measure_round_trip(bot: Bot, clock: Clock, samples: int = 7) -> float:
    """Median duration of one Bot API call, in Telegram seconds."""
    durations = []
    for _ in range(samples):
        started = clock.now()
        await bot.get_me()
        durations.append(clock.now() - started)
    return statistics.median(durations)


async def run(
    policy: str, make_outbox: OutboxFactory, scenario: Scenario, clock: Clock
) -> RunResult:
    fake = FakeTelegram(CHAT_ID, BOT_TOKEN, clock=clock.now)
    await fake.start()
    bot = make_bot(fake)
    try:
        await bot.initialize()
        round_trip = await measure_round_trip(bot, clock)
        topics = [await fake.create_topic_by_user(f"project-{i}") for i in range(scenario.topics)]
        fake.flood()  # Telegram's limits: 1 s per chat, 20 per minute per group, 30 per second
        outbox = make_outbox(bot, clock)
        outbox.start()
        chat = TelegramChat(outbox, CHAT_ID, GoneTopics(), NoProgressLog(), clock=clock.now)
        glance = Glance(fake, outbox, CHAT_ID, clock) if scenario.glance else None
        started = clock.now()
        if glance is not None:
            await glance.start()
        idle_at = started + scenario.stream_s
        turns = [StreamingTurn(t, i + 1, scenario, started) for i, t in enumerate(topics)]
        outcomes = await asyncio.gather(
            *(drive(chat, turn, clock, idle_at, scenario, glance) for turn in turns)
        )
        await settle(outbox, clock, idle_at + scenario.settle_cap_s)
        if glance is not None:  # the last icons wait out their settle time, then the Outbox
            await clock.sleep(glance.settle_s + 1.0)
            await settle(outbox, clock, idle_at + scenario.settle_cap_s)
            await glance.stop()
        await outbox.close(2.0)
    finally:
        await bot.shutdown()
        await fake.stop()
    return measure(policy, fake, topics, started, idle_at, sum(outcomes), round_trip)


async def drive(
    chat: TelegramChat,
    turn: StreamingTurn,
    clock: Clock,
    idle_at: float,
    scenario: Scenario,
    glance: Glance | None,
) -> bool:
    """Stream until ``idle_at``, then deliver the final answer; True if it was delivered."""
    if glance is not None:
        glance.report(turn.topic, TopicState.RUNNING)
    chat.show_progress(turn.topic, turn.snapshot)
    while (now := clock.now()) < idle_at:
        await clock.sleep(min(scenario.event_interval_s, idle_at - now))
        if clock.now() < idle_at:
            chat.show_progress(turn.topic, turn.advance(clock.now()))
    final = chat.show_final(turn.topic, turn.finished(idle_at), streaming=True)
    try:
        await asyncio.wait_for(final, clock.to_wall(scenario.settle_cap_s))
    except Exception as exc:  # noqa: BLE001 - a lost final is a measured outcome, not a crash
        log.info("final answer of topic %s not delivered: %r", turn.topic, exc)
        return False
    if glance is not None:  # as the tracker reports it: once the final is delivered
        glance.report(turn.topic, TopicState.DONE)
    return True


async def settle(outbox: Outbox, clock: Clock, deadline: float) -> None:
    """Let clean-up edits (progress → summary) drain, up to ``deadline``."""
    while outbox.pending() and clock.now() < deadline:
        await clock.sleep(0.5)


def measure(
    policy: str,
    fake: FakeTelegram,
    topics: list[int],
    started: float,
    idle_at: float,
    delivered: int,
    round_trip: float,
) -> RunResult:
    calls = [c for c in fake.calls() if c.at >= started and c.method != "getUpdates"]
    latencies = [
        arrival - idle_at
        for topic in topics
        if (arrival := _final_arrival(calls, topic)) is not None
    ]
    progress = _progress_updates(fake, calls, idle_at)
    edits = [max(0, len(progress.get(topic, [])) - 1) for topic in topics]
    minutes = (idle_at - started) / MINUTE_S
    span_min = (max((c.at for c in calls), default=idle_at) - started) / MINUTE_S
    icon_calls, board_calls = _glance_calls(fake, calls)
    return RunResult(
        policy=policy,
        topics=len(topics),
        retry_after_429s=sum(1 for c in calls if c.error_code == 429),
        finals_delivered=min(delivered, len(latencies)),
        final_latencies_s=latencies,
        progress_edits_per_topic_min=statistics.mean(edits) / minutes,
        longest_stale_s=max(
            _longest_gap(progress.get(topic, []), started, idle_at) for topic in topics
        ),
        calls_per_turn=len(calls) / len(topics),
        round_trip_s=round_trip,
        icon_calls_per_min=icon_calls / span_min,
        icons_done=sum(fake.topics[t].icon_custom_emoji_id == DONE_ICON for t in topics),
        board_calls_per_min=board_calls / span_min,
    )


def _glance_calls(fake: FakeTelegram, calls: list[Call]) -> tuple[int, int]:
    """(icon calls, board calls): icon edits and deletes of "topic edited" notices; board
    sends and edits in General, its pin and the delete of the "pinned" notice."""
    icons = board = 0
    for c in calls:
        if c.method == "editForumTopic" and "icon_custom_emoji_id" in c.params:
            icons += 1
        elif c.method == "pinChatMessage":
            board += 1
        elif c.method == "deleteMessage":
            deleted = fake.message(int(c.params["message_id"]))
            icons += "forum_topic_edited" in (deleted.service or {})
            board += "pinned_message" in (deleted.service or {})
        elif c.method in ("sendMessage", "editMessageText") and "Board" in str(
            c.params.get("text", "")
        ):
            board += 1
    return icons, board


def _final_arrival(calls: list[Call], topic: int) -> float | None:
    mark = END_MARK.format(topic=topic)
    return next(
        (
            c.at
            for c in calls
            if c.ok
            and c.method == "sendMessage"
            and c.params.get("message_thread_id") == topic
            and "reply_markup" not in c.params
            and mark in str(c.params.get("text", ""))
        ),
        None,
    )


def _progress_updates(
    fake: FakeTelegram, calls: list[Call], idle_at: float
) -> dict[int, list[float]]:
    """Per topic, when its progress message was sent or visibly changed while streaming."""
    updates: dict[int, list[float]] = {}
    for c in calls:
        if not c.ok or c.at >= idle_at or "reply_markup" not in c.params:
            continue  # only progress messages carry the Stop button while streaming
        if c.method == "sendMessage":
            updates.setdefault(int(c.params["message_thread_id"]), []).append(c.at)
        elif c.method == "editMessageText":
            thread = fake.message(int(c.params["message_id"])).thread_id
            updates.setdefault(int(thread or 0), []).append(c.at)
    return updates


def _longest_gap(stamps: list[float], started: float, idle_at: float) -> float:
    edges = [started, *sorted(stamps), idle_at]
    return max(b - a for a, b in itertools.pairwise(edges))


def theoretical_final_latencies(finals: int, limits: Limits, one_way_s: float) -> list[float]:
    """The least time after idle at which each of ``finals`` simultaneous one-message answers
    can arrive at Telegram: the k-th (from 0) no sooner than k chat gaps after the first, and a
    group may take only ``group_per_minute`` calls in any 60 s — so this assumes the policy kept
    the whole minute free for them (a policy that showed no progress at all would have)."""
    per_minute = max(1, limits.group_per_minute)
    gap = limits.per_chat_interval_s
    return [
        (k % per_minute) * gap + (k // per_minute) * MINUTE_S + one_way_s for k in range(finals)
    ]
