"""Project pickers: a topic created by hand in the app gets buttons for the project directories
on its first message (or when it is created); the message it came with is held and sent as soon
as the topic is linked."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from oc_outpost.core.chat import Attachment, ChatPort, ProjectEntry

Held = tuple[str, tuple[Attachment, ...]]


class Pickers:
    def __init__(self, chat: ChatPort, projects: Callable[[], Sequence[ProjectEntry]]) -> None:
        self._chat = chat
        self._projects = projects
        self._shown: dict[int, int | None] = {}  # topic -> picker message id (None: sending)
        self._held: dict[int, Held] = {}

    async def offer(self, topic_id: int, base: str, held: Held | None = None) -> None:
        """Show the picker in ``topic_id`` once; ``held``: the message to send after linking."""
        if held is not None:
            self._held[topic_id] = held
        if topic_id in self._shown:
            if held is not None:
                await self._chat.notify(
                    topic_id,
                    "👆 Choose this topic's project above (or /link <path>); "
                    "your message is sent as soon as it is linked.",
                )
            return
        projects = self._projects()
        if not projects:
            await self._chat.notify(
                topic_id,
                "This topic is not linked to a project, and there is no project directory "
                f"under {base} yet. Use /new <name> in General, or /link <path> here.",
            )
            return
        self._shown[topic_id] = None
        try:
            self._shown[topic_id] = await self._chat.show_picker(topic_id, projects)
        except BaseException:
            self._shown.pop(topic_id, None)
            raise

    def close(self, topic_id: int) -> int | None:
        """The topic is linked (or gone): forget its picker; returns the picker's message id."""
        return self._shown.pop(topic_id, None)

    def take_held(self, topic_id: int) -> Held | None:
        return self._held.pop(topic_id, None)
