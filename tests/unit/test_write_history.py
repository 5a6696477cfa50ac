"""The node's last hour of writes (monitoring.write_history, #15 item 6): a fixed ring of
10-second buckets fed once per answered write, read by the SRE page's plot."""

from __future__ import annotations

import pytest

from monitoring.write_history import BUCKET_S, LATENCY_BOUNDS, SPAN_S, WriteHistory


class Clock:
    def __init__(self, t: float = 1_900_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_outcomes_fall_in_ok_refused_and_failed() -> None:
    """#15 item 6: accepted and replayed writes are ok, the request's own faults refused,
    unavailable, error and cancelled failed; availability is ok / (ok + failed), so refusals
    do not lower it."""
    clock = Clock()
    h = WriteHistory(clock=clock)
    for outcome in ("accepted", "replayed", "accepted"):
        h.note(outcome, 0.004)
    for outcome in ("invalid", "denied", "not_found", "conflict", "rate_limited"):
        h.note(outcome, 0.001)
    for outcome in ("unavailable", "error", "cancelled"):
        h.note(outcome, 5.0)
    b = h.buckets()[-1]
    assert (b.ok, b.refused, b.failed) == (3, 5, 3)
    assert b.answered == 11
    assert b.availability == pytest.approx(0.5)


def test_latency_is_of_successful_writes_only() -> None:
    """#15 item 6: mean, max and p95 come from the ok writes (a 5 s timeout does not count as
    a latency); p95 is the histogram bound it falls under."""
    h = WriteHistory(clock=Clock())
    for _ in range(95):
        h.note("accepted", 0.004)
    for _ in range(5):
        h.note("accepted", 0.3)
    h.note("unavailable", 5.0)
    b = h.buckets()[-1]
    assert b.max_s == pytest.approx(0.3)
    assert b.mean_s == pytest.approx((95 * 0.004 + 5 * 0.3) / 100)
    assert b.p95_s == 0.005
    h.note("accepted", 0.3)  # one more slow write tips the 95th percentile over
    assert h.buckets()[-1].p95_s == 0.5
    h2 = WriteHistory(clock=Clock())
    h2.note("accepted", 60.0)  # beyond the last bound
    assert h2.buckets()[-1].p95_s == float("inf")
    assert tuple(sorted(LATENCY_BOUNDS)) == LATENCY_BOUNDS


def test_the_ring_covers_the_last_hour_oldest_first() -> None:
    """#15 item 6: one bucket per 10 s over the last hour, the current one last; empty ones
    have no counts and no latencies; a bucket an hour old is reused, not added to."""
    clock = Clock(1_900_000_000.0)
    h = WriteHistory(clock=clock)
    h.note("accepted", 0.01)
    first = h.buckets()
    assert len(first) == SPAN_S // BUCKET_S
    assert first[-1].start == 1_900_000_000.0
    assert [b.start for b in first] == sorted(b.start for b in first)
    assert first[-2].ok == 0
    assert first[-2].mean_s is None
    assert first[-2].availability is None
    clock.t += 30
    h.note("unavailable", 1.0)
    later = h.buckets()
    assert later[-1].failed == 1
    assert later[-4].ok == 1  # 30 s ago
    clock.t += SPAN_S - 30  # exactly an hour after the first write: same slot, new bucket
    h.note("accepted", 0.02)
    hour = h.buckets()
    assert hour[-1].ok == 1
    assert hour[-1].mean_s == pytest.approx(0.02)
    assert sum(b.ok for b in hour) == 1  # the first write fell out of the window
    assert sum(b.failed for b in hour) == 1


def test_a_silent_hour_reads_as_empty() -> None:
    """#15 item 6: buckets left from more than an hour ago are not shown as current."""
    clock = Clock()
    h = WriteHistory(clock=clock)
    h.note("accepted", 0.01)
    clock.t += 2 * SPAN_S
    assert all(b.answered == 0 for b in h.buckets())


def test_bucket_sizes_are_checked() -> None:
    """A ring needs positive buckets no longer than its span."""
    with pytest.raises(ValueError, match="bucket_s"):
        WriteHistory(bucket_s=0)
    with pytest.raises(ValueError, match="bucket_s"):
        WriteHistory(bucket_s=60, span_s=30)
