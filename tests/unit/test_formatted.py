"""Splitting styled text into Telegram messages: limits, UTF-16 offsets, nothing lost."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from oc_outpost.telegram.formatted import (
    MAX_ENTITIES,
    Entity,
    Formatted,
    Span,
    Styled,
    fit,
    is_linkable_url,
    is_safe_url,
    join,
    plain,
    split,
    styled,
    utf16_len,
)

ALPHABET = st.sampled_from(["a", "b", " ", "\n", "🚀", "é", "字", "🏽", "\u200d", "\t"])
KINDS = st.sampled_from(["bold", "italic", "code", "pre", "text_link", "blockquote"])


def entity_text(part: Formatted, entity: Entity) -> str:
    """The text an entity covers, sliced in UTF-16 units as Telegram does (strict decoding
    fails if an offset falls inside a surrogate pair)."""
    units = part.text.encode("utf-16-le")
    chunk = units[2 * entity.offset : 2 * (entity.offset + entity.length)]
    return chunk.decode("utf-16-le", errors="strict")


@st.composite
def styled_texts(draw: st.DrawFn) -> Styled:
    text = draw(st.text(alphabet=ALPHABET, max_size=3000))
    spans = []
    for _ in range(draw(st.integers(0, 12))):
        if not text:
            break
        start = draw(st.integers(0, len(text) - 1))
        end = draw(st.integers(start + 1, len(text)))
        kind = draw(KINDS)
        spans.append(
            Span(
                kind,
                start,
                end,
                url="https://example.org" if kind == "text_link" else None,
                language="python" if kind == "pre" else None,
            )
        )
    breaks = draw(st.frozensets(st.integers(1, max(1, len(text) - 1)), max_size=20))
    return Styled(text, tuple(spans), frozenset(b for b in breaks if b < len(text)))


def global_ranges(parts: list[Formatted]) -> list[tuple[Entity, int, int]]:
    """Each entity with its range in code points of the joined text."""
    found = []
    base = 0
    for part in parts:
        for entity in part.entities:
            text = entity_text(part, entity)
            prefix = part.text.encode("utf-16-le")[: 2 * entity.offset].decode("utf-16-le")
            start = base + len(prefix)
            found.append((entity, start, start + len(text)))
        base += len(part.text)
    return found


@settings(max_examples=150, deadline=None)
@given(styled_texts(), st.integers(2, 700))
def test_split_fits_loses_nothing_and_keeps_entities_exact(text: Styled, limit: int) -> None:
    parts = split(text, limit)
    assert "".join(p.text for p in parts) == text.text
    assert all(p.text for p in parts) or text.text == ""
    for part in parts:
        assert utf16_len(part.text) <= limit
        for entity in part.entities:
            assert entity.offset >= 0 and entity.length > 0
            assert entity.offset + entity.length <= utf16_len(part.text)
            entity_text(part, entity)  # offsets on code-point boundaries
    ranges = global_ranges(parts)
    for span in text.spans:
        for index in range(span.start, span.end):
            if text.text[index].isspace():
                continue
            assert any(
                e.type == span.kind and e.url == span.url and e.language == span.language
                for e, lo, hi in ranges
                if lo <= index < hi
            ), f"{span} lost character {index}"
    for entity, lo, hi in ranges:
        assert any(s.kind == entity.type and s.start <= lo and hi <= s.end for s in text.spans), (
            f"{entity} covers text outside its span"
        )


def test_a_cut_prefers_the_block_start() -> None:
    first = "a" * 300
    text = join([plain(first), plain("b " * 200)])
    parts = split(text, 500)
    assert parts[0].text == first + "\n\n"


def test_a_long_code_block_is_reopened_with_its_language() -> None:
    code = "\n".join(f"line {i}" for i in range(1000))
    parts = split(styled(code, "pre", language="python"), 1000)
    assert len(parts) > 5
    for part in parts:
        assert [(e.type, e.language, e.offset) for e in part.entities] == [("pre", "python", 0)]
        assert part.entities[0].length == utf16_len(part.text.rstrip())
    assert "".join(p.text for p in parts) == code


def test_offsets_count_emoji_as_two_units() -> None:
    text = plain("🚀 ") + styled("go", "bold")
    [part] = split(text)
    assert part.entities == (Entity("bold", 3, 2),)


def test_fit_marks_what_was_cut() -> None:
    part = fit(styled("x" * 5000, "bold"), 100)
    assert part.text.endswith("…")
    assert utf16_len(part.text) <= 100
    assert part.entities[0].length <= utf16_len(part.text)


def test_only_safe_link_schemes() -> None:
    assert is_safe_url("https://example.org/a?b")
    assert is_safe_url("mailto:me@example.org")
    assert not is_safe_url("javascript:alert(1)")
    assert not is_safe_url("file:///etc/passwd")
    assert not is_safe_url("data:text/html,hi")


@st.composite
def many_words(draw: st.DrawFn) -> Styled:
    """Words, most of them styled: far more entities than one message may carry."""
    words = draw(st.lists(st.text(alphabet="ab🚀", min_size=1, max_size=5), max_size=400))
    pieces = [
        styled(word, draw(KINDS), url="https://example.org") if draw(st.booleans()) else plain(word)
        for word in words
    ]
    return join(pieces, " ")


@settings(max_examples=80, deadline=None)
@given(many_words(), st.integers(1, 120), st.integers(20, 4096))
def test_a_part_carries_at_most_max_entities_and_nothing_is_lost(
    text: Styled, max_entities: int, limit: int
) -> None:
    parts = split(text, limit, max_entities)
    assert "".join(p.text for p in parts) == text.text
    assert all(len(p.entities) <= max_entities for p in parts)
    assert all(utf16_len(p.text) <= limit for p in parts)
    assert sum(len(p.entities) for p in parts) >= len(text.spans)  # a cut may split a word


def test_an_answer_with_150_code_spans_is_split_so_telegram_keeps_every_one() -> None:
    text = join([styled(f"name_{i}", "code") for i in range(150)], ", ")
    parts = split(text)
    assert len(parts) == 2
    assert [len(p.entities) for p in parts] == [MAX_ENTITIES, 50]


def test_one_message_keeps_its_text_and_drops_formatting_past_the_limit_links_last() -> None:
    words = [styled(f"w{i}", "bold") for i in range(120)]
    links = [styled(f"link{i}", "text_link", url=f"https://example.org/{i}") for i in range(5)]
    text = join([*words, *links], " ")
    part = fit(text)
    assert part.text == text.text
    assert len(part.entities) == MAX_ENTITIES
    assert sum(1 for e in part.entities if e.type == "text_link") == 5
    assert [e.offset for e in part.entities] == sorted(e.offset for e in part.entities)


def test_links_telegram_refuses_or_a_phone_cannot_open_are_not_linkable() -> None:
    for url in ("https://example.org/a?b", "http://docs.python.org:8080/x", "tg://resolve?x=1"):
        assert is_linkable_url(url), url
    for url in (
        "http://localhost:3000",
        "https://intranet/wiki",
        "http://127.0.0.1:8000/",
        "http://[::1]:5173/",
        "http://app.localhost/",
        "http://example.org:99999/",
        "mailto:me@example.org",
        "ftp://example.org",
    ):
        assert not is_linkable_url(url), url
