"""The daily controls end to end (fake Bot API + real OpenCode + mock LLM): model and agent per
topic, sent with every prompt, shown in /session, surviving a bot restart."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import struct
import zlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_approvals import callback_answer
from tests.rig.bot_fixtures import RunningBot, bot_settings, texts
from tests.rig.counting import SETTLE_S
from tests.rig.fake_telegram import FakeTelegram, StoredMessage
from tests.rig.mock_llm import MockLLM, Text, ToolCall
from tests.rig.opencode_bin import MOCK_MODEL_PRO
from tests.rig.telegram_fixtures import OTHER_USER_ID

pytestmark = pytest.mark.timeout(150)


async def ask(bot: RunningBot, command: str, expect: str, topic: int | None) -> StoredMessage:
    before = len(bot.fake.bot_messages(topic))
    await bot.say(command, topic)
    return await bot.wait_message(topic, expect, after=before)


def tiny_png() -> bytes:
    """A valid 1×1 PNG (OpenCode decodes images it is given)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def labels(message: StoredMessage) -> list[str]:
    return [str(b["text"]) for b in message.buttons]


async def opencode_get(bot: RunningBot, topic: int, path: str) -> Any:
    """GET `path` (with `{session}` filled in) from the topic's managed server, as JSON."""
    info = await ask(bot, "/session", "Session: ses_", topic)
    session_id = (info.text or "").split("Session: ")[1].split()[0]
    with sqlite3.connect(bot.settings.orchestrator_db_path) as db:
        port, password = db.execute(
            "SELECT port, password FROM instances WHERE kind = 'managed' AND state = 'running' "
            "ORDER BY updated_at DESC"
        ).fetchone()
    auth = ("opencode", password) if password else None
    async with httpx.AsyncClient(timeout=10, auth=auth) as http:
        response = await http.get(f"http://127.0.0.1:{port}{path.format(session=session_id)}")
    assert response.status_code == 200, response.text
    return response.json()


async def last_user_message(bot: RunningBot, topic: int) -> dict[str, Any]:
    """The newest user message of the topic's session, as OpenCode stored it."""
    messages = await opencode_get(bot, topic, "/session/{session}/message")
    return dict([m["info"] for m in messages if m["info"]["role"] == "user"][-1])


async def last_session_state(bot: RunningBot, topic: int) -> dict[str, Any]:
    return dict(await opencode_get(bot, topic, "/session/{session}"))


async def test_model_and_agent_per_topic(bot: RunningBot, llm: MockLLM) -> None:
    topic = await bot.new_topic("demo")

    menu = await ask(bot, "/model", "Favourites and recent first", topic)
    assert "mock/mock-model · Mock" in labels(menu)  # the configured default comes first
    assert "📦 Mock" in labels(menu)
    await bot.fake.click(menu.message_id, label="📦 Mock")
    paged = await bot.fake.wait_for(
        lambda: (
            bot.fake.message(menu.message_id)
            if "page 1 of 1" in (bot.fake.message(menu.message_id).text or "")
            else None
        ),
        what="the provider's models",
    )
    assert f"mock/{MOCK_MODEL_PRO} · Mock Pro" in labels(paged)

    # the default model cannot read images: a photo gets a warning, and is still sent
    llm.when("look at this", Text("looked"))
    await bot.say("look at this", topic, document=("dot.png", tiny_png()))
    await bot.wait_message(topic, "⚠️ The model mock/mock-model cannot read images")
    await bot.wait_message(topic, "looked")

    # bad input: a clear reply, nothing changes
    await ask(bot, "/model nothing-like-this", "❌ No model matches “nothing-like-this”", topic)
    await ask(bot, "/agent nobody", "❌ Unknown agent nobody", topic)

    # filter, then press after a bot restart: the token lives in SQLite
    filtered = await ask(bot, "/model pro", "Models matching “pro”", topic)
    assert labels(filtered) == [f"mock/{MOCK_MODEL_PRO} · Mock Pro"]
    await bot.restart()
    await bot.fake.click(filtered.message_id, label=f"mock/{MOCK_MODEL_PRO} · Mock Pro")
    await bot.fake.wait_for(
        lambda: "🧠 Model: mock/mock-pro" in (bot.fake.message(filtered.message_id).text or ""),
        what="the model choice shown in the picker",
    )
    await ask(bot, "/plan", "🤖 Agent: plan", topic)

    llm.when("which model answers", Text("the pro one"))
    await bot.say("which model answers?", topic)
    await bot.wait_message(topic, "the pro one")
    before = len(bot.fake.bot_messages(topic))
    await bot.say("look at this", topic, document=("dot.png", tiny_png()))
    await bot.wait_message(topic, "looked", after=before)
    assert not any("cannot read images" in t for t in texts(bot.fake.bot_messages(topic)[before:]))
    assert llm.agent_requests[-1]["model"] == MOCK_MODEL_PRO
    stored = await last_user_message(bot, topic)
    assert stored["agent"] == "plan"
    assert stored["model"]["modelID"] == MOCK_MODEL_PRO

    info = await ask(bot, "/session", "This topic: model mock/mock-pro", topic)
    assert "agent plan" in (info.text or "")

    agents = await ask(bot, "/agent", "Agent for this topic: plan", topic)
    assert {"✅ plan", "build"} <= set(labels(agents))
    assert "compaction" not in labels(agents)  # hidden agents are not offered
    await bot.fake.click(agents.message_id, label="build")
    await bot.fake.wait_for(
        lambda: "🤖 Agent: build" in (bot.fake.message(agents.message_id).text or ""),
        what="the agent choice",
    )
    await ask(bot, "/help", "/model [part of a name]", topic)


