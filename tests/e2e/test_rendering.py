"""What a turn looks like in Telegram, end to end: long Markdown answers, files in, errors,
retries and sub-agents."""

from __future__ import annotations

import base64

import pytest

from oc_outpost.telegram.formatted import utf16_len
from oc_outpost.telegram.markdown import markdown_to_styled
from tests.rig.bot_fixtures import RunningBot
from tests.rig.mock_llm import HttpError, MockLLM, Text, ToolCall

pytestmark = pytest.mark.timeout(120)

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def long_markdown() -> str:
    sections = []
    for n in range(1, 5):
        items = "\n".join(f"- item {n}.{i}: **bold {i}** and `code {i}` 🚀" for i in range(12))
        prose = (
            f"Some text for section {n}, with _emphasis_ and a [link](https://example.org). " * 4
        )
        sections.append(f"## Section {n}\n\n{prose}\n\n{items}")
    code = "\n".join(f"    value_{i} = compute({i})  # step {i}" for i in range(150))
    sections.insert(2, f"```python\ndef main():\n{code}\n```")
    return "# A long answer\n\n" + "\n\n".join(sections) + "\n\n1. first\n2. second\n"


async def test_long_answers_arrive_in_parts_without_loss_and_files_come_in(
    bot: RunningBot, llm: MockLLM
) -> None:
    markdown = long_markdown()
    assert len(markdown) > 9000
    llm.when("LONGDOC", Text(markdown, chunk_size=600))
    topic = await bot.new_topic("demo")
    calls_before = len(bot.fake.calls("sendMessage"))
    await bot.say("write LONGDOC", topic)
    await bot.wait_message(  # the final's last part (the progress message shows the tail too)
        topic, lambda m: (m.text or "").endswith("1. first\n2. second") and not m.buttons
    )
    finals = [
        c
        for c in bot.fake.calls("sendMessage")[calls_before:]
        if c.ok and c.params.get("message_thread_id") == topic and "reply_markup" not in c.params
    ]
    rendered = markdown_to_styled(markdown)
    assert len(finals) >= 3
    assert all(utf16_len(c.params["text"]) <= 4096 for c in finals)
    assert "".join(c.params["text"] for c in finals) == rendered.text
    entities = [c.params.get("entities") or [] for c in finals]
    code_parts = [e for e in entities if any(x["type"] == "pre" for x in e)]
    assert len(code_parts) >= 2, "the long code block is re-opened in the next part"
    assert all(x.get("language") == "python" for e in code_parts for x in e if x["type"] == "pre")
    assert any(x["type"] == "bold" for x in entities[0])  # headings

    # files in: a document and a photo reach OpenCode as file parts, their caption as prompt
    llm.when("summarize the notes", Text("The notes say hello."))
    await bot.fake.send_user_message(
        "summarize the notes", thread_id=topic, document=("notes.txt", b"secret-word: kumquat\n")
    )
    await bot.wait_message(topic, "The notes say hello.")
    assert "kumquat" in str(llm.agent_requests[-1]["messages"]), "the file reached the model"
    await bot.fake.send_user_message("what is in the photo", thread_id=topic, photo=PNG)
    await bot.wait_message(topic, "You said: what is in the photo")
    assert "photo.jpg" in str(llm.agent_requests[-1]["messages"])
    assert not list((bot.projects / "demo").iterdir()), "nothing was written into the project"
    await bot.fake.send_user_message(None, document=("x.txt", b"x"))
    await bot.wait_message(None, "Send files in a project's topic")


async def test_errors_retries_and_sub_agents_are_shown_plainly(
    bot: RunningBot, llm: MockLLM
) -> None:
    topic = await bot.new_topic("demo")
    # a prompt sent while busy is queued by OpenCode, and the user is told so
    llm.when("first of two", Text("one " * 60, chunk_size=4, delay_s=0.05))
    await bot.say("first of two", topic)
    await bot.wait_message(topic, lambda m: "one one" in (m.text or ""))
    await bot.say("second of two", topic)
    await bot.wait_message(topic, "⏳ Queued: it will run after the current turn.")
    final = await bot.wait_message(  # the final answer, not the progress message's tail
        topic, lambda m: "You said: second of two" in (m.text or "") and not m.buttons
    )
    assert final.text.startswith("one one")  # one final answer covers both prompts

    llm.when("break please", HttpError(400, "the model refused the request"))
    await bot.say("break please", topic)
    await bot.wait_message(topic, lambda m: (m.text or "").startswith("❌ APIError"))

    llm.when("flaky please", HttpError(500, "upstream overloaded"))
    await bot.say("flaky please", topic)
    await bot.wait_message(topic, lambda m: "🔁 Retrying" in (m.text or ""))
    await bot.say("/cancel", topic)
    await bot.wait_message(topic, "⏹ Stopped.")

    llm.when(
        "delegate it",
        ToolCall(
            "task",
            {"description": "Sub job", "prompt": "child RUN_BASH", "subagent_type": "general"},
        ),
    )
    await bot.say("delegate it", topic)
    ask = await bot.wait_message(topic, "permission: bash")  # asked by the sub-agent
    progress = await bot.wait_message(topic, lambda m: "task: Sub job" in (m.text or ""))
    await bot.fake.wait_for(lambda: "↳ ⏳ bash" in bot.fake.message(progress.message_id).text)
    await bot.fake.click(ask.message_id, label="✅ Allow once")
    await bot.wait_message(topic, "Tool finished; task done.")
    summary = bot.fake.message(progress.message_id).text
    await bot.fake.wait_for(lambda: bot.fake.message(progress.message_id).text.startswith("✅"))
    assert summary


async def test_an_answer_with_a_localhost_link_and_many_entities_is_delivered_whole(
    bot: RunningBot, llm: MockLLM
) -> None:
    # The fake refuses a text_link to a host without a dot, applies only 100 entities of a
    # message and makes link previews, as the real Bot API server does.
    names = ", ".join(f"`mod_{i}.py`" for i in range(150))
    answer = (
        f"Started the app: [open it](http://localhost:3000). Docs: https://example.org/docs\n\n"
        f"Touched {names}.\n\nLAST-LINE"
    )
    llm.when("LOCALLINK", Text(answer, chunk_size=200))
    topic = await bot.new_topic("demo")
    await bot.say("show LOCALLINK", topic)
    last = await bot.wait_message(  # the final's last part, not the progress message's tail
        topic, lambda m: (m.text or "").endswith("LAST-LINE") and not m.buttons
    )
    finals = [
        m
        for m in bot.fake.bot_messages(topic)
        if m.message_id <= last.message_id and not m.buttons and "mod_" in (m.text or "")
    ]
    text = "".join(m.text or "" for m in finals)
    assert "open it (http://localhost:3000)" in text
    assert sum(1 for m in finals for e in m.entities if e["type"] == "code") == 150
    assert all(len(m.entities) <= 100 for m in finals)
    assert all(m.link_preview is None for m in bot.fake.bot_messages(topic))
    refused = [c for c in bot.fake.calls("sendMessage") if not c.ok]
    assert refused == []
