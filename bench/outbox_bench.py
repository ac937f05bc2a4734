"""Benchmark: N topics streaming at once through the bot's Telegram path, three policies.

    uv run python bench/outbox_bench.py                # the figures in BENCHMARKS.md
    uv run python bench/outbox_bench.py --runs 1 --topics 10 --speedup 40   # a quick look

Each run starts a fake Bot API with Telegram's flood rule on (1 s per chat, 20 calls per rolling
minute per group, 30 per second; a 429 with retry_after when exceeded), streams N synthetic turns
through ``TelegramChat`` + the policy + a real PTB ``Bot`` over HTTP, lets all N sessions go idle
at the same moment and measures what the fake saw. Time runs ``--speedup`` times faster than the
wall clock for the fake and the bot alike; all figures are in Telegram seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import multiprocessing
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` and `tests.rig` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.policies import FixedIntervalOutbox, GlobalQueueOutbox
from bench.scenario import (
    OutboxFactory,
    RunResult,
    Scenario,
    run,
    theoretical_final_latencies,
)
from oc_outpost.telegram.outbox import Clock, Limits, Outbox

POLICIES: dict[str, OutboxFactory] = {
    "ours": lambda bot, clock: Outbox(bot, Limits(), clock=clock),
    "fixed 2 s per topic": lambda bot, clock: FixedIntervalOutbox(bot, clock=clock),
    "global queue 1/3 s": lambda bot, clock: GlobalQueueOutbox(bot, clock=clock),
}


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); a lost final is +inf."""
    if not values:
        return math.inf
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    if rank == low or math.isinf(ordered[high]):
        return ordered[low] if rank == low else math.inf
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def final_latencies(result: RunResult) -> list[float]:
    lost = result.topics - len(result.final_latencies_s)
    return [*result.final_latencies_s, *[math.inf] * lost]


@dataclass(frozen=True)
class Row:
    policy: str
    topics: int
    runs: int
    retry_after_429s: float
    finals: str
    p50_s: float
    p95_s: float
    min_p95_s: float
    edits_per_topic_min: float
    longest_stale_s: float
    calls_per_turn: float
    icon_calls_per_min: float = 0.0
    board_calls_per_min: float = 0.0

    @property
    def ratio(self) -> float:
        return self.p95_s / self.min_p95_s


def summarise(results: list[RunResult]) -> Row:
    """Medians over the runs of one (policy, N)."""
    first = results[0]
    one_way = statistics.median(r.round_trip_s for r in results) / 2
    minimum = percentile(theoretical_final_latencies(first.topics, Limits(), one_way), 95)
    delivered = sorted(r.finals_delivered for r in results)
    return Row(
        policy=first.policy,
        topics=first.topics,
        runs=len(results),
        retry_after_429s=statistics.median(r.retry_after_429s for r in results),
        finals=f"{delivered[0]}–{delivered[-1]}/{first.topics}"
        if delivered[0] != delivered[-1]
        else f"{delivered[0]}/{first.topics}",
        p50_s=statistics.median(percentile(final_latencies(r), 50) for r in results),
        p95_s=statistics.median(percentile(final_latencies(r), 95) for r in results),
        min_p95_s=minimum,
        edits_per_topic_min=statistics.median(r.progress_edits_per_topic_min for r in results),
        longest_stale_s=statistics.median(r.longest_stale_s for r in results),
        calls_per_turn=statistics.median(r.calls_per_turn for r in results),
        icon_calls_per_min=statistics.median(r.icon_calls_per_min for r in results),
        board_calls_per_min=statistics.median(r.board_calls_per_min for r in results),
    )


HEADER = (
    "| N | policy | 429s | finals delivered | final p50 s | final p95 s | min p95 s | p95 / min "
    "| progress edits / topic / min | longest frozen progress s | Bot API calls / turn |"
)


GLANCE_HEADER = " icon calls / min | board calls / min |"


def markdown(rows: list[Row], *, glance: bool = False) -> str:
    columns = 13 if glance else 11
    lines = [HEADER + (GLANCE_HEADER if glance else ""), "|" + "---|" * columns]
    for r in rows:
        line = (
            f"| {r.topics} | {r.policy} | {r.retry_after_429s:g} | {r.finals} | {_s(r.p50_s)} "
            f"| {_s(r.p95_s)} | {r.min_p95_s:.2f} | {_x(r.ratio)} | {r.edits_per_topic_min:.1f} "
            f"| {r.longest_stale_s:.0f} | {r.calls_per_turn:.1f} |"
        )
        if glance:
            line += f" {r.icon_calls_per_min:.1f} | {r.board_calls_per_min:.1f} |"
        lines.append(line)
    return "\n".join(lines)


