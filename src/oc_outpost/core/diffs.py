"""`/diff` and the Diff button of a final answer: changes as a `.diff` document.

`/diff` is the project's working tree against git's HEAD (`GET /vcs/diff`); a turn's Diff button
is what that turn changed, from OpenCode's snapshots (`GET /session/{id}/diff?messageID=`). Both
need the project to be a git repository.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from oc_outpost.core.chat import ChatPort
from oc_outpost.core.errors import BadRequest, NotFound, Unavailable
from oc_outpost.core.file_port import FilePort
from oc_outpost.core.outputs import DiffStat, OutFile
from oc_outpost.core.project_files import ProjectFiles
from oc_outpost.model import TopicBinding
from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.opencode.errors import OpenCodeError
from oc_outpost.opencode.files import FileDiff
from oc_outpost.store.buttons import ButtonStore

TURN_DIFF = "diff"
NOT_GIT = (
    "{name} is not a git repository, so there is no diff to show: /diff and the Diff buttons "
    "compare with git (run `git init` and commit once in the project to use them)."
)


def diff_stat(diffs: Sequence[FileDiff]) -> DiffStat:
    return DiffStat.of((d.additions, d.deletions) for d in diffs)


def diff_text(diffs: Sequence[FileDiff]) -> str:
    """The diffs as one unified diff; a file without a text patch (binary) gets git's line."""
    pieces = []
    for diff in diffs:
        patch = diff.patch
        if not patch:
            patch = f"Binary files a/{diff.file} and b/{diff.file} differ\n"
        pieces.append(patch if patch.endswith("\n") else patch + "\n")
    return "".join(pieces)


def diff_file(name: str, diffs: Sequence[FileDiff]) -> OutFile:
    return OutFile(name, "text/x-diff", diff_text(diffs).encode())


async def turn_changes(
    client: OpenCodeClient, session_id: str, message_ids: Sequence[str]
) -> list[FileDiff]:
    """What the turns of these user messages changed, in order."""
    per_message = await asyncio.gather(
        *(client.session_diff(session_id, message_id) for message_id in message_ids)
    )
    return [diff for diffs in per_message for diff in diffs]


class Diffs:
    def __init__(
        self, files: ProjectFiles, buttons: ButtonStore, port: FilePort, chat: ChatPort
    ) -> None:
        self._files = files
        self._buttons = buttons
        self._port = port
        self._chat = chat

    async def project(self, binding: TopicBinding) -> None:
        """`/diff`: the uncommitted changes of the project."""
        name = Path(binding.project_path).name
        client = await self._files.client(binding)
        try:
            diffs = await client.vcs_diff()
            vcs = None if diffs else await client.vcs()
        except OpenCodeError as exc:
            raise Unavailable(f"OpenCode could not compute the diff: {exc}") from exc
        if vcs is not None and vcs.branch is None:
            raise BadRequest(NOT_GIT.format(name=name))
        if not diffs:
            await self._chat.notify(binding.topic_id, f"✅ No uncommitted changes in {name}.")
            return
        caption = f"{name}: {diff_stat(diffs).text()}"
        await self._port.send_file(binding.topic_id, diff_file(f"{name}.diff", diffs), caption)

    async def turn(self, binding: TopicBinding, token: str, press_id: str) -> None:
        """A Diff button: what that turn changed."""
        row = await self._buttons.get(token)
        if row is None or row.kind != TURN_DIFF or row.topic_id != binding.topic_id:
            raise NotFound("This Diff button is out of date; /diff shows the current changes.")
        async with self._buttons.pressed(press_id, token) as fresh:
            if fresh:  # not delivered before, not a double tap
                await self._send_turn(binding, row.payload)

    async def _send_turn(self, binding: TopicBinding, payload: Mapping[str, Any]) -> None:
        session_id = str(payload["session_id"])
        message_ids = [str(m) for m in payload["messages"]]
        client = await self._files.client(binding)
        try:
            diffs = await turn_changes(client, session_id, message_ids)
        except OpenCodeError as exc:
            raise Unavailable(f"OpenCode could not compute the turn's diff: {exc}") from exc
        if not diffs:
            raise NotFound("OpenCode has no record of that turn's changes any more.")
        name = Path(binding.project_path).name
        caption = f"Changes of this turn: {diff_stat(diffs).text()}"
        await self._port.send_file(binding.topic_id, diff_file(f"{name}-turn.diff", diffs), caption)
