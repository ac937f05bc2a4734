"""Speech to text through an OpenAI-compatible `POST <STT_URL>/audio/transcriptions`.

Works with OpenAI (`https://api.openai.com/v1`), Groq (`https://api.groq.com/openai/v1`) and
local Whisper servers that speak the same API. The request is multipart: the audio `file`, the
`model`, an optional `prompt` (words to spell right, here the project's file names) and
`response_format=json`; the answer is `{"text": ...}`. The API key never appears in an error or
a log line.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from pydantic import BaseModel, ValidationError

from oc_outpost.logs import hide

DEFAULT_MODEL = "whisper-1"
DEFAULT_TIMEOUT_S = 60.0
PROBE_TIMEOUT_S = 5.0
ENDPOINT = "/audio/transcriptions"


class SttError(Exception):
    """The transcription failed; the message says why, fit for the user."""


class _Transcription(BaseModel):
    text: str


@dataclass(frozen=True)
class SttConfig:
    url: str  # the API base (…/v1), or the full …/audio/transcriptions URL
    api_key: str | None = None
    model: str = DEFAULT_MODEL
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def endpoint(self) -> str:
        base = self.url.rstrip("/")
        return base if base.endswith(ENDPOINT) else base + ENDPOINT

    @property
    def base(self) -> str:
        return self.endpoint.removesuffix(ENDPOINT)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


@dataclass(frozen=True)
class SttProbe:
    """Whether the service answers (for `oc-outpost check`); ``detail`` says what was seen."""

    ok: bool
    detail: str


class SttClient:
    def __init__(
        self, config: SttConfig, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._config = config
        if config.api_key:
            hide(config.api_key)
        self._transport = transport

    async def transcribe(self, audio: bytes, filename: str, mime: str, prompt: str) -> str:
        config = self._config
        data = {"model": config.model, "response_format": "json"}
        if prompt:
            data["prompt"] = prompt
        try:
            async with httpx.AsyncClient(
                timeout=config.timeout_s, transport=self._transport
            ) as http:
                response = await http.post(
                    config.endpoint,
                    headers=config.headers(),
                    data=data,
                    files={"file": (filename, audio, mime)},
                )
        except httpx.TimeoutException:
            raise SttError(
                f"the speech-to-text service did not answer within {config.timeout_s:g} s"
            ) from None
        except httpx.HTTPError as exc:
            raise SttError(
                f"the speech-to-text service is unreachable ({type(exc).__name__})"
            ) from None
        if response.status_code >= 400:
            raise SttError(
                f"the speech-to-text service answered {response.status_code}: "
                f"{_error_message(response)}"
            )
        try:
            return _Transcription.model_validate_json(response.content).text
        except ValidationError:
            raise SttError("the speech-to-text service answered without a transcript") from None


def _error_message(response: httpx.Response) -> str:
    """OpenAI's `{"error": {"message": ...}}`, else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])[:200]
    return response.text[:200]


async def stt_reachable(
    config: SttConfig, *, transport: httpx.AsyncBaseTransport | None = None
) -> SttProbe:
    """Ask `GET <base>/models` with the key: any answer below 500 other than 401/403 means the
    service is there (local servers may not list models); 401/403 means the key is refused."""
    try:
        async with httpx.AsyncClient(timeout=PROBE_TIMEOUT_S, transport=transport) as http:
            response = await http.get(f"{config.base}/models", headers=config.headers())
    except httpx.HTTPError as exc:
        return SttProbe(False, f"{config.base} is unreachable ({type(exc).__name__})")
    if response.status_code in (401, 403):
        return SttProbe(
            False, f"{config.base} refused the key (STT_API_KEY): HTTP {response.status_code}"
        )
    if response.status_code >= 500:
        return SttProbe(False, f"{config.base} answered HTTP {response.status_code}")
    return SttProbe(True, f"{config.base} answers (HTTP {response.status_code})")
