"""What the bot's messages say: turn progress and answers, prompts, and command replies.

Live progress is plain text (a half-streamed answer is never parsed); final answers are
Markdown rendered to text + entities and split to fit. Everything else is built as `Styled`
text, so names and paths need no escaping.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from oc_outpost.core.chat import HistoryEntry, PermissionPrompt, QuestionPrompt
from oc_outpost.core.replies import (
    ClearReport,
    SessionDetails,
    SessionEntry,
    SessionList,
    StatusReport,
)
from oc_outpost.core.turn import TurnPhase, TurnSnapshot
from oc_outpost.telegram.formatted import (
    MESSAGE_LIMIT,
    Formatted,
    Styled,
    fit,
    join,
    plain,
    split,
    styled,
    utf16_len,
)
from oc_outpost.telegram.markdown import markdown_to_styled

__all__ = ["MESSAGE_LIMIT", "utf16_len"]

PROGRESS_TOOL_LINES = 6
PROGRESS_TAIL = 600
DETAIL_LIMIT = 80
PROMPT_DETAIL_LIMIT = 2500

_TOOL_MARK = {"pending": "⏳", "running": "⏳", "completed": "✅", "error": "❌"}
_PHASE_HEAD = {
    TurnPhase.RUNNING: "⏳ Working",
    TurnPhase.RETRYING: "🔁 Retrying",
    TurnPhase.WAITING: "✋ Waiting for your answer",
    TurnPhase.DONE: "✅ Done",
    TurnPhase.FAILED: "❌ Failed",
    TurnPhase.ABORTED: "⏹ Stopped",
}


def _duration(seconds: float) -> str:
    whole = int(seconds)
    if whole >= 3600:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 60}m{whole % 60:02d}s" if whole >= 60 else f"{whole}s"


def _elapsed(turn: TurnSnapshot, now: float) -> str:
    return _duration((turn.finished_at or now) - turn.started_at)


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- turns ------------------------------------------------------------------------------------


def progress_text(turn: TurnSnapshot, now: float) -> str:
    head = f"{_PHASE_HEAD[turn.phase]} · {_elapsed(turn, now)}"
    if turn.steps:
        head += f" · step {turn.steps}"
    lines = [head]
    if turn.phase == TurnPhase.RETRYING and turn.retry_note:
        lines.append(_clip(turn.retry_note, 300))
    if turn.error:
        lines.append(f"❌ {_clip(turn.error, 300)}")
    hidden = len(turn.tools) - PROGRESS_TOOL_LINES
    if hidden > 0:
        lines.append(f"… {hidden} earlier tool call{'s' if hidden != 1 else ''}")
    for tool in turn.tools[-PROGRESS_TOOL_LINES:]:
        mark = _TOOL_MARK.get(tool.status, "•")
        indent = "   ↳ " if tool.sub else ""
        lines.append(f"{indent}{mark} {tool.tool}: {_clip(tool.detail, DETAIL_LIMIT)}".rstrip(": "))
    answer = turn.answer
    if answer:
        tail = answer[-PROGRESS_TAIL:]
        lines.append("")
        lines.append(("…" if len(answer) > PROGRESS_TAIL else "") + tail)
    return "\n".join(lines)  # bounded: a few clipped lines and a short tail


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


def final_styled(turn: TurnSnapshot) -> Styled:
    """The final answer, never empty; stops and errors are said plainly after it."""
    pieces = [markdown_to_styled(turn.answer)]
    if turn.phase == TurnPhase.ABORTED:
        pieces.append(plain("⏹ Stopped."))
    if turn.retry_note and turn.phase != TurnPhase.DONE:
        pieces.append(plain(f"🔁 OpenCode was retrying: {turn.retry_note}"))
    if turn.error:
        pieces.append(plain(f"❌ {turn.error}"))
    body = join(pieces)
    if not body.text:
        count = len(turn.tools)
        body = plain(f"(No text answer; {count} tool call{'s' if count != 1 else ''} ran.)")
    return body


def final_parts(turn: TurnSnapshot) -> list[Formatted]:
    return split(final_styled(turn))


# --- approvals and questions ------------------------------------------------------------------


def _detail_block(detail: str) -> Styled:
    clipped = detail if len(detail) <= PROMPT_DETAIL_LIMIT else detail[:PROMPT_DETAIL_LIMIT] + "…"
    language = "diff" if detail.startswith(("---", "Index:", "diff ", "@@")) else None
    return styled(clipped, "pre", language=language)


def permission_message(prompt: PermissionPrompt) -> Styled:
    head = plain("🔐 OpenCode asks for permission: ") + styled(prompt.permission, "bold")
    pieces = [head]
    if prompt.detail:
        pieces.append(_detail_block(prompt.detail))
    if prompt.patterns:
        patterns = plain("Patterns: ")
        for index, pattern in enumerate(prompt.patterns):
            patterns = patterns + (plain(", ") if index else plain("")) + styled(pattern, "code")
        pieces.append(patterns)
    return join(pieces, "\n")


def question_message(prompt: QuestionPrompt) -> Styled:
    head = styled(f"❓ {prompt.header}" if prompt.header else "❓ OpenCode asks", "bold")
    return join([head, plain(prompt.question)], "\n")


def answered_message(prompt: PermissionPrompt | QuestionPrompt, decision: str) -> Formatted:
    asked = (
        permission_message(prompt)
        if isinstance(prompt, PermissionPrompt)
        else question_message(prompt)
    )
    head = fit(asked, MESSAGE_LIMIT - utf16_len(decision) - 2)
    return Formatted(f"{head.text}\n\n{decision}", head.entities)


# --- command replies --------------------------------------------------------------------------

GENERAL_HELP = (
    "This is the control lane of oc-outpost. Each project lives in its own topic: "
    "write there to talk to OpenCode.\n\n"
    "/new <name> — create a project directory, its topic and an OpenCode session\n"
    "/projects — the project directories, with a button to open each\n"
    "/sessions — OpenCode sessions of running servers, with Connect buttons\n"
    "/connect <project | session id> — bind an existing session to a new topic\n"
    "/clear — unlink topics whose directory, session or server is gone (files stay)\n"
    "/status — servers, pending approvals, Telegram budget, uptime\n"
    "/board — post the board of all topics anew (pinned here)\n"
    "/help — this help"
)
TOPIC_HELP = (
    "Write here to send a prompt to this topic's OpenCode session; photos and files are "
    "passed along with their caption. Progress is shown live and the answer arrives as a new "
    "message; permission requests and questions come with buttons.\n\n"
    "/cancel — stop the running turn (or press ⏹ Stop)\n"
    "/stream [on|off] — live progress on or off (off: the final answer only)\n"
    "/session — project, server, session, model, tokens and cost\n"
    "/ls [-a] [path] — browse the project's files; tap one to get it\n"
    "/get <path> — send one file (a small folder as a zip) · /diff — uncommitted changes\n"
    "🎙 a voice note — transcribed, then sent as the prompt\n"
    "/link <path> — bind this topic to another directory\n"
    "/disconnect — unlink this topic and close it (files stay)\n"
    "/status · /help"
)
UNBOUND_TOPIC_HELP = (
    "This topic is not linked to a project yet.\n"
    "/link <path> — bind it to a directory inside the project base\n"
    "Or write a message to get a project picker. /new <name> in General creates a new project."
)
PICKER_TEXT = (
    "📁 This topic is not linked to a project yet. Which project is it for? (Or /link <path>.)"
)


def history_parts(entries: Sequence[HistoryEntry]) -> list[Formatted]:
    if not entries:
        return split(plain("(This session has no messages yet.)"))
    pieces = [styled("Recent history", "bold")]
    for entry in entries:
        who = "👤 You" if entry.role == "user" else "🤖 OpenCode"
        pieces.append(styled(who, "bold") + plain("\n") + markdown_to_styled(entry.text))
    return split(join(pieces))


def status_message(report: StatusReport, budget: Sequence[tuple[str, str]]) -> Styled:
    servers = report.orchestrator
    lines = [styled("oc-outpost status", "bold")]
    counts = servers.counts()
    if counts:
        lines.append(plain("Servers:"))
        for (kind, state), count in sorted(counts.items()):
            lines.append(plain(f"  • {kind.value} {state.value}: {count}"))
    else:
        lines.append(plain("Servers: none yet"))
    mode = " (one shared server)" if servers.shared_server else ""
    lines.append(plain(f"Port pool: {servers.ports_used}/{servers.ports_total} in use{mode}"))
    lines.append(plain(f"Topics linked: {report.topics} · turns running: {report.busy_turns}"))
    lines.append(plain(f"Pending approvals and questions: {report.pending}"))
    for label, value in budget:
        lines.append(plain(f"{label}: {value}"))
    lines.append(plain(f"Uptime: {_duration(servers.uptime_s)}"))
    return join(lines, "\n")


def session_message(info: SessionDetails) -> Styled:
    binding = info.binding
    lines = [styled(f"📁 {binding.project_path.rstrip('/').rsplit('/', 1)[-1]}", "bold")]
    lines.append(plain("Directory: ") + styled(binding.project_path, "code"))
    if info.instance is not None:
        where = info.instance.url or (f"port {info.instance.port}" if info.instance.port else "")
        lines.append(
            plain(f"Server: {info.instance.kind} · {info.instance.state} · {where} · ")
            + styled(info.instance.id, "code")
        )
    lines.append(plain("Session: ") + styled(binding.session_id or "-", "code"))
    if info.title:
        lines.append(plain(f"Title: {info.title}"))
    if info.model:
        lines.append(plain(f"Model: {info.model}"))
    if info.input_tokens or info.output_tokens or info.cost:
        lines.append(
            plain(
                f"Tokens: {info.input_tokens:,} in · {info.output_tokens:,} out · "
                f"cost ${info.cost:.4f}"
            )
        )
    lines.append(plain(f"Now: {'running a turn' if info.busy else 'idle'}"))
    lines.append(plain(f"Live progress: {'on' if binding.streaming_enabled else 'off'} (/stream)"))
    created = datetime.fromtimestamp(binding.created_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines.append(plain(f"Linked since: {created}"))
    if info.note:
        lines.append(plain(info.note))
    return join(lines, "\n")


def session_label(entry: SessionEntry) -> str:
    title = entry.title if len(entry.title) <= 40 else entry.title[:39] + "…"
    return f"🔗 {entry.project}: {title}"


def sessions_message(listing: SessionList, shown: Sequence[SessionEntry]) -> Styled:
    if not listing.entries:
        text = "No OpenCode session on a running server. Open a project with /projects or /new."
        lines = [plain(text)]
    else:
        lines = [styled("OpenCode sessions", "bold") + plain(" (most recent first)")]
        for entry in shown:
            when = datetime.fromtimestamp(entry.updated_s, UTC).strftime("%m-%d %H:%M")
            where = "in its topic" if entry.topic_id is not None else "not connected"
            lines.append(
                plain(f"• {entry.project} · {entry.title} · {when} · {entry.kind} · {where} · ")
                + styled(entry.session_id, "code")
            )
        more = len(listing.entries) - len(shown)
        if more > 0:
            lines.append(plain(f"… and {more} more; /connect <session id> reaches them too."))
    if listing.unreachable:
        lines.append(plain("Not answering: " + ", ".join(listing.unreachable)))
    return join(lines, "\n")


def projects_message(count: int, base: str) -> str:
    if not count:
        return f"No project directory under {base} yet. Create one with /new <name>."
    return (
        f"📂 {count} project{'s' if count != 1 else ''} under {base} — press one to open its topic:"
    )


def clear_message(report: ClearReport) -> str:
    if not report.removed:
        return f"🧹 Nothing to clear: all {report.kept} linked topic(s) are fine."
    lines = [f"🧹 Unlinked {len(report.removed)} topic(s); no file was touched:"]
    for binding, reason in report.removed:
        name = binding.project_path.rstrip("/").rsplit("/", 1)[-1]
        lines.append(f"• {name} (topic {binding.topic_id}): {reason}")
    lines.append(f"{report.kept} topic(s) kept.")
    return "\n".join(lines)
