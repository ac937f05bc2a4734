"""The client's file, VCS and turn-output routes against httpx.MockTransport (bodies as
OpenCode 1.18.33 sent them to a live probe)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.opencode.errors import OpenCodeHTTPError
from oc_outpost.opencode.files import (
    FileTooLarge,
    OutputFilePart,
    OutputOtherPart,
    OutputPatchPart,
    OutputToolPart,
)

BASE = "http://opencode.test"

READ_TOOL_MESSAGE = {
    "info": {"id": "msg_2", "role": "assistant"},
    "parts": [
        {"id": "prt_1", "type": "step-start"},
        {
            "id": "prt_2",
            "type": "tool",
            "callID": "call_1",
            "tool": "read",
            "state": {
                "status": "completed",
                "input": {"filePath": "/p/pic.png"},
                "output": "Image read successfully",
                "metadata": {"preview": "Image read successfully"},
                "attachments": [
                    {
                        "id": "prt_3",
                        "type": "file",
                        "mime": "image/png",
                        "url": "data:image/png;base64,iVBO",
                    }
                ],
            },
        },
        {"id": "prt_4", "type": "patch", "hash": "dd20", "files": ["/p/shot.png"]},
        {"id": "prt_5", "type": "file", "mime": "image/jpeg", "url": "file:///p/a.jpg"},
    ],
}


def client_with(handler: Any, **kwargs: Any) -> tuple[OpenCodeClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    async def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        result: httpx.Response = handler(request)
        return result

    return OpenCodeClient(BASE, transport=httpx.MockTransport(record), **kwargs), seen


async def test_listing_and_finding_send_the_path_and_the_project() -> None:
    nodes = [
        {
            "name": "sub",
            "path": "sub/",
            "absolute": "/p/sub",
            "type": "directory",
            "ignored": False,
        },
        {
            "name": "a.txt",
            "path": "a.txt",
            "absolute": "/p/a.txt",
            "type": "file",
            "ignored": False,
        },
    ]
    client, seen = client_with(
        lambda r: httpx.Response(200, json=nodes if r.url.path == "/file" else ["/", "sub/b.py"]),
        directory="/p",
    )
    listed = await client.list_files("sub dir")
    assert [(n.name, n.type) for n in listed] == [("sub", "directory"), ("a.txt", "file")]
    assert dict(seen[0].url.params) == {"path": "sub dir", "directory": "/p"}
    assert await client.find_files("b", limit=5) == ["/", "sub/b.py"]
    assert dict(seen[1].url.params) == {"query": "b", "limit": "5", "directory": "/p"}


async def test_read_file_is_exact_quoted_and_names_the_location() -> None:
    client, seen = client_with(lambda r: httpx.Response(200, content=b"  a \n\n"), directory="/p q")
    assert await client.read_file("sub dir/a#b?.txt", 100) == b"  a \n\n"
    assert seen[0].url.raw_path.startswith(b"/api/fs/read/sub%20dir/a%23b%3F.txt?")
    assert seen[0].url.params["location[directory]"] == "/p q"


async def test_read_file_refuses_what_is_over_the_limit_by_header_or_by_stream() -> None:
    declared, _ = client_with(lambda r: httpx.Response(200, content=b"x" * 10))
    with pytest.raises(FileTooLarge) as too_big:
        await declared.read_file("big.bin", 9)
    assert (too_big.value.size, too_big.value.limit) == (10, 9)

    async def chunks() -> Any:
        for _ in range(5):
            yield b"y" * 4

    streamed, _ = client_with(lambda r: httpx.Response(200, content=chunks()))
    with pytest.raises(FileTooLarge):
        await streamed.read_file("stream.bin", 15)


async def test_read_file_failures_are_typed() -> None:
    body = {"name": "UnknownError", "data": {"message": "Unexpected server error."}}
    client, _ = client_with(lambda r: httpx.Response(500, json=body))
    with pytest.raises(OpenCodeHTTPError, match="Unexpected server error"):
        await client.read_file("../x", 100)


async def test_vcs_and_diffs() -> None:
    diff = [{"file": "new.txt", "patch": "+x\n", "additions": 1, "deletions": 0, "status": "added"}]

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/vcs":
            return httpx.Response(200, json={"branch": None, "default_branch": None})
        return httpx.Response(200, json=diff)

    client, seen = client_with(answer)
    assert (await client.vcs()).branch is None
    (only,) = await client.vcs_diff()
    assert (only.file, only.additions, only.deletions) == ("new.txt", 1, 0)
    assert seen[1].url.params["mode"] == "git"
    await client.session_diff("ses_1", "msg_1")
    assert seen[2].url.path == "/session/ses_1/diff"
    assert seen[2].url.params["messageID"] == "msg_1"


async def test_output_messages_keep_attachments_patches_and_file_parts() -> None:
    user = {"info": {"id": "msg_1", "role": "user"}, "parts": [{"type": "text", "text": "hi"}]}
    body = json.dumps([user, READ_TOOL_MESSAGE])
    client, seen = client_with(lambda r: httpx.Response(200, content=body))
    messages = await client.output_messages("ses_1", 50)
    assert seen[0].url.params["limit"] == "50"
    parts = messages[1].parts
    assert isinstance(parts[0], OutputOtherPart)
    assert isinstance(parts[1], OutputToolPart)
    assert parts[1].state.attachments[0].mime == "image/png"
    assert isinstance(parts[2], OutputPatchPart) and parts[2].files == ["/p/shot.png"]
    assert isinstance(parts[3], OutputFilePart) and parts[3].url == "file:///p/a.jpg"
