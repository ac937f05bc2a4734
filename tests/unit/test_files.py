"""Files and diffs in core and their Telegram shape: path safety, the browser's pages and
presses (tokens in SQLite, replays), what a finished turn produced, the buttons' data."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from oc_outpost.core.bindings import Bindings
from oc_outpost.core.browser import FileBrowser, ls_arguments
from oc_outpost.core.chat import Attachment
from oc_outpost.core.diffs import diff_text
from oc_outpost.core.errors import BadRequest, NotFound, Unavailable
from oc_outpost.core.file_port import ListingEntry, ListingPage
from oc_outpost.core.outputs import NO_OUTPUT, DiffStat, OutFile
from oc_outpost.core.project_files import ProjectFiles, relative_path, sorted_entries
from oc_outpost.core.turn import TurnSnapshot
from oc_outpost.core.turn_outputs import TurnOutputs, found_images, turn_messages
from oc_outpost.core.voice import VoicePrompts
from oc_outpost.model import TopicBinding
from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.opencode.files import FileDiff, OutputMessage
from oc_outpost.store.buttons import ButtonStore
from oc_outpost.store.db import Database
from oc_outpost.store.migrations import TOPIC_MIGRATIONS
from oc_outpost.store.topics import TopicStore
from oc_outpost.stt import SttError
from oc_outpost.telegram import callbacks
from oc_outpost.telegram.files_view import diff_rows, listing_rows, listing_text

CHAT = -100
TOPIC = 7
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 20


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with await Database.open(tmp_path / "topics.db", TOPIC_MIGRATIONS) as database:
        yield database


def binding(project: Path, topic: int = TOPIC) -> TopicBinding:
    return TopicBinding(CHAT, topic, str(project), 0, 0, session_id="ses_1", instance_id="i1")


# --- paths -------------------------------------------------------------------------------------


def test_paths_stay_inside_the_project_symlinks_included(tmp_path: Path) -> None:
    project = tmp_path / "demo"
    (project / "sub").mkdir(parents=True)
    (tmp_path / "secret").write_text("x")
    (project / "out").symlink_to(tmp_path / "secret")
    (project / "in").symlink_to(project / "sub")
    assert relative_path(project, "") == ""
    assert relative_path(project, " sub/../a.txt ") == "a.txt"
    assert relative_path(project, str(project / "sub" / "f")) == "sub/f"
    assert relative_path(project, "in") == "in"
    for bad in ("../secret", "sub/../../secret", str(tmp_path / "secret"), "/etc/passwd"):
        with pytest.raises(BadRequest, match="outside the project directory"):
            relative_path(project, bad)
    with pytest.raises(BadRequest, match="points outside"):
        relative_path(project, "out")
    with pytest.raises(BadRequest, match="NUL"):
        relative_path(project, "a\x00b")


def test_a_remote_project_is_checked_as_text_only(tmp_path: Path) -> None:
    remote = tmp_path / "not-on-this-machine"
    assert relative_path(remote, "link-or-not") == "link-or-not"
    with pytest.raises(BadRequest):
        relative_path(remote, "../x")


def test_ls_arguments_and_entry_order() -> None:
    assert ls_arguments("") == (False, "")
    assert ls_arguments("-a") == (True, "")
    assert ls_arguments(" -a  src/x ") == (True, "src/x")
    assert ls_arguments("-abc") == (False, "-abc")
    entries = [ListingEntry("b", False), ListingEntry("Z", True), ListingEntry("a", True)]
    assert [e.name for e in sorted_entries(entries)] == ["a", "Z", "b"]


def test_diff_summary_and_text() -> None:
    assert DiffStat(120, 30, 5).text() == "+120 \u221230 · 5 files"
    assert DiffStat.of([(1, 0)]).text() == "+1 \u22120 · 1 file"
    diffs = [FileDiff(file="a", patch="+x"), FileDiff(file="img.png", patch="")]
    assert diff_text(diffs) == "+x\nBinary files a/img.png and b/img.png differ\n"


# --- buttons -----------------------------------------------------------------------------------


def page(**overrides: Any) -> ListingPage:
    values: dict[str, Any] = {
        "token": "Ab_-0123456z",
        "project": "demo",
        "path": "sub",
        "entries": (ListingEntry("docs", True), ListingEntry("photo.jpg", False)),
        "page": 0,
        "pages": 1,
        "total": 2,
        "hidden": False,
    }
    return ListingPage(**(values | overrides))


def test_listing_buttons_fit_and_parse_back() -> None:
    rows = listing_rows(page(page=1, pages=3))
    labels = [[b.text for b in row] for row in rows]
    assert labels == [["📁 docs/"], ["🖼 photo.jpg"], ["‹ Back", "◀ Previous", "Next ▶", "📦 Zip"]]
    pressed = [callbacks.parse(b.callback_data) for row in rows for b in row]  # type: ignore[arg-type]
    assert pressed[0] == callbacks.BrowsePress("Ab_-0123456z", "e0")
    assert [p.action for p in pressed if isinstance(p, callbacks.BrowsePress)][2:] == [
        "u",
        "p",
        "n",
        "z",
    ]
    assert all(len(str(b.callback_data).encode()) <= 64 for row in rows for b in row)
    root = listing_rows(page(path="", entries=(), total=0))
    assert root == []  # the empty top folder: nothing to press
    assert "(empty)" in listing_text(page(entries=(), total=0)).text
    assert callbacks.parse("b:tok:x") is None and callbacks.parse("b:to:k:e1") is None
    assert callbacks.parse(callbacks.diff_data("Ab_-0123456z")) == callbacks.DiffPress(
        "Ab_-0123456z"
    )
    assert diff_rows(None, "t") is None and diff_rows(DiffStat(1, 0, 1), None) is None


async def test_button_tokens_survive_and_presses_act_once(db: Database) -> None:
    clock = Clock()
    store = ButtonStore(db, now=clock, ttl_s=100)
    token = await store.create("browse", TOPIC, {"path": "a"})
    assert len(token) == 12
    again = ButtonStore(db, now=clock)  # as after a restart
    row = await again.get(token)
    assert row is not None and (row.kind, row.topic_id, row.payload) == (
        "browse",
        TOPIC,
        {"path": "a"},
    )
    assert await store.claim_press("q1", f"{token}:e0")
    assert not await store.claim_press("q1", f"{token}:e0")  # the same update again
    assert not await store.claim_press("q2", f"{token}:e0")  # a double tap
    assert await store.claim_press("q3", f"{token}:e1")  # another button
    clock.now += 11
    assert await store.claim_press("q4", f"{token}:e0")  # pressed again later: acts again
    clock.now += 200
    await store.create("browse", TOPIC, {})  # prunes what is older than the ttl
    assert await store.get(token) is None


# --- the browser -------------------------------------------------------------------------------


class FakeFiles(ProjectFiles):
    """ProjectFiles over a dict instead of OpenCode (what the browser asks is what matters)."""

    def __init__(self, tree: dict[str, list[ListingEntry]], contents: dict[str, bytes]) -> None:
        self.tree, self.contents, self.reads = tree, contents, []  # type: ignore[var-annotated]

    async def client(self, binding: TopicBinding) -> OpenCodeClient:
        return OpenCodeClient("http://unused.test")

    async def listing(self, client: OpenCodeClient, relative: str) -> list[ListingEntry]:
        if relative not in self.tree:
            raise NotFound(f"{relative} is not a folder of this project.")
        return sorted_entries(self.tree[relative])

    async def read(self, client: OpenCodeClient, relative: str) -> OutFile:
        self.reads.append(relative)
        return OutFile(relative.rsplit("/", 1)[-1], "text/plain", self.contents[relative])


class FakePort:
    def __init__(self) -> None:
        self.files: list[tuple[int, OutFile, str]] = []
        self.pages: list[tuple[ListingPage, int | None]] = []

    async def send_file(self, topic_id: int, file: OutFile, caption: str = "") -> None:
        self.files.append((topic_id, file, caption))

    async def show_listing(self, topic_id: int, page: ListingPage, message_id: int | None) -> int:
        self.pages.append((page, message_id))
        return 55


async def test_browser_pages_presses_and_replays(db: Database, tmp_path: Path) -> None:
    project = tmp_path / "demo"
    project.mkdir()
    names = [ListingEntry(f"f{i:02d}.txt", False) for i in range(14)]
    tree = {"": [ListingEntry(".git", True), ListingEntry("sub", True), *names], "sub": []}
    files = FakeFiles(tree, {"f00.txt": b"zero"})
    port = FakePort()
    clock = Clock()
    browser = FileBrowser(files, ButtonStore(db, now=clock), port, chat=None)  # type: ignore[arg-type]
    bound = binding(project)

    await browser.open(bound, "")
    first, message = port.pages[-1]
    assert message is None and (first.total, first.pages, first.entries[0].name) == (15, 2, "sub")
    await browser.press(bound, first.token, "n", "q1", 55)
    second, message = port.pages[-1]
    assert message == 55 and second.page == 1 and len(second.entries) == 3
    await browser.press(bound, first.token, "e1", "q2", 55)
    await browser.press(bound, first.token, "e1", "q2", 55)  # delivered twice
    assert [(t, f.data, c) for t, f, c in port.files] == [(TOPIC, b"zero", "f00.txt")]
    await browser.press(bound, first.token, "e0", "q3", 55)
    assert port.pages[-1][0].path == "sub"

    with pytest.raises(NotFound, match="out of date"):
        await browser.press(binding(project, topic=8), first.token, "e1", "q4", 55)
    with pytest.raises(NotFound, match="out of date"):
        await browser.press(bound, "nope", "e1", "q5", 55)
    with pytest.raises(NotFound, match="out of date"):
        await browser.press(bound, first.token, "e99", "q6", 55)
    clock.now += 11  # later, the same button again
    del files.contents["f00.txt"]
    with pytest.raises(KeyError):  # the read fails ...
        await browser.press(bound, first.token, "e1", "q7", 55)
    files.contents["f00.txt"] = b"back"
    await browser.press(bound, first.token, "e1", "q8", 55)  # ... so pressing again works
    assert port.files[-1][1].data == b"back"

    await browser.open(bound, "-a")
    assert port.pages[-1][0].entries[0].name == ".git"
    with pytest.raises(BadRequest, match="Usage: /get"):
        await browser.get(bound, " ")


# --- what a turn produced ----------------------------------------------------------------------


def message(role: str, mid: str, *parts: dict[str, Any]) -> dict[str, Any]:
    return {"info": {"id": mid, "role": role}, "parts": list(parts)}


PNG_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()
TURN = [
    message("user", "msg_0", {"type": "text", "text": "earlier"}),
    message(
        "assistant",
        "msg_00",
        {
            "type": "tool",
            "tool": "read",
            "state": {
                "status": "completed",
                "attachments": [{"mime": "image/png", "url": PNG_URL}],
            },
        },
    ),
    message("user", "msg_1", {"type": "text", "text": "now"}),
    message(
        "assistant",
        "msg_2",
        {
            "type": "tool",
            "tool": "read",
            "state": {
                "status": "completed",
                "input": {"filePath": "/p/pic.png"},
                "attachments": [
                    {"mime": "image/png", "url": PNG_URL},
                    {"mime": "image/svg+xml", "url": "data:image/svg+xml;base64,PHN2Zz4="},
                    {"mime": "image/png", "url": "data:image/png;base64,!!!"},
                ],
            },
        },
        {
            "type": "tool",
            "tool": "write",
            "state": {"status": "completed", "metadata": {"filepath": "/p/out.jpg"}},
        },
        {
            "type": "tool",
            "tool": "write",
            "state": {"status": "error", "input": {"filePath": "/p/x.png"}},
        },
        {"type": "patch", "files": ["/p/shot.png", "/p/notes.txt"]},
    ),
]


def parsed(raw: list[dict[str, Any]]) -> list[OutputMessage]:
    return [OutputMessage.model_validate(m) for m in raw]


def test_images_of_the_turn_only_photos_from_attachments_writes_and_patches() -> None:
    messages = turn_messages(parsed(TURN), "msg_1")
    assert [m.info.id for m in messages] == ["msg_1", "msg_2"]
    assert [m.info.id for m in turn_messages(parsed(TURN), None)] == ["msg_1", "msg_2"]
    found = list(found_images(messages))
    assert [getattr(f, "name", None) or getattr(f, "path", None) for f in found] == [
        "pic.png",
        "/p/out.jpg",
        "/p/shot.png",
    ]


async def test_turn_outputs_read_images_and_keep_the_diff_behind_a_token(
    db: Database, tmp_path: Path
) -> None:
    project = tmp_path / "p"
    bindings = Bindings(TopicStore(db), CHAT)
    await bindings.save(binding(project))
    requests: list[httpx.Request] = []
    diff = [{"file": "new.txt", "patch": "+x\n", "additions": 1, "deletions": 0}]

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        path = request.url.path
        if path.endswith("/message"):
            body = json.dumps(TURN).replace("/p/", f"{project}/")
            return httpx.Response(200, content=body)
        if path.endswith("/diff"):
            return httpx.Response(200, json=diff)
        if path == "/api/fs/read/shot.png":
            return httpx.Response(200, content=PNG + b"shot")
        return httpx.Response(500, json={"name": "UnknownError", "data": {"message": "gone"}})

    client = OpenCodeClient("http://oc.test", transport=httpx.MockTransport(answer))
    buttons = ButtonStore(db)
    snapshot = TurnSnapshot(1, "ses_1", 0.0, user_messages=("msg_1",))
    output = await TurnOutputs(buttons, bindings).collect(TOPIC, client, snapshot)
    assert [(i.name, i.mime, i.data) for i in output.images] == [
        ("pic.png", "image/png", PNG),
        ("shot.png", "image/png", PNG + b"shot"),
    ]  # out.jpg could not be read: left out, the turn still shows
    assert output.changes == DiffStat(1, 0, 1)
    assert output.diff_token is not None
    row = await buttons.get(output.diff_token)
    assert row is not None and row.payload == {"session_id": "ses_1", "messages": ["msg_1"]}
    assert [r.url.params.get("messageID") for r in requests if r.url.path.endswith("/diff")] == [
        "msg_1"
    ]


async def test_a_turn_without_tools_or_with_opencode_down_has_no_output(db: Database) -> None:
    calls: list[str] = []

    def no_tools(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return httpx.Response(200, json=[message("user", "msg_1"), message("assistant", "msg_2")])

    outputs = TurnOutputs(ButtonStore(db), Bindings(TopicStore(db), CHAT))
    snapshot = TurnSnapshot(1, "ses_1", 0.0, user_messages=("msg_1",))
    quiet = OpenCodeClient("http://oc.test", transport=httpx.MockTransport(no_tools))
    assert await outputs.collect(TOPIC, quiet, snapshot) == NO_OUTPUT
    assert calls == ["/session/ses_1/message"]  # no diff asked for

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    gone = OpenCodeClient("http://oc.test", transport=httpx.MockTransport(down))
    assert await outputs.collect(TOPIC, gone, snapshot) == NO_OUTPUT


# --- voice -------------------------------------------------------------------------------------


class Transcriber:
    def __init__(self, text: str = "", error: str | None = None) -> None:
        self.text, self.error, self.calls = text, error, []  # type: ignore[var-annotated]

    async def transcribe(self, audio: bytes, filename: str, mime: str, prompt: str) -> str:
        self.calls.append((audio, filename, mime, prompt))
        if self.error is not None:
            raise SttError(self.error)
        return self.text


class HintFiles(ProjectFiles):
    def __init__(self) -> None:
        pass

    async def name_hint(self, binding: TopicBinding, limit_chars: int = 500) -> str:
        return "app.py, README.md"


async def test_voice_needs_a_service_and_says_how_to_set_one_up(tmp_path: Path) -> None:
    note = Attachment("voice.ogg", "audio/ogg", b"OggS")
    with pytest.raises(BadRequest, match="STT_URL"):
        await VoicePrompts(None, HintFiles()).transcribe(binding(tmp_path), note)
    working = Transcriber(" run the tests ")
    assert await VoicePrompts(working, HintFiles()).transcribe(binding(tmp_path), note) == (
        "run the tests"
    )
    assert working.calls == [(b"OggS", "voice.ogg", "audio/ogg", "app.py, README.md")]
    with pytest.raises(Unavailable, match="did not answer within 60 s"):
        failing = Transcriber(error="the service did not answer within 60 s")
        await VoicePrompts(failing, HintFiles()).transcribe(binding(tmp_path), note)
    with pytest.raises(BadRequest, match="empty"):
        await VoicePrompts(Transcriber("  "), HintFiles()).transcribe(binding(tmp_path), note)
