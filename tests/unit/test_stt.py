"""The speech-to-text client against the mock transcription server (real HTTP on 127.0.0.1)."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator

import pytest

from oc_outpost.stt import SttClient, SttConfig, SttError, stt_reachable
from tests.rig.audio import is_ogg_opus, ogg_crc, opus_voice_note
from tests.rig.mock_stt import MockSTT

KEY = "sk-test-0123456789abcdef"


@pytest.fixture
async def stt() -> AsyncIterator[MockSTT]:
    async with MockSTT(transcript="rename the module", api_key=KEY) as server:
        yield server


def test_the_rigs_voice_note_is_well_formed_ogg_opus() -> None:
    assert ogg_crc(b"123456789") == 0x89A1897F  # the CRC-32 Ogg uses (poly 0x04C11DB7, init 0)
    note = opus_voice_note()
    assert is_ogg_opus(note)
    assert not is_ogg_opus(note[:30] + b"\0" + note[31:])  # a damaged first page
    assert note.count(b"OggS") == 3 and b"OpusTags" in note


async def test_transcribes_with_model_prompt_and_key(stt: MockSTT) -> None:
    client = SttClient(SttConfig(stt.url, KEY, "whisper-1"))
    text = await client.transcribe(opus_voice_note(), "voice.ogg", "audio/ogg", "app.py, lib")
    assert text == "rename the module"
    (request,) = stt.requests
    assert (request.filename, request.content_type, request.model) == (
        "voice.ogg",
        "audio/ogg",
        "whisper-1",
    )
    assert (request.prompt, request.response_format) == ("app.py, lib", "json")
    assert request.authorization == f"Bearer {KEY}"
    full_url = SttClient(SttConfig(f"{stt.url}/audio/transcriptions/", KEY))
    assert await full_url.transcribe(opus_voice_note(), "v.ogg", "audio/ogg", "") == (
        "rename the module"
    )
    assert stt.requests[1].prompt is None  # no hint: no prompt field


async def test_failures_are_clear_and_never_show_the_key(
    stt: MockSTT, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong_key = SttClient(SttConfig(stt.url, "sk-wrong-key-0123456789"))
    with pytest.raises(SttError, match="answered 401: Incorrect API key provided") as refused:
        await wrong_key.transcribe(opus_voice_note(), "voice.ogg", "audio/ogg", "")
    assert "sk-wrong" not in str(refused.value)

    stt.model = "other-model"
    with pytest.raises(SttError, match="answered 400: model must be"):
        await SttClient(SttConfig(stt.url, KEY)).transcribe(
            opus_voice_note(), "v.ogg", "audio/ogg", ""
        )

    stt.model, stt.delay_s = "whisper-1", 1.0
    slow = SttClient(SttConfig(stt.url, KEY, timeout_s=0.2))
    with pytest.raises(SttError, match=r"did not answer within 0\.2 s"):
        await slow.transcribe(opus_voice_note(), "voice.ogg", "audio/ogg", "")
    assert KEY not in caplog.text


async def test_unreachable_service_and_the_probe_for_check(stt: MockSTT) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    with pytest.raises(SttError, match="unreachable"):
        await SttClient(SttConfig(closed)).transcribe(b"OggS", "v.ogg", "audio/ogg", "")
    assert (await stt_reachable(SttConfig(stt.url, KEY))).ok
    refused = await stt_reachable(SttConfig(stt.url, "sk-wrong-key-0123456789"))
    assert not refused.ok and "refused the key" in refused.detail
    down = await stt_reachable(SttConfig(closed))
    assert not down.ok and "unreachable" in down.detail
