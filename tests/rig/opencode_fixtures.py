"""Fixtures for the real OpenCode binary and the mock LLM.

* `opencode_bin` (session): path of a verified OpenCode 1.18.33 binary, installed with npm into a
  per-user cache on first use. Under `CI=true` a failure is a loud error, never a skip (and
  outside CI it is an error too: these tests are part of the suite, not optional extras).
* `mock_llm` (session): one running `MockLLM`, shared by all tests.
* `llm` (function): the shared mock with its rules and request log reset.
* `opencode_env` (function): a hermetic OpenCode environment under `tmp_path`, applied to
  `os.environ` (so code under test that spawns OpenCode inherits it) and returned as a dict.
  Module-scoped setups can use `apply_hermetic_env()` with their own `MonkeyPatch`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.rig.mock_llm import MockLLM
from tests.rig.opencode_bin import (
    INHERITED_VARS_TO_DROP,
    OpenCodeUnavailable,
    ensure_opencode,
    hermetic_env,
)


def apply_hermetic_env(
    monkeypatch: pytest.MonkeyPatch,
    scratch: Path,
    llm_base_url: str,
    *,
    permission: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Set the hermetic OpenCode environment on `os.environ`; return the variables set."""
    env = hermetic_env(scratch, llm_base_url, permission=permission)
    for name in INHERITED_VARS_TO_DROP:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture(scope="session")
def opencode_bin() -> Path:
    try:
        return ensure_opencode()
    except OpenCodeUnavailable as exc:
        ci_note = " (CI=true: OpenCode tests are never skipped)" if _in_ci() else ""
        pytest.fail(f"OpenCode binary unavailable{ci_note}: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def mock_llm() -> Iterator[MockLLM]:
    server = MockLLM().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def llm(mock_llm: MockLLM) -> MockLLM:
    mock_llm.reset()
    return mock_llm


@pytest.fixture
def opencode_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, llm: MockLLM) -> dict[str, str]:
    scratch = tmp_path / "opencode-scratch"
    scratch.mkdir()
    return apply_hermetic_env(monkeypatch, scratch, llm.base_url)


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}
