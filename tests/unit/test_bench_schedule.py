"""#11 `make bench`: the open-loop schedule, and latency counted from the SCHEDULED send time
(no coordinated omission), with a fake clock."""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Awaitable
from typing import TypeVar

import pytest

from deploy.bench.schedule import (
    NO_ANSWER,
    Outcome,
    Phase,
    Second,
    Shot,
    build_schedule,
    first_clean_seconds,
    keep_schedule,
    recovery_seconds,
    share,
    summarize,
    timeline,
    unclean_seconds,
)

T = TypeVar("T")


def test_schedule_is_evenly_spaced_and_merged() -> None:
    """#11 target 2: 500/s and 200/s for 2 s are 1000 and 400 shots at fixed spacing, merged
    in time order with unique sequence numbers."""
    shots = build_schedule([Phase("s", 500, 0, 2), Phase("a", 200, 0, 2)])
    assert len(shots) == 1400
    assert [s.at for s in shots] == sorted(s.at for s in shots)
    assert len({s.seq for s in shots}) == 1400
    subs = [s.at for s in shots if s.kind == "s"]
    assert subs[:3] == pytest.approx([0.0, 0.002, 0.004])
    assert subs[-1] == pytest.approx(1.998)
    arrivals = [s.at for s in shots if s.kind == "a"]
    assert arrivals[1] - arrivals[0] == pytest.approx(0.005)


def test_phases_follow_each_other() -> None:
    """#11 target 3: an overload phase then a lower one starts where the first ends."""
    shots = build_schedule([Phase("s", 10, 0, 1), Phase("s", 2, 1, 2)])
    assert len(shots) == 14
    assert [s.at for s in shots[10:]] == pytest.approx([1.0, 1.5, 2.0, 2.5])
    assert build_schedule([Phase("s", 0, 0, 5), Phase("s", 5, 0, 0)]) == []


def test_shares_split_the_schedule_without_loss() -> None:
    """#11 bench: generator processes each take every n-th shot; together they are the whole
    schedule, each share still evenly spaced."""
    shots = build_schedule([Phase("s", 100, 0, 1)])
    parts = [share(shots, i, 3) for i in range(3)]
    assert sorted(s.seq for p in parts for s in p) == [s.seq for s in shots]
    assert parts[1][1].at - parts[1][0].at == pytest.approx(0.03)
    with pytest.raises(ValueError, match="worker"):
        share(shots, 3, 3)


class FakeClock:
    """Simulated time: sleepers wake in time order; time jumps to the next wake-up only when
    every task is waiting (so concurrent sleepers do not add their sleeps up)."""

    def __init__(self) -> None:
        self.now = 100.0
        self._wakes: list[tuple[float, int, asyncio.Future[None]]] = []
        self._n = 0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._n += 1
        heapq.heappush(self._wakes, (self.now + seconds, self._n, fut))
        await fut

    async def drive(self, main: Awaitable[T]) -> T:
        task = asyncio.ensure_future(main)
        while not task.done():
            for _ in range(20):  # let every runnable task reach its next wait
                await asyncio.sleep(0)
            if self._wakes and not task.done():
                at, _, fut = heapq.heappop(self._wakes)
                self.now = max(self.now, at)
                fut.set_result(None)
        return task.result()


async def test_latency_counts_from_the_scheduled_time_when_the_service_queues() -> None:
    """#11 target 2: a service that serves one request at a time, 1 s each, given shots every
    0.1 s: the open loop keeps sending on time and the latencies grow 1.0, 1.9, 2.8 s (what
    users would wait), where a closed loop would report 1 s each."""
    clock = FakeClock()
    busy = asyncio.Lock()

    async def send(shot: Shot) -> tuple[int, bool]:
        async with busy:
            await clock.sleep(1.0)
        return 201, False

    shots = build_schedule([Phase("s", 10, 0, 0.3)])
    out = await clock.drive(keep_schedule(shots, send, clock=clock, sleep=clock.sleep, start=100.0))
    assert [o.latency for o in out] == pytest.approx([1.0, 1.9, 2.8])
    assert [o.lag for o in out] == pytest.approx([0.0, 0.0, 0.0])


