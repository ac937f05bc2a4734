"""What the bot sends back besides text: files, diff summaries, and what a turn produced.

A leaf module (no other core import), so the turn snapshot can carry a `TurnOutput`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# Telegram's cloud Bot API accepts uploads up to 50 MB, photos up to 10 MB (a local Bot API
# server allows more, but the bot cannot tell which it talks to).
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_PHOTO_BYTES = 10 * 1024 * 1024
PHOTO_MIMES = frozenset({"image/jpeg", "image/png", "image/webp"})


@dataclass(frozen=True)
class OutFile:
    """A file the bot sends to the chat."""

    name: str
    mime: str
    data: bytes

    @property
    def is_photo(self) -> bool:
        return self.mime in PHOTO_MIMES and len(self.data) <= MAX_PHOTO_BYTES


@dataclass(frozen=True)
class DiffStat:
    additions: int
    deletions: int
    files: int

    @classmethod
    def of(cls, changes: Iterable[tuple[int, int]]) -> DiffStat:
        """The sum of (additions, deletions) per file."""
        pairs = list(changes)
        return cls(sum(a for a, _ in pairs), sum(d for _, d in pairs), len(pairs))

    def text(self) -> str:
        files = f"{self.files} file{'s' if self.files != 1 else ''}"
        return f"+{self.additions} \u2212{self.deletions} · {files}"


@dataclass(frozen=True)
class TurnOutput:
    """What a finished turn produced: images to show, and its changes behind a Diff button."""

    images: tuple[OutFile, ...] = ()
    changes: DiffStat | None = None
    diff_token: str | None = None


NO_OUTPUT = TurnOutput()
