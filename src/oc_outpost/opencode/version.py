"""Which OpenCode this is (`opencode --version`) and whether oc-outpost was tested with it.

The tested range is what `bench/compat.py` ran the end-to-end smoke against; the pinned version
is the one CI runs. A version outside the range is worth a warning, never a refusal.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from enum import StrEnum

PINNED = "1.18.33"
OLDEST_TESTED = "1.1.65"
NEWEST_TESTED = PINNED
INSTALL_COMMAND = f"npm install -g opencode-ai@{PINNED}"
VERSION_TIMEOUT_S = 30.0

_VERSION_RE = re.compile(r"(\d+)\.(\d+)\.(\d+)")


class Fit(StrEnum):
    TESTED = "tested"
    OLDER = "older"
    NEWER = "newer"
    UNKNOWN = "unknown"  # not a version number we can compare


@dataclass(frozen=True)
class VersionVerdict:
    version: str
    fit: Fit

    @property
    def tested(self) -> bool:
        return self.fit == Fit.TESTED

    def describe(self) -> str:
        span = f"{OLDEST_TESTED} – {NEWEST_TESTED}"
        match self.fit:
            case Fit.TESTED:
                return f"OpenCode {self.version} is in the tested range {span}"
            case Fit.OLDER:
                return f"OpenCode {self.version} is older than the tested range {span}"
            case Fit.NEWER:
                return f"OpenCode {self.version} is newer than the tested range {span}"
        return f"OpenCode version {self.version!r} cannot be compared with the tested range {span}"


def parse_version(text: str) -> tuple[int, int, int] | None:
    match = _VERSION_RE.search(text)
    if match is None:
        return None
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def judge(version: str) -> VersionVerdict:
    parsed = parse_version(version)
    oldest, newest = parse_version(OLDEST_TESTED), parse_version(NEWEST_TESTED)
    assert oldest is not None and newest is not None
    if parsed is None:
        return VersionVerdict(version, Fit.UNKNOWN)
    if parsed < oldest:
        return VersionVerdict(version, Fit.OLDER)
    if parsed > newest:
        return VersionVerdict(version, Fit.NEWER)
    return VersionVerdict(version, Fit.TESTED)


class VersionError(RuntimeError):
    """`opencode --version` did not answer with a version."""


async def opencode_version(binary: str, timeout_s: float = VERSION_TIMEOUT_S) -> str:
    """What `<binary> --version` prints (its last word). Raises VersionError or OSError."""
    process = await asyncio.create_subprocess_exec(
        binary,
        "--version",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise VersionError(f"no answer within {timeout_s:.0f} s") from None
    if process.returncode != 0:
        detail = (err or out).decode(errors="replace").strip().splitlines()
        raise VersionError(f"exit code {process.returncode}: {detail[-1] if detail else ''}")
    words = out.decode(errors="replace").split()
    if not words:
        raise VersionError("it printed nothing")
    return words[-1]
