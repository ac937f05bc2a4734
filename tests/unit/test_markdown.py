"""Markdown from OpenCode to Telegram text + entities (markdown-it-py underneath)."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from oc_outpost.telegram.formatted import Entity, Formatted, split, utf16_len
from oc_outpost.telegram.markdown import markdown_to_styled


def covered(part: Formatted, entity: Entity) -> str:
    units = part.text.encode("utf-16-le")
    return units[2 * entity.offset : 2 * (entity.offset + entity.length)].decode("utf-16-le")


def entities_of(markdown: str) -> list[tuple[str, str]]:
    [part] = split(markdown_to_styled(markdown))
    return [(e.type, covered(part, e)) for e in part.entities]


def test_inline_styles_become_entities() -> None:
    assert entities_of("a **bold** _it_ `code` ~~gone~~") == [
        ("bold", "bold"),
        ("italic", "it"),
        ("code", "code"),
        ("strikethrough", "gone"),
    ]


def test_heading_is_bold_and_code_block_is_pre_with_language() -> None:
    styled = markdown_to_styled("# Title\n\n```python\nprint('x')\n```\n")
    [part] = split(styled)
    assert part.text == "Title\n\nprint('x')"
    assert [(e.type, e.language, covered(part, e)) for e in part.entities] == [
        ("bold", None, "Title"),
        ("pre", "python", "print('x')"),
    ]


def test_markdown_characters_need_no_escaping() -> None:
    text = "v1.2.3-rc (see [notes]) #tag a_b_c 1+1=2 {x} | ! >"
    [part] = split(markdown_to_styled(text))
    assert part.text == text
    assert part.entities == ()


def test_lists_get_markers_and_nesting() -> None:
    styled = markdown_to_styled("- one\n- two\n  1. a\n  2. b\n- three")
    assert styled.text == "• one\n• two\n   1. a\n   2. b\n• three"


def test_unsafe_links_keep_their_text_only() -> None:
    assert entities_of("[site](https://example.org) [x](ftp://example.org/f)") == [
        ("text_link", "site")
    ]
    assert "javascript" not in str(entities_of("[x](javascript:alert(1))"))


def test_links_telegram_would_refuse_are_written_out_as_label_and_url() -> None:
    styled = markdown_to_styled(
        "[open it](http://localhost:3000), <http://127.0.0.1:8000/a>, "
        "[mail me](mailto:dev@example.org) and [docs](https://example.org/docs)"
    )
    assert styled.text == (
        "open it (http://localhost:3000), http://127.0.0.1:8000/a, "
        "mail me (dev@example.org) and docs"
    )
    assert [(s.kind, s.url) for s in styled.spans] == [("text_link", "https://example.org/docs")]


def test_table_is_an_aligned_pre_block() -> None:
    styled = markdown_to_styled("| a | bb |\n|---|---|\n| ccc | d |")
    assert styled.text == "a   | bb\n----+---\nccc | d"
    assert [s.kind for s in styled.spans] == ["pre"]


def test_raw_html_is_shown_as_text() -> None:
    assert markdown_to_styled("use <div> here").text == "use <div> here"


# --- properties ---------------------------------------------------------------------------

WORD = st.text(alphabet=st.sampled_from(list("abcXYZ019é字🚀")), min_size=1, max_size=12)


@dataclass(frozen=True)
class Expected:
    kind: str
    text: str
    language: str | None = None


@st.composite
def documents(draw: st.DrawFn) -> tuple[str, list[Expected]]:
    """Markdown made of headings, paragraphs with styled words, lists and code blocks,
    with the entities each must produce."""
    blocks: list[str] = []
    expected: list[Expected] = []
    for _ in range(draw(st.integers(1, 25))):
        match draw(st.sampled_from(["heading", "paragraph", "list", "code"])):
            case "heading":
                word = draw(WORD)
                blocks.append(f"## {word}")
                expected.append(Expected("bold", word))
            case "paragraph":
                words = []
                for _ in range(draw(st.integers(1, 30))):
                    word = draw(WORD)
                    style = draw(st.sampled_from(["plain", "bold", "italic", "code"]))
                    marker = {"plain": "", "bold": "**", "italic": "_", "code": "`"}[style]
                    words.append(f"{marker}{word}{marker}")
                    if style != "plain":
                        expected.append(Expected(style, word))
                blocks.append(" ".join(words))
            case "list":
                items = draw(st.lists(WORD, min_size=1, max_size=6))
                blocks.append("\n".join(f"- **{item}**" for item in items))
                expected.extend(Expected("bold", item) for item in items)
            case "code":
                lines = draw(st.lists(WORD, min_size=1, max_size=400))
                language = draw(st.sampled_from(["python", "sh", None]))
                body = "\n".join(lines)
                blocks.append(f"```{language or ''}\n{body}\n```")
                expected.append(Expected("pre", body, language))
    return "\n\n".join(blocks), expected


@settings(max_examples=60, deadline=None)
@given(documents(), st.integers(60, 4096))
def test_entities_cover_exactly_their_text_and_parts_fit(
    document: tuple[str, list[Expected]], limit: int
) -> None:
    markdown, expected = document
    styled = markdown_to_styled(markdown)
    found = [Expected(s.kind, styled.text[s.start : s.end], s.language) for s in styled.spans]
    assert sorted(found, key=repr) == sorted(expected, key=repr)
    # what splitting does to entities is proven in test_formatted; here: the whole pipeline
    parts = split(styled, limit)
    assert "".join(p.text for p in parts) == styled.text
    for part in parts:
        assert 0 < utf16_len(part.text) <= limit
        for entity in part.entities:
            assert covered(part, entity).strip()


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=2000))
def test_any_text_renders_without_error_and_fits(text: str) -> None:
    styled = markdown_to_styled(text)
    assert styled.text == styled.text.rstrip()
    for span in styled.spans:
        assert 0 <= span.start < span.end <= len(styled.text)
    parts = split(styled, 500)
    assert "".join(p.text for p in parts) == styled.text
    assert all(utf16_len(p.text) <= 500 for p in parts)
