"""The bench's trucks (#11): plates no earlier run's open bundle holds."""

from __future__ import annotations

from deploy.bench.workload import bench_vrns
from kernel.domain.vrn import MAX_VRN_LENGTH, normalise_vrn


def test_bench_plates_are_distinct_valid_and_drawn_from_a_wide_space() -> None:
    """A set-up's plates are distinct, each a canonical VRN of 8 characters, and two set-ups
    share none: 36**7 plates each (a 2-byte tag per set-up, 65,536 of them, met a truck an
    earlier run left with a bundle in progress, and the set-up failed with 409)."""
    first, second = bench_vrns(1000), bench_vrns(1000)
    assert len(set(first)) == 1000
    for vrn in first:
        assert normalise_vrn(vrn) == vrn
        assert len(vrn) == MAX_VRN_LENGTH
    assert not set(first) & set(second)
    # Each plate random on its own, not a set-up's tag and a counter (then all 1000 would
    # share their first five characters, and a repeated tag repeats every plate).
    assert len({vrn[:5] for vrn in first}) > 900
    assert bench_vrns(0) == []
