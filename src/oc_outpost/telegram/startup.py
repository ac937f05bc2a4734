"""The first Bot API calls of a start (getMe, deleteWebhook, setMyCommands), retried.

A bot restarted during a flood wait gets 429s, and one started while the network or the Bot API
is briefly down gets connection errors: both are waited out with backoff (429s for as long as
Telegram asks, up to a cap). What cannot get better by waiting (a refused token, a bad request)
and what is still failing after the last attempt ends the start with one clear error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from telegram.error import BadRequest, Forbidden, InvalidToken, NetworkError, RetryAfter

from oc_outpost.telegram.outbox import retry_after_seconds

log = logging.getLogger(__name__)

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


class StartupFailed(Exception):
    """Telegram could not be reached (or refused us) at start; the message says what to do."""


class TokenRefused(StartupFailed):
    """Telegram does not know the bot token (a configuration error, like a missing variable)."""


@dataclass(frozen=True)
class StartupRetry:
    attempts: int = 10
    first_delay_s: float = 1.0  # after a network error; doubles up to max_delay_s
    max_delay_s: float = 30.0
    max_retry_after_s: float = 600.0  # a longer flood wait is not waited out


async def with_retries(
    what: str,
    call: Callable[[], Awaitable[T]],
    policy: StartupRetry,
    sleep: Sleep = asyncio.sleep,
) -> T:
    """``call()``'s result; retries 429s and network errors, then raises StartupFailed."""
    delay = policy.first_delay_s
    waited = 0.0
    for attempt in range(1, policy.attempts + 1):
        try:
            return await call()
        except InvalidToken:
            # PTB's message quotes the token: say what is wrong without it.
            raise TokenRefused(
                "Telegram refused the bot token: check TELEGRAM_BOT_TOKEN (from @BotFather)."
            ) from None
        except (BadRequest, Forbidden) as exc:
            raise StartupFailed(f"{what} was refused by Telegram: {exc.message}") from exc
        except RetryAfter as exc:
            wait = retry_after_seconds(exc)
            if wait > policy.max_retry_after_s:
                raise StartupFailed(
                    f"{what}: Telegram asks to wait {wait:.0f} s (flood limit); start again later."
                ) from exc
            problem = f"Telegram asked to wait {wait:.0f} s"
        except NetworkError as exc:
            wait, delay = delay, min(delay * 2, policy.max_delay_s)
            problem = exc.message
        if attempt == policy.attempts:
            break
        log.warning(
            "%s failed (%s); retrying in %.0f s (attempt %d of %d)",
            what,
            problem,
            wait,
            attempt,
            policy.attempts,
        )
        await sleep(wait)
        waited += wait
    raise StartupFailed(
        f"{what} failed {policy.attempts} times over {waited:.0f} s, last: {problem}. "
        "Is the Bot API reachable (TELEGRAM_API_URL, network, proxy)?"
    )
