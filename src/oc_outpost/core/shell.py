"""`!<command>` in a topic: run it in the session's directory through OpenCode, without the LLM
(`POST /session/{id}/shell`, with the topic's agent and model), and show its output."""

from __future__ import annotations

import logging

from oc_outpost.core.chat import ChatPort
from oc_outpost.core.errors import BadRequest, Conflict, Unavailable
from oc_outpost.core.prompting import Prompter
from oc_outpost.core.tracker import TurnTracker
from oc_outpost.model import TopicBinding
from oc_outpost.opencode.errors import OpenCodeError, OpenCodeHTTPError
from oc_outpost.opencode.events import ToolPart
from oc_outpost.opencode.wire import MessageWithParts

log = logging.getLogger(__name__)

SHELL_PREFIX = "!"
DEFAULT_AGENT = "build"
USAGE = "Usage: !<command>, for example !git status — it runs in the project directory."


def is_shell(text: str) -> bool:
    return text.startswith(SHELL_PREFIX)


def shell_output(message: MessageWithParts) -> str:
    """The output of the bash tool part of a shell answer."""
    for part in message.parts:
        if isinstance(part, ToolPart):
            output = part.output or str(part.metadata.get("output") or "")
            return output or part.error or ""
    return ""


class ShellRunner:
    def __init__(
        self, prompter: Prompter, tracker: TurnTracker, chat: ChatPort, timeout_s: float = 120.0
    ) -> None:
        self._prompter = prompter
        self._tracker = tracker
        self._chat = chat
        self._timeout_s = timeout_s

    async def run(self, binding: TopicBinding, text: str) -> None:
        command = text.removeprefix(SHELL_PREFIX).strip()
        if not command or binding.session_id is None:
            raise BadRequest(USAGE)
        client = (await self._prompter.connect(binding)).client
        self._tracker.hush(binding.session_id, True)
        try:
            answer = await client.shell(
                binding.session_id,
                command,
                agent=binding.agent or DEFAULT_AGENT,
                model=binding.model_ref,
                timeout_s=self._timeout_s,
            )
        except OpenCodeHTTPError as exc:
            if exc.status == 409:
                raise Conflict("OpenCode is busy; send it again when the turn has ended.") from exc
            raise Unavailable(f"The command did not run: {exc}") from exc
        except OpenCodeError as exc:
            raise Unavailable(f"The command did not run: {exc}") from exc
        finally:
            self._tracker.hush(binding.session_id, False)
        await self._chat.show_code(binding.topic_id, f"💻 $ {command}", shell_output(answer))
