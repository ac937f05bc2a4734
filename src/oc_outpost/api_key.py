"""The HTTP API's key: API_KEY if set, else one generated at the first start and kept on disk.

The generated key lives in `api-key` beside ORCHESTRATOR_DB_PATH, mode 0600, in the 0700 data
directory; the bot reuses it on later starts and `oc-outpost link` reads it from there.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Final

from pydantic import SecretStr

from oc_outpost.logs import hide
from oc_outpost.private_files import PRIVATE_FILE_MODE, ensure_private_dir, restrict_file

log = logging.getLogger(__name__)

API_KEY_FILE_NAME: Final = "api-key"
GENERATED_KEY_BYTES: Final = 32


class ApiKeyError(RuntimeError):
    """No usable API key (missing file, unreadable file)."""


def api_key_file(orchestrator_db_path: Path) -> Path:
    return orchestrator_db_path.parent / API_KEY_FILE_NAME


def resolve_api_key(configured: SecretStr | str | None, key_file: Path, *, create: bool) -> str:
    """`configured` (API_KEY) if set, else the key stored in `key_file`; with `create`, a key is
    generated and stored there when there is none yet. The key is masked in logs from now on."""
    if isinstance(configured, SecretStr):
        configured = configured.get_secret_value()
    key = configured or _read(key_file)
    if key is None:
        if not create:
            raise ApiKeyError(
                f"no API key: API_KEY is not set and {key_file} does not exist (the bot writes "
                "it at its first start; set ORCHESTRATOR_DB_PATH to the bot's database path)"
            )
        key = secrets.token_urlsafe(GENERATED_KEY_BYTES)
        _write(key_file, key)
        log.info("generated the API key in %s (oc-outpost link reads it from there)", key_file)
    hide(key)
    return key


def _read(key_file: Path) -> str | None:
    try:
        if not key_file.exists():
            return None
        restrict_file(key_file)
        key = key_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ApiKeyError(f"cannot read the API key file {key_file}: {exc.strerror}") from exc
    if not key:
        raise ApiKeyError(f"the API key file {key_file} is empty; delete it to get a new key")
    return key


def _write(key_file: Path, key: str) -> None:
    temporary = key_file.with_name(f".{key_file.name}.{os.getpid()}.tmp")
    try:
        ensure_private_dir(key_file.parent)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(key + "\n")
            file.flush()
            os.fsync(file.fileno())
        restrict_file(temporary)
        os.replace(temporary, key_file)  # never a half-written key file
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise ApiKeyError(f"cannot write the API key file {key_file}: {exc.strerror}") from exc
