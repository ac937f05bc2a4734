"""Markdown (as OpenCode writes it) to Telegram text + entity spans, via markdown-it-py.

markdown-it-py parses (CommonMark plus GitHub strikethrough and tables); this module only walks
its tokens and builds plain text with entity spans, so nothing is ever escaped by hand and no
parse error is possible on Telegram's side. Headings become bold, lists get bullets or numbers,
code blocks become `pre` entities with their language, tables become aligned `pre` blocks, and
links keep their target only for safe schemes (see `formatted.is_safe_url`). A link Telegram
would refuse or could not open from a phone (`http://localhost:3000`, see
`formatted.is_linkable_url`) is written out as "label (url)" instead, so the address survives.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from markdown_it import MarkdownIt
from markdown_it.token import Token

from oc_outpost.telegram.formatted import Styled, StyledBuilder, is_linkable_url, is_safe_url

_PARSER = MarkdownIt("commonmark").enable(["strikethrough", "table"])
_INLINE_KINDS = {"strong": "bold", "em": "italic", "s": "strikethrough"}
_BULLETS = ("•", "◦", "▪")
_LANGUAGE = re.compile(r"[A-Za-z0-9_+#.-]{1,32}")
_HR = "———"


def markdown_to_styled(source: str) -> Styled:
    return _Renderer().render(_PARSER.parse(source))


@dataclass
class _List:
    ordered: bool
    number: int
    tight: bool = False
    first: bool = True


@dataclass
class _Table:
    rows: list[list[str]] = field(default_factory=list)
    header_rows: int = 0


class _Renderer:
    def __init__(self) -> None:
        self._out = StyledBuilder()
        self._lists: list[_List] = []
        self._marker: str | None = None  # list marker waiting for the item's first block
        self._quotes: list[int | None] = []  # start of each open blockquote (once known)
        self._table: _Table | None = None
        self._in_header = False
        self._heading_start = 0

    def render(self, tokens: Sequence[Token]) -> Styled:
        for token in tokens:
            self._block(token)
        return self._out.build()

    # --- blocks -----------------------------------------------------------------------------

    def _block(self, token: Token) -> None:
        match token.type:
            case "paragraph_open":
                if self._lists and token.hidden:
                    self._lists[-1].tight = True
                self._begin_block()
            case "heading_open":
                self._begin_block()
                self._heading_start = self._out.length
            case "heading_close":
                self._out.add_span("bold", self._heading_start)
            case "inline" if self._table is not None:
                self._table.rows[-1].append(_plain_inline(token.children or []))
            case "inline":
                self._inline(token.children or [])
            case "fence" | "code_block":
                self._code(token.content, token.info)
            case "hr":
                self._begin_block()
                self._out.write(_HR)
            case "html_block":
                self._begin_block()
                self._out.write(token.content.rstrip("\n"))
            case "bullet_list_open" | "ordered_list_open":
                start = token.attrs.get("start", 1)
                number = start if isinstance(start, int) else 1
                self._lists.append(_List(token.type == "ordered_list_open", number))
            case "bullet_list_close" | "ordered_list_close":
                self._lists.pop()
            case "list_item_open":
                self._marker = self._item_marker(token)
            case "blockquote_open":
                self._quotes.append(None)
            case "blockquote_close":
                self._close_quote()
            case "table_open":
                self._table = _Table()
            case "thead_open":
                self._in_header = True
            case "thead_close":
                self._in_header = False
            case "tr_open" if self._table is not None:
                self._table.rows.append([])
                if self._in_header:
                    self._table.header_rows += 1
            case "table_close" if self._table is not None:
                table, self._table = self._table, None
                self._code(_table_text(table), "")
            case _:
                pass

    def _begin_block(self) -> None:
        separator = self._separator()
        if self._out.length:
            self._out.write(separator)
        self._out.mark_break()
        for index, start in enumerate(self._quotes):
            if start is None:
                self._quotes[index] = self._out.length
        if self._marker is not None:
            self._out.write(self._marker)
            self._marker = None

    def _separator(self) -> str:
        if not self._lists:
            return "\n\n"
        current = self._lists[-1]
        first, current.first = current.first, False
        if first and len(self._lists) == 1:
            return "\n\n"
        return "\n" if current.tight or first else "\n\n"

    def _item_marker(self, token: Token) -> str:
        current = self._lists[-1]
        depth = len(self._lists)
        indent = "   " * (depth - 1)
        if not current.ordered:
            return f"{indent}{_BULLETS[(depth - 1) % len(_BULLETS)]} "
        number = int(token.info) if token.info.isdigit() else current.number
        current.number = number + 1
        return f"{indent}{number}. "

    def _close_quote(self) -> None:
        start = self._quotes.pop()
        if not self._quotes and start is not None:  # Telegram does not nest blockquotes
            self._out.add_span("blockquote", start)

    def _code(self, content: str, info: str) -> None:
        body = content.rstrip("\n")
        if not body.strip():
            return
        self._begin_block()
        start = self._out.length
        self._out.write(body)
        words = info.split()
        language = words[0] if words and _LANGUAGE.fullmatch(words[0]) else None
        self._out.add_span("pre", start, language=language)

    # --- inline -----------------------------------------------------------------------------

    def _inline(self, children: Sequence[Token]) -> None:
        opened: list[tuple[str, int, str | None]] = []
        for child in children:
            kind = child.type.removesuffix("_open").removesuffix("_close")
            match child.type:
                case "text" | "html_inline":
                    self._out.write(child.content)
                case "softbreak" | "hardbreak":
                    self._out.write("\n")
                case "code_inline":
                    start = self._out.length
                    self._out.write(child.content)
                    self._out.add_span("code", start)
                case "image":
                    self._image(child)
                case "link_open":
                    href = child.attrs.get("href")
                    opened.append(("link", self._out.length, str(href) if href else None))
                case "strong_open" | "em_open" | "s_open":
                    opened.append((kind, self._out.length, None))
                case "link_close" | "strong_close" | "em_close" | "s_close":
                    self._close_inline(opened, kind)
                case _:
                    self._out.write(child.content)

    def _close_inline(self, opened: list[tuple[str, int, str | None]], kind: str) -> None:
        if not opened or opened[-1][0] != kind:
            return
        _, start, url = opened.pop()
        if kind != "link":
            self._out.add_span(_INLINE_KINDS[kind], start)
        elif url and is_safe_url(url):
            self._link(start, url)

    def _image(self, token: Token) -> None:
        start = self._out.length
        self._out.write(f"🖼 {token.content or 'image'}")
        source = token.attrs.get("src")
        if isinstance(source, str) and is_safe_url(source):
            self._link(start, source)

    def _link(self, start: int, url: str) -> None:
        """The text from ``start`` becomes a link to ``url``, or is followed by it as text."""
        if is_linkable_url(url):
            self._out.add_span("text_link", start, url=url)
            return
        target = url.strip()
        shown = target.removeprefix("mailto:") if target.lower().startswith("mailto:") else target
        label = self._out.text_since(start).strip()
        if label not in (target, shown):
            self._out.write(f" ({shown})")


def _plain_inline(children: Sequence[Token]) -> str:
    """Cell text without formatting (a table is shown as one pre block)."""
    pieces = []
    for child in children:
        if child.type in ("softbreak", "hardbreak"):
            pieces.append(" ")
        elif child.type in ("text", "code_inline", "html_inline", "image"):
            pieces.append(child.content)
    return "".join(pieces).strip()


def _table_text(table: _Table) -> str:
    widths: dict[int, int] = {}
    for row in table.rows:
        for column, cell in enumerate(row):
            widths[column] = max(widths.get(column, 0), len(cell))
    lines = []
    for index, row in enumerate(table.rows):
        lines.append(" | ".join(cell.ljust(widths[c]) for c, cell in enumerate(row)).rstrip())
        if index + 1 == table.header_rows:
            lines.append("-+-".join("-" * widths[c] for c in range(len(row))))
    return "\n".join(lines)
