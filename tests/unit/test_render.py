"""Turn progress, final answers, prompts and command replies as Telegram texts."""

from __future__ import annotations

from oc_outpost.core.chat import PermissionPrompt, QuestionPrompt
from oc_outpost.core.turn import SubAgent, ToolLine, TurnHeader, TurnPhase, TurnSnapshot, Usage
from oc_outpost.opencode.events import Todo
from oc_outpost.telegram.formatted import Formatted, plain, split
from oc_outpost.telegram.render import (
    answered_message,
    final_parts,
    permission_message,
    progress_text,
    question_message,
    summary_text,
    utf16_len,
)


def test_utf16_length_counts_astral_characters_twice() -> None:
    assert utf16_len("a🚀") == 3


def plain_parts(text: str) -> list[str]:
    return [part.text for part in split(plain(text))]


def test_plain_parts_prefer_paragraph_breaks_and_lose_nothing() -> None:
    text = "a" * 3000 + "\n\n" + "b" * 3000
    parts = plain_parts(text)
    assert parts == ["a" * 3000 + "\n\n", "b" * 3000]
    emoji = "🚀" * 5000
    assert "".join(plain_parts(emoji)) == emoji
    assert all(utf16_len(p) <= 4096 for p in plain_parts(emoji))


def _turn(**changes: object) -> TurnSnapshot:
    base = TurnSnapshot(1, "ses_x", started_at=100.0)
    return TurnSnapshot(**{**base.__dict__, **changes})  # type: ignore[arg-type]


def test_progress_shows_elapsed_steps_tools_and_tail() -> None:
    tools = tuple(ToolLine(f"c{i}", "bash", "completed", f"echo {i}") for i in range(8))
    turn = _turn(steps=3, tools=tools, texts=(("p", "x" * 1000 + "END"),))
    text = progress_text(turn, now=142.0)
    assert text.startswith("⏳ Working · 42s · step 3")
    assert "2 earlier tool calls" in text
    assert "✅ bash: echo 7" in text
    assert text.endswith("END")
    assert utf16_len(text) <= 4096


def test_progress_shows_a_running_sub_agent_once_and_retries() -> None:
    tools = (ToolLine("c0", "read", "completed", "a.py"), ToolLine("c1", "task", "running", "Sub"))
    subagent = SubAgent("c1", "general", "Sub job", 95.0, "ses_child", "bash: ls")
    turn = _turn(
        tools=tools,
        subagents=(subagent,),
        phase=TurnPhase.RETRYING,
        retry_note="attempt 2: overloaded",
    )
    text = progress_text(turn, now=101.0)
    assert "🔁 Retrying" in text and "attempt 2: overloaded" in text
    assert text.splitlines()[-2:] == ["✅ read: a.py", "🤖 general · Sub job · bash: ls · 6s"]
    assert "task" not in text  # the sub-agent's line stands for its task call
    finished = _turn(tools=(ToolLine("c1", "task", "completed", "Sub job"),))
    assert progress_text(finished, now=101.0).splitlines()[1:] == ["✅ task: Sub job"]


def test_many_sub_agents_are_bounded() -> None:
    subagents = tuple(SubAgent(f"c{i}", "explore", f"look {i}", None) for i in range(6))
    lines = progress_text(_turn(subagents=subagents), now=101.0).splitlines()
    assert lines[1:] == [*(f"🤖 explore · look {i}" for i in range(4)), "… 2 more sub-agents"]


def test_progress_shows_the_todo_list() -> None:
    todos = (
        Todo("write tests", "completed"),
        Todo("fix the bug", "in_progress"),
        Todo("ship", "pending"),
        Todo("old idea", "cancelled"),
        Todo("later", "blocked"),
    )
    written = ToolLine("c1", "todowrite", "completed", "4 todos")
    lines = progress_text(_turn(todos=todos, tools=(written,)), now=101.0).splitlines()
    assert lines[1:] == ["☑ write tests", "▸ fix the bug", "◻ ship", "✗ old idea", "• later"]


def test_a_long_todo_list_keeps_the_open_items_in_view() -> None:
    todos = tuple(Todo(f"t{i}", "completed" if i < 5 else "pending") for i in range(20))
    lines = progress_text(_turn(todos=todos), now=101.0).splitlines()
    assert lines[1:] == ["☑ 5 done", *(f"◻ t{i}" for i in range(5, 13)), "… 7 more"]
    almost = tuple(Todo(f"t{i}", "completed" if i < 9 else "pending") for i in range(10))
    lines = progress_text(_turn(todos=almost), now=101.0).splitlines()
    assert lines[1:] == ["☑ 2 done", *(f"☑ t{i}" for i in range(2, 9)), "◻ t9"]


def test_the_header_shows_the_topics_choice_context_and_queue() -> None:
    header = TurnHeader("mock-pro", "plan", context_limit=64_000, context_before=1_000, queued=2)
    turn = _turn(steps=3, header=header)
    head = "⏳ Working · 12s · step 3 · mock-pro · plan · ctx 2% · queued: 2"
    assert progress_text(turn, now=112.0) == head  # before any answer: the context at the start
    answered = _turn(header=header, usage_by_message=(("msg_1", Usage(10, 5, 0.0, 40_320)),))
    head = "⏳ Working · 0s · mock-pro · plan · ctx 63% · queued: 2"
    assert progress_text(answered, now=100.0) == head
    assert progress_text(_turn(), now=100.0) == "⏳ Working · 0s"  # server defaults, unknown limit


def test_final_is_never_empty_and_errors_are_plain() -> None:
    assert [p.text for p in final_parts(_turn(phase=TurnPhase.DONE))] == [
        "(No text answer; 0 tool calls ran.)"
    ]
    failed = final_parts(_turn(phase=TurnPhase.FAILED, error="APIError: bad_request *x*"))
    assert failed == [Formatted("❌ APIError: bad_request *x*")]


def test_final_renders_markdown_and_appends_stop() -> None:
    turn = _turn(phase=TurnPhase.ABORTED, texts=(("p", "**Half** an answer"),))
    [part] = final_parts(turn)
    assert part.text == "Half an answer\n\n⏹ Stopped."
    assert [(e.type, e.offset, e.length) for e in part.entities] == [("bold", 0, 4)]


def test_summary_is_one_line() -> None:
    summary = summary_text(_turn(phase=TurnPhase.DONE, finished_at=112.0), now=200.0)
    assert summary == "✅ Done in 12s · 0 tools"


def test_permission_shows_command_as_code_and_the_decision_keeps_it() -> None:
    prompt = PermissionPrompt("tok", "bash", ("echo *",), "echo hello")
    message = permission_message(prompt)
    assert message.text == "🔐 OpenCode asks for permission: bash\necho hello\nPatterns: echo *"
    assert {s.kind for s in message.spans} == {"bold", "pre", "code"}
    decided = answered_message(prompt, "✅ Allowed once by Alice.")
    assert decided.text.endswith("Patterns: echo *\n\n✅ Allowed once by Alice.")
    assert all(e.offset + e.length <= utf16_len(decided.text) for e in decided.entities)


def test_a_huge_diff_is_cut_to_fit_with_the_decision() -> None:
    prompt = PermissionPrompt("tok", "edit", ("a.py",), "+x\n" * 5000)
    decided = answered_message(prompt, "❌ Rejected by Alice.")
    assert utf16_len(decided.text) <= 4096
    assert decided.text.endswith("❌ Rejected by Alice.")


def test_question_has_header_and_text() -> None:
    message = question_message(QuestionPrompt("tok", "Pick a color", "Color", ("Red", "Blue")))
    assert message.text == "❓ Color\nPick a color"
