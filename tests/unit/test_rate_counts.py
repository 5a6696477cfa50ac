"""node.rate_counts: concurrent rate-limit counts share one Redis call and each still gets the
count it would have had alone (#11 target 1)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from node.rate_counts import CountBatcher, CountGroup


class FakeRedis:
    """Counters in a dict; each call can be held open until the test releases it."""

    def __init__(self) -> None:
        self.counters: dict[str, int] = {"prev-a": 7}
        self.calls: list[list[CountGroup]] = []
        self.hold = asyncio.Event()
        self.hold.set()
        self.fail_next: Exception | None = None
        self._changed = asyncio.Condition()

    async def calls_made(self, n: int) -> None:
        async with asyncio.timeout(2.0), self._changed:
            await self._changed.wait_for(lambda: len(self.calls) >= n)

    async def send(self, groups: Sequence[CountGroup]) -> list[tuple[int, int]]:
        self.calls.append(list(groups))
        async with self._changed:
            self._changed.notify_all()
        await self.hold.wait()
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        out = []
        for g in groups:
            self.counters[g.current_key] = self.counters.get(g.current_key, 0) + g.cost
            out.append((self.counters[g.current_key], self.counters.get(g.previous_key, 0)))
        return out


async def test_a_lone_request_is_counted_at_once_in_its_own_call() -> None:
    """At low load nothing waits: one request, one call, its own count and the previous one."""
    redis = FakeRedis()
    batcher = CountBatcher(redis.send, deadline_s=1.0)
    assert await batcher.count("cur-a", "prev-a", 1) == (1, 7)
    assert batcher.calls == 1


async def test_requests_arriving_during_a_call_share_the_next_one_in_arrival_order() -> None:
    """While a call is out, later requests of two accounts queue; one call then carries both
    counters, and each request gets the count it would have had counted alone, in order."""
    redis = FakeRedis()
    redis.hold.clear()
    batcher = CountBatcher(redis.send, deadline_s=1.0)
    first = asyncio.create_task(batcher.count("cur-a", "prev-a", 1))
    await redis.calls_made(1)
    later = [
        asyncio.create_task(batcher.count(key, prev, cost))
        for key, prev, cost in [
            ("cur-a", "prev-a", 1),
            ("cur-b", "prev-b", 3),
            ("cur-a", "prev-a", 5),
            ("cur-b", "prev-b", 1),
        ]
    ]
    await asyncio.sleep(0)
    redis.hold.set()
    assert await first == (1, 7)
    assert [await t for t in later] == [(2, 7), (3, 0), (7, 7), (4, 0)]
    assert len(redis.calls) == 2
    assert redis.calls[1] == [CountGroup("cur-a", "prev-a", 6), CountGroup("cur-b", "prev-b", 4)]


async def test_a_failed_call_fails_every_request_it_carried_and_the_next_call_works() -> None:
    """Redis failing a call fails each request in it with that error (the caller fails open);
    requests after it are counted in a new call."""
    redis = FakeRedis()
    redis.fail_next = ConnectionError("primary gone")
    batcher = CountBatcher(redis.send, deadline_s=1.0)
    results = await asyncio.gather(
        batcher.count("cur-a", "prev-a", 1),
        batcher.count("cur-b", "prev-b", 1),
        return_exceptions=True,
    )
    assert all(isinstance(r, ConnectionError) for r in results)
    assert await batcher.count("cur-a", "prev-a", 1) == (1, 7)


async def test_a_silent_redis_times_out_the_call_and_does_not_hold_later_requests() -> None:
    """A call that never answers ends at the deadline with TimeoutError for its requests; the
    requests queued behind it go out in the next call."""
    redis = FakeRedis()
    redis.hold.clear()
    batcher = CountBatcher(redis.send, deadline_s=0.05)
    stuck = asyncio.create_task(batcher.count("cur-a", "prev-a", 1))
    await redis.calls_made(1)
    behind = asyncio.create_task(batcher.count("cur-a", "prev-a", 1))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(stuck, 1.0)  # the batcher's own deadline must end it first
    await redis.calls_made(2)
    redis.hold.set()
    assert await behind == (1, 7)


async def test_a_request_that_gave_up_does_not_disturb_the_others() -> None:
    """A request cancelled while it waits (its own deadline) is skipped; the others of its
    call still get their counts, which include its cost (it was sent)."""
    redis = FakeRedis()
    redis.hold.clear()
    batcher = CountBatcher(redis.send, deadline_s=1.0)
    first = asyncio.create_task(batcher.count("cur-a", "prev-a", 1))
    await redis.calls_made(1)
    quitter = asyncio.create_task(batcher.count("cur-a", "prev-a", 1))
    stayer = asyncio.create_task(batcher.count("cur-a", "prev-a", 1))
    await asyncio.sleep(0)
    quitter.cancel()
    redis.hold.set()
    assert await first == (1, 7)
    assert await stayer == (3, 7)
    assert quitter.cancelled()
