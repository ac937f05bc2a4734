"""Voice notes in a topic: transcribed, echoed, then sent as the prompt (the controller does the
last two). The transcription service is OpenAI-compatible (`STT_URL`, see oc_outpost/stt.py)."""

from __future__ import annotations

from typing import Protocol

from oc_outpost.core.chat import Attachment
from oc_outpost.core.errors import BadRequest, Unavailable
from oc_outpost.core.project_files import ProjectFiles
from oc_outpost.model import TopicBinding
from oc_outpost.stt import SttError

STT_HELP = (
    "Voice notes need a speech-to-text service, and none is set up. Set STT_URL to an "
    "OpenAI-compatible transcription API and restart the bot, e.g. "
    "STT_URL=https://api.openai.com/v1 with STT_API_KEY, "
    "STT_URL=https://api.groq.com/openai/v1 with STT_MODEL=whisper-large-v3, "
    "or a local Whisper server's URL. Until then, type the prompt."
)


class Transcriber(Protocol):
    async def transcribe(self, audio: bytes, filename: str, mime: str, prompt: str) -> str: ...


class VoicePrompts:
    def __init__(self, transcriber: Transcriber | None, files: ProjectFiles) -> None:
        self._transcriber = transcriber
        self._files = files

    async def transcribe(self, binding: TopicBinding, audio: Attachment) -> str:
        """The text of the voice note; the project's file names help spell what it mentions."""
        if self._transcriber is None:
            raise BadRequest(STT_HELP)
        hint = await self._files.name_hint(binding)
        try:
            text = await self._transcriber.transcribe(audio.data, audio.filename, audio.mime, hint)
        except SttError as exc:
            raise Unavailable(f"The voice note was not transcribed: {exc}") from exc
        if not text.strip():
            raise BadRequest("The transcription of that voice note is empty; nothing was sent.")
        return text.strip()
