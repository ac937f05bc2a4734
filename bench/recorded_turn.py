"""A recorded OpenCode turn, scaled up: the frames `bench/event_bench.py` replays.

The turn is `prompt+bash-tool+permission-once` from tests/fixtures/opencode-1.18-events.jsonl
(OpenCode 1.18.33: a prompt, a bash call waiting for permission, then an answer streamed as text
deltas), as `/global/event` frames. Its text deltas are repeated, in order, until the turn has the
number of frames asked for; every other frame stays as recorded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RECORDING = Path(__file__).resolve().parent.parent / "tests/fixtures/opencode-1.18-events.jsonl"
SCENARIO = "prompt+bash-tool+permission-once"
DIRECTORY = "/projects/demo4"


@dataclass(frozen=True)
class Turn:
    session_id: str
    frames: list[bytes]  # SSE-encoded /global/event frames, one per event
    deltas: int
    answer: str  # the text the deltas stream
    messages: list[dict[str, Any]]  # GET /session/{id}/message at the end of the turn
    session: dict[str, Any]  # GET /session/{id}


def scaled_turn(events: int) -> Turn:
    """The recorded turn with its text deltas repeated until it has `events` frames."""
    rows = [json.loads(line) for line in RECORDING.read_text().splitlines()]
    recorded = [r["data"] for r in rows if r["scenario"] == SCENARIO and r["stream"] == "/event"]
    deltas = [f for f in recorded if f["type"] == "message.part.delta"]
    first, last = recorded.index(deltas[0]), recorded.index(deltas[-1])
    repeats = max(1, (events - (len(recorded) - len(deltas))) // len(deltas))
    encoded = [_sse(frame) for frame in recorded]
    frames = encoded[:first] + encoded[first : last + 1] * repeats + encoded[last + 1 :]
    answer = "".join(d["properties"]["delta"] for d in deltas) * repeats
    session_id = recorded[1]["properties"]["sessionID"]
    session = {"id": session_id, "directory": DIRECTORY, "title": "Bench", "time": {"created": 1}}
    return Turn(
        session_id, frames, len(deltas) * repeats, answer, _messages(recorded, answer), session
    )


def _sse(frame: dict[str, Any]) -> bytes:
    envelope = {"directory": DIRECTORY, "project": "global", "payload": frame}
    return b"data: " + json.dumps(envelope, separators=(",", ":")).encode() + b"\n\n"


def _messages(recorded: list[dict[str, Any]], answer: str) -> list[dict[str, Any]]:
    infos: dict[str, dict[str, Any]] = {}
    for frame in recorded:
        if frame["type"] == "message.updated":
            info = frame["properties"]["info"]
            infos[info["id"]] = info
    user, *assistants = infos.values()
    text = {"id": "prt_answer", "type": "text", "text": answer, "time": {"start": 1, "end": 2}}
    return [{"info": user, "parts": []}] + [
        {"info": info, "parts": [text] if info is assistants[-1] else []} for info in assistants
    ]
