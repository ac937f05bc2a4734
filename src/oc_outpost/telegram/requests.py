"""The HTTP clients of a PTB bot, with a timeout on every Bot API call."""

from __future__ import annotations

from dataclasses import dataclass

from telegram.request import HTTPXRequest

BOT_API_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class BotRequests:
    calls: HTTPXRequest  # every method but getUpdates
    polling: HTTPXRequest  # getUpdates: its long poll may last poll_s before it answers


def bot_requests(poll_s: float) -> BotRequests:
    calls = HTTPXRequest(
        connect_timeout=BOT_API_TIMEOUT_S,
        read_timeout=BOT_API_TIMEOUT_S,
        write_timeout=BOT_API_TIMEOUT_S,
        pool_timeout=BOT_API_TIMEOUT_S,
    )
    polling = HTTPXRequest(
        connect_timeout=BOT_API_TIMEOUT_S,
        read_timeout=poll_s + BOT_API_TIMEOUT_S,
        write_timeout=BOT_API_TIMEOUT_S,
    )
    return BotRequests(calls, polling)
