"""A tiny but well-formed OGG/Opus voice note (what Telegram sends as a voice message).

Three Ogg pages (RFC 3533): the OpusHead and OpusTags headers (RFC 7845) and one page with
20 ms of silence; each page has its CRC. Nothing in the tests decodes it; the mock transcription
server checks the container and the Opus identification header.
"""

from __future__ import annotations

import struct

OPUS_SILENCE_20MS = bytes([0xF8, 0xFF, 0xFE])  # TOC: CELT fullband 20 ms, one frame
SERIAL = 0x0C0FFEE0
_BOS, _EOS = 0x02, 0x04


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return table


_TABLE = _crc_table()


def ogg_crc(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _TABLE[((crc >> 24) & 0xFF) ^ byte]
    return crc


def ogg_page(packet: bytes, *, sequence: int, granule: int, flags: int = 0) -> bytes:
    segments = [255] * (len(packet) // 255) + [len(packet) % 255]
    header = struct.pack(
        "<4sBBqIIIB", b"OggS", 0, flags, granule, SERIAL, sequence, 0, len(segments)
    )
    page = header + bytes(segments) + packet
    crc = ogg_crc(page)
    return page[:22] + struct.pack("<I", crc) + page[26:]


def opus_voice_note() -> bytes:
    head = b"OpusHead" + struct.pack("<BBHIhB", 1, 1, 312, 48000, 0, 0)
    vendor = b"oc-outpost tests"
    tags = b"OpusTags" + struct.pack("<I", len(vendor)) + vendor + struct.pack("<I", 0)
    return (
        ogg_page(head, sequence=0, granule=0, flags=_BOS)
        + ogg_page(tags, sequence=1, granule=0)
        + ogg_page(OPUS_SILENCE_20MS, sequence=2, granule=312 + 960, flags=_EOS)
    )


def is_ogg_opus(data: bytes) -> bool:
    """The first page is a valid Ogg page (CRC included) carrying an OpusHead."""
    if not data.startswith(b"OggS") or len(data) < 27:
        return False
    count = data[26]
    body_start = 27 + count
    length = body_start + sum(data[27:body_start])
    page = data[:length]
    unsigned = page[:22] + b"\0\0\0\0" + page[26:]
    stored = struct.unpack("<I", page[22:26])[0]
    return stored == ogg_crc(unsigned) and page[body_start:].startswith(b"OpusHead")
