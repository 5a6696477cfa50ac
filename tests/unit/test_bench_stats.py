"""#11 `make bench`: the pure statistics (percentiles, medians, ratio, comparison)."""

from __future__ import annotations

import pytest

from deploy.bench.stats import Latency, compare, lookup, median, percentile, ratio


def test_percentile_is_nearest_rank() -> None:
    """#11 bench: p50/p99 are values some request really had (nearest rank), not blends."""
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(values, 0) == 1
    assert percentile([7.0], 99) == 7
    assert percentile([float(v) for v in range(1, 11)], 25) == 3  # rank ceil(2.5)
    assert percentile([1.0, 2.0, 3.0, 1000.0], 99) == 1000


def test_percentile_of_nothing_and_out_of_range() -> None:
    """#11 bench: no values gives 0; a percentile outside 0..100 is refused."""
    assert percentile([], 99) == 0.0
    with pytest.raises(ValueError, match=r"0\.\.100"):
        percentile([1.0], 101)


def test_latency_summary_in_milliseconds() -> None:
    """#11 bench: latencies given in seconds are summarised in ms, unsorted input accepted."""
    lat = Latency.of([0.003, 0.001, 0.002, 0.010])
    assert lat == Latency(count=4, p50=2.0, p90=10.0, p99=10.0, max=10.0)
    assert Latency.of([]) == Latency(0, 0.0, 0.0, 0.0, 0.0)


def test_median_and_ratio() -> None:
    """#11 target 1: the ratio is the median API rate over the median pgbench rate; no ratio
    when pgbench measured nothing."""
    assert median([300.0, 900.0, 360.0]) == 360.0
    assert ratio(364.0, 1917.0) == pytest.approx(0.19, abs=0.001)
    assert ratio(1.0, 0.0) is None


def test_lookup_dotted_paths() -> None:
    """#11 bench: figures are found by dotted path; missing or non-numeric ones are None."""
    doc = {"a": {"b": {"c": 3}}, "flag": True, "s": "x"}
    assert lookup(doc, "a.b.c") == 3.0
    assert lookup(doc, "a.b.x") is None
    assert lookup(doc, "flag") is None
    assert lookup(doc, "s") is None


def test_compare_says_better_or_worse_by_direction() -> None:
    """#11 bench: the comparison with the previous run knows which way is better."""
    prev = {"rps": 100.0, "p99": 50.0, "same": 1.0, "gone": 3.0}
    cur = {"rps": 150.0, "p99": 80.0, "same": 1.0}
    changes = compare(prev, cur, [("rps", True), ("p99", False), ("same", True), ("gone", True)])
    by = {c.path: c for c in changes}
    assert set(by) == {"rps", "p99", "same"}
    assert by["rps"].better is True
    assert by["rps"].relative == pytest.approx(0.5)
    assert by["p99"].better is False
    assert by["same"].better is None
    assert by["p99"].to_dict()["relative"] == pytest.approx(0.6)
