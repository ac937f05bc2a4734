"""Messages of one person in one topic that arrive together become one prompt."""

from __future__ import annotations

import asyncio

import pytest

from oc_outpost.core.chat import Attachment
from oc_outpost.telegram.coalesce import CoalesceConfig, Coalescer, Piece, ready


class ManualTime:
    """A clock and a sleep that only move when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + seconds, future))
        await future

    async def advance(self, seconds: float) -> None:
        self.now += seconds
        for entry in list(self._sleepers):
            if entry[0] <= self.now:
                self._sleepers.remove(entry)
                entry[1].set_result(None)
        for _ in range(10):  # let the woken tasks run
            await asyncio.sleep(0)


@pytest.fixture
def time_() -> ManualTime:
    return ManualTime()


def collector(time_: ManualTime, **config: float) -> tuple[Coalescer, list[tuple[int, Piece]]]:
    delivered: list[tuple[int, Piece]] = []

    async def deliver(topic: int, prompt: Piece) -> None:
        delivered.append((topic, prompt))

    coalescer = Coalescer(deliver, CoalesceConfig(**config), clock=time_.clock, sleep=time_.sleep)
    return coalescer, delivered


def file(name: str) -> Attachment:
    return Attachment(name, "image/jpeg", b"x")


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_an_album_and_its_caption_become_one_prompt_in_message_order(
    time_: ManualTime,
) -> None:
    coalescer, delivered = collector(time_, window_s=1.0)
    downloading: asyncio.Future[Piece | None] = asyncio.get_running_loop().create_future()
    adds = [
        asyncio.create_task(coalescer.add(7, 1, 11, ready(Piece("look at these", (file("a"),))))),
        asyncio.create_task(coalescer.add(7, 1, 12, downloading)),
        asyncio.create_task(coalescer.add(7, 1, 13, ready(Piece("", (file("c"),))))),
    ]
    await settle()
    await time_.advance(0.5)
    assert not delivered
    await time_.advance(0.6)  # quiet for 1 s, but one picture is still downloading
    assert not delivered
    downloading.set_result(Piece("", (file("b"),)))
    await asyncio.gather(*adds)
    [(topic, prompt)] = delivered
    assert topic == 7
    assert prompt.text == "look at these"
    assert [a.filename for a in prompt.attachments] == ["a", "b", "c"]


async def test_quick_messages_join_with_a_blank_line_and_a_later_one_is_a_new_prompt(
    time_: ManualTime,
) -> None:
    coalescer, delivered = collector(time_, window_s=1.0)
    first = asyncio.create_task(coalescer.add(7, 1, 20, ready(Piece("part two"))))
    await settle()
    await time_.advance(0.8)
    second = asyncio.create_task(coalescer.add(7, 1, 19, ready(Piece("part one"))))
    await settle()
    await time_.advance(0.8)  # 1.6 s after the first, 0.8 s after the second: still open
    assert not delivered
    await time_.advance(0.3)
    await asyncio.gather(first, second)
    assert [p.text for _, p in delivered] == ["part one\n\npart two"]
    later = asyncio.create_task(coalescer.add(7, 1, 21, ready(Piece("afterthought"))))
    await settle()
    await time_.advance(1.0)
    await later
    assert [p.text for _, p in delivered] == ["part one\n\npart two", "afterthought"]


async def test_people_and_topics_are_never_mixed(time_: ManualTime) -> None:
    coalescer, delivered = collector(time_, window_s=1.0)
    adds = [
        asyncio.create_task(coalescer.add(7, 1, 1, ready(Piece("alice in 7")))),
        asyncio.create_task(coalescer.add(7, 2, 2, ready(Piece("bob in 7")))),
        asyncio.create_task(coalescer.add(8, 1, 3, ready(Piece("alice in 8")))),
    ]
    await settle()
    await time_.advance(1.0)
    await asyncio.gather(*adds)
    assert sorted((t, p.text) for t, p in delivered) == [
        (7, "alice in 7"),
        (7, "bob in 7"),
        (8, "alice in 8"),
    ]


async def test_a_stream_of_messages_is_cut_after_max_wait(time_: ManualTime) -> None:
    coalescer, delivered = collector(time_, window_s=1.0, max_wait_s=3.0)
    adds = []
    for index in range(6):
        adds.append(asyncio.create_task(coalescer.add(7, 1, index, ready(Piece(f"m{index}")))))
        await settle()
        await time_.advance(0.7)
    await time_.advance(1.0)
    await asyncio.gather(*adds)
    assert [p.text.split("\n\n") for _, p in delivered] == [
        ["m0", "m1", "m2", "m3", "m4"],
        ["m5"],
    ]


async def test_a_refused_piece_adds_nothing_and_a_failing_one_is_raised_once(
    time_: ManualTime,
) -> None:
    coalescer, delivered = collector(time_, window_s=1.0)

    async def broken() -> Piece | None:
        raise RuntimeError("download failed")

    leader = asyncio.create_task(coalescer.add(7, 1, 1, ready(Piece("kept"))))
    await settle()
    follower = asyncio.create_task(coalescer.add(7, 1, 2, broken()))
    refused = asyncio.create_task(coalescer.add(7, 1, 3, ready_none()))
    await settle()
    await time_.advance(1.0)
    with pytest.raises(RuntimeError, match="download failed"):
        await leader
    await follower  # the followers only wait; the failure is reported once, by the leader
    await refused
    assert [p.text for _, p in delivered] == ["kept"]


async def ready_none() -> Piece | None:
    return None


async def test_followers_are_released_when_the_leader_is_cancelled(time_: ManualTime) -> None:
    coalescer, delivered = collector(time_, window_s=1.0)
    leader = asyncio.create_task(coalescer.add(7, 1, 1, ready(Piece("one"))))
    await settle()
    follower = asyncio.create_task(coalescer.add(7, 1, 2, ready(Piece("two"))))
    await settle()
    leader.cancel()
    await asyncio.wait_for(follower, 1.0)
    assert leader.cancelled() and not delivered
