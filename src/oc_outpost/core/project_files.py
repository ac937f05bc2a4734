"""A bound topic's project files, read through its OpenCode server (so external and remote
servers work too), never outside the project directory.

A path the user typed is checked twice: as text (`..` or an absolute path may not leave the
project), and, when the project directory is on this machine, with symlinks resolved (a link
pointing out is refused). OpenCode refuses paths outside the project by itself as well.
"""

from __future__ import annotations

import asyncio
import io
import logging
import mimetypes
import posixpath
import zipfile
from dataclasses import dataclass
from pathlib import Path

from oc_outpost.core.chat import ChatPort
from oc_outpost.core.errors import BadRequest, NotFound, Unavailable
from oc_outpost.core.file_port import ListingEntry
from oc_outpost.core.linking import SERVER_ERRORS
from oc_outpost.core.outputs import MAX_UPLOAD_BYTES, OutFile
from oc_outpost.core.projects import ProjectError, resolve_inside
from oc_outpost.model import TopicBinding
from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.opencode.errors import OpenCodeError, OpenCodeHTTPError
from oc_outpost.opencode.files import FileTooLarge
from oc_outpost.servers.errors import InstanceBusy
from oc_outpost.servers.registry import ServerRegistry

log = logging.getLogger(__name__)

# A directory is sent as a zip only if it is small: at most this many files and bytes (before
# compression), hidden entries and .git left out unless asked for.
ZIP_MAX_FILES = 200
ZIP_MAX_BYTES = 20 * 1024 * 1024
GENERIC_MIME = "application/octet-stream"
WAKING = "⏳ Waking up OpenCode for {name}…"


def mime_of(name: str) -> str:
    return mimetypes.guess_type(name)[0] or GENERIC_MIME


def shown(relative: str) -> str:
    return relative or "."


def relative_path(project: Path, argument: str) -> str:
    """The project-relative POSIX path ``argument`` names ("" is the project itself).

    Raises BadRequest for anything outside the project, symlinks included."""
    text = argument.strip()
    if "\x00" in text:
        raise BadRequest("That path contains a NUL character.")
    root = posixpath.normpath(str(project))
    joined = posixpath.normpath(posixpath.join(root, text or "."))
    if joined != root and not joined.startswith(root.rstrip("/") + "/"):
        raise BadRequest(f"{text} is outside the project directory; only its files can be sent.")
    relative = posixpath.relpath(joined, root)
    if project.is_dir():  # on this machine: resolve symlinks too
        try:
            resolve_inside(project, relative)
        except ProjectError:
            raise BadRequest(
                f"{text} points outside the project directory; only its files can be sent."
            ) from None
    return "" if relative == "." else relative


def sorted_entries(entries: list[ListingEntry]) -> list[ListingEntry]:
    """Folders first, then files, each by name regardless of case."""
    return sorted(entries, key=lambda e: (not e.is_dir, e.name.lower(), e.name))


def is_hidden(name: str) -> bool:
    return name.startswith(".")


@dataclass(frozen=True)
class _ZipPlan:
    files: tuple[str, ...]


