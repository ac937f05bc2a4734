"""Inline keyboards of core's control menus (model and agent pickers, …)."""

from __future__ import annotations

from telegram import InlineKeyboardButton

from oc_outpost.core.chat import Menu
from oc_outpost.telegram import callbacks


def menu_rows(menu: Menu) -> list[list[InlineKeyboardButton]]:
    return [
        [
            InlineKeyboardButton(button.label, callback_data=callbacks.control_data(button.token))
            for button in row
        ]
        for row in menu.rows
    ]
