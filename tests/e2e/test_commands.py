"""Every command end to end (fake Bot API + real OpenCode): happy paths and the main errors.

Each test shares one running bot across its steps; replies must land in the topic where the
command was typed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from oc_outpost.opencode.client import OpenCodeClient
from tests.rig.bot_fixtures import RunningBot, free_port, texts
from tests.rig.fake_telegram import StoredMessage
from tests.rig.mock_llm import MockLLM, Text

pytestmark = pytest.mark.timeout(120)


async def ask(
    bot: RunningBot, command: str, expect: str, topic: int | None = None
) -> StoredMessage:
    """Send ``command`` where given and wait for the bot's reply there containing ``expect``."""
    before = len(bot.fake.bot_messages(topic))
    await bot.say(command, topic)
    return await bot.wait_message(topic, expect, after=before)


async def test_general_commands_answer_in_general_with_clear_errors(bot: RunningBot) -> None:
    steps = [
        ("/help", "/new <name> — create a project"),
        ("/projects", "No project directory under"),
        ("/sessions", "No OpenCode session on a running server"),
        ("/status", "Telegram budget"),
        ("/new", "Usage: /new <name>"),
        ("/new ../escape", "is not a valid project name"),
        ("/connect", "Usage: /connect <project name | session id>"),
        ("/connect nothing-here", "No project or session named nothing-here"),
        ("/connect ses_doesnotexist", "No running OpenCode server has session"),
        ("/clear", "Nothing to clear"),
        ("/disconnect", "Use /disconnect inside the topic"),
        ("/link demo", "Use /link <path> inside a topic"),
        ("/stream", "Use this command inside a project topic"),
        ("/session", "Use this command inside a project topic"),
        ("/cancel", "Use this command inside a project topic"),
        ("/frobnicate", "Unknown command /frobnicate"),
        ("just chatting", "General is the control lane"),
    ]
    for command, expect in steps:
        await ask(bot, command, expect)
    assert not bot.fake.topics
    assert all(m.thread_id is None for m in bot.fake.bot_messages())

    # /projects: a button per directory (hidden ones excluded) opens or creates its topic
    (bot.projects / "gamma").mkdir()
    (bot.projects / ".cache").mkdir()
    listing = await ask(bot, "/projects", "1 project under")
    assert [b["text"] for b in listing.buttons] == ["📂 gamma"]
    await bot.fake.click(listing.message_id, label="📂 gamma")
    topic = await bot.fake.wait_for(
        lambda: next((t for t, v in bot.fake.topics.items() if v.name == "gamma"), None)
    )
    await bot.wait_message(topic, "Project gamma is ready")
    assert not (bot.projects.parent / "escape").exists()


async def test_a_project_topic_end_to_end(bot: RunningBot, llm: MockLLM) -> None:
    topic = await bot.new_topic("demo")
    # General-only commands typed in a topic are refused there
    for command in ("/new other", "/clear", "/connect demo"):
        await ask(bot, command, "works in the General topic", topic)
    await ask(bot, "/help", "/cancel — stop the running turn", topic)
    await ask(bot, "/cancel", "Nothing is running.", topic)
    info = await ask(bot, "/session", "Session: ses_", topic)
    assert str(bot.projects / "demo") in info.text

    # /stream off: the final answer only, no progress message
    await ask(bot, "/stream", "Live progress is OFF", topic)
    before = len(bot.fake.bot_messages(topic))
    await bot.say("quiet please", topic)
    await bot.wait_message(topic, "Hello from mock! You said: quiet please", after=before)
    assert not any(t.startswith("⏳") for t in texts(bot.fake.bot_messages(topic)[before:]))
    await ask(bot, "/stream on", "Live progress is ON", topic)

    # after the first turn the topic is renamed from the session title, once
    await bot.fake.wait_for(lambda: bot.fake.topics[topic].name == "demo · Mock session title")

    # /cancel stops a running turn
    llm.when("slow one", Text("tick " * 200, chunk_size=5, delay_s=0.1))
    await bot.say("slow one", topic)
    progress = await bot.wait_message(topic, lambda m: (m.text or "").startswith("⏳ Working"))
    assert [b["text"] for b in progress.buttons] == ["⏹ Stop"]
    await bot.wait_message(topic, "tick", after=len(bot.fake.bot_messages(topic)) - 1)
    await ask(bot, "/cancel", "Stopping", topic)
    await bot.wait_message(topic, "⏹ Stopped.")
    await bot.fake.wait_for(lambda: bot.fake.message(progress.message_id).text.startswith("⏹"))
    assert not bot.fake.message(progress.message_id).buttons

    # the Stop button does the same
    llm.when("slow two", Text("tock " * 200, chunk_size=5, delay_s=0.1))
    before = len(bot.fake.bot_messages(topic))
    await bot.say("slow two", topic)
    progress = await bot.wait_message(
        topic, lambda m: "tock" in (m.text or "") and bool(m.buttons), after=before
    )
    await bot.fake.click(progress.message_id, label="⏹ Stop")
    await bot.wait_message(topic, "⏹ Stopped.", after=before)

    status = await ask(bot, "/status", "oc-outpost status", topic)
    assert "managed running: 1" in status.text
    assert "Topics linked: 1" in status.text

    sessions = await ask(bot, "/sessions", "OpenCode sessions", topic)
    assert "in its topic" in sessions.text
    assert not sessions.buttons  # the only session is connected already

    projects = await ask(bot, "/projects", "1 project under", topic)
    assert [b["text"] for b in projects.buttons] == ["📂 demo ↗"]
    before = len(bot.fake.bot_messages(topic))
    await bot.fake.click(projects.message_id, label="📂 demo ↗")
    await bot.wait_message(topic, "demo is here", after=before)

    await ask(bot, "/link ../..", "outside the project base directory", topic)

    await ask(bot, "/disconnect", "Disconnected. The project files stay", topic)
    await bot.fake.wait_for(lambda: bot.fake.topics[topic].closed)
    assert (bot.projects / "demo").is_dir()
    await ask(bot, "/status", "Topics linked: 0")
    await ask(bot, "/clear", "Nothing to clear")


