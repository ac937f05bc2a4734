"""The text of a prompt: as sent when it comes with files (the caption, then every file's name:
a photo's name is not otherwise visible to the model, and an album's caption sits on one of its
files), and as OpenCode stored it."""

from __future__ import annotations

from collections.abc import Sequence

from oc_outpost.core.chat import Attachment
from oc_outpost.opencode.events import TextPart
from oc_outpost.opencode.wire import MessageWithParts


def with_file_names(text: str, attachments: Sequence[Attachment]) -> str:
    if not attachments:
        return text
    note = "[Attached: " + ", ".join(a.filename for a in attachments) + "]"
    return f"{text.rstrip()}\n\n{note}" if text.strip() else note


def prompt_text(message: MessageWithParts) -> str:
    """The text a person wrote in a user message (not what OpenCode added to it)."""
    return "\n".join(
        p.text for p in message.parts if isinstance(p, TextPart) and not p.synthetic
    ).strip()