async def test_a_late_generator_adds_its_lag_to_the_latency() -> None:
    """#11 bench: when the generator itself wakes late, the request's latency still counts from
    its scheduled time and the lag is reported, so a slow generator cannot flatter the figures."""
    clock = FakeClock()

    async def oversleep(seconds: float) -> None:
        await clock.sleep(seconds + 0.05)  # every wake-up 50 ms late

    async def send(shot: Shot) -> tuple[int, bool]:
        await clock.sleep(0.01)
        return 201, False

    shots = build_schedule([Phase("s", 10, 0, 0.2)])
    out = await clock.drive(keep_schedule(shots, send, clock=clock, sleep=oversleep, start=100.5))
    assert [o.lag for o in out] == pytest.approx([0.05, 0.05])
    assert [o.latency for o in out] == pytest.approx([0.06, 0.06])


def _o(at: float, status: int, latency: float = 0.01, retry: bool = False) -> Outcome:
    return Outcome("s", at, 0.0, latency, status, retry)


def test_summary_counts_ok_shed_errors_and_rates() -> None:
    """#11 targets 2 and 3: 2xx latency only, 429/503 counted as shed (with Retry-After kept
    apart), every non-2xx by status, rates over the window."""
    outs = [
        _o(0.0, 201, 0.010),
        _o(0.1, 201, 0.030),
        _o(0.2, 503, 0.001, retry=True),
        _o(0.3, 429, 0.001),
        _o(0.4, 500),
        _o(0.5, NO_ANSWER),
    ]
    s = summarize(outs, 2.0)
    assert (s.offered, s.ok, s.shed, s.shed_with_retry_after) == (6, 2, 2, 1)
    assert s.errors == {"429": 1, "500": 1, "503": 1, "no answer": 1}
    assert s.offered_rate == 3.0
    assert s.achieved_rate == 1.0
    assert s.latency.p99 == pytest.approx(30.0)
    assert s.latency.count == 2
    late = summarize([_o(0.0, 201, 9.0), _o(1.0, 201, 9.0)], 2.0)
    assert late.achieved_rate == pytest.approx(0.2)  # 2 answers over the 10 s they took


def test_timeline_and_recovery() -> None:
    """#11 target 3: per scheduled second, offered/ok/shed and the p99 of the accepted; the
    recovery is the first second after the drop from which every second is served in time."""
    outs = [_o(0.5, 503), _o(0.6, 201, 2.0), _o(1.5, 201, 0.9), _o(2.5, 201, 0.1), _o(3.2, 201)]
    secs = timeline(outs)
    assert secs[0] == Second(0, 2, 1, 1, 0, 2000.0)
    assert [s.t for s in secs] == [0, 1, 2, 3]
    assert recovery_seconds(secs, 1.0, 250.0) == 1.0
    assert recovery_seconds(secs, 0.0, 5000.0) == 1.0  # second 0 shed one request
    assert recovery_seconds(secs, 3.0, 250.0) == 0.0
    assert recovery_seconds(secs[:2], 1.0, 250.0) is None
    relapse = [*secs, Second(4, 1, 0, 1, 0, 0.0), Second(5, 1, 1, 0, 0, 5.0)]
    assert recovery_seconds(relapse, 1.0, 250.0) == 4.0  # served again only from second 5


def test_first_clean_second_and_unclean_seconds_of_a_window() -> None:
    """#11 target 3: after the drop, the first clean second (all 2xx, p99 in limit) is found
    even when a later second relapses, and a window's unclean seconds are counted the same way
    before the overload and after the drop, so the two can be compared."""
    secs = [
        Second(0, 10, 10, 0, 0, 20.0),  # calm before: clean
        Second(1, 10, 9, 1, 0, 20.0),  # calm before: one shed
        Second(2, 30, 10, 20, 0, 240.0),  # overload
        Second(3, 10, 10, 0, 0, 300.0),  # after the drop: all served, too slow
        Second(4, 10, 10, 0, 0, 30.0),  # clean
        Second(5, 10, 8, 2, 0, 30.0),  # relapse
        Second(6, 10, 10, 0, 0, 30.0),
    ]
    assert first_clean_seconds(secs, 3.0, 250.0) == 1.0
    assert recovery_seconds(secs, 3.0, 250.0) == 3.0
    assert first_clean_seconds(secs[:4], 3.0, 250.0) is None
    assert unclean_seconds(secs, 0.0, 2.0, 250.0) == 1
    assert unclean_seconds(secs, 3.0, 7.0, 250.0) == 2
    assert unclean_seconds(secs, 3.0, 7.0, 500.0) == 1