async def test_the_progress_message_shows_todos_sub_agents_and_the_topics_choice(
    bot: RunningBot, llm: MockLLM
) -> None:
    topic = await bot.new_topic("glance")
    filtered = await ask(bot, "/model pro", "Models matching “pro”", topic)
    await bot.fake.click(filtered.message_id, label=f"mock/{MOCK_MODEL_PRO} · Mock Pro")
    await bot.fake.wait_for(
        lambda: "🧠 Model: mock/mock-pro" in (bot.fake.message(filtered.message_id).text or ""),
        what="the model chosen",
    )
    await ask(bot, "/build", "🤖 Agent: build", topic)
    todos = [
        {"content": "read the code", "status": "completed", "priority": "high"},
        {"content": "delegate the check", "status": "in_progress", "priority": "high"},
        {"content": "report back", "status": "pending", "priority": "low"},
    ]
    task = {"description": "Check it", "prompt": "child RUN_BASH", "subagent_type": "general"}
    llm.when(
        "plan and delegate",
        ToolCall("todowrite", {"todos": todos}, then=ToolCall("task", task, then="All checked.")),
    )
    await bot.say("plan and delegate", topic)
    ask_bash = await bot.wait_message(topic, "permission: bash")  # the sub-agent waits for us
    progress = await bot.wait_message(topic, lambda m: "⏳ Working" in (m.text or ""))

    def shown() -> str:
        return bot.fake.message(progress.message_id).text or ""

    await bot.fake.wait_for(
        lambda: "🤖 general · Check it · bash: echo hello-from-bash" in shown(),
        what="the sub-agent's line",
    )
    assert [line for line in shown().splitlines() if line[:1] in "☑▸◻"] == [
        "☑ read the code",
        "▸ delegate the check",
        "◻ report back",
    ]
    assert "task:" not in shown() and "todowrite" not in shown()  # nothing is shown twice
    head = shown().splitlines()[0]
    assert " · mock-pro · build · ctx " in head, head

    await ask(bot, "after the check", "⏳ Queued (1)", topic)
    await bot.fake.wait_for(lambda: "queued: 1" in shown().splitlines()[0], what="the queue")
    await bot.fake.click(ask_bash.message_id, label="✅ Allow once")
    await bot.wait_message(topic, "All checked.")
    await bot.wait_message(topic, "You said: after the check")


SLOW = Text("the slow answer is finally done now", chunk_size=2, delay_s=0.4)


async def start_slow_turn(bot: RunningBot, llm: MockLLM, topic: int, prompt: str) -> None:
    llm.when(prompt, SLOW)
    before = len(bot.fake.bot_messages(topic))
    await bot.say(prompt, topic)
    await bot.wait_message(topic, "Working", after=before)


