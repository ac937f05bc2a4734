"""The bot as its own process running `serve()`, for drills that kill it and start it again.

`python -m tests.rig.serve_process` runs `serve()` with the settings from the environment (no
.env file) and `RunOptions` from the JSON in OUTPOST_RUN_OPTIONS, until SIGTERM or SIGINT.
`BotProcess` starts it from a test, waits until it polls, kills or stops it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oc_outpost.app import RunOptions, serve
from oc_outpost.config import load_settings
from tests.rig.fake_telegram import FakeTelegram

OPTIONS_VAR = "OUTPOST_RUN_OPTIONS"
READY_TIMEOUT_S = 30.0
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class BotProcess:
    fake: FakeTelegram
    env: dict[str, str]  # the bot's configuration; added to this process's environment
    log: Path
    options: dict[str, Any] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        polls_before = len(self.fake.calls("getUpdates"))
        process = self.process = self._spawn()
        await self.fake.wait_for(
            lambda: len(self.fake.calls("getUpdates")) > polls_before or process.poll() is not None,
            timeout=READY_TIMEOUT_S,
            what="the bot process polling",
        )
        if process.poll() is not None:
            raise AssertionError(f"the bot exited with {process.returncode}:\n{self.tail()}")

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = os.environ | self.env | {OPTIONS_VAR: json.dumps(self.options)}
        with self.log.open("ab") as output:
            return subprocess.Popen(
                [sys.executable, "-m", "tests.rig.serve_process"],
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        """kill -9: no shutdown of any kind."""
        process, self.process = self.process, None
        if process is not None:
            process.kill()
            process.wait(timeout=10)

    async def stop(self) -> int:
        """SIGTERM, as systemd stops it; returns the exit status."""
        process, self.process = self.process, None
        if process is None:
            return 0
        process.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(process.wait, 60)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


async def _run() -> None:
    settings = load_settings(dict(os.environ), env_file=None)
    options = RunOptions(**json.loads(os.environ.get(OPTIONS_VAR, "{}")))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await serve(settings, stop, options)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    asyncio.run(_run())
