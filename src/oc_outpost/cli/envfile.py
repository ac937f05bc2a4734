"""Reading and writing the `.env` file: only the owner may read it (it holds the bot token).

Values are written so that python-dotenv (the bot) and systemd's `EnvironmentFile=` (the service
unit) read them alike: bare when they are plain, else single-quoted (neither expands `$` there).
Lines of other variables and comments are kept as they are.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values

MODE = 0o600
HEADER = (
    "# oc-outpost configuration, written by `oc-outpost setup` (see .env.example for every\n"
    "# variable). It holds the bot token: keep it private (mode 0600).\n"
)
_PLAIN = re.compile(r"[A-Za-z0-9_./:,@+~=-]*")
_ASSIGNMENT = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=")


def read_env(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    return {key: value for key, value in dotenv_values(path).items() if value}


def quote(value: str) -> str:
    if "\n" in value:
        raise ValueError("a value in .env cannot span lines")
    if _PLAIN.fullmatch(value):
        return value
    if "'" not in value:
        return f"'{value}'"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def updated_text(old: str, values: Mapping[str, str]) -> str:
    """``old`` with each variable of ``values`` set (in place if present, else appended)."""
    pending = dict(values)
    lines = []
    for line in old.splitlines():
        match = _ASSIGNMENT.match(line)
        name = match.group(1) if match else None
        if name is not None and name in values:
            if name in pending:
                lines.append(f"{name}={quote(pending.pop(name))}")
            continue  # a second assignment of the same variable would win: drop it
        lines.append(line)
    lines.extend(f"{name}={quote(value)}" for name, value in pending.items())
    return "\n".join(lines) + "\n"


def write_env(path: Path, values: Mapping[str, str]) -> None:
    """Set ``values`` in the file at ``path`` (created if missing), atomically, mode 0600."""
    old = path.read_text() if path.is_file() else HEADER
    text = updated_text(old, values)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=".env.", dir=path.parent)
    try:
        os.fchmod(descriptor, MODE)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
