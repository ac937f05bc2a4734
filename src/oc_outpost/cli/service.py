"""`oc-outpost service install|uninstall`: a systemd user unit that keeps the bot running.

The unit runs `oc-outpost run` in the directory of `.env` (its EnvironmentFile), restarts it
after a failure, and stops it with SIGTERM to the bot alone (KillMode=mixed): the bot then
flushes final answers and stops its OpenCode servers itself before systemd kills what is left.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

UNIT_NAME = "oc-outpost.service"
MARKER = "# Written by `oc-outpost service install`; `oc-outpost service uninstall` removes it."
STOP_TIMEOUT_S = 60  # the bot's own shutdown: flush (10 s) + servers (5 s each, in parallel)


class ServiceError(Exception):
    """The unit cannot be written or removed; the message says why."""


@dataclass(frozen=True)
class UnitSpec:
    executable: Path
    working_directory: Path
    env_file: Path


def default_unit_dir() -> Path:
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "systemd" / "user"


def default_executable() -> Path:
    """The absolute path of the `oc-outpost` being run (as installed, symlinks kept)."""
    invoked = Path(sys.argv[0])
    if invoked.name == "oc-outpost" and invoked.exists():
        return Path(os.path.abspath(invoked))
    beside = Path(sys.executable).parent / "oc-outpost"
    if beside.exists():
        return Path(os.path.abspath(beside))
    raise ServiceError("cannot tell where the oc-outpost command is installed; pass --exec PATH")


def _escape(value: str) -> str:
    return value.replace("%", "%%")  # systemd specifiers


def _quoted(path: Path) -> str:
    text = _escape(str(path))
    if any(c.isspace() or c in "\"'\\" for c in text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def unit_text(spec: UnitSpec) -> str:
    return "\n".join(
        [
            MARKER,
            "[Unit]",
            "Description=oc-outpost: a Telegram forum as a control room for OpenCode agents",
            "After=network.target",
            "",
            "[Service]",
            "Type=simple",
            f"WorkingDirectory={_escape(str(spec.working_directory))}",
            f"EnvironmentFile={_escape(str(spec.env_file))}",
            f"ExecStart={_quoted(spec.executable)} run",
            "Restart=on-failure",
            "RestartSec=5",
            "KillSignal=SIGTERM",
            "KillMode=mixed",
            f"TimeoutStopSec={STOP_TIMEOUT_S}",
            "",
            "[Install]",
            "WantedBy=default.target",
            "",
        ]
    )


def install(spec: UnitSpec, unit_dir: Path) -> Path:
    for path, what in ((spec.executable, "executable"), (spec.env_file, "env file")):
        if not path.is_absolute():
            raise ServiceError(f"the {what} must be an absolute path, got {path}")
    if not spec.env_file.is_file():
        raise ServiceError(
            f"{spec.env_file} does not exist; run `oc-outpost setup` first (or pass --env-file)"
        )
    unit = unit_dir / UNIT_NAME
    if unit.exists() and not _ours(unit):
        raise ServiceError(f"{unit} exists and was not written by oc-outpost; not replacing it")
    unit_dir.mkdir(parents=True, exist_ok=True)
    unit.write_text(unit_text(spec))
    return unit


def uninstall(unit_dir: Path) -> Path | None:
    """Remove our unit (and its enablement link); None if there was none."""
    unit = unit_dir / UNIT_NAME
    if not unit.exists():
        return None
    if not _ours(unit):
        raise ServiceError(f"{unit} was not written by oc-outpost; not removing it")
    wanted = unit_dir / "default.target.wants" / UNIT_NAME
    if wanted.is_symlink():
        wanted.unlink()
    unit.unlink()
    return unit


def _ours(unit: Path) -> bool:
    return unit.read_text(errors="replace").startswith(MARKER)


def install_advice(unit: Path) -> str:
    return "\n".join(
        [
            f"Wrote {unit}. Start it now and at every boot:",
            "    systemctl --user daemon-reload",
            f"    systemctl --user enable --now {UNIT_NAME}",
            "Keep it running while you are logged out:",
            f"    loginctl enable-linger {os.environ.get('USER') or '$USER'}",
            f"Its log: journalctl --user -u {UNIT_NAME} -f",
        ]
    )


def uninstall_advice(unit: Path | None) -> str:
    if unit is None:
        return f"No {UNIT_NAME} is installed."
    return "\n".join(
        [
            f"Removed {unit}. Stop the running bot and forget the unit:",
            f"    systemctl --user stop {UNIT_NAME}",
            "    systemctl --user daemon-reload",
        ]
    )
