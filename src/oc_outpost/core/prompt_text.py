"""The text of a prompt that comes with files: the caption, then every file's name (a photo's
name is not otherwise visible to the model, and an album's caption sits on one of its files)."""

from __future__ import annotations

from collections.abc import Sequence

from oc_outpost.core.chat import Attachment


def with_file_names(text: str, attachments: Sequence[Attachment]) -> str:
    if not attachments:
        return text
    note = "[Attached: " + ", ".join(a.filename for a in attachments) + "]"
    return f"{text.rstrip()}\n\n{note}" if text.strip() else note
