"""OpenCode's own commands and skills from a topic: `/commands` lists them as buttons, and any
`/name args` that is not one of ours runs that command (`POST /session/{id}/command`, with the
topic's model, agent and variant). The call is synchronous, so it runs in the background while
the tracker follows its events like a turn."""

from __future__ import annotations

import asyncio
import logging

from oc_outpost.core.chat import ChatPort, Menu
from oc_outpost.core.control_buttons import ControlButtons
from oc_outpost.core.controls import short_label
from oc_outpost.core.errors import NotFound, Unavailable
from oc_outpost.core.prompting import Prompter
from oc_outpost.core.tracker import TurnTracker
from oc_outpost.model import TopicBinding
from oc_outpost.opencode.catalog import Command
from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.opencode.errors import OpenCodeError

log = logging.getLogger(__name__)

COMMAND = "command"
MENU_COMMANDS = 30


class OpenCodeCommands:
    def __init__(
        self,
        prompter: Prompter,
        tracker: TurnTracker,
        buttons: ControlButtons,
        chat: ChatPort,
    ) -> None:
        self._prompter = prompter
        self._tracker = tracker
        self._buttons = buttons
        self._chat = chat
        self._running: set[asyncio.Task[None]] = set()

    async def menu(self, binding: TopicBinding) -> Menu:
        commands = await self._list(binding)
        if not commands:
            raise NotFound("This project has no OpenCode commands.")
        rows = []
        for command in commands[:MENU_COMMANDS]:
            described = f" · {command.description}" if command.description else ""
            mark = "🧩 " if command.is_skill else ""
            label = short_label(f"{mark}/{command.name}{described}")
            button = await self._buttons.button(COMMAND, binding.topic_id, label, name=command.name)
            rows.append((button,))
        title = "⚙️ OpenCode commands and 🧩 skills of this project (tap one to run it):"
        return Menu(title, tuple(rows))

    async def find(self, binding: TopicBinding, name: str) -> Command | None:
        return next((c for c in await self._list(binding) if c.name == name), None)

    async def run(self, binding: TopicBinding, name: str, arguments: str) -> None:
        """Start `/name arguments` in the background; its progress and answer show as a turn."""
        session_id = binding.session_id
        assert session_id is not None
        if await self.find(binding, name) is None:
            raise NotFound(f"Unknown command /{name}. /help lists ours, /commands OpenCode's.")
        running = await self._prompter.connect(binding)
        if self._tracker.is_busy(session_id):
            raise Unavailable("OpenCode is working; run the command when the turn has ended.")
        self._tracker.begin(binding, running.client)
        task = asyncio.create_task(self._call(binding, name, arguments, running.client))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _call(
        self, binding: TopicBinding, name: str, arguments: str, client: OpenCodeClient
    ) -> None:
        assert binding.session_id is not None
        try:
            await client.command(
                binding.session_id,
                name,
                arguments,
                agent=binding.agent,
                model=binding.model_ref,
                variant=binding.variant,
            )
        except OpenCodeError as exc:
            log.warning("command /%s of %s failed: %s", name, binding.session_id, exc)
            await self._tracker.fail(
                binding.session_id, binding.topic_id, f"/{name} did not run: {exc}"
            )

    async def _list(self, binding: TopicBinding) -> list[Command]:
        client = (await self._prompter.connect(binding)).client
        try:
            return await client.commands()
        except OpenCodeError as exc:
            raise Unavailable(f"Could not list OpenCode's commands: {exc}") from exc