def user_prompts(llm: MockLLM) -> list[str]:
    """The newest user text of each model request, in order."""
    prompts = []
    for body in llm.agent_requests:
        users = [m for m in body["messages"] if m.get("role") == "user"]
        content = users[-1]["content"] if users else ""
        prompts.append(content if isinstance(content, str) else str(content))
    return prompts


async def test_messages_while_busy_are_held_in_order_dropped_or_sent_now(
    bot: RunningBot, llm: MockLLM
) -> None:
    topic = await bot.new_topic("busy")
    llm.when("first held", Text("answer one"))
    llm.when("second held", Text("answer two"))
    llm.when("urgent held", Text("answer urgent"))
    await start_slow_turn(bot, llm, topic, "slow one")

    before = len(bot.fake.bot_messages(topic))
    typed = await bot.say("first held", topic)
    queued = await bot.wait_message(topic, "⏳ Queued (1)", after=before)
    sent = [c for c in bot.fake.calls("sendMessage") if c.result["message_id"] == queued.message_id]
    assert sent[0].params.get("disable_notification") is True  # a quiet reply
    await ask(bot, "second held", "⏳ Queued (2)", topic)
    # an edit of a held message edits its queued copy (and keeps its buttons)
    await bot.fake.edit_user_message(typed["message_id"], "first held, edited")
    await bot.fake.wait_for(
        lambda: "first held, edited" in (bot.fake.message(queued.message_id).text or ""),
        what="the queued copy edited",
    )
    assert labels(bot.fake.message(queued.message_id)) == ["▶ Send now", "🗑 Drop"]
    third = await ask(bot, "third held", "⏳ Queued (3)", topic)
    await bot.fake.click(third.message_id, label="🗑 Drop")
    await bot.fake.wait_for(
        lambda: "🗑 Dropped" in (bot.fake.message(third.message_id).text or ""), what="drop"
    )
    await bot.wait_message(topic, "the slow answer is finally done now")
    one = await bot.wait_message(topic, "answer one")
    two = await bot.wait_message(topic, "answer two")
    assert one.message_id < two.message_id
    prompts = user_prompts(llm)
    assert not any("third held" in p for p in prompts)
    first = next(i for i, p in enumerate(prompts) if "first held, edited" in p)
    second = next(i for i, p in enumerate(prompts) if "second held" in p)
    assert first < second

    # Send now: the running turn is stopped, then the held message goes out
    await start_slow_turn(bot, llm, topic, "slow two")
    urgent = await ask(bot, "urgent held", "⏳ Queued (1)", topic)
    await bot.fake.click(urgent.message_id, label="▶ Send now")
    await bot.wait_message(topic, "answer urgent")
    assert "📤 Sent" in (bot.fake.message(urgent.message_id).text or "")
    finals = texts(bot.fake.bot_messages(topic))
    assert not any("the slow answer is finally done now" in t for t in finals[-3:])


async def test_a_held_message_survives_a_bot_restart(bot: RunningBot, llm: MockLLM) -> None:
    topic = await bot.new_topic("kept")
    llm.when("kept across", Text("answer kept"))
    await start_slow_turn(bot, llm, topic, "slow one")
    await ask(bot, "kept across the restart", "⏳ Queued (1)", topic)
    await bot.restart()
    await bot.wait_message(topic, "answer kept", within_s=60)
    assert any("kept across the restart" in p for p in user_prompts(llm))


async def test_a_message_taken_again_after_a_restart_is_not_sent_twice(
    bot: RunningBot, llm: MockLLM
) -> None:
    """The bot died after sending a prompt and before crossing its update out of the inbox:
    the next start handles the update again, and OpenCode already has the prompt."""
    topic = await bot.new_topic("once")
    llm.when("only once please", Text("answer once"))
    await bot.say("only once please", topic)
    await bot.wait_message(topic, "answer once")
    polls = [c.result for c in bot.fake.calls("getUpdates") if c.ok]
    sent = [u for result in polls for u in result if "message" in u]
    (update,) = [u for u in sent if u["message"].get("text") == "only once please"]
    await bot.stop()
    key = f"telegram.update:{update['update_id']}"
    with sqlite3.connect(bot.settings.topic_db_path) as db:  # as a kill at that moment leaves it
        db.execute(
            "INSERT INTO bot_state (key, value, updated_at) VALUES (?, ?, 0)",
            (key, json.dumps(update)),
        )

    await bot.start()

    def crossed_out() -> bool:
        with sqlite3.connect(bot.settings.topic_db_path) as db:
            return db.execute("SELECT 1 FROM bot_state WHERE key = ?", (key,)).fetchone() is None

    await bot.fake.wait_for(crossed_out, what="the update left from the last run handled")
    llm.when("and then this", Text("answer after"))
    await bot.say("and then this", topic)
    await bot.wait_message(topic, "answer after")
    assert user_prompts(llm).count("only once please") == 1
    assert len([m for m in bot.fake.bot_messages(topic) if m.text == "answer once"]) == 1


