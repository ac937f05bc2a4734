"""Messages while busy (BUSY_POLICY=queue): a text typed during a turn is held by the bot, in
SQLite so it survives a restart, and answered "⏳ Queued (n)" with **Send now** and **Drop**.
Held messages go out one at a time when the session's turn ends, in order; Send now puts one
first and stops the running turn, so it goes out on the idle that follows.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Literal

from oc_outpost.core.bindings import Bindings
from oc_outpost.core.chat import ChatPort, Menu
from oc_outpost.core.control_buttons import ControlButtons
from oc_outpost.core.errors import NotFound, UserError
from oc_outpost.core.prompting import Prompter
from oc_outpost.core.shell import ShellRunner, is_shell
from oc_outpost.core.tracker import TurnTracker
from oc_outpost.core.turn_ends import TurnEnds
from oc_outpost.model import TopicBinding
from oc_outpost.store.held_messages import HeldMessage, HeldMessageStore

log = logging.getLogger(__name__)

EXCERPT_CHARS = 60
SEND_NOW, DROP = "send_now", "drop"
HeldPress = Literal["send_now", "drop"]


def excerpt(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= EXCERPT_CHARS else line[: EXCERPT_CHARS - 1] + "…"


class HeldMessages:
    def __init__(
        self,
        store: HeldMessageStore,
        buttons: ControlButtons,
        bindings: Bindings,
        tracker: TurnTracker,
        prompter: Prompter,
        chat: ChatPort,
        ends: TurnEnds,
        shell: ShellRunner,
    ) -> None:
        self._shell = shell
        self._store = store
        self._buttons = buttons
        self._bindings = bindings
        self._tracker = tracker
        self._prompter = prompter
        self._chat = chat
        self._ends = ends
        self._sending = asyncio.Lock()

    async def hold(self, binding: TopicBinding, text: str, source: int | None = None) -> None:
        """Hold `text` (from the Telegram message `source`, so an edit of it edits the copy)."""
        assert binding.session_id is not None
        if source is not None:
            earlier = await self._store.copy_of(binding.topic_id, source)
            if earlier is not None:  # taken again: the bot restarted while it was being held
                if earlier.status == "held" and earlier.message_id is None:
                    await self._show_queued(earlier)
                return
        await self._show_queued(
            await self._store.hold(binding.topic_id, binding.session_id, text, source)
        )

    async def _show_queued(self, held: HeldMessage) -> None:
        count = await self._count_queued(held.session_id)
        menu = await self._menu(held, f"⏳ Queued ({count})")
        message_id = await self._chat.show_menu(held.topic_id, replace(menu, silent=True))
        await self._store.set_message(held.id, message_id)

    async def edit(self, topic_id: int, source: int, text: str) -> None:
        held = await self._store.edit(topic_id, source, text)
        if held is None or held.message_id is None:
            return  # not held (sent, dropped, or never queued): an edit runs nothing
        menu = await self._menu(held, "⏳ Queued (edited)")
        await self._chat.update_menu(topic_id, held.message_id, menu)

    async def _count_queued(self, session_id: str) -> int:
        """How many messages wait for the session; its progress message says so too."""
        count = len(await self._store.waiting(session_id))
        self._tracker.queued(session_id, count)
        return count

    async def _menu(self, held: HeldMessage, title: str) -> Menu:
        send_now = await self._buttons.button(
            SEND_NOW, held.topic_id, "▶ Send now", held_id=held.id
        )
        drop = await self._buttons.button(DROP, held.topic_id, "🗑 Drop", held_id=held.id)
        return Menu(
            f"{title}: “{excerpt(held.text)}” goes out when the current turn ends.",
            ((send_now, drop),),
        )

    async def press(self, kind: str, held_id: int, who: str) -> str:
        """Send now or Drop; the answer replaces the Queued message's text and buttons."""
        held = await self._store.get(held_id)
        if held is None or held.status != "held":
            raise NotFound("This message was already sent or dropped.")
        if kind == DROP:
            if not await self._store.release(held_id, "dropped"):
                raise NotFound("This message was already sent or dropped.")
            await self._count_queued(held.session_id)
            return f"🗑 Dropped by {who}: “{excerpt(held.text)}”"
        await self._store.make_urgent(held_id)
        if self._tracker.is_busy(held.session_id):
            answer = await self._tracker.abort(held.session_id)
            log.info("send now of held %d by %s: %s", held_id, who, answer)
            return f"⏩ {who}: stopping the current turn, then sending “{excerpt(held.text)}”."
        await self.send_next(held.session_id)
        return f"📤 Sent now by {who}: “{excerpt(held.text)}”"

    async def resume(self) -> None:
        """After a restart: messages held for sessions that are idle now go out."""
        for session_id in await self._store.sessions_waiting():
            await self.send_next(session_id)

    async def send_next(self, session_id: str) -> None:
        async with self._sending:
            if self._tracker.is_busy(session_id):
                return
            waiting = await self._store.waiting(session_id)
            if not waiting or not await self._store.release(waiting[0].id, "sent"):
                return
            self._tracker.queued(session_id, len(waiting) - 1)
            await self._send(waiting[0])

    async def _send(self, held: HeldMessage) -> None:
        binding = self._bindings.by_session(held.session_id)
        if binding is None:
            log.info("held message %d has no topic any more; not sent", held.id)
            return
        if held.message_id is not None:
            await self._chat.show_decision(
                held.topic_id, held.message_id, f"📤 Sent: “{excerpt(held.text)}”"
            )
        try:
            if is_shell(held.text):
                await self._shell.run(binding, held.text)
                self._ends.ended(held.session_id)  # no turn follows: the next one may go
            else:
                await self._prompter.send(binding, held.text, ())
        except UserError as exc:
            await self._chat.notify(held.topic_id, f"❌ The queued message was not sent: {exc}")
