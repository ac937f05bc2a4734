"""Files to the chat through the Outbox: documents, photos and albums (sendMediaGroup).

A photo Telegram refuses as a photo (dimensions, format) is sent again as a document. Several
images go as albums of at most ten, each photo captioned with its file name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from telegram import Bot, InlineKeyboardMarkup, InputMediaPhoto, Message
from telegram.error import BadRequest

from oc_outpost.core.chat import TopicGone
from oc_outpost.core.outputs import OutFile
from oc_outpost.telegram.outbox import Outbox, Priority

log = logging.getLogger(__name__)

ALBUM_SIZE = 10  # Telegram's most media in one group
CAPTION_CHARS = 1000  # Telegram allows 1024 UTF-16 units; paths stay well under this
UPLOAD_WRITE_TIMEOUT_S = 120.0  # a 50 MB upload on a slow uplink


def _caption(text: str) -> str | None:
    return text[:CAPTION_CHARS] or None


class Uploads:
    def __init__(self, outbox: Outbox, chat_id: int, on_gone: Callable[[int | None], None]) -> None:
        self._outbox = outbox
        self._chat_id = chat_id
        self._on_gone = on_gone  # a deleted topic is reported, then TopicGone raised

    async def send_file(
        self,
        topic_id: int | None,
        file: OutFile,
        caption: str = "",
        *,
        priority: Priority = Priority.INTERACTIVE,
        markup: InlineKeyboardMarkup | None = None,
    ) -> Message:
        if file.is_photo:
            try:
                photo: Message = await self._submit(
                    self._upload_call(topic_id, file, caption, markup, photo=True),
                    "sendPhoto",
                    priority,
                    topic_id,
                )
                return photo
            except BadRequest as exc:
                log.info("Telegram refused %s as a photo (%s); sending a document", file.name, exc)
        document: Message = await self._submit(
            self._upload_call(topic_id, file, caption, markup, photo=False),
            "sendDocument",
            priority,
            topic_id,
        )
        return document

    async def send_images(
        self, topic_id: int, images: Sequence[OutFile], *, priority: Priority
    ) -> None:
        """The images as photos: one alone, several as albums of up to ten. An image Telegram
        refuses even as a document is left out, and the topic is told how many were."""
        refused: list[str] = []
        for start in range(0, len(images), ALBUM_SIZE):
            chunk = list(images[start : start + ALBUM_SIZE])
            if len(chunk) > 1:
                try:
                    await self._submit(
                        self._album_call(topic_id, chunk), "sendMediaGroup", priority, topic_id
                    )
                    continue
                except BadRequest as exc:
                    log.info("Telegram refused an album (%s); sending its files one by one", exc)
            for image in chunk:
                try:
                    await self.send_file(topic_id, image, image.name, priority=priority)
                except BadRequest as exc:
                    log.warning("image %s not sent: %s", image.name, exc.message)
                    refused.append(f"{image.name} ({exc.message})")
        if refused:
            note = f"⚠️ Telegram refused {len(refused)} image(s): " + "; ".join(refused)
            await self._submit(
                self._note_call(topic_id, note[:4000]), "sendMessage", priority, topic_id
            )

    def _note_call(self, topic_id: int, text: str) -> Callable[[Bot], Any]:
        return lambda bot: bot.send_message(self._chat_id, text, message_thread_id=topic_id)

    async def _submit(
        self, call: Callable[[Bot], Any], method: str, priority: Priority, topic_id: int | None
    ) -> Any:
        try:
            return await self._outbox.submit(
                call, method=method, chat_id=self._chat_id, priority=priority
            )
        except TopicGone:
            self._on_gone(topic_id)
            raise

    def _upload_call(
        self,
        topic_id: int | None,
        file: OutFile,
        caption: str,
        markup: InlineKeyboardMarkup | None,
        *,
        photo: bool,
    ) -> Callable[[Bot], Any]:
        common: dict[str, Any] = {
            "caption": _caption(caption),
            "message_thread_id": topic_id,
            "reply_markup": markup,
            "filename": file.name,
            "write_timeout": UPLOAD_WRITE_TIMEOUT_S,
        }
        if photo:
            return lambda bot: bot.send_photo(self._chat_id, file.data, **common)
        return lambda bot: bot.send_document(
            self._chat_id, file.data, disable_content_type_detection=True, **common
        )

    def _album_call(self, topic_id: int, images: Sequence[OutFile]) -> Callable[[Bot], Any]:
        media = [
            InputMediaPhoto(image.data, caption=_caption(image.name), filename=image.name)
            for image in images
        ]
        return lambda bot: bot.send_media_group(
            self._chat_id, media, message_thread_id=topic_id, write_timeout=UPLOAD_WRITE_TIMEOUT_S
        )