async def test_hand_made_topics_get_a_picker_and_link_only_inside_the_base(
    bot: RunningBot, tmp_path_factory: pytest.TempPathFactory
) -> None:
    for name in ("alpha", "beta", ".hidden"):
        (bot.projects / name).mkdir()
    outside = tmp_path_factory.mktemp("outside")
    (bot.projects / "escape-link").symlink_to(outside, target_is_directory=True)
    (bot.projects / "notes.txt").write_text("not a directory")

    # /new's own topic never gets a picker, even though its forum_topic_created comes first
    demo = await bot.new_topic("demo")
    await bot.say("hello demo", demo)
    await bot.wait_message(demo, "You said: hello demo")
    assert not any("Which project" in t for t in texts(bot.fake.bot_messages(demo)))

    # a topic created by hand in the app: picker at once, the first message is held
    scratch = await bot.fake.create_topic_by_user("scratch")
    picker = await bot.wait_message(scratch, "Which project is it for?")
    assert [b["text"] for b in picker.buttons] == ["📁 alpha", "📁 beta", "📁 demo"]
    await ask(bot, "hello picker", "your message is sent as soon as it is linked", scratch)
    await bot.fake.click(picker.message_id, label="📁 demo")  # shares demo's running server
    await bot.wait_message(scratch, "✅ Linked to demo.")
    await bot.wait_message(scratch, "You said: hello picker")
    await bot.fake.wait_for(
        lambda: "Linked to demo by Alice" in bot.fake.message(picker.message_id).text
    )
    assert not bot.fake.message(picker.message_id).buttons

    # /link: anything outside PROJECT_BASE_PATH is refused, symlinks included
    other = await bot.fake.create_topic_by_user("other")
    await bot.wait_message(other, "Which project is it for?")
    await ask(bot, "/help", "This topic is not linked to a project yet", other)
    await ask(bot, f"/link {outside}", "outside the project base directory", other)
    await ask(bot, "/link escape-link", "outside the project base directory", other)
    await ask(bot, "/link ../../etc", "outside the project base directory", other)
    await ask(bot, "/link nowhere", "does not exist", other)
    await ask(bot, "/link notes.txt", "is not a directory", other)
    await ask(bot, "/link", "Usage: /link <path>", other)
    await ask(bot, "/session", "This topic is not linked to a project", other)
    await ask(bot, f"/link {bot.projects / 'demo'}", "✅ Linked to demo.", other)
    await ask(bot, "/link demo", "already linked", other)
    await ask(bot, "hi other", "You said: hi other", other)
    assert not any(outside.iterdir())

    # /clear unlinks topics deleted in the app (Telegram sends no update for that) ...
    deleted = await bot.fake.create_topic_by_user("deleted")
    await bot.wait_message(deleted, "Which project is it for?")
    await ask(bot, "/link demo", "✅ Linked to demo.", deleted)
    await bot.fake.delete_topic_by_user(deleted)
    report = await ask(bot, "/clear", "Unlinked 1 topic(s); no file was touched")
    assert "its topic was deleted" in report.text
    # ... and topics whose directory is gone (and deletes nothing itself)
    await ask(bot, "/clear", "Nothing to clear: all 3 linked topic(s) are fine.")
    shutil.rmtree(bot.projects / "demo")
    report = await ask(bot, "/clear", "Unlinked 3 topic(s); no file was touched")
    assert report.text.count("no longer exists") == 3
    await bot.wait_message(scratch, "Unlinked by /clear")
    await bot.fake.wait_for(
        lambda: all(t.closed for t in bot.fake.topics.values() if not t.deleted)
    )
    assert (bot.projects / "alpha").is_dir() and (bot.projects / "notes.txt").is_file()


