"""The API key: API_KEY, or generated once, kept 0600 beside the database, found by `link`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from oc_outpost.api_key import ApiKeyError, api_key_file, resolve_api_key
from oc_outpost.app import api_config
from oc_outpost.cli.link import LinkError, api_key_from
from oc_outpost.config import load_settings


def test_a_key_is_generated_once_stored_0600_and_reused(tmp_path: Path) -> None:
    key_file = api_key_file(tmp_path / "data" / "orchestrator.db")
    assert key_file == tmp_path / "data" / "api-key"
    first = resolve_api_key(None, key_file, create=True)
    assert len(first) >= 40
    assert key_file.read_text().strip() == first
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert key_file.parent.stat().st_mode & 0o777 == 0o700
    assert resolve_api_key(None, key_file, create=True) == first
    assert [p.name for p in key_file.parent.iterdir()] == ["api-key"]  # no temporary left


def test_api_key_wins_over_the_file(tmp_path: Path) -> None:
    key_file = tmp_path / "api-key"
    resolve_api_key(None, key_file, create=True)
    assert (
        resolve_api_key(SecretStr("configured-key-7f3a"), key_file, create=True)
        == "configured-key-7f3a"
    )


def test_a_wider_key_file_is_tightened(tmp_path: Path) -> None:
    key_file = tmp_path / "api-key"
    key_file.write_text("stored-key-91c2\n")
    os.chmod(key_file, 0o644)
    assert resolve_api_key(None, key_file, create=False) == "stored-key-91c2"
    assert key_file.stat().st_mode & 0o777 == 0o600


def test_without_create_a_missing_or_empty_file_is_a_clear_error(tmp_path: Path) -> None:
    key_file = tmp_path / "api-key"
    with pytest.raises(ApiKeyError, match=r"API_KEY is not set and .*api-key does not exist"):
        resolve_api_key(None, key_file, create=False)
    assert not key_file.exists()
    key_file.write_text("  \n")
    with pytest.raises(ApiKeyError, match="is empty"):
        resolve_api_key(None, key_file, create=True)


async def test_the_app_generates_its_key_beside_the_orchestrator_database(
    tmp_path: Path,
) -> None:
    settings = load_settings(
        {
            "TELEGRAM_BOT_TOKEN": "123:abc",
            "TELEGRAM_CHAT_ID": "-1001",
            "PROJECT_BASE_PATH": str(tmp_path),
            "ORCHESTRATOR_DB_PATH": str(tmp_path / "state" / "orchestrator.db"),
            "API_ALLOWED_SERVER_HOSTS": "box.lan",
        },
        env_file=None,
    )
    config = await api_config(settings)
    assert config.api_key == (tmp_path / "state" / "api-key").read_text().strip()
    assert config.allowed_server_hosts == frozenset({"box.lan"})


def test_link_reads_the_generated_key(tmp_path: Path) -> None:
    db_path = tmp_path / "bot" / "data" / "orchestrator.db"
    generated = resolve_api_key(None, api_key_file(db_path), create=True)
    assert api_key_from({"ORCHESTRATOR_DB_PATH": str(db_path)}) == generated
    assert api_key_from({"ORCHESTRATOR_DB_PATH": str(db_path), "API_KEY": "k" * 16}) == "k" * 16
    with pytest.raises(LinkError, match="set API_KEY"):
        api_key_from({"ORCHESTRATOR_DB_PATH": str(tmp_path / "elsewhere" / "o.db")})
