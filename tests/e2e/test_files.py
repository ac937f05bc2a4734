"""Files and voice end to end: the real bot, real OpenCode, the fake Bot API, the mock LLM and a
mock transcription server. /ls and /get send the project's files, /diff and the Diff button its
changes, images the agent wrote arrive as photos, voice notes become prompts."""

from __future__ import annotations

import base64
import io
import os
import struct
import subprocess
import zipfile
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.rig.audio import opus_voice_note
from tests.rig.bot_fixtures import RunningBot, bot_settings, texts
from tests.rig.fake_telegram import FakeTelegram, StoredMessage
from tests.rig.mock_llm import WRITE_FILE_CONTENT, MockLLM, ToolCall
from tests.rig.mock_stt import MockSTT
from tests.rig.telegram_fixtures import ALLOWED_USER_ID

pytestmark = pytest.mark.timeout(150)

STT_KEY = "stt-test-key-0123456789"


def png_bytes(width: int = 3, height: int = 2) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def git_repository(path: Path) -> None:
    """A git repository with one commit (OpenCode's diffs and snapshots need one)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "README.md").write_text("# demo\n")
    for command in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start"],
    ):
        subprocess.run(command, cwd=path, check=True, capture_output=True, timeout=30)


def buttons_of(message: StoredMessage) -> list[str]:
    return [b["text"] for b in message.buttons]


async def uploaded(fake: FakeTelegram, method: str, topic: int, *, after: int = 0) -> StoredMessage:
    """The message of the first successful `method` upload into `topic` from call `after` on."""
    call = await fake.wait_for(
        lambda: next(
            (
                c
                for c in fake.calls(method)[after:]
                if c.ok and c.params.get("message_thread_id") == topic
            ),
            None,
        ),
        timeout=30,
        what=f"{method} in topic {topic}",
    )
    result: Any = call.result
    first = result[0] if isinstance(result, list) else result
    return fake.message(int(first["message_id"]))


async def allow_permission(bot: RunningBot, topic: int, what: str, *, after: int = 0) -> None:
    """Press Allow once on the `after`-th (from 0) permission request for `what`."""
    asks = await bot.fake.wait_for(
        lambda: [
            m for m in bot.fake.bot_messages(topic) if f"permission: {what}" in (m.text or "")
        ][after:],
        timeout=30,
        what=f"permission request {after} for {what}",
    )
    ask = asks[0]
    await bot.fake.click(ask.message_id, label="✅ Allow once", user_id=ALLOWED_USER_ID)


async def test_ls_browses_folders_first_and_a_tap_sends_the_file_even_after_a_restart(
    bot: RunningBot,
) -> None:
    project = bot.projects / "demo"
    (project / "sub").mkdir(parents=True)
    data = os.urandom(3000)
    (project / "sub" / "data.bin").write_bytes(data)
    picture = png_bytes()
    (project / "pic.png").write_bytes(picture)
    (project / "notes.txt").write_text("  spaced text \n\n")
    (project / ".secret").write_text("hidden")
    topic = await bot.new_topic("demo")

    await bot.say("/ls", topic)
    listing = await bot.wait_message(topic, "📂 demo/")
    assert buttons_of(listing) == ["📁 sub/", "📄 notes.txt", "🖼 pic.png", "📦 Zip"]
    assert all(len(b["callback_data"].encode()) <= 64 for b in listing.buttons)

    await bot.fake.click(listing.message_id, label="📁 sub/")
    await bot.fake.wait_for(lambda: "📂 demo/sub" in (listing.text or ""), what="sub opened")
    assert buttons_of(listing) == ["📄 data.bin", "‹ Back", "📦 Zip"]
    await bot.fake.click(listing.message_id, label="📄 data.bin")
    document = await uploaded(bot.fake, "sendDocument", topic)
    assert bot.fake.file_bytes(document) == data
    assert document.caption == "sub/data.bin"
    await bot.fake.click(listing.message_id, label="📦 Zip")
    archive = await uploaded(bot.fake, "sendDocument", topic, after=1)
    with zipfile.ZipFile(io.BytesIO(bot.fake.file_bytes(archive))) as unpacked:
        assert unpacked.read("data.bin") == data
    assert archive.media is not None and archive.media["document"]["file_name"] == "sub.zip"

    await bot.fake.click(listing.message_id, label="‹ Back")
    await bot.fake.wait_for(lambda: "🖼 pic.png" in buttons_of(listing), what="back at the top")
    await bot.fake.click(listing.message_id, label="🖼 pic.png")
    photo = await uploaded(bot.fake, "sendPhoto", topic)
    assert bot.fake.file_bytes(photo) == picture

    # a text file arrives byte for byte (OpenCode's /file/content would have trimmed it)
    await bot.fake.click(listing.message_id, label="📄 notes.txt")
    text_file = await uploaded(bot.fake, "sendDocument", topic, after=2)
    assert bot.fake.file_bytes(text_file) == b"  spaced text \n\n"

    await bot.say("/ls -a", topic)
    hidden = await bot.wait_message(topic, "hidden entries shown")
    assert "📄 .secret" in buttons_of(hidden)

    # the buttons are tokens in SQLite: they still work after the bot restarted
    await bot.restart()
    sends = len(bot.fake.calls("sendDocument"))
    await bot.fake.click(hidden.message_id, label="📄 .secret")
    secret = await uploaded(bot.fake, "sendDocument", topic, after=sends)
    assert bot.fake.file_bytes(secret) == b"hidden"


async def test_get_sends_a_file_and_refuses_paths_outside_symlinks_out_and_huge_files(
    bot: RunningBot, tmp_path: Path
) -> None:
    project = bot.projects / "demo"
    project.mkdir(parents=True)
    (project / "a.txt").write_text("alpha\n")
    outside = tmp_path / "outside.txt"
    outside.write_text("not yours")
    (project / "escape").symlink_to(outside)
    with (project / "huge.bin").open("wb") as handle:
        handle.truncate(51 * 1024 * 1024)  # sparse: costs no disk
    topic = await bot.new_topic("demo")

    await bot.say("/get ../outside.txt", topic)
    await bot.wait_message(topic, "❌ ../outside.txt is outside the project directory")
    await bot.say("/get escape", topic)
    await bot.wait_message(topic, "❌ escape points outside the project directory")
    await bot.say(f"/get {outside}", topic)
    await bot.wait_message(topic, f"❌ {outside} is outside the project directory")
    await bot.say("/get huge.bin", topic)
    await bot.wait_message(topic, "over Telegram's upload limit of 50.0 MB")
    await bot.say("/get nothere.txt", topic)
    await bot.wait_message(topic, "❌ nothere.txt is not in this project")
    assert not bot.fake.calls("sendDocument")

    await bot.say("/get a.txt", topic)
    document = await uploaded(bot.fake, "sendDocument", topic)
    assert bot.fake.file_bytes(document) == b"alpha\n"


async def test_diff_and_the_diff_button_show_what_a_write_file_turn_changed(
    bot: RunningBot,
) -> None:
    git_repository(bot.projects / "demo")
    topic = await bot.new_topic("demo")
    await bot.say("/diff", topic)
    await bot.wait_message(topic, "✅ No uncommitted changes in demo.")

    await bot.say("please WRITE_FILE", topic)
    await allow_permission(bot, topic, "edit")
    await bot.wait_message(topic, "Tool finished; write done.")
    summary = await bot.fake.wait_for(
        lambda: next(
            (m for m in bot.fake.bot_messages(topic) if any("Diff" in b for b in buttons_of(m))),
            None,
        ),
        timeout=30,
        what="a Diff button",
    )
    assert buttons_of(summary) == ["📄 Diff +1 \u22120 · 1 file"]
    assert summary.text.startswith("✅ Done in")  # the progress message's summary line

    await bot.fake.click(summary.message_id, label="📄 Diff +1 \u22120 · 1 file")
    turn_diff = await uploaded(bot.fake, "sendDocument", topic)
    assert f"+{WRITE_FILE_CONTENT}".encode() in bot.fake.file_bytes(turn_diff)
    assert turn_diff.caption == "Changes of this turn: +1 \u22120 · 1 file"

    await bot.say("/diff", topic)
    project_diff = await uploaded(bot.fake, "sendDocument", topic, after=1)
    assert f"+{WRITE_FILE_CONTENT}".encode() in bot.fake.file_bytes(project_diff)
    assert project_diff.caption == "demo: +1 \u22120 · 1 file"
    assert project_diff.media is not None
    assert project_diff.media["document"]["file_name"] == "demo.diff"


async def test_an_image_the_agent_writes_arrives_as_a_photo_after_the_answer(
    bot: RunningBot, llm: MockLLM
) -> None:
    picture = png_bytes(4, 4)
    encoded = base64.b64encode(picture).decode()
    command = f"echo {encoded} | base64 -d > shot.png"
    llm.when("SCREENSHOT", ToolCall("bash", {"command": command, "description": "draw"}))
    git_repository(bot.projects / "demo")
    topic = await bot.new_topic("demo")

    await bot.say("take a SCREENSHOT", topic)
    await allow_permission(bot, topic, "bash")
    photo = await uploaded(bot.fake, "sendPhoto", topic)
    assert bot.fake.file_bytes(photo) == picture
    assert photo.caption == "shot.png"
    final = next(m for m in bot.fake.bot_messages(topic) if "Tool finished" in (m.text or ""))
    assert final.message_id < photo.message_id  # after the answer

    # several images: one album (sendMediaGroup), each photo named
    first, second = png_bytes(5, 5), png_bytes(6, 6)
    both = " && ".join(
        f"echo {base64.b64encode(image).decode()} | base64 -d > {name}"
        for image, name in ((first, "one.png"), (second, "two.png"))
    )
    llm.when("ALBUM", ToolCall("bash", {"command": both, "description": "draw two"}))
    await bot.say("make an ALBUM", topic)
    await allow_permission(bot, topic, "bash", after=1)
    album = await bot.fake.wait_for(
        lambda: next((c for c in bot.fake.calls("sendMediaGroup") if c.ok), None),
        timeout=30,
        what="an album",
    )
    photos = [bot.fake.message(int(m["message_id"])) for m in album.result]
    assert {p.caption: bot.fake.file_bytes(p) for p in photos} == {
        "one.png": first,
        "two.png": second,
    }
    assert len({p.media_group_id for p in photos}) == 1


@pytest.fixture
async def stt() -> AsyncIterator[MockSTT]:
    async with MockSTT(transcript="add a hello world script", api_key=STT_KEY) as server:
        yield server


@pytest.fixture
async def stt_bot(
    fake_telegram: FakeTelegram,
    opencode_bin: Path,
    opencode_env: dict[str, str],
    tmp_path: Path,
    stt: MockSTT,
) -> AsyncIterator[RunningBot]:
    settings = bot_settings(
        fake_telegram, opencode_bin, tmp_path, STT_URL=stt.url, STT_API_KEY=STT_KEY
    )
    running = RunningBot(fake_telegram, settings)
    await running.start()
    try:
        yield running
    finally:
        await running.shutdown()


def user_texts(llm: MockLLM) -> str:
    return "\n".join(str(request.get("messages")) for request in llm.agent_requests)


async def test_a_voice_note_is_transcribed_echoed_and_sent_as_the_prompt(
    stt_bot: RunningBot, stt: MockSTT, llm: MockLLM
) -> None:
    bot = stt_bot
    (bot.projects / "demo").mkdir()
    (bot.projects / "demo" / "hello_world.py").write_text("print('hi')\n")
    topic = await bot.new_topic("demo")

    await bot.fake.send_user_message(
        user_id=ALLOWED_USER_ID, thread_id=topic, voice=opus_voice_note()
    )
    await bot.wait_message(topic, "🎙 add a hello world script")
    await bot.wait_message(topic, "Hello from mock! You said: add a hello world script")
    assert not stt.rejected
    (request,) = stt.requests
    assert request.data == opus_voice_note()
    assert (request.filename, request.model) == ("voice.ogg", "whisper-1")
    assert request.prompt is not None and "hello_world.py" in request.prompt
    assert request.authorization == f"Bearer {STT_KEY}"
    assert STT_KEY not in "\n".join(texts(bot.fake.bot_messages(None)))

    # the transcription service fails: a clear reply, nothing is sent to OpenCode
    stt.fail_with = 500
    before = len(llm.agent_requests)
    await bot.fake.send_user_message(
        user_id=ALLOWED_USER_ID, thread_id=topic, voice=opus_voice_note()
    )
    await bot.wait_message(topic, "❌ The voice note was not transcribed")
    assert len(llm.agent_requests) == before

    # a document with a caption: the prompt gains the caption and the file's name
    await bot.fake.send_user_message(
        "check this", user_id=ALLOWED_USER_ID, thread_id=topic, document=("notes.txt", b"x\n")
    )
    await bot.fake.wait_for(
        lambda: "[Attached: notes.txt]" in user_texts(llm), timeout=30, what="file names"
    )
    assert "check this" in user_texts(llm)


@pytest.fixture
async def shared_bot(
    fake_telegram: FakeTelegram, opencode_bin: Path, opencode_env: dict[str, str], tmp_path: Path
) -> AsyncIterator[RunningBot]:
    settings = bot_settings(fake_telegram, opencode_bin, tmp_path, OPENCODE_SHARED_SERVER="true")
    running = RunningBot(fake_telegram, settings)
    await running.start()
    try:
        yield running
    finally:
        await running.shutdown()


async def test_one_shared_server_reads_each_topics_own_project(shared_bot: RunningBot) -> None:
    bot = shared_bot
    for name in ("alpha", "beta"):
        (bot.projects / name).mkdir()
        (bot.projects / name / "same.txt").write_text(f"I am {name}\n")
    (bot.projects / "beta" / "only-beta.txt").write_text("b")
    alpha = await bot.new_topic("alpha")
    beta = await bot.new_topic("beta")

    await bot.say("/get same.txt", beta)
    from_beta = await uploaded(bot.fake, "sendDocument", beta)
    assert bot.fake.file_bytes(from_beta) == b"I am beta\n"
    await bot.say("/get same.txt", alpha)
    from_alpha = await uploaded(bot.fake, "sendDocument", alpha)
    assert bot.fake.file_bytes(from_alpha) == b"I am alpha\n"

    await bot.say("/ls", alpha)
    listing = await bot.wait_message(alpha, "📂 alpha/")
    assert buttons_of(listing) == ["📄 same.txt", "📦 Zip"]