async def test_shell_commands_show_their_output(bot: RunningBot, llm: MockLLM) -> None:
    topic = await bot.new_topic("shell")
    await ask(bot, "!   ", "❌ Usage: !<command>", topic)
    (bot.projects / "shell" / "marker.txt").write_text("here\n")
    out = await ask(bot, "!ls", "💻 $ ls", topic)
    assert "marker.txt" in (out.text or "")
    assert any(e.get("type") == "pre" for e in out.entities)

    before = len(bot.fake.bot_messages(topic))
    await bot.say("!seq 1 3000", topic)
    document = await bot.fake.wait_for(
        lambda: next(
            (m for m in bot.fake.bot_messages(topic)[before:] if m.media and "document" in m.media),
            None,
        ),
        what="the long output as a document",
    )
    assert "💻 $ seq 1 3000" in (document.caption or "")

    # while busy it is held like a message, and runs when the turn has ended
    await start_slow_turn(bot, llm, topic, "slow one")
    await ask(bot, "!echo after-the-turn", "⏳ Queued (1)", topic)
    later = await bot.wait_message(topic, "💻 $ echo after-the-turn")
    assert "after-the-turn" in (later.text or "").split("\n", 1)[1]
    shown = texts(bot.fake.bot_messages(topic))
    assert not any("No text answer" in t for t in shown)  # a shell command is not a turn


async def test_context_use_hint_and_compaction(bot: RunningBot, llm: MockLLM) -> None:
    await ask(bot, "/compact", "❌ Use this command inside a project topic", None)
    topic = await bot.new_topic("ctx")
    llm.when("fill the context", Text("it is full now", prompt_tokens=110_000))
    await bot.say("fill the context", topic)
    await bot.wait_message(topic, "it is full now")
    hint = await bot.wait_message(topic, "📦 The context is 86% full")
    assert labels(hint) == ["🗜 Compact"]
    info = await ask(bot, "/session", "Session: ses_", topic)
    assert "ctx 86%" in (info.text or "")

    llm.reset()  # the summary request quotes the conversation: answer it with a small usage
    await bot.fake.click(hint.message_id, label="🗜 Compact")
    await bot.fake.wait_for(
        lambda: "✅ Compacted." in (bot.fake.message(hint.message_id).text or ""),
        timeout=60,
        what="the compaction confirmed",
    )
    after = await ask(bot, "/session", "Session: ses_", topic)
    assert "ctx 86%" not in (after.text or "")
    assert any("summar" in str(body).lower() for body in llm.agent_requests)


async def test_opencode_commands_from_the_topic(bot: RunningBot, llm: MockLLM) -> None:
    commands = bot.projects / "cmds" / ".opencode" / "command"
    commands.mkdir(parents=True)
    (commands / "greet.md").write_text(
        "---\ndescription: Greet someone\n---\nSay hi to $ARGUMENTS\n"
    )
    (commands / "recap.md").write_text("---\ndescription: Recap\n---\nRecap the project briefly\n")
    skill = bot.projects / "cmds" / ".opencode" / "skill" / "tidy"
    skill.mkdir(parents=True)
    (skill / "SKILL.md").write_text(
        "---\nname: tidy\ndescription: Tidy the code\n---\nSort the imports, then stop.\n"
    )
    topic = await bot.new_topic("cmds")
    llm.when("Say hi to the team", Text("hi team, from the command"))
    llm.when("Recap the project briefly", Text("the recap is short"))

    await bot.say("/greet the team", topic)
    await bot.wait_message(topic, "hi team, from the command")
    await ask(bot, "/nosuchcommand", "❌ Unknown command /nosuchcommand", topic)

    menu = await ask(bot, "/commands", "OpenCode commands and 🧩 skills", topic)
    assert "/greet · Greet someone" in labels(menu)
    assert "🧩 /tidy · Tidy the code" in labels(menu)  # a skill of the project
    await bot.fake.click(menu.message_id, label="/greet · Greet someone")
    await bot.wait_message(topic, "✍️ /greet takes arguments")
    menu = await ask(bot, "/commands", "OpenCode commands and 🧩 skills", topic)
    await bot.fake.click(menu.message_id, label="/recap · Recap")
    await bot.wait_message(topic, "the recap is short")


