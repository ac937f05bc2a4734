"""A sandbox to try oc-outpost by hand, offline: fake Bot API + mock LLM + an env file.

    uv run python -m tests.rig.sandbox /tmp/outpost-sandbox

starts the fake Telegram Bot API and the mock LLM, installs (or finds) opencode 1.18.33, and
writes `<dir>/.env` with everything the bot needs. In a second terminal:

    cd /tmp/outpost-sandbox && uv run --project <repo> oc-outpost

then act as a user with the fake's test-control API (printed on start), e.g.

    curl -s localhost:<port>/_test/message -d '{"text": "/new demo", "user_id": 1001}'
    curl -s localhost:<port>/_test/state | python -m json.tool

Ctrl-C stops the sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import sys
from pathlib import Path

from tests.rig.fake_telegram import FakeTelegram
from tests.rig.mock_llm import MockLLM
from tests.rig.opencode_bin import ensure_opencode, hermetic_env
from tests.rig.telegram_fixtures import ALLOWED_USER_ID, TEST_BOT_TOKEN, TEST_CHAT_ID


def hermetic_opencode(root: Path, opencode: Path, llm_url: str) -> Path:
    """A wrapper that runs opencode with its own home and the mock LLM, leaving the bot's alone."""
    env = hermetic_env(root / "opencode-home", llm_url)
    lines = ["#!/bin/sh", *(f"export {k}={shlex.quote(v)}" for k, v in env.items())]
    wrapper = root / "opencode"
    wrapper.write_text("\n".join([*lines, f'exec {shlex.quote(str(opencode))} "$@"', ""]))
    wrapper.chmod(0o755)
    return wrapper


def env_file_text(fake_url: str, root: Path, opencode: Path) -> str:
    settings = {
        "TELEGRAM_BOT_TOKEN": TEST_BOT_TOKEN,
        "TELEGRAM_CHAT_ID": str(TEST_CHAT_ID),
        "TELEGRAM_ALLOWED_USERS": str(ALLOWED_USER_ID),
        "TELEGRAM_API_URL": fake_url,
        "PROJECT_BASE_PATH": str(root / "projects"),
        "OPENCODE_PATH": str(opencode),
        "ORCHESTRATOR_DB_PATH": str(root / "data/orchestrator.db"),
        "TOPIC_DB_PATH": str(root / "data/topics.db"),
    }
    return "".join(f"{key}='{value}'\n" for key, value in settings.items())


async def run(root: Path, opencode: Path) -> None:
    with MockLLM() as llm:
        async with FakeTelegram(chat_id=TEST_CHAT_ID, bot_token=TEST_BOT_TOKEN) as fake:
            wrapper = hermetic_opencode(root, opencode, llm.base_url)
            (root / ".env").write_text(env_file_text(fake.url, root, wrapper))
            print(f"fake Bot API: {fake.url}  (test control: {fake.url}/_test/...)")
            print(f"mock LLM:     {llm.base_url}")
            print(f"wrote {root / '.env'}; run the bot there with: uv run oc-outpost")
            await asyncio.Event().wait()


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "./outpost-sandbox").resolve()
    root.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(root, ensure_opencode()))


if __name__ == "__main__":
    main()
