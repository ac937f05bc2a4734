"""What a finished turn produced besides its answer: images to show, changes for a Diff button.

Images are the photo-type files the agent produced or read in the turn: tool attachments (the
`read` tool's image, a screenshot tool's capture), file parts, files the write/edit tools wrote
and files OpenCode's snapshots saw changed (`patch` parts, git repositories only). Each is read
through OpenCode. Nothing here may fail a final answer: OpenCode failures are logged and the
turn is shown without what could not be fetched.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import mimetypes
import posixpath
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from oc_outpost.core.bindings import Bindings
from oc_outpost.core.diffs import TURN_DIFF, diff_stat, turn_changes
from oc_outpost.core.outputs import (
    MAX_PHOTO_BYTES,
    NO_OUTPUT,
    PHOTO_MIMES,
    DiffStat,
    OutFile,
    TurnOutput,
)
from oc_outpost.core.turn import TurnSnapshot
from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.opencode.errors import OpenCodeError
from oc_outpost.opencode.files import OutputFile, OutputMessage, OutputPatchPart, OutputToolPart
from oc_outpost.store.buttons import ButtonStore

log = logging.getLogger(__name__)

RECENT_MESSAGES = 100  # a turn's messages are the newest ones
MAX_IMAGES = 10  # one album
MAX_IMAGE_BYTES = 30 * 1024 * 1024  # all images of a turn together (they wait in memory)
WRITING_TOOLS = frozenset({"write", "edit", "multiedit"})


@dataclass(frozen=True)
class _Inline:
    name: str
    mime: str
    data: bytes


@dataclass(frozen=True)
class _OnDisk:
    path: str  # absolute, as OpenCode names it


Found = _Inline | _OnDisk


def photo_mime(name: str) -> str | None:
    mime = mimetypes.guess_type(name)[0]
    return mime if mime in PHOTO_MIMES else None


def turn_messages(
    messages: Sequence[OutputMessage], first_user_message: str | None
) -> list[OutputMessage]:
    """The turn's messages: from its first prompt on (the last prompt when that is unknown)."""
    ids = [m.info.id for m in messages]
    if first_user_message in ids:
        return list(messages[ids.index(first_user_message) :])
    users = [i for i, m in enumerate(messages) if m.info.role == "user"]
    return list(messages[users[-1] :]) if users else []


def found_images(messages: Sequence[OutputMessage]) -> Iterator[Found]:
    for message in messages:
        if message.info.role != "assistant":
            continue
        for part in message.parts:
            if isinstance(part, OutputToolPart) and part.state.status == "completed":
                yield from _tool_images(part)
            elif isinstance(part, OutputPatchPart):
                yield from (_OnDisk(path) for path in part.files if photo_mime(path))
            elif isinstance(part, OutputFile):
                yield from _file_image(part)


def _tool_images(part: OutputToolPart) -> Iterator[Found]:
    for attachment in part.state.attachments:
        yield from _file_image(attachment, part.state.input.get("filePath"))
    if part.tool in WRITING_TOOLS:
        written = part.state.metadata.get("filepath") or part.state.input.get("filePath")
        if isinstance(written, str) and photo_mime(written):
            yield _OnDisk(written)


def _file_image(file: OutputFile, source: object = None) -> Iterator[Found]:
    if file.mime not in PHOTO_MIMES:
        return
    if file.url.startswith("file:"):
        yield _OnDisk(unquote(urlparse(file.url).path))
        return
    data = _data_url_bytes(file.url)
    if data is None:
        return
    name = file.filename or (posixpath.basename(source) if isinstance(source, str) else "")
    yield _Inline(name or f"image{mimetypes.guess_extension(file.mime) or ''}", file.mime, data)


def _data_url_bytes(url: str) -> bytes | None:
    head, comma, body = url.partition(",")
    if not url.startswith("data:") or not comma or not head.endswith(";base64"):
        return None
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        log.warning("an image of the turn has a malformed data: URL")
        return None


def user_message_ids(messages: Sequence[OutputMessage]) -> list[str]:
    return [m.info.id for m in messages if m.info.role == "user"]


def used_tools(messages: Sequence[OutputMessage]) -> bool:
    return any(isinstance(p, OutputToolPart) for m in messages for p in m.parts)


class TurnOutputs:
    def __init__(self, buttons: ButtonStore, bindings: Bindings) -> None:
        self._buttons = buttons
        self._bindings = bindings

    async def collect(
        self, topic_id: int, client: OpenCodeClient, snapshot: TurnSnapshot
    ) -> TurnOutput:
        try:
            recent = await client.output_messages(snapshot.session_id, RECENT_MESSAGES)
        except OpenCodeError as exc:
            log.warning("could not read what the turn of %s produced: %s", snapshot.session_id, exc)
            return NO_OUTPUT
        messages = turn_messages(recent, snapshot.first_user_message)
        if not used_tools(messages):  # files change and images appear only through tools
            return NO_OUTPUT
        images = await self._images(topic_id, client, messages)
        changes = await self._changes(topic_id, client, snapshot.session_id, messages)
        return TurnOutput(images, *changes)

    async def _images(
        self, topic_id: int, client: OpenCodeClient, messages: Sequence[OutputMessage]
    ) -> tuple[OutFile, ...]:
        images: dict[str, OutFile] = {}  # by content hash: the same image read twice is one
        seen_paths: set[str] = set()
        for found in found_images(messages):
            if len(images) >= MAX_IMAGES:
                log.info("the turn produced more than %d images; the rest are not sent", MAX_IMAGES)
                break
            if isinstance(found, _OnDisk):
                if found.path in seen_paths:
                    continue
                seen_paths.add(found.path)
                image = await self._read(topic_id, client, found.path)
            else:
                image = OutFile(found.name, found.mime, found.data)
            if image is None or len(image.data) > MAX_PHOTO_BYTES:
                continue
            if sum(len(i.data) for i in images.values()) + len(image.data) > MAX_IMAGE_BYTES:
                log.info(
                    "the images of the turn exceed %d bytes; the rest are not sent", MAX_IMAGE_BYTES
                )
                break
            images.setdefault(hashlib.sha256(image.data).hexdigest(), image)
        return tuple(images.values())

    async def _read(self, topic_id: int, client: OpenCodeClient, path: str) -> OutFile | None:
        binding = self._bindings.by_topic(topic_id)
        mime = photo_mime(path)
        if binding is None or mime is None:
            return None
        project = Path(binding.project_path)
        absolute = Path(path) if Path(path).is_absolute() else project / path
        if not absolute.is_relative_to(project):
            log.info("an image of the turn is outside the project: %s", path)
            return None
        relative = absolute.relative_to(project).as_posix()
        try:
            data = await client.read_file(relative, MAX_PHOTO_BYTES)
        except OpenCodeError as exc:  # deleted meanwhile, too big for a photo, server gone
            log.info("image %s of the turn not sent: %s", relative, exc)
            return None
        return OutFile(absolute.name, mime, data)

    async def _changes(
        self,
        topic_id: int,
        client: OpenCodeClient,
        session_id: str,
        messages: Sequence[OutputMessage],
    ) -> tuple[DiffStat | None, str | None]:
        message_ids = user_message_ids(messages)
        try:
            diffs = await turn_changes(client, session_id, message_ids)
        except OpenCodeError as exc:
            log.warning("could not read the changes of the turn of %s: %s", session_id, exc)
            return None, None
        if not diffs:
            return None, None
        token = await self._buttons.create(
            TURN_DIFF, topic_id, {"session_id": session_id, "messages": message_ids}
        )
        return diff_stat(diffs), token
