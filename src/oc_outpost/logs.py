"""Secrets never reach a log line: the bot token, the API key and OpenCode server passwords.

`redact_logging()` puts a `RedactSecrets` filter on the handlers of the root logger and of
uvicorn's loggers. The filter masks every registered secret in the message, in the traceback
(rendered here, so no formatter renders it again from `exc_info`) and in the stack info, whatever
library logged it (httpx logs Bot API URLs, which contain the token). Secrets known only later (a
generated API key, a server's password) are registered with `hide()` and masked from then on.
"""

from __future__ import annotations

import logging
import threading
from typing import Final

from pydantic import SecretStr

MASK: Final = "***"
# Shorter values occur everywhere as parts of words; masking them would garble every line. The
# bot's own secrets are longer (API_KEY is validated to at least 16 characters).
MIN_SECRET_LENGTH: Final = 8
# uvicorn's loggers may be given handlers of their own; the root's cover everything else.
REDACTED_LOGGERS: Final = ("", "uvicorn", "uvicorn.error", "uvicorn.access")

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()  # longest first, so a secret containing another is masked whole
_traceback_formatter = logging.Formatter()


def hide(*secrets: SecretStr | str | None) -> None:
    """Mask these values in every log line from now on (process-wide, like logging itself)."""
    global _secrets
    values = {s.get_secret_value() if isinstance(s, SecretStr) else s for s in secrets}
    with _lock:
        known = set(_secrets) | {v for v in values if v and len(v) >= MIN_SECRET_LENGTH}
        _secrets = tuple(sorted(known, key=len, reverse=True))


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class RedactSecrets(logging.Filter):
    """Rewrites a record so that no registered secret is left in it; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        _redact_message(record)
        if record.exc_info and not record.exc_text:
            record.exc_text = _traceback_formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
            record.exc_info = None  # formatters print exc_text; none may re-render the original
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def _redact_message(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except (TypeError, ValueError):
        # Arguments that do not fit the format: the handler reports it when it emits.
        return
    clean = redact(message)
    if clean != message:
        record.msg, record.args = clean, None


def redact_logging(*secrets: SecretStr | str | None) -> None:
    """Register `secrets` and filter every handler of the root and uvicorn loggers."""
    hide(*secrets)
    for name in REDACTED_LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RedactSecrets) for f in handler.filters):
                handler.addFilter(RedactSecrets())
