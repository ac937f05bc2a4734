"""`/ls` and `/get`: browse a topic's project and send its files.

Each page of the browser is stored under a token (store/buttons.py); its buttons say only
"entry i", "back", "next", "previous" or "zip", so the page works after a bot restart and every
path is checked again when pressed. Hidden entries are shown only with `/ls -a`.
"""

from __future__ import annotations

import math
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oc_outpost.core.chat import ChatPort
from oc_outpost.core.errors import BadRequest, NotFound
from oc_outpost.core.file_port import FilePort, ListingEntry, ListingPage
from oc_outpost.core.project_files import ProjectFiles, is_hidden, relative_path, shown
from oc_outpost.model import TopicBinding
from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.store.buttons import ButtonStore

PAGE_SIZE = 12
BROWSE = "browse"
HIDDEN_FLAG = "-a"
GET_USAGE = (
    "Usage: /get <path> — a file of this project (a small folder comes as a zip). "
    "/ls browses the project."
)
OUT_OF_DATE = "This list is out of date; run /ls again."


def ls_arguments(argument: str) -> tuple[bool, str]:
    """(show hidden, path) of `/ls [-a] [path]`."""
    text = argument.strip()
    if text == HIDDEN_FLAG or text.startswith(HIDDEN_FLAG + " "):
        return True, text[len(HIDDEN_FLAG) :].strip()
    return False, text


@dataclass(frozen=True)
class _View:
    """A stored browser page: what its buttons point at."""

    path: str
    hidden: bool
    page: int
    entries: tuple[ListingEntry, ...]

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> _View:
        entries = tuple(
            ListingEntry(str(name), bool(is_dir)) for name, is_dir in payload["entries"]
        )
        return cls(str(payload["path"]), bool(payload["hidden"]), int(payload["page"]), entries)

    def payload(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "hidden": self.hidden,
            "page": self.page,
            "entries": [[e.name, e.is_dir] for e in self.entries],
        }


class FileBrowser:
    def __init__(
        self, files: ProjectFiles, buttons: ButtonStore, port: FilePort, chat: ChatPort
    ) -> None:
        self._files = files
        self._buttons = buttons
        self._port = port
        self._chat = chat

    async def open(self, binding: TopicBinding, argument: str) -> None:
        """`/ls [-a] [path]`: post the first page of the folder."""
        hidden, path = ls_arguments(argument)
        relative = relative_path(Path(binding.project_path), path)
        client = await self._files.client(binding)
        page = await self._page(binding, client, relative, hidden=hidden, page=0)
        await self._port.show_listing(binding.topic_id, page, None)

    async def get(self, binding: TopicBinding, argument: str) -> None:
        """`/get <path>`: send the file, or a small folder as a zip."""
        if not argument.strip():
            raise BadRequest(GET_USAGE)
        relative = relative_path(Path(binding.project_path), argument)
        client = await self._files.client(binding)
        entry = await self._files.kind(client, relative)
        if entry is None:
            raise NotFound(await self._not_found(client, relative))
        await self._send(binding, client, relative, is_dir=entry.is_dir, hidden=False)

    async def press(
        self, binding: TopicBinding, token: str, action: str, press_id: str, message_id: int
    ) -> None:
        """A browser button: open a folder, turn a page, go back, send a file or the zip."""
        row = await self._buttons.get(token)
        if row is None or row.kind != BROWSE or row.topic_id != binding.topic_id:
            raise NotFound(OUT_OF_DATE)
        async with self._buttons.pressed(press_id, f"{token}:{action}") as fresh:
            if fresh:  # not delivered before, not a double tap
                await self._act(binding, _View.from_payload(row.payload), action, message_id)

    async def _act(self, binding: TopicBinding, view: _View, action: str, message_id: int) -> None:
        target = self._target(view, action)
        client = await self._files.client(binding)
        if isinstance(target, _Send):
            await self._send(binding, client, target.path, is_dir=target.is_dir, hidden=view.hidden)
            return
        page = await self._page(binding, client, target.path, hidden=view.hidden, page=target.page)
        await self._port.show_listing(binding.topic_id, page, message_id)

    def _target(self, view: _View, action: str) -> _Show | _Send:
        match action:
            case "u" if view.path:
                return _Show(posixpath.dirname(view.path), 0)
            case "n":
                return _Show(view.path, view.page + 1)
            case "p":
                return _Show(view.path, max(view.page - 1, 0))
            case "z":
                return _Send(view.path, is_dir=True)
            case _ if action.startswith("e") and action[1:].isdigit():
                index = int(action[1:])
                if index >= len(view.entries):
                    raise NotFound(OUT_OF_DATE)
                entry = view.entries[index]
                path = posixpath.join(view.path, entry.name) if view.path else entry.name
                return _Show(path, 0) if entry.is_dir else _Send(path, is_dir=False)
            case _:
                raise NotFound(OUT_OF_DATE)

    async def _page(
        self,
        binding: TopicBinding,
        client: OpenCodeClient,
        relative: str,
        *,
        hidden: bool,
        page: int,
    ) -> ListingPage:
        # Checked again: a stored page may name a folder that became a symlink meanwhile.
        relative = relative_path(Path(binding.project_path), relative)
        entries = [
            e
            for e in await self._files.listing(client, relative)
            if hidden or not is_hidden(e.name)
        ]
        pages = max(1, math.ceil(len(entries) / PAGE_SIZE))
        page = min(page, pages - 1)
        shown_entries = tuple(entries[page * PAGE_SIZE : (page + 1) * PAGE_SIZE])
        view = _View(relative, hidden, page, shown_entries)
        token = await self._buttons.create(BROWSE, binding.topic_id, view.payload())
        return ListingPage(
            token=token,
            project=Path(binding.project_path).name,
            path=relative,
            entries=shown_entries,
            page=page,
            pages=pages,
            total=len(entries),
            hidden=hidden,
        )

    async def _send(
        self,
        binding: TopicBinding,
        client: OpenCodeClient,
        relative: str,
        *,
        is_dir: bool,
        hidden: bool,
    ) -> None:
        relative = relative_path(Path(binding.project_path), relative)
        if is_dir:
            file = await self._files.zip(client, relative, hidden=hidden)
        else:
            file = await self._files.read(client, relative)
        await self._port.send_file(binding.topic_id, file, caption=shown(relative))

    async def _not_found(self, client: OpenCodeClient, relative: str) -> str:
        similar = await self._files.find(client, posixpath.basename(relative))
        if not similar:
            return f"{relative} is not in this project. /ls browses it."
        return f"{relative} is not in this project. Similar: " + ", ".join(similar)


@dataclass(frozen=True)
class _Show:
    path: str
    page: int


@dataclass(frozen=True)
class _Send:
    path: str
    is_dir: bool
