"""Styled text for Telegram: plain text plus entity ranges, split into messages that fit.

A `Styled` holds text and `Span`s in code-point offsets plus the positions where a cut is best
(block starts). `split()` cuts it into `Formatted` messages of at most `limit` UTF-16 code units:
the parts' texts joined equal the original text, a span crossing a cut is continued in the next
part (so a code block is re-opened with its language), and every entity's offset and length
are in UTF-16 code units relative to its own part, as the Bot API wants them.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

MESSAGE_LIMIT = 4096  # UTF-16 code units, after entity parsing

_SAFE_SCHEMES = ("http://", "https://", "mailto:", "tg://")


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _units(char: str) -> int:
    return 2 if ord(char) > 0xFFFF else 1


def is_safe_url(url: str) -> bool:
    """Only links a phone can open without surprises: web, mail and Telegram links."""
    lowered = url.strip().lower()
    return lowered.startswith(_SAFE_SCHEMES) and not any(c.isspace() for c in url.strip())


@dataclass(frozen=True)
class Span:
    """A formatted range of `Styled.text` in code points: [start, end)."""

    kind: str  # a Bot API entity type: bold, italic, code, pre, text_link, blockquote, ...
    start: int
    end: int
    url: str | None = None
    language: str | None = None


@dataclass(frozen=True)
class Entity:
    """A Bot API MessageEntity: offset and length in UTF-16 code units."""

    type: str
    offset: int
    length: int
    url: str | None = None
    language: str | None = None


@dataclass(frozen=True)
class Formatted:
    """One message: text and its entities."""

    text: str
    entities: tuple[Entity, ...] = ()


@dataclass(frozen=True)
class Styled:
    text: str
    spans: tuple[Span, ...] = ()
    breaks: frozenset[int] = field(default_factory=frozenset)  # preferred cut positions

    def __add__(self, other: Styled) -> Styled:
        shift = len(self.text)
        return Styled(
            self.text + other.text,
            self.spans + tuple(_shifted(s, shift) for s in other.spans),
            self.breaks | {b + shift for b in other.breaks} | ({shift} if self.text else set()),
        )


def _shifted(span: Span, by: int) -> Span:
    return replace(span, start=span.start + by, end=span.end + by)


def plain(text: str) -> Styled:
    return Styled(text)


def styled(text: str, kind: str, *, url: str | None = None, language: str | None = None) -> Styled:
    if not text:
        return Styled("")
    return Styled(text, (Span(kind, 0, len(text), url, language),))


def join(pieces: Iterable[Styled], separator: str = "\n\n") -> Styled:
    """Concatenate non-empty pieces with ``separator``; each piece start is a preferred cut."""
    result = Styled("")
    for piece in pieces:
        if not piece.text:
            continue
        result = result + plain(separator) + piece if result.text else piece
    return result


class StyledBuilder:
    """Appends text and opens/closes spans; `build()` strips trailing whitespace."""

    def __init__(self) -> None:
        self._chunks: list[str] = []
        self._length = 0
        self._spans: list[Span] = []
        self._breaks: set[int] = set()

    @property
    def length(self) -> int:
        return self._length

    def write(self, text: str) -> None:
        if text:
            self._chunks.append(text)
            self._length += len(text)

    def mark_break(self) -> None:
        if self._length:
            self._breaks.add(self._length)

    def add_span(
        self, kind: str, start: int, *, url: str | None = None, language: str | None = None
    ) -> None:
        """Close a span of ``kind`` from ``start`` to the current end (empty ones are dropped)."""
        if self._length > start:
            self._spans.append(Span(kind, start, self._length, url, language))

    def build(self) -> Styled:
        text = "".join(self._chunks).rstrip()
        end = len(text)
        spans = tuple(
            replace(s, end=min(s.end, end)) for s in self._spans if s.start < min(s.end, end)
        )
        return Styled(text, spans, frozenset(b for b in self._breaks if 0 < b < end))


# --- splitting ---------------------------------------------------------------------------------


def split(text: Styled, limit: int = MESSAGE_LIMIT) -> list[Formatted]:
    """Cut ``text`` into messages of at most ``limit`` UTF-16 units each (see module doc)."""
    if limit < 2:
        raise ValueError("limit must leave room for at least one character")
    cuts = _cut_points(text, limit)
    bounds = list(zip([0, *cuts], [*cuts, len(text.text)], strict=True))
    return [_part(text, start, end) for start, end in bounds]


def fit(text: Styled, limit: int = MESSAGE_LIMIT) -> Formatted:
    """The first part only, marked with an ellipsis when something was cut off."""
    parts = split(text, limit - 1)
    if len(parts) == 1:
        return parts[0]
    head = parts[0]
    return Formatted(head.text.rstrip() + "…", _clip_entities(head.entities, head.text.rstrip()))


def _clip_entities(entities: Sequence[Entity], text: str) -> tuple[Entity, ...]:
    total = utf16_len(text)
    clipped = []
    for entity in entities:
        length = min(entity.offset + entity.length, total) - entity.offset
        if length > 0:
            clipped.append(replace(entity, length=length))
    return tuple(clipped)


def _cut_points(text: Styled, limit: int) -> list[int]:
    source = text.text
    breaks = sorted(text.breaks)
    cuts: list[int] = []
    start = 0
    while (furthest := _fits_from(source, start, limit)) is not None:
        start = _best_cut(source, breaks, start, furthest)
        cuts.append(start)
    return cuts


def _fits_from(source: str, start: int, limit: int) -> int | None:
    """None if source[start:] fits in ``limit``; else the furthest end that does."""
    units = 0
    for index in range(start, len(source)):
        units += _units(source[index])
        if units > limit:
            return index
    return None


def _best_cut(source: str, breaks: list[int], start: int, furthest: int) -> int:
    """The nicest cut in (start, furthest]: a block start, a line end, a space, else furthest.

    A cut is only "nice" if it keeps at least a quarter of the room, so parts stay substantial.
    """
    floor = start + max(1, (furthest - start) // 4)
    at = bisect_right(breaks, furthest) - 1
    if at >= 0 and breaks[at] > floor:
        return breaks[at]
    for separator in ("\n", " "):
        found = source.rfind(separator, floor, furthest)
        if found >= 0:
            return found + 1
    return furthest


def _part(text: Styled, start: int, end: int) -> Formatted:
    body = text.text[start:end]
    offsets = _utf16_offsets(body)
    entities: list[Entity] = []
    for span in text.spans:
        lo, hi = max(span.start, start), min(span.end, end)
        hi = lo + len(body[lo - start : hi - start].rstrip()) if hi == end else hi
        if hi <= lo:
            continue
        offset = offsets[lo - start]
        entities.append(
            Entity(span.kind, offset, offsets[hi - start] - offset, span.url, span.language)
        )
    entities.sort(key=lambda e: (e.offset, -e.length))
    return Formatted(body, tuple(entities))


def _utf16_offsets(text: str) -> list[int]:
    """offsets[i] = UTF-16 units before code point i (len(text)+1 entries)."""
    offsets = [0]
    for char in text:
        offsets.append(offsets[-1] + _units(char))
    return offsets
