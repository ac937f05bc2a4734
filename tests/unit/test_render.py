"""Plain-text rendering and splitting within Telegram's 4096 UTF-16 unit limit."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from oc_outpost.core.turn import ToolLine, TurnPhase, TurnSnapshot
from oc_outpost.telegram.render import (
    final_texts,
    progress_text,
    split_text,
    summary_text,
    utf16_len,
)


def test_utf16_length_counts_astral_characters_twice() -> None:
    assert utf16_len("a🚀") == 3


def test_split_prefers_paragraph_breaks() -> None:
    text = "a" * 3000 + "\n\n" + "b" * 3000
    parts = split_text(text)
    assert parts == ["a" * 3000 + "\n\n", "b" * 3000]


def test_split_never_cuts_an_emoji_in_half() -> None:
    text = "🚀" * 5000
    parts = split_text(text)
    assert all(utf16_len(p) <= 4096 for p in parts)
    assert "".join(parts) == text


@given(st.text(alphabet=st.sampled_from(["a", " ", "\n", "🚀", "é", "字"]), max_size=12000))
def test_split_loses_nothing_and_fits(text: str) -> None:
    parts = split_text(text, limit=500)
    assert "".join(parts) == text
    assert all(utf16_len(p) <= 500 for p in parts)


def _turn(**changes: object) -> TurnSnapshot:
    base = TurnSnapshot(1, "ses_x", started_at=100.0)
    return TurnSnapshot(**{**base.__dict__, **changes})  # type: ignore[arg-type]


def test_progress_shows_elapsed_steps_tools_and_tail() -> None:
    tools = tuple(ToolLine(f"c{i}", "bash", "completed", f"echo {i}") for i in range(7))
    turn = _turn(steps=3, tools=tools, texts=(("p", "x" * 1000 + "END"),))
    text = progress_text(turn, now=142.0)
    assert text.startswith("⏳ Working · 42s · step 3")
    assert "2 earlier tool call(s)" in text
    assert "✅ bash: echo 6" in text
    assert text.endswith("END")
    assert utf16_len(text) <= 4096


def test_final_is_never_empty_and_errors_are_plain() -> None:
    assert final_texts(_turn(phase=TurnPhase.DONE)) == ["(No text answer; 0 tool calls ran.)"]
    failed = final_texts(_turn(phase=TurnPhase.FAILED, error="APIError: bad request"))
    assert failed == ["❌ APIError: bad request"]


def test_summary_is_one_line() -> None:
    summary = summary_text(_turn(phase=TurnPhase.DONE, finished_at=112.0), now=200.0)
    assert summary == "✅ Done in 12s · 0 tools"
