"""Directories and files only the bot's own OS user may read: databases, the API key, logs.

A directory the bot uses for its state is made 0700 and its files 0600, whatever the umask. A
directory that existed with wider permissions is tightened, and that is logged, except a shared
one (sticky, like /tmp, or owned by another user), which is left alone with a warning.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

PRIVATE_DIR_MODE: Final = 0o700
PRIVATE_FILE_MODE: Final = 0o600
_GROUP_OR_OTHER: Final = 0o077


def ensure_private_dir(path: Path) -> None:
    """Create `path` (and its parents) if missing; make it accessible to this user only."""
    if not path.is_dir():
        path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        os.chmod(path, PRIVATE_DIR_MODE)  # mkdir's mode is reduced by the umask, never widened
        return
    info = path.stat()
    mode = stat.S_IMODE(info.st_mode)
    if not mode & _GROUP_OR_OTHER:
        return
    if mode & stat.S_ISVTX or info.st_uid != os.geteuid():
        log.warning(
            "data directory %s is shared (mode %o, owner uid %d): other users may see the "
            "bot's files; give the databases a directory of their own",
            path,
            mode,
            info.st_uid,
        )
        return
    os.chmod(path, PRIVATE_DIR_MODE)
    log.warning("data directory %s was mode %o; tightened to %o", path, mode, PRIVATE_DIR_MODE)


def restrict_file(path: Path) -> None:
    """Make an existing file readable and writable by this user only."""
    if stat.S_IMODE(path.stat().st_mode) != PRIVATE_FILE_MODE:
        os.chmod(path, PRIVATE_FILE_MODE)


def create_private_file(path: Path) -> None:
    """Create `path` empty with mode 0600 if it does not exist (no window with wider modes)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE_MODE)
    os.close(fd)
    restrict_file(path)
