"""Shared-server mode (OPENCODE_SHARED_SERVER=true) end to end.

The skeleton's end-to-end tests run here again, unchanged, against a bot whose projects all live
on one `opencode serve`; then two projects at once prove they share the process but not their
sessions or answers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from oc_outpost.model import InstanceKind, InstanceState
from tests.e2e.test_skeleton import (
    test_bash_permission_allow_once_finishes_the_turn,
    test_new_creates_directory_topic_and_welcome,
    test_prompt_streams_and_answers_in_the_topic,
    test_user_not_allowed_gets_nothing_done,
)
from tests.rig.app_bot import AppBot, opencode_servers_in
from tests.rig.bot_fixtures import RunningBot, bot_settings
from tests.rig.fake_telegram import FakeTelegram
from tests.rig.mock_llm import MockLLM, Text

pytestmark = pytest.mark.timeout(90)

__all__ = [
    "test_bash_permission_allow_once_finishes_the_turn",
    "test_new_creates_directory_topic_and_welcome",
    "test_prompt_streams_and_answers_in_the_topic",
    "test_user_not_allowed_gets_nothing_done",
]


@pytest.fixture
async def bot(
    fake_telegram: FakeTelegram, opencode_bin: Path, opencode_env: dict[str, str], tmp_path: Path
) -> AsyncIterator[RunningBot]:
    """The skeleton's `bot`, in shared-server mode."""
    settings = bot_settings(fake_telegram, opencode_bin, tmp_path, OPENCODE_SHARED_SERVER="true")
    running = AppBot(fake_telegram, settings)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def test_projects_share_one_server_but_not_their_sessions(bot: AppBot, llm: MockLLM) -> None:
    llm.when("alpha question", Text("answer for alpha"))
    llm.when("beta question", Text("answer for beta"))
    alpha = await bot.new_topic("alpha")
    beta = await bot.new_topic("beta")

    await bot.say("alpha question", alpha)
    await bot.say("beta question", beta)

    await bot.wait_message(alpha, "answer for alpha")
    await bot.wait_message(beta, "answer for beta")
    assert bot.finals(alpha, "answer for beta") == 0 and bot.finals(beta, "answer for alpha") == 0
    assert bot.instance_id(alpha) != bot.instance_id(beta)
    assert bot.server_pid(alpha) == bot.server_pid(beta)
    assert len(opencode_servers_in(bot.projects)) == 1  # cwd: the project base
    status = await bot.running_app.core.registry.status()
    managed = [s for s in status.servers if s.kind == InstanceKind.MANAGED]
    assert [(s.state, s.projects) for s in managed] == [(InstanceState.RUNNING, 2)]
    assert status.shared_server and status.ports_used == 1
