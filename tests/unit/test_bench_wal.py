"""The closed loop's WAL figures (#11): what each round wrote per request, so a round in a
checkpoint's wake (full-page images, a slower round) is told apart from the others."""

from __future__ import annotations

import pytest

from deploy.bench import report
from deploy.bench.closedloop import ClosedLoop, LoopResult
from deploy.bench.runner import _wal_text
from deploy.bench.stats import COMPARED, Latency, compare
from deploy.bench.wal import KiB, WalUse, summary


def _lr(rate: float) -> LoopResult:
    return LoopResult(rate, Latency(1, 1.0, 1.0, 1.0, 1.0), {}, 0, 0.0, 1.0)


def test_a_runs_use_is_the_positions_difference_per_request() -> None:
    """The bytes between two WAL positions, in KiB per answered request; a run that answered
    nothing divides by one rather than failing."""
    before = 1_000_000
    after = before + 14 * KiB * 1000
    assert WalUse.between(before, after, 1000).kib_per_request == pytest.approx(14.0)
    assert WalUse.between(before, after, 0).kib_per_request == pytest.approx(14_000.0)


def test_summary_keeps_the_median_the_worst_round_and_every_round() -> None:
    """The table's figure is the median over rounds, and the most in any one round (the round
    that ran after a checkpoint); the rounds themselves stay in the JSON."""
    s = summary([WalUse(14.4), WalUse(3.5), WalUse(3.4)])
    assert s["kib_per_request"] == 3.5
    assert s["kib_per_request_max"] == 14.4
    assert [r["kib_per_request"] for r in s["runs"]] == [14.4, 3.5, 3.4]
    assert summary([]) == {}


def test_the_closed_loop_reports_both_sides() -> None:
    """The closed loop's document carries the API's and pgbench's WAL figures; without
    readings, none."""
    cl = ClosedLoop(
        [_lr(900), _lr(1000)],
        [_lr(1800), _lr(2000)],
        api_wal=[WalUse(14.0), WalUse(3.4)],
        pgbench_wal=[WalUse(3.8), WalUse(3.9)],
    )
    w = cl.to_dict()["wal"]
    assert w["api"]["kib_per_request_max"] == 14.0
    assert w["pgbench"]["kib_per_request"] == pytest.approx(3.85)
    assert ClosedLoop([_lr(1)], [_lr(2)]).to_dict()["wal"] == {}


def test_each_rounds_progress_line_says_its_wal_per_request() -> None:
    """A round's progress line ends with what it wrote per request."""
    assert _wal_text(WalUse(14.44)) == ", 14.4 KiB of WAL each"


def test_the_table_shows_wal_per_request() -> None:
    """The table has rows for each side's WAL per request and the API's worst round."""
    doc = {
        "closed_loop": ClosedLoop(
            [_lr(900), _lr(1000)],
            [_lr(1800)],
            api_wal=[WalUse(14.4), WalUse(3.4)],
            pgbench_wal=[WalUse(3.8)],
        ).to_dict()
    }
    lines = {ln.split("  ")[0]: ln for ln in report.table(doc, None).splitlines()}
    assert "8.90" in lines["closed loop: API WAL KiB per request (median)"]
    assert "3.80" in lines["closed loop: pgbench WAL KiB per tx (median)"]
    assert "14.40" in lines["closed loop: API WAL KiB per request, most in a round"]


def test_the_next_run_compares_the_apis_wal_per_request_lower_is_better() -> None:
    """A run compares its API WAL per submission with the previous run's: less is better (a
    run in a checkpoint's wake, or a database grown past what an interval touches, writes
    more); a previous run without the figure compares nothing for it."""
    before = {"closed_loop": ClosedLoop([_lr(1)], [_lr(2)], api_wal=[WalUse(14.4)]).to_dict()}
    after = {"closed_loop": ClosedLoop([_lr(1)], [_lr(2)], api_wal=[WalUse(3.6)]).to_dict()}
    (change,) = [c for c in compare(before, after, COMPARED) if "wal" in c.path]
    assert change.path == "closed_loop.wal.api.kib_per_request"
    assert change.better is True
    assert not [c for c in compare({"closed_loop": {}}, after, COMPARED) if "wal" in c.path]
