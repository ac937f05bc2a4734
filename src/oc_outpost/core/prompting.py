"""Prompting: text (and files) typed in a bound topic become the session's next prompt.

The server is connected first (a stopped managed one is woken, with a notice when that takes a
while); the turn is tracked before the prompt is sent so no event of it is missed. A server
that died moments before (its port refuses the prompt) is restarted and the prompt sent once
more, instead of refusing it and leaving the user to notice.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TypedDict

from oc_outpost.core.chat import Attachment, ChatPort
from oc_outpost.core.errors import BadRequest, Unavailable, UserError
from oc_outpost.core.linking import SERVER_ERRORS
from oc_outpost.core.prompt_text import prompt_text, with_file_names
from oc_outpost.core.tracker import TurnTracker
from oc_outpost.model import TopicBinding
from oc_outpost.opencode.errors import OpenCodeError, OpenCodeUnavailable
from oc_outpost.opencode.wire import FileInput, PromptPart, TextInput
from oc_outpost.servers.errors import InstanceBusy
from oc_outpost.servers.listener import RunningInstance
from oc_outpost.servers.registry import ServerRegistry

log = logging.getLogger(__name__)

RECENT_PROMPTS = 20  # how far back a message taken again after a restart is looked for
PROMPT_WRITTEN_WAIT_S = 10.0  # a prompt for a busy session waits this long for the running one

WAKING_UP = "⏳ Waking up OpenCode for {name}… your message is sent as soon as it is ready."
NOT_LINKED = (
    "This topic is not linked to a project: /link <path> links it, or use /new <name> in General."
)


class Prompter:
    def __init__(self, registry: ServerRegistry, tracker: TurnTracker, chat: ChatPort) -> None:
        self._registry = registry
        self._tracker = tracker
        self._chat = chat

    async def send(
        self, binding: TopicBinding, text: str, attachments: tuple[Attachment, ...]
    ) -> None:
        topic_id = binding.topic_id
        session_id = binding.session_id
        if session_id is None:
            raise BadRequest(NOT_LINKED)
        running = await self.connect(binding)
        queued = self._tracker.is_busy(session_id)
        if queued:
            await self._chat.notify(topic_id, "⏳ Queued: it will run after the current turn.")
            await self._tracker.prompt_written(session_id, PROMPT_WRITTEN_WAIT_S)
        else:
            self._tracker.begin(binding, running.client)
        parts = prompt_parts(text, attachments)
        try:
            try:
                await running.client.prompt_async(session_id, parts, **choice_of(binding))
            except OpenCodeUnavailable as exc:
                log.info("prompt to %s refused (%s); restarting its server", session_id, exc)
                running = await self.connect(binding)
                await running.client.prompt_async(session_id, parts, **choice_of(binding))
        except (OpenCodeError, UserError) as exc:
            log.warning("prompt to %s failed: %s", session_id, exc)
            refused = f"The prompt was not accepted: {exc}"
            if queued:  # the running turn is another prompt's: leave it be
                await self._chat.notify(topic_id, f"❌ {refused}")
            else:
                await self._tracker.fail(session_id, topic_id, refused)
            return
        await self._tracker.mark_accepted(binding, running.client)

    async def already_sent(
        self,
        binding: TopicBinding,
        text: str,
        attachments: Sequence[Attachment],
        sent_at: float,
    ) -> bool:
        """OpenCode has this prompt from after the person sent it (epoch s `sent_at`): the bot
        took the message again after a restart, having sent it before it died."""
        expected = with_file_names(text, attachments).strip()
        if binding.session_id is None or not expected:
            return False
        client = (await self.connect(binding)).client
        try:
            recent = await client.messages(binding.session_id, limit=RECENT_PROMPTS)
        except OpenCodeError as exc:
            log.warning("could not check whether %s had the prompt: %s", binding.session_id, exc)
            return False
        return any(
            m.info.role == "user"
            and (m.info.created_at or 0) >= sent_at * 1000
            and prompt_text(m) == expected
            for m in recent
        )

    async def connect(self, binding: TopicBinding) -> RunningInstance:
        name = Path(binding.project_path).name

        async def waking() -> None:
            await self._chat.notify(binding.topic_id, WAKING_UP.format(name=name))

        try:
            return await self._registry.connect(
                binding.instance_id, Path(binding.project_path), on_slow=waking
            )
        except InstanceBusy as exc:
            raise Unavailable(str(exc)) from exc
        except SERVER_ERRORS as exc:
            raise Unavailable(f"OpenCode is not available: {exc}") from exc


class Choice(TypedDict):
    model: tuple[str, str] | None
    agent: str | None
    variant: str | None


def choice_of(binding: TopicBinding) -> Choice:
    """The topic's model, agent and variant, as every prompt, command and shell call sends them."""
    return Choice(model=binding.model_ref, agent=binding.agent, variant=binding.variant)


def prompt_parts(text: str, attachments: tuple[Attachment, ...]) -> list[PromptPart]:
    """The prompt's parts: the text, then each file inline as a data: URL (nothing is written
    to disk, so no file can land outside PROJECT_BASE_PATH). The text names every file."""
    text = with_file_names(text, attachments)
    parts: list[PromptPart] = [TextInput(text=text)] if text.strip() else []
    for attachment in attachments:
        encoded = base64.b64encode(attachment.data).decode("ascii")
        parts.append(
            FileInput(
                mime=attachment.mime,
                url=f"data:{attachment.mime};base64,{encoded}",
                filename=attachment.filename,
            )
        )
    return parts
