"""What the file features need from the chat layer (`FilePort`), and the listing they show."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from oc_outpost.core.outputs import OutFile


@dataclass(frozen=True)
class ListingEntry:
    name: str
    is_dir: bool


@dataclass(frozen=True)
class ListingPage:
    """One page of a directory in the /ls browser; its buttons carry ``token``."""

    token: str
    project: str  # the project directory's name
    path: str  # relative to the project, "" for the project itself
    entries: tuple[ListingEntry, ...]
    page: int
    pages: int
    total: int
    hidden: bool  # hidden entries shown (/ls -a)

    @property
    def at_root(self) -> bool:
        return not self.path


class FilePort(Protocol):
    async def send_file(self, topic_id: int, file: OutFile, caption: str = "") -> None:
        """Send one file: a photo when it is one Telegram shows as such, else a document."""

    async def show_listing(self, topic_id: int, page: ListingPage, message_id: int | None) -> int:
        """Post the browser page (or replace the one in ``message_id``); returns its id."""
