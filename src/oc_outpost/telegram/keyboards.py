"""Inline keyboards of core's control menus (model and agent pickers, …) and of a final answer."""

from __future__ import annotations

from telegram import InlineKeyboardButton

from oc_outpost.core.chat import Menu
from oc_outpost.core.outputs import TurnOutput
from oc_outpost.telegram import callbacks
from oc_outpost.telegram.files_view import Rows, diff_rows


def menu_rows(menu: Menu) -> list[list[InlineKeyboardButton]]:
    return [
        [
            InlineKeyboardButton(button.label, callback_data=callbacks.control_data(button.token))
            for button in row
        ]
        for row in menu.rows
    ]


def final_rows(output: TurnOutput) -> Rows | None:
    """A final answer's buttons: Diff (when the turn changed files), then Undo, Fork and
    (after the plan agent) Build it."""
    rows = diff_rows(output.changes, output.diff_token) or []
    turn = output.buttons
    if turn is not None:
        labelled = [("↩️ Undo", turn.undo), ("🍴 Fork", turn.fork), ("▶ Build it", turn.build)]
        rows.append(
            [
                InlineKeyboardButton(label, callback_data=callbacks.control_data(token))
                for label, token in labelled
                if token is not None
            ]
        )
    return rows or None
