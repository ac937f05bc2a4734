"""Turn progress, final answers, prompts and command replies as Telegram texts."""

from __future__ import annotations

from oc_outpost.core.chat import PermissionPrompt, QuestionPrompt
from oc_outpost.core.turn import ToolLine, TurnPhase, TurnSnapshot
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


def test_progress_shows_sub_agent_tools_under_the_parent_and_retries() -> None:
    tools = (
        ToolLine("c1", "task", "running", "Sub job"),
        ToolLine("c2", "bash", "running", "ls", sub=True),
    )
    turn = _turn(tools=tools, phase=TurnPhase.RETRYING, retry_note="attempt 2: overloaded")
    text = progress_text(turn, now=101.0)
    assert "🔁 Retrying" in text and "attempt 2: overloaded" in text
    assert "⏳ task: Sub job\n   ↳ ⏳ bash: ls" in text


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