def _s(seconds: float) -> str:
    return "lost" if math.isinf(seconds) else f"{seconds:.1f}"


def _x(ratio: float) -> str:
    return "∞" if math.isinf(ratio) else f"{ratio:.2f}"


@dataclass(frozen=True)
class Job:
    run_index: int
    topics: int
    policy: str
    stream_s: float
    speedup: float
    glance: bool = False


def run_job(job: Job) -> tuple[RunResult, float]:
    """One run in a worker process; returns its result and its wall time."""
    # The fake logs a reset connection when a baseline is shut down mid-request; not a result.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    started = time.monotonic()
    scenario = Scenario(topics=job.topics, stream_s=job.stream_s, glance=job.glance)
    result = asyncio.run(run(job.policy, POLICIES[job.policy], scenario, Clock(job.speedup)))
    return result, time.monotonic() - started


def jobs_for(args: argparse.Namespace) -> list[Job]:
    """Every (run, N, policy), largest N first so the worker processes finish together.

    Run r streams ``stream_s + r × phase_step_s``: each run goes idle at another point of the
    minute, since progress edits come in waves."""
    return [
        Job(
            run_index,
            topics,
            policy,
            args.stream_s + run_index * args.phase_step_s,
            args.speedup,
            args.glance,
        )
        for topics in sorted(args.topics, reverse=True)
        for run_index in range(args.runs)
        for policy in args.policies
    ]


def bench(args: argparse.Namespace) -> list[Row]:
    """Run the jobs in parallel processes (each has its own event loop, fake and bot: the runs
    share nothing but the CPU, and use a small part of it)."""
    results: dict[tuple[int, str], list[RunResult]] = {}
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=context) as pool:
        futures = {pool.submit(run_job, job): job for job in jobs_for(args)}
        for future in as_completed(futures):
            job = futures[future]
            result, wall_s = future.result()
            results.setdefault((job.topics, job.policy), []).append(result)
            print(
                f"run {job.run_index + 1}/{args.runs} N={job.topics:<2} {job.policy:<20} "
                f"429s={result.retry_after_429s:<4} "
                f"finals={result.finals_delivered}/{job.topics} "
                f"p95={_s(percentile(final_latencies(result), 95)):>6} s "
                + (f"icons done={result.icons_done}/{job.topics} " if job.glance else "")
                + f"({wall_s:.1f} s wall)",
                flush=True,
            )
    return [summarise(results[(n, p)]) for n in args.topics for p in args.policies]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3, help="runs per (N, policy); medians shown")
    parser.add_argument("--topics", type=_ints, default=[1, 4, 10], help="e.g. 1,4,10")
    parser.add_argument("--speedup", type=float, default=10.0, help="Telegram s per wall s")
    parser.add_argument("--stream-s", type=float, default=90.0, help="Telegram s per turn")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel processes")
    parser.add_argument(
        "--phase-step-s", type=float, default=20.0, help="run r streams stream-s + r × this"
    )
    parser.add_argument(
        "--glance",
        action="store_true",
        help="topic icons and the board on (TOPIC_STATUS=icons, BOARD=on)",
    )
    parser.add_argument(
        "--policies",
        type=_names,
        default=list(POLICIES),
        help="comma list of " + str(list(POLICIES)),
    )
    return parser.parse_args(argv)


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def _names(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown policies {unknown}; known: {list(POLICIES)}")
    return names


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.monotonic()
    rows = bench(args)
    elapsed = time.monotonic() - started
    print()
    print(
        f"{args.runs} run(s) per row, medians; time ×{args.speedup:g} (Telegram seconds), "
        f"{args.stream_s:g} s of streaming per turn (+{args.phase_step_s:g} s per run), "
        "all sessions idle at once; "
        f"{'icons and board on; ' if args.glance else ''}"
        f"{elapsed:.0f} s wall in total"
    )
    print(markdown(rows, glance=args.glance))


if __name__ == "__main__":
    main()
