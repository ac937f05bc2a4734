"""How the /ls browser and a final answer's Diff button look."""

from __future__ import annotations

import mimetypes

from telegram import InlineKeyboardButton

from oc_outpost.core.file_port import ListingEntry, ListingPage
from oc_outpost.core.outputs import DiffStat
from oc_outpost.telegram import callbacks
from oc_outpost.telegram.formatted import Styled, plain, styled

Rows = list[list[InlineKeyboardButton]]
LABEL_CHARS = 40


def _label(entry: ListingEntry) -> str:
    name = entry.name if len(entry.name) <= LABEL_CHARS else entry.name[: LABEL_CHARS - 1] + "…"
    if entry.is_dir:
        return f"📁 {name}/"
    mime = mimetypes.guess_type(entry.name)[0] or ""
    return f"{'🖼' if mime.startswith('image/') else '📄'} {name}"


def listing_text(page: ListingPage) -> Styled:
    where = f"{page.project}/{page.path}" if page.path else f"{page.project}/"
    count = f"{page.total} entr{'ies' if page.total != 1 else 'y'}"
    if page.pages > 1:
        count += f" · page {page.page + 1}/{page.pages}"
    text = styled(f"📂 {where}", "bold") + plain(f"\n{count}")
    if page.hidden:
        text = text + plain(" · hidden entries shown")
    if not page.total:
        text = text + plain("\n(empty)")
    return text + plain("\nTap a file to get it; folders open.")


def listing_rows(page: ListingPage) -> Rows:
    rows: Rows = [
        [InlineKeyboardButton(_label(e), callback_data=callbacks.browse_data(page.token, f"e{i}"))]
        for i, e in enumerate(page.entries)
    ]
    nav: list[InlineKeyboardButton] = []
    if not page.at_root:
        nav.append(_nav("‹ Back", page, "u"))
    if page.page > 0:
        nav.append(_nav("◀ Previous", page, "p"))
    if page.page < page.pages - 1:
        nav.append(_nav("Next ▶", page, "n"))
    if page.total:
        nav.append(_nav("📦 Zip", page, "z"))
    if nav:
        rows.append(nav)
    return rows


def _nav(text: str, page: ListingPage, action: str) -> InlineKeyboardButton:
    return InlineKeyboardButton(text, callback_data=callbacks.browse_data(page.token, action))


def diff_rows(changes: DiffStat | None, token: str | None) -> Rows | None:
    """The Diff button of a final answer whose turn changed files."""
    if changes is None or token is None:
        return None
    label = f"📄 Diff {changes.text()}"
    return [[InlineKeyboardButton(label, callback_data=callbacks.diff_data(token))]]