async def test_sessions_and_connect_bring_back_a_session(bot: RunningBot, llm: MockLLM) -> None:
    demo = await bot.new_topic("demo")
    await ask(bot, "remember the word pineapple", "You said: remember the word pineapple", demo)
    info = await ask(bot, "/session", "Session: ses_", demo)
    first = info.text.split("Session: ")[1].split()[0]
    # a second topic on the same project keeps its server running
    extra = await bot.fake.create_topic_by_user("extra")
    await ask(bot, "/link demo", "✅ Linked to demo.", extra)
    info = await ask(bot, "/session", "Session: ses_", extra)
    second = info.text.split("Session: ")[1].split()[0]
    await ask(bot, "/disconnect", "Disconnected", demo)

    # by project name: the newest session without a topic gets one, with its history
    await ask(bot, "/connect demo", "is connected in its topic")
    [connected] = [t for t in bot.fake.topics if t not in (demo, extra)]
    history = await bot.wait_message(connected, "Recent history")
    assert "pineapple" in history.text
    await ask(bot, "still there?", "You said: still there?", connected)
    await ask(bot, f"/connect {first}", "already connected in its topic")
    await ask(bot, "/disconnect", "Disconnected", extra)

    # /sessions offers the session left without a topic, with a Connect button
    listing = await ask(bot, "/sessions", "OpenCode sessions")
    assert second in listing.text and "not connected" in listing.text
    assert [b["callback_data"] for b in listing.buttons] == [f"c:{second}"]
    await bot.fake.click(listing.message_id, data=f"c:{second}")
    third = await bot.fake.wait_for(
        lambda: next((t for t in bot.fake.topics if t not in (demo, connected, extra)), None)
    )
    await bot.wait_message(third, "🔗 Connected to")
    await ask(bot, "/status", "Topics linked: 2")

    # a topic deleted in the app while its answer streams: unlinked, and General is told
    llm.when("long goodbye", Text("bye " * 150, chunk_size=5, delay_s=0.05))
    await bot.say("long goodbye", third)
    await bot.wait_message(third, lambda m: "bye bye" in (m.text or ""))
    await bot.fake.delete_topic_by_user(third)
    await bot.wait_message(None, "was deleted, so it is unlinked")
    await ask(bot, "/status", "Topics linked: 1")


@contextlib.asynccontextmanager
async def opencode_outside_the_bot(binary: Path, cwd: Path) -> AsyncIterator[OpenCodeClient]:
    """An `opencode serve` started by hand (as a developer would), without a password."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "OPENCODE_SERVER_PASSWORD"}
    process = await asyncio.create_subprocess_exec(
        *(str(binary), "serve", "--port", str(port), "--hostname", "127.0.0.1"),
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    output = process.stdout

    async def listening() -> None:
        while b"listening on" not in await output.readline():
            pass

    async def drain() -> None:
        while await output.read(65536):
            pass

    client = OpenCodeClient(f"http://127.0.0.1:{port}", timeout=10)
    drainer: asyncio.Task[None] | None = None
    try:
        await asyncio.wait_for(listening(), 30)
        drainer = asyncio.create_task(drain())
        yield client
    finally:
        await client.aclose()
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)
        if drainer is not None:
            await drainer


async def test_a_session_of_a_server_started_outside_the_bot_can_be_connected(
    bot: RunningBot, opencode_bin: Path
) -> None:
    tui = bot.projects / "tui"
    tui.mkdir()
    async with opencode_outside_the_bot(opencode_bin, tui) as client:
        session = await client.create_session(title="Started in the TUI")
        listing = await ask(bot, "/sessions", "Started in the TUI")
        assert "discovered" in listing.text
        await bot.fake.click(listing.message_id, data=f"c:{session.id}")
        topic = await bot.fake.wait_for(
            lambda: next(
                (t for t, v in bot.fake.topics.items() if v.name == "tui · Started in the TUI"),
                None,
            )
        )
        await bot.wait_message(topic, "🔗 Connected to “Started in the TUI” of tui")
        await ask(bot, "hello from the phone", "You said: hello from the phone", topic)
        messages = await client.messages(session.id)
        assert any(m.info.role == "assistant" for m in messages)  # served by that server
        status = await ask(bot, "/status", "oc-outpost status")
        assert "managed running" not in status.text  # no managed server was started for it