async def test_undo_redo_and_fork(bot: RunningBot, llm: MockLLM) -> None:
    topic = await bot.new_topic("undo")
    await ask(bot, "/undo", "❌ Nothing to undo", topic)
    llm.when("first prompt here", Text("answer A"))
    await bot.say("first prompt here", topic)
    await bot.wait_message(topic, "answer A")

    undone = await ask(bot, "/undo", "↩️ Undone", topic)
    assert (undone.text or "").endswith("first prompt here")
    info = await last_session_state(bot, topic)
    assert info.get("revert") is not None
    await bot.fake.click(undone.message_id, label="↪️ Redo")
    await bot.fake.wait_for(
        lambda: "↪️ Redone" in (bot.fake.message(undone.message_id).text or ""), what="redo"
    )
    assert (await last_session_state(bot, topic)).get("revert") is None
    await ask(bot, "/redo", "❌ Nothing to redo", topic)

    await ask(bot, "/fork", "🍴 Forked into the topic “undo (fork)”", topic)
    fork = next(t for t, v in bot.fake.topics.items() if v.name == "undo (fork)")
    await bot.wait_message(fork, "🍴 Forked from the session of undo")
    llm.when("in the fork", Text("fork answers"))
    await bot.say("in the fork", fork)
    await bot.wait_message(fork, "fork answers")


async def test_busy_policy_steer_sends_at_once(
    fake_telegram: FakeTelegram,
    opencode_bin: Path,
    opencode_env: dict[str, str],
    tmp_path: Path,
    llm: MockLLM,
) -> None:
    settings = bot_settings(fake_telegram, opencode_bin, tmp_path, BUSY_POLICY="steer")
    bot = RunningBot(fake_telegram, settings)
    await bot.start()
    try:
        topic = await bot.new_topic("steer")
        llm.when("steered text", Text("answer steered"))
        await start_slow_turn(bot, llm, topic, "slow one")
        before = len(bot.fake.bot_messages(topic))
        await bot.say("steered text", topic)
        await bot.wait_message(topic, "answer steered", after=before)
        assert not any("⏳ Queued (" in t for t in texts(bot.fake.bot_messages(topic)))
    finally:
        await bot.shutdown()


# --- the buttons of a final answer ----------------------------------------------------------


async def replay(fake: FakeTelegram, query_id: str) -> None:
    """Deliver a callback query again, with its id: as Telegram does when the bot stopped
    before confirming the update."""
    query = fake._callback_queries[query_id]
    await fake._push_update(
        "callback_query",
        {
            "id": query_id,
            "from": fake.user(query.user_id),
            "message": fake._message_json(fake.message(query.message_key[1])),
            "chat_instance": "1",
            "data": query.data,
        },
    )


async def answer_with_buttons(bot: RunningBot, llm: MockLLM, topic: int, prompt: str) -> int:
    """Send ``prompt``; the message id of its final answer's buttons (Undo, Fork, …)."""
    llm.when(prompt, Text(f"the answer to {prompt}"))
    before = len(bot.fake.bot_messages(topic))
    await bot.say(prompt, topic)
    await bot.wait_message(topic, f"the answer to {prompt}", after=before)
    final = await bot.wait_message(topic, lambda m: "↩️ Undo" in labels(m), after=before)
    return final.message_id


async def user_texts(bot: RunningBot, topic: int) -> list[str]:
    """The prompts of the topic's session, as OpenCode stores them."""
    messages = await opencode_get(bot, topic, "/session/{session}/message")
    return [
        part.get("text", "")
        for m in messages
        if m["info"]["role"] == "user"
        for part in m["parts"]
        if part["type"] == "text"
    ]


