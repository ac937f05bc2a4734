"""Turning turn snapshots and answers into Telegram message texts (plain text for now)."""

from __future__ import annotations

from oc_outpost.core.ports import PermissionPrompt, QuestionPrompt
from oc_outpost.core.turn import TurnPhase, TurnSnapshot

MESSAGE_LIMIT = 4096  # UTF-16 code units, after entity parsing
PROGRESS_TOOL_LINES = 5
PROGRESS_TAIL = 600
DETAIL_LIMIT = 300

_TOOL_MARK = {"pending": "⏳", "running": "⏳", "completed": "✅", "error": "❌"}
_PHASE_HEAD = {
    TurnPhase.RUNNING: "⏳ Working",
    TurnPhase.RETRYING: "🔁 Retrying",
    TurnPhase.WAITING: "✋ Waiting for your answer",
    TurnPhase.DONE: "✅ Done",
    TurnPhase.FAILED: "❌ Failed",
    TurnPhase.ABORTED: "⏹ Stopped",
}


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def split_text(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Cut ``text`` into parts of at most ``limit`` UTF-16 units; joined they equal ``text``.

    Cuts prefer a paragraph break, then a line break, then a space, and never split a
    character (an emoji outside the BMP counts 2 units but is never cut in half).
    """
    parts: list[str] = []
    rest = text
    while utf16_len(rest) > limit:
        fit = _longest_prefix(rest, limit)
        cut = _best_cut(rest[:fit])
        parts.append(rest[:cut])
        rest = rest[cut:]
    if rest or not parts:
        parts.append(rest)
    return parts


def _longest_prefix(text: str, limit: int) -> int:
    units = 0
    for index, char in enumerate(text):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > limit:
            return index
    return len(text)


def _best_cut(prefix: str) -> int:
    for separator in ("\n\n", "\n", " "):
        at = prefix.rfind(separator)
        if at > len(prefix) // 2:
            return at + len(separator)
    return len(prefix)


def _elapsed(turn: TurnSnapshot, now: float) -> str:
    seconds = int((turn.finished_at or now) - turn.started_at)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def progress_text(turn: TurnSnapshot, now: float) -> str:
    head = f"{_PHASE_HEAD[turn.phase]} · {_elapsed(turn, now)}"
    if turn.steps:
        head += f" · step {turn.steps}"
    lines = [head]
    if turn.phase == TurnPhase.RETRYING and turn.retry_note:
        lines.append(_clip(turn.retry_note, DETAIL_LIMIT))
    hidden = len(turn.tools) - PROGRESS_TOOL_LINES
    if hidden > 0:
        lines.append(f"… {hidden} earlier tool call(s)")
    for tool in turn.tools[-PROGRESS_TOOL_LINES:]:
        mark = _TOOL_MARK.get(tool.status, "•")
        lines.append(f"{mark} {tool.tool}: {_clip(tool.detail, 80)}".rstrip(": "))
    answer = turn.answer
    if answer:
        tail = answer[-PROGRESS_TAIL:]
        lines.append("")
        lines.append(("…" if len(answer) > PROGRESS_TAIL else "") + tail)
    return "\n".join(lines)


def summary_text(turn: TurnSnapshot, now: float) -> str:
    usage = turn.usage
    bits = [f"{_PHASE_HEAD[turn.phase]} in {_elapsed(turn, now)}"]
    bits.append(f"{len(turn.tools)} tool{'s' if len(turn.tools) != 1 else ''}")
    tokens = usage.input_tokens + usage.output_tokens
    if tokens:
        bits.append(f"{tokens:,} tokens")
    if usage.cost:
        bits.append(f"${usage.cost:.4f}")
    return " · ".join(bits)


def final_texts(turn: TurnSnapshot) -> list[str]:
    """The final answer, never empty, split to fit; errors are said plainly."""
    body = turn.answer
    if turn.phase == TurnPhase.ABORTED:
        body = f"{body}\n\n⏹ Stopped." if body else "⏹ Stopped."
    if turn.error:
        body = f"{body}\n\n❌ {turn.error}" if body else f"❌ {turn.error}"
    if not body:
        count = len(turn.tools)
        body = f"(No text answer; {count} tool call{'s' if count != 1 else ''} ran.)"
    return split_text(body)


def permission_text(prompt: PermissionPrompt) -> str:
    lines = [f"🔐 OpenCode asks for permission: {prompt.permission}"]
    if prompt.detail:
        lines.append(_clip_block(prompt.detail, 1500))
    if prompt.patterns:
        lines.append("Patterns: " + ", ".join(prompt.patterns))
    return "\n".join(lines)


def question_text(prompt: QuestionPrompt) -> str:
    head = f"❓ {prompt.header}" if prompt.header else "❓ OpenCode asks"
    return f"{head}\n{prompt.question}"


def _clip_block(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
