"""`oc-outpost check` on speech to text: off, reachable with the key, or refusing it."""

from __future__ import annotations

from pathlib import Path

from oc_outpost.cli.check import Level, check_stt
from oc_outpost.config import load_settings
from tests.rig.mock_stt import MockSTT

KEY = "stt-key-for-the-check"


def settings(tmp_path: Path, **stt: str) -> object:
    base = {
        "TELEGRAM_BOT_TOKEN": "1:test",
        "TELEGRAM_CHAT_ID": "-1001",
        "PROJECT_BASE_PATH": str(tmp_path),
    }
    return load_settings(base | stt, env_file=None)


async def test_without_stt_url_voice_notes_are_reported_off(tmp_path: Path) -> None:
    finding = await check_stt(settings(tmp_path))  # type: ignore[arg-type]
    assert finding.level == Level.OK and "Voice notes are off" in finding.text


async def test_a_reachable_service_with_the_right_key_passes(tmp_path: Path) -> None:
    async with MockSTT(api_key=KEY) as server:
        finding = await check_stt(
            settings(tmp_path, STT_URL=server.url, STT_API_KEY=KEY)  # type: ignore[arg-type]
        )
    assert finding.level == Level.OK and server.url in finding.text


async def test_a_refused_key_or_a_dead_service_is_a_problem_with_its_fix(tmp_path: Path) -> None:
    async with MockSTT(api_key=KEY) as server:
        refused = await check_stt(
            settings(tmp_path, STT_URL=server.url, STT_API_KEY="wrong-key-123")  # type: ignore[arg-type]
        )
    dead = await check_stt(settings(tmp_path, STT_URL=server.url))  # type: ignore[arg-type]

    assert refused.level == dead.level == Level.PROBLEM
    assert "STT_API_KEY" in (refused.fix or "")
    assert "wrong-key-123" not in refused.line()  # the key is never printed
