"""Uploads through the real python-telegram-bot client: the fake's sendMediaGroup, photo and
document limits and voice notes (contract), and the bot's Uploads on top of the Outbox."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import telegram
from telegram import InputMediaDocument, InputMediaPhoto
from telegram.error import BadRequest

from oc_outpost.core.chat import GoneTopics, TopicGone
from oc_outpost.core.outputs import MAX_PHOTO_BYTES, OutFile
from oc_outpost.telegram.outbox import Limits, Outbox, Priority
from oc_outpost.telegram.uploads import Uploads
from tests.rig.audio import opus_voice_note
from tests.rig.fake_telegram import FakeTelegram
from tests.rig.telegram_fixtures import ALLOWED_USER_ID, TEST_CHAT_ID

CHAT = TEST_CHAT_ID
PNG = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x03\0\0\0\x02" + b"\0" * 8


async def test_media_group_is_an_album_of_messages_sharing_one_group_id(
    fake_telegram: FakeTelegram, fake_telegram_bot: telegram.Bot
) -> None:
    thread = (await fake_telegram_bot.create_forum_topic(CHAT, "pics")).message_thread_id
    sent = await fake_telegram_bot.send_media_group(
        CHAT,
        [
            InputMediaPhoto(PNG, caption="one.png", filename="one.png"),
            InputMediaPhoto(PNG + b"2", caption="two.png", filename="two.png"),
        ],
        message_thread_id=thread,
    )
    assert [m.caption for m in sent] == ["one.png", "two.png"]
    assert len({m.media_group_id for m in sent}) == 1 and sent[0].media_group_id
    assert all(m.message_thread_id == thread for m in sent)
    assert (sent[0].photo[-1].width, sent[0].photo[-1].height) == (3, 2)
    stored = [fake_telegram.message(m.message_id) for m in sent]
    assert [fake_telegram.file_bytes(m) for m in stored] == [PNG, PNG + b"2"]
    file = await fake_telegram_bot.get_file(sent[1].photo[-1].file_id)
    assert bytes(await file.download_as_bytearray()) == PNG + b"2"


async def test_media_group_limits(fake_telegram_bot: telegram.Bot) -> None:
    with pytest.raises(BadRequest, match="wrong number of media"):
        await fake_telegram_bot.send_media_group(CHAT, [InputMediaPhoto(PNG)] * 11)
    mixed = [InputMediaPhoto(PNG), InputMediaDocument(b"doc", filename="a.txt")]
    with pytest.raises(BadRequest, match="MEDIA_GROUP_INVALID"):
        await fake_telegram_bot.send_media_group(CHAT, mixed)
    big = InputMediaPhoto(b"\0" * (MAX_PHOTO_BYTES + 1), filename="big.png")
    with pytest.raises(BadRequest, match="file is too big"):
        await fake_telegram_bot.send_media_group(CHAT, [InputMediaPhoto(PNG), big])
    with pytest.raises(BadRequest, match="caption is too long"):
        await fake_telegram_bot.send_media_group(
            CHAT, [InputMediaPhoto(PNG, caption="x" * 1025), InputMediaPhoto(PNG)]
        )
    documents = await fake_telegram_bot.send_media_group(
        CHAT,
        [InputMediaDocument(b"a", filename="a.txt"), InputMediaDocument(b"b", filename="b.txt")],
    )
    assert [d.document.file_name for d in documents if d.document] == ["a.txt", "b.txt"]


async def test_voice_notes_and_audio_from_users(
    fake_telegram: FakeTelegram, fake_telegram_bot: telegram.Bot
) -> None:
    await fake_telegram.send_user_message(user_id=ALLOWED_USER_ID, voice=opus_voice_note())
    await fake_telegram.send_user_message(
        "a song", user_id=ALLOWED_USER_ID, audio=("song.mp3", b"ID3")
    )
    voice, audio = [u.message for u in await fake_telegram_bot.get_updates(timeout=0)][-2:]
    assert voice is not None and voice.voice is not None and voice.voice.mime_type == "audio/ogg"
    file = await voice.voice.get_file()
    assert bytes(await file.download_as_bytearray()) == opus_voice_note()
    assert audio is not None and audio.audio is not None
    assert (audio.audio.file_name, audio.caption) == ("song.mp3", "a song")


@pytest.fixture
async def uploads(fake_telegram_bot: telegram.Bot) -> AsyncIterator[tuple[Uploads, GoneTopics]]:
    outbox = Outbox(fake_telegram_bot, Limits(per_chat_interval_s=0.0))
    outbox.start()
    gone = GoneTopics()
    yield Uploads(outbox, CHAT, gone.report), gone
    await outbox.close(1.0)


async def test_uploads_fall_back_to_a_document_and_report_deleted_topics(
    fake_telegram: FakeTelegram,
    fake_telegram_bot: telegram.Bot,
    uploads: tuple[Uploads, GoneTopics],
) -> None:
    sender, gone = uploads
    thread = (await fake_telegram_bot.create_forum_topic(CHAT, "files")).message_thread_id
    fake_telegram.add_fault("sendPhoto", 400, "Bad Request: PHOTO_INVALID_DIMENSIONS")
    sent = await sender.send_file(thread, OutFile("wide.png", "image/png", PNG), "wide.png")
    assert sent.document is not None and sent.document.file_name == "wide.png"
    assert fake_telegram.file_bytes(fake_telegram.message(sent.message_id)) == PNG

    huge_photo = OutFile("huge.png", "image/png", b"\0" * (MAX_PHOTO_BYTES + 1))
    assert not huge_photo.is_photo  # over 10 MB: a document from the start
    images = [OutFile(f"{i}.png", "image/png", PNG + bytes([i])) for i in range(12)]
    await sender.send_images(thread, images, priority=Priority.FINAL)
    albums = [c for c in fake_telegram.calls("sendMediaGroup") if c.ok]
    assert [len(c.result) for c in albums] == [10, 2]
    captions = [m["caption"] for c in albums for m in c.result]
    assert captions == [f"{i}.png" for i in range(12)]

    await fake_telegram.delete_topic_by_user(thread)
    with pytest.raises(TopicGone):
        await sender.send_file(thread, OutFile("a.txt", "text/plain", b"a"))
    assert await asyncio.wait_for(gone.next(), 1) == thread
