"""Topic icons that follow each topic's state in the topic list (`TOPIC_STATUS=icons`).

The icons are forum icon stickers (`getForumTopicIconStickers`, looked up once). A state change
waits ``settle_s`` before it is sent, so a turn that runs and finishes within seconds sends only
"done"; a topic already showing the wanted icon gets no call. Edits go at the Outbox's lowest
priority under one key per topic, so a newer state replaces a queued one and never overtakes a
final answer or an approval.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from telegram import Bot, Sticker
from telegram.error import BadRequest, TelegramError

from oc_outpost.core.topic_states import TopicState, TopicStatus
from oc_outpost.telegram.outbox import Outbox, OutboxClosed, Priority

log = logging.getLogger(__name__)

# Emoji of Telegram's forum icon set, best first; the first one the set offers is used.
STATE_EMOJI: dict[TopicState, tuple[str, ...]] = {
    TopicState.RUNNING: ("⚡", "🔥", "💻"),
    TopicState.NEEDS_YOU: ("❗", "‼", "❓"),
    TopicState.DONE: ("✅", "✔", "☑"),
    TopicState.FAILED: ("❌", "⁉", "🛑"),
    TopicState.ASLEEP: ("💤", "🌙", "⏸"),
}
VARIATION_SELECTOR = "\ufe0f"


def icon_ids(stickers: Sequence[Sticker]) -> dict[TopicState, str]:
    """The custom emoji id to show for each state, from the icon stickers Telegram offers."""
    by_emoji = {
        (s.emoji or "").replace(VARIATION_SELECTOR, ""): s.custom_emoji_id
        for s in stickers
        if s.custom_emoji_id
    }
    ids: dict[TopicState, str] = {}
    for state, wanted in STATE_EMOJI.items():
        found = next((by_emoji[e] for e in wanted if by_emoji.get(e)), None)
        if found is not None:
            ids[state] = found
    return ids


def _not_modified(exc: BadRequest) -> bool:
    return "topic_not_modified" in exc.message.lower()


class TopicIcons:
    def __init__(
        self,
        outbox: Outbox,
        chat_id: int,
        *,
        settle_s: float = 3.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._outbox = outbox
        self._chat_id = chat_id
        self._settle_s = settle_s
        self._sleep = sleep
        self._icons: dict[TopicState, str] | None = None
        self._lookup: asyncio.Lock = asyncio.Lock()
        self._wanted: dict[int, TopicState] = {}
        self._shown: dict[int, TopicState] = {}
        self._settling: dict[int, asyncio.Task[None]] = {}
        self.edits = 0  # icon edits made (for the benchmark)

    def show_topic_state(self, status: TopicStatus) -> None:
        self._wanted[status.topic_id] = status.state
        if status.topic_id not in self._settling:
            task = asyncio.create_task(self._settle(status.topic_id))
            self._settling[status.topic_id] = task

    async def stop(self) -> None:
        tasks = list(self._settling.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _settle(self, topic_id: int) -> None:
        try:
            await self._sleep(self._settle_s)
        finally:
            self._settling.pop(topic_id, None)
        state = self._wanted[topic_id]
        if self._shown.get(topic_id) == state:
            return
        try:
            await self._show(topic_id, state)
        except (TelegramError, OutboxClosed) as exc:
            log.warning("the icon of topic %d was not changed: %s", topic_id, exc)

    async def _show(self, topic_id: int, state: TopicState) -> None:
        icon = (await self._icon_ids()).get(state)
        if icon is None:
            return
        try:
            await self._outbox.submit(
                self._edit_call(topic_id, icon),
                method="editForumTopic",
                chat_id=self._chat_id,
                priority=Priority.BACKGROUND,
                key=("topic-icon", topic_id),
            )
        except BadRequest as exc:
            if not _not_modified(exc):
                raise
        self.edits += 1
        self._shown[topic_id] = state

    def _edit_call(self, topic_id: int, icon: str) -> Callable[[Bot], Any]:
        return lambda bot: bot.edit_forum_topic(self._chat_id, topic_id, icon_custom_emoji_id=icon)

    async def _icon_ids(self) -> dict[TopicState, str]:
        """Looked up once; a failed look-up is tried again with the next change."""
        async with self._lookup:
            if self._icons is None:
                stickers = await self._outbox.submit(
                    lambda bot: bot.get_forum_topic_icon_stickers(),
                    method="getForumTopicIconStickers",
                    chat_id=None,
                    priority=Priority.BACKGROUND,
                )
                self._icons = icon_ids(stickers)
                missing = set(STATE_EMOJI) - set(self._icons)
                if missing:
                    log.warning("no topic icon for %s", ", ".join(sorted(missing)))
            return self._icons