class ProjectFiles:
    def __init__(self, registry: ServerRegistry, chat: ChatPort) -> None:
        self._registry = registry
        self._chat = chat

    async def client(self, binding: TopicBinding) -> OpenCodeClient:
        """The topic's server, started or woken if it sleeps."""
        name = Path(binding.project_path).name

        async def waking() -> None:
            await self._chat.notify(binding.topic_id, WAKING.format(name=name))

        try:
            running = await self._registry.connect(
                binding.instance_id, Path(binding.project_path), on_slow=waking
            )
        except InstanceBusy as exc:
            raise Unavailable(str(exc)) from exc
        except SERVER_ERRORS as exc:
            raise Unavailable(f"OpenCode is not available: {exc}") from exc
        return running.client

    async def listing(self, client: OpenCodeClient, relative: str) -> list[ListingEntry]:
        try:
            nodes = await client.list_files(relative)
        except OpenCodeHTTPError:
            raise NotFound(f"{shown(relative)} is not a folder of this project.") from None
        except OpenCodeError as exc:
            raise Unavailable(f"OpenCode could not list {shown(relative)}: {exc}") from exc
        entries = [ListingEntry(n.name, n.type == "directory") for n in nodes]
        return sorted_entries(entries)

    async def kind(self, client: OpenCodeClient, relative: str) -> ListingEntry | None:
        """The entry ``relative`` names (None when it is not there); "" is the project."""
        if not relative:
            return ListingEntry("", True)
        parent, name = posixpath.split(relative)
        try:
            entries = await self.listing(client, parent)
        except NotFound:
            return None
        return next((e for e in entries if e.name == name), None)

    async def read(self, client: OpenCodeClient, relative: str) -> OutFile:
        name = posixpath.basename(relative)
        try:
            data = await client.read_file(relative, MAX_UPLOAD_BYTES)
        except FileTooLarge as exc:
            raise BadRequest(
                f"{relative} is {_megabytes(exc.size)}, over Telegram's upload limit of "
                f"{_megabytes(MAX_UPLOAD_BYTES)} for bots; it cannot be sent here."
            ) from None
        except OpenCodeHTTPError:
            raise NotFound(f"OpenCode could not read {relative} (is it there?).") from None
        except OpenCodeError as exc:
            raise Unavailable(f"OpenCode could not read {relative}: {exc}") from exc
        return OutFile(name, mime_of(name), data)

    async def zip(self, client: OpenCodeClient, relative: str, *, hidden: bool) -> OutFile:
        """The folder as a .zip, if it is small (ZIP_MAX_FILES, ZIP_MAX_BYTES)."""
        plan = await self._plan_zip(client, relative, hidden=hidden)
        contents: list[tuple[str, bytes]] = []
        total = 0
        for path in plan.files:
            data = (await self.read(client, path)).data
            total += len(data)
            if total > ZIP_MAX_BYTES:
                raise BadRequest(self._too_big_to_zip(relative))
            contents.append((posixpath.relpath(path, relative or "."), data))
        archive = await asyncio.to_thread(_zip_bytes, contents)
        if len(archive) > MAX_UPLOAD_BYTES:
            raise BadRequest(self._too_big_to_zip(relative))
        base = posixpath.basename(relative) or "project"
        return OutFile(f"{base}.zip", "application/zip", archive)

    async def _plan_zip(self, client: OpenCodeClient, relative: str, *, hidden: bool) -> _ZipPlan:
        files: list[str] = []
        folders = [relative]
        while folders:
            folder = folders.pop(0)
            for entry in await self.listing(client, folder):
                if entry.name == ".git" or (is_hidden(entry.name) and not hidden):
                    continue
                path = posixpath.join(folder, entry.name) if folder else entry.name
                if entry.is_dir:
                    folders.append(path)
                else:
                    files.append(path)
                if len(files) > ZIP_MAX_FILES:
                    raise BadRequest(self._too_big_to_zip(relative))
        if not files:
            raise BadRequest(f"{shown(relative)} has no files to zip.")
        return _ZipPlan(tuple(files))

    @staticmethod
    def _too_big_to_zip(relative: str) -> str:
        return (
            f"{shown(relative)} is too big to send as a zip (the limit is {ZIP_MAX_FILES} files "
            f"and {_megabytes(ZIP_MAX_BYTES)}); open it with /ls and fetch single files."
        )

    async def find(self, client: OpenCodeClient, query: str, limit: int = 8) -> list[str]:
        try:
            return [p for p in await client.find_files(query, limit) if p not in ("/", "")]
        except OpenCodeError as exc:
            log.warning("finding %r failed: %s", query, exc)
            return []

    async def name_hint(self, binding: TopicBinding, limit_chars: int = 500) -> str:
        """The project's top-level file names, to help a transcription spell them."""
        try:
            client = await self.client(binding)
            entries = await self.listing(client, "")
        except (Unavailable, NotFound) as exc:
            log.warning("no file names for the transcription hint: %s", exc)
            return ""
        names = [e.name for e in entries if not is_hidden(e.name)]
        hint = ", ".join(names)
        return hint if len(hint) <= limit_chars else hint[:limit_chars].rsplit(",", 1)[0]


def _zip_bytes(contents: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in contents:
            archive.writestr(name, data)
    return buffer.getvalue()


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"
