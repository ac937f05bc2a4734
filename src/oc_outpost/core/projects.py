"""Project names and directories: everything lives under PROJECT_BASE_PATH."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


class ProjectError(ValueError):
    """A project name or path the user gave is not acceptable; the message says why."""


def validate_name(name: str) -> str:
    if not _NAME.fullmatch(name) or name.startswith("."):
        raise ProjectError(
            f"'{name}' is not a valid project name: use 1-64 of A-Z a-z 0-9 . _ - "
            "and do not start with a dot."
        )
    return name


def resolve_inside(base: Path, candidate: str | Path) -> Path:
    """Resolve ``candidate`` (relative to ``base`` or absolute), refusing anything outside base.

    Symlinks are resolved first, so a link that points out of the base is refused too.
    """
    root = base.resolve()
    try:
        path = Path(candidate).expanduser()
        resolved = (path if path.is_absolute() else root / path).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # too long, a symlink loop, a NUL byte
        raise ProjectError(
            f"{str(candidate)[:80]!r} is not a usable path: {exc.__class__.__name__}"
        ) from exc
    if resolved != root and root not in resolved.parents:
        raise ProjectError(f"{candidate} is outside the project base directory {root}.")
    return resolved


def project_dir(base: Path, name: str, *, create: bool) -> tuple[Path, bool]:
    """The directory of project ``name``; returns (path, created_now). Never wipes anything."""
    path = resolve_inside(base, validate_name(name))
    if path.exists():
        if not path.is_dir():
            raise ProjectError(f"{path} exists but is not a directory.")
        return path, False
    if not create:
        raise ProjectError(
            f"{path} does not exist and AUTO_CREATE_PROJECT_DIRS is false: create it first."
        )
    path.mkdir(parents=True)
    return path, True


def project_key(name: str) -> str:
    """A short stable id for a directory name, for button data (names may be long or odd)."""
    return hashlib.sha256(name.encode()).hexdigest()[:12]


def list_projects(base: Path) -> list[Path]:
    """Directories directly under ``base``, hidden ones excluded, sorted by name."""
    try:
        entries = list(base.iterdir())
    except FileNotFoundError:
        return []
    return sorted(
        (p for p in entries if not p.name.startswith(".") and _inside_dir(base, p)),
        key=lambda p: p.name.lower(),
    )


def _inside_dir(base: Path, path: Path) -> bool:
    try:
        return resolve_inside(base, path).is_dir()
    except ProjectError:
        return False  # e.g. a symlink pointing out of the base


def find_project(base: Path, key: str) -> Path | None:
    return next((p for p in list_projects(base) if project_key(p.name) == key), None)
