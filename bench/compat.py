"""Which OpenCode versions does oc-outpost work with? The end-to-end smoke against each one.

    uv run python bench/compat.py 1.1.65 1.3.2 1.14.41 1.18.33

For each version, one at a time: opencode-ai@VERSION is installed with npm into the test cache
(`~/.cache/oc-outpost-tests/opencode-VERSION`, like the pinned one the tests use), then the
end-to-end tests below run against it through the test rig (`OC_OUTPOST_TEST_OPENCODE=<binary>`:
the real bot, the fake Bot API, the mock LLM). A table of passed/failed per step is printed; the
pytest output of a failed step is kept under the cache for reading.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.rig

from tests.rig.opencode_bin import (
    ANY_VERSION_ENV_VAR,
    OpenCodeUnavailable,
    cache_base,
    install_opencode,
)

ROOT = Path(__file__).resolve().parent.parent
SMOKE = {
    "new project": "tests/e2e/test_skeleton.py::test_new_creates_directory_topic_and_welcome",
    "prompt": "tests/e2e/test_skeleton.py::test_prompt_streams_and_answers_in_the_topic",
    "permission": "tests/e2e/test_skeleton.py::test_bash_permission_allow_once_finishes_the_turn",
    "long answer": "tests/e2e/test_rendering.py::"
    "test_long_answers_arrive_in_parts_without_loss_and_files_come_in",
    "crash recovery": "tests/e2e/test_orchestration.py::"
    "test_kill_9_mid_turn_is_told_restarted_under_the_same_binding_and_answers",
}
RUN_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class Outcome:
    version: str
    results: dict[str, str]  # step -> "pass" | "FAIL" | "error: ..."
    seconds: float

    @property
    def passed(self) -> bool:
        return all(result == "pass" for result in self.results.values())


def run_version(version: str) -> Outcome:
    started = time.monotonic()
    try:
        binary = install_opencode(version)
    except OpenCodeUnavailable as exc:
        first_line = str(exc).splitlines()[0]
        return Outcome(version, dict.fromkeys(SMOKE, f"not installed: {first_line}"), 0.0)
    print(f"== OpenCode {version}: {binary}", flush=True)
    with tempfile.TemporaryDirectory(prefix="oc-compat-") as scratch:
        report = Path(scratch) / "junit.xml"
        log = cache_base() / f"compat-{version}.log"
        completed = _pytest(binary, report, log)
        results = _read_report(report) if report.exists() else {}
    outcome = {
        step: results.get(test.rsplit("::", 1)[-1], "not run") for step, test in SMOKE.items()
    }
    if completed != 0:
        print(f"   pytest exit code {completed}; its output: {log}", flush=True)
    return Outcome(version, outcome, time.monotonic() - started)


def _pytest(binary: Path, report: Path, log: Path) -> int:
    env = dict(os.environ) | {ANY_VERSION_ENV_VAR: str(binary)}
    command = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
        f"--junitxml={report}", *SMOKE.values(),
    ]  # fmt: skip
    with log.open("w") as output:
        try:
            return subprocess.run(
                command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
                timeout=RUN_TIMEOUT_S, check=False,
            ).returncode  # fmt: skip
        except subprocess.TimeoutExpired:
            return -1


def _read_report(report: Path) -> dict[str, str]:
    results = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        failed = case.find("failure") is not None or case.find("error") is not None
        skipped = case.find("skipped") is not None
        results[case.get("name", "")] = "FAIL" if failed else "skipped" if skipped else "pass"
    return results


def table(outcomes: list[Outcome]) -> str:
    header = ["OpenCode", *SMOKE, "time"]
    rows = [
        [o.version, *(o.results[step] for step in SMOKE), f"{o.seconds:.0f} s"] for o in outcomes
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("versions", nargs="+", metavar="VERSION", help="opencode-ai versions")
    args = parser.parse_args()
    outcomes = [run_version(version) for version in args.versions]  # one at a time: CPU
    print()
    print(table(outcomes))
    return 0 if all(o.passed for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