async def test_undo_redo_and_fork_buttons_of_final_answers(bot: RunningBot, llm: MockLLM) -> None:
    topic = await bot.new_topic("turns")
    first = await answer_with_buttons(bot, llm, topic, "first turn prompt")
    assert labels(bot.fake.message(first))[-2:] == ["↩️ Undo", "🍴 Fork"]  # not a plan: no Build
    second = await answer_with_buttons(bot, llm, topic, "second turn prompt")

    # Fork of the older answer: a new topic whose session holds that turn, not the later one
    await bot.fake.click(first, label="🍴 Fork")
    await bot.wait_message(topic, "🍴 Forked into the topic “turns (fork)”")
    fork = next(t for t, v in bot.fake.topics.items() if v.name == "turns (fork)")
    await bot.wait_message(fork, "🍴 Forked from the session of turns")
    assert await user_texts(bot, fork) == ["first turn prompt"]

    # a member who is not allowed presses Undo: refused, nothing changes
    refused = await bot.fake.click(first, label="↩️ Undo", user_id=OTHER_USER_ID)
    assert await callback_answer(bot.fake, refused) == "You are not allowed."

    # Undo of the older answer: from that turn on; the prompt is posted with Redo
    before = len(bot.fake.bot_messages(topic))
    pressed = await bot.fake.click(first, label="↩️ Undo")
    undone = await bot.wait_message(
        topic, "↩️ Undone from this turn on (1 later prompt too)", after=before
    )
    assert (undone.text or "").endswith("first turn prompt")
    assert labels(undone) == ["↪️ Redo"]
    reverted = await last_session_state(bot, topic)
    messages = await opencode_get(bot, topic, "/session/{session}/message")
    assert reverted["revert"]["messageID"] == messages[0]["info"]["id"]  # the first prompt
    await replay(bot.fake, pressed)  # the same press delivered again: nothing twice
    await asyncio.sleep(SETTLE_S)
    assert sum("↩️ Undone" in t for t in texts(bot.fake.bot_messages(topic))) == 1

    await bot.fake.click(undone.message_id, label="↪️ Redo")
    await bot.fake.wait_for(
        lambda: "↪️ Redone" in (bot.fake.message(undone.message_id).text or ""), what="redo"
    )
    assert (await last_session_state(bot, topic)).get("revert") is None

    # Undo of the last answer, then a new prompt: that turn is gone, its buttons say so
    await bot.fake.click(second, label="↩️ Undo")
    await bot.wait_message(topic, "↩️ Undone, file changes included")
    await answer_with_buttons(bot, llm, topic, "third turn prompt")
    assert await user_texts(bot, topic) == ["first turn prompt", "third turn prompt"]
    await bot.fake.click(second, label="🍴 Fork")
    await bot.wait_message(topic, "❌ That turn is not in the session any more")
    assert sum(v.name == "turns (fork)" for v in bot.fake.topics.values()) == 1


async def test_build_it_after_a_plan(bot: RunningBot, llm: MockLLM) -> None:
    topic = await bot.new_topic("planned")
    await ask(bot, "/plan", "🤖 Agent: plan", topic)
    final = await answer_with_buttons(bot, llm, topic, "plan the feature")
    assert labels(bot.fake.message(final))[-3:] == ["↩️ Undo", "🍴 Fork", "▶ Build it"]

    llm.when("Implement the plan above.", Text("built as planned"))
    pressed = await bot.fake.click(final, label="▶ Build it")
    await bot.wait_message(topic, "🔨")
    await bot.wait_message(topic, "built as planned")
    stored = await last_user_message(bot, topic)
    assert stored["agent"] == "build"
    assert (await user_texts(bot, topic))[-1] == "Implement the plan above."
    info = await ask(bot, "/session", "Session: ses_", topic)
    assert "agent build" in (info.text or "")

    # the same press delivered again, and a double tap, send nothing more (a press later on is
    # answered that the button acted already: tests/unit/test_controls.py)
    await replay(bot.fake, pressed)
    await bot.fake.click(final, label="▶ Build it")
    await asyncio.sleep(SETTLE_S)
    assert sum("🔨" in t for t in texts(bot.fake.bot_messages(topic))) == 1
    assert (await user_texts(bot, topic)).count("Implement the plan above.") == 1
    await ask(bot, "/help", "▶ Build it hands the plan to the build agent", topic)
