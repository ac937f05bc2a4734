"""Styled text for Telegram: plain text plus entity ranges, split into messages that fit.

A `Styled` holds text and `Span`s in code-point offsets plus the positions where a cut is best
(block starts). `split()` cuts it into `Formatted` messages of at most `limit` UTF-16 code units
and at most `MAX_ENTITIES` entities: the parts' texts joined equal the original text, a span
crossing a cut is continued in the next part (so a code block is re-opened with its language),
and every entity's offset and length are in UTF-16 code units relative to its own part, as the
Bot API wants them.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

MESSAGE_LIMIT = 4096  # UTF-16 code units, after entity parsing
# Telegram applies the first 100 formatting entities of a message and silently ignores the rest.
MAX_ENTITIES = 100

_SAFE_SCHEMES = ("http://", "https://", "mailto:", "tg://")
# Kept first when a single message must drop entities: losing these loses content, not looks.
_PRECIOUS_KINDS = ("text_link", "pre", "code")


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _units(char: str) -> int:
    return 2 if ord(char) > 0xFFFF else 1


def is_safe_url(url: str) -> bool:
    """Only links a phone can open without surprises: web, mail and Telegram links."""
    lowered = url.strip().lower()
    return lowered.startswith(_SAFE_SCHEMES) and not any(c.isspace() for c in url.strip())


def is_linkable_url(url: str) -> bool:
    """Whether a safe URL can be the target of a tappable link in Telegram.

    The Bot API refuses a text_link whose host has no dot (`http://localhost:3000`,
    `http://intranet`: "Wrong HTTP URL") and turns `mailto:` into an http link; loopback and
    IP-literal hosts are accepted but lead nowhere from a phone. Such links are written out as
    text instead (see markdown.py).
    """
    lowered = url.strip().lower()
    if lowered.startswith("tg://"):
        return True
    if not lowered.startswith(("http://", "https://")):
        return False
    try:
        parts = urlsplit(url.strip())
        host, _ = parts.hostname, parts.port  # .port raises on a malformed port
    except ValueError:
        return False
    if not host or "." not in host or host.endswith(".localhost"):
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return True
    return False


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

    def text_since(self, start: int) -> str:
        return "".join(self._chunks)[start:]

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


def split(
    text: Styled, limit: int = MESSAGE_LIMIT, max_entities: int | None = MAX_ENTITIES
) -> list[Formatted]:
    """Cut ``text`` into messages of at most ``limit`` UTF-16 units and ``max_entities``
    entities each (see module doc); ``max_entities=None`` cuts by length only."""
    if limit < 2:
        raise ValueError("limit must leave room for at least one character")
    cuts = _cut_points(text, limit, max_entities)
    bounds = list(zip([0, *cuts], [*cuts, len(text.text)], strict=True))
    return [_part(text, start, end) for start, end in bounds]


def fit(text: Styled, limit: int = MESSAGE_LIMIT) -> Formatted:
    """The first part only, marked with an ellipsis when something was cut off.

    One message keeps all of its text: past `MAX_ENTITIES`, formatting is dropped instead
    (links, code and pre blocks are kept first)."""
    parts = split(text, limit - 1, max_entities=None)
    head = parts[0]
    entities = _capped(head.entities)
    if len(parts) == 1:
        return replace(head, entities=entities)
    return Formatted(head.text.rstrip() + "…", _clip_entities(entities, head.text.rstrip()))


def _capped(entities: tuple[Entity, ...]) -> tuple[Entity, ...]:
    if len(entities) <= MAX_ENTITIES:
        return entities
    ranked = sorted(entities, key=lambda e: e.type not in _PRECIOUS_KINDS)  # stable
    return tuple(sorted(ranked[:MAX_ENTITIES], key=lambda e: (e.offset, -e.length)))


def _clip_entities(entities: Sequence[Entity], text: str) -> tuple[Entity, ...]:
    total = utf16_len(text)
    clipped = []
    for entity in entities:
        length = min(entity.offset + entity.length, total) - entity.offset
        if length > 0:
            clipped.append(replace(entity, length=length))
    return tuple(clipped)


def _cut_points(text: Styled, limit: int, max_entities: int | None) -> list[int]:
    source = text.text
    breaks = sorted(text.breaks)
    cuts: list[int] = []
    start = 0
    while (furthest := _furthest_end(text, start, limit, max_entities)) is not None:
        start = _best_cut(source, breaks, start, furthest)
        cuts.append(start)
    return cuts


def _furthest_end(text: Styled, start: int, limit: int, max_entities: int | None) -> int | None:
    """None if text[start:] fits one message; else the furthest end a part from start may have."""
    by_length = _fits_from(text.text, start, limit)
    by_entities = None if max_entities is None else _entities_fit(text, start, max_entities)
    ends = [end for end in (by_length, by_entities) if end is not None]
    return min(ends) if ends else None


def _entities_fit(text: Styled, start: int, max_entities: int) -> int | None:
    """None if the spans from ``start`` on number at most ``max_entities``; else the furthest
    end that keeps the part within that number (the start of the first span too many)."""
    continued = sum(1 for s in text.spans if s.start < start < s.end)
    later = sorted(s.start for s in text.spans if s.start >= start)
    room = max(max_entities - continued, 0)
    if len(later) <= room:
        return None
    return max(later[room], start + 1)


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
