"""No secret in any log line: messages, tracebacks, stack info, uvicorn's records."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from oc_outpost.api.server import ApiServer
from oc_outpost.logs import MASK, hide, redact_logging

TOKEN = "424242:AAH-log-test-token-value"
API_KEY = "log-test-api-key-value"
FORMAT = "%(levelname)s %(name)s: %(message)s"


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    """A root handler like the CLI's, filtered by redact_logging()."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    previous = root.level
    root.setLevel(logging.DEBUG)
    redact_logging(SecretStr(TOKEN), SecretStr(API_KEY))
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


def test_secrets_in_messages_and_arguments_are_masked(output: io.StringIO) -> None:
    logging.getLogger("httpx").info("HTTP Request: POST %s", f"https://x/bot{TOKEN}/getMe")
    logging.getLogger("oc_outpost.x").warning(f"key is {API_KEY}")
    text = output.getvalue()
    assert f"POST https://x/bot{MASK}/getMe" in text
    assert f"key is {MASK}" in text
    assert TOKEN not in text and API_KEY not in text


def test_tracebacks_and_stack_info_are_masked(output: io.StringIO) -> None:
    log = logging.getLogger("oc_outpost.y")
    try:
        raise RuntimeError(f"The token `{TOKEN}` was rejected by the server.")
    except RuntimeError:
        log.exception("start failed")
    log.info("where %s", TOKEN, stack_info=True)
    text = output.getvalue()
    assert "Traceback (most recent call last)" in text
    assert f"RuntimeError: The token `{MASK}` was rejected" in text
    assert "Stack (most recent call last)" in text
    assert TOKEN not in text


def test_a_secret_registered_later_is_masked_from_then_on(output: io.StringIO) -> None:
    password = "server-password-registered-later"
    hide(password, None, "")
    logging.getLogger("oc_outpost.z").error("auth %s failed", password)
    assert password not in output.getvalue()
    assert f"auth {MASK} failed" in output.getvalue()


def test_uvicorn_records_reach_the_filtered_root_handlers(output: io.StringIO) -> None:
    ApiServer(FastAPI(), "127.0.0.1", 1)  # configures uvicorn's logging
    logging.getLogger("uvicorn.error").error("request with %s", API_KEY)
    assert f"ERROR uvicorn.error: request with {MASK}" in output.getvalue()
    assert API_KEY not in output.getvalue()


def test_a_record_whose_arguments_do_not_fit_is_still_emitted(output: io.StringIO) -> None:
    record = logging.LogRecord("x", logging.INFO, "f", 1, "%d items", ("many",), None)
    for handler in logging.getLogger().handlers:
        for flt in handler.filters:
            assert flt.filter(record)
