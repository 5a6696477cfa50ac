"""The closed loop's WAL figures (#11): what each round wrote per request, so a round in a
checkpoint's wake (page images, a slower round) is told apart from the others."""

from __future__ import annotations

import pytest

from deploy.bench import report
from deploy.bench.closedloop import ClosedLoop, LoopResult
from deploy.bench.runner import _images
from deploy.bench.stats import COMPARED, Latency, compare
from deploy.bench.wal import KiB, WalCounters, WalUse, summary


def _lr(rate: float) -> LoopResult:
    return LoopResult(rate, Latency(1, 1.0, 1.0, 1.0, 1.0), {}, 0, 0.0, 1.0)


def test_a_runs_use_is_the_counters_difference_per_request() -> None:
    """Bytes (in KiB), page images and checkpoints between two readings, per answered
    request; a run that answered nothing divides by one rather than failing."""
    before = WalCounters(bytes=1_000_000, page_images=50, checkpoints=7)
    after = WalCounters(bytes=1_000_000 + 14 * KiB * 1000, page_images=2050, checkpoints=8)
    use = WalUse.between(before, after, 1000)
    assert use.kib_per_request == pytest.approx(14.0)
    assert use.page_images_per_request == pytest.approx(2.0)
    assert use.checkpoints == 1
    assert WalUse.between(before, after, 0).page_images_per_request == 2000


def test_summary_keeps_medians_the_worst_round_and_every_round() -> None:
    """The table's figures are medians over rounds, and the most page images in any one round
    (the round that ran after a checkpoint); the rounds themselves stay in the JSON."""
    runs = [WalUse(14.4, 1.96, 0), WalUse(3.5, 0.01, 0), WalUse(3.4, 0.0, 1)]
    s = summary(runs)
    assert s["kib_per_request"] == 3.5
    assert s["page_images_per_request"] == 0.01
    assert s["page_images_per_request_max"] == 1.96
    assert [r["kib_per_request"] for r in s["runs"]] == [14.4, 3.5, 3.4]
    assert summary([]) == {}


def test_the_closed_loop_reports_both_sides_and_the_checkpoints_of_all_rounds() -> None:
    """The closed loop's document carries the API's and pgbench's WAL figures and counts the
    checkpoints of every round, the API's and pgbench's together; without readings, none."""
    cl = ClosedLoop(
        [_lr(900), _lr(1000)],
        [_lr(1800), _lr(2000)],
        api_wal=[WalUse(14.0, 2.0, 0), WalUse(3.4, 0.0, 1)],
        pgbench_wal=[WalUse(3.8, 0.0, 1), WalUse(3.9, 0.0, 0)],
    )
    w = cl.to_dict()["wal"]
    assert w["api"]["page_images_per_request_max"] == 2.0
    assert w["pgbench"]["kib_per_request"] == pytest.approx(3.85)
    assert w["checkpoints"] == 2
    assert ClosedLoop([_lr(1)], [_lr(2)]).to_dict()["wal"] == {}


def test_a_round_after_a_checkpoint_says_so_and_a_calm_one_says_nothing() -> None:
    """The progress line of a round with a tenth of a page image per request or more names
    them; the others stay as they were."""
    assert _images(WalUse(3.4, 0.02, 0)) == ""
    assert "1.96 page images per request" in _images(WalUse(14.4, 1.96, 0))


def test_the_table_shows_wal_per_request_and_the_checkpoints() -> None:
    """The table has rows for each side's WAL per request, the worst round's page images and
    the checkpoints counted during the closed loop."""
    doc = {
        "closed_loop": ClosedLoop(
            [_lr(900)],
            [_lr(1800)],
            api_wal=[WalUse(14.4, 1.96, 1)],
            pgbench_wal=[WalUse(3.8, 0.0, 0)],
        ).to_dict()
    }
    lines = {ln.split("  ")[0]: ln for ln in report.table(doc, None).splitlines()}
    assert "14.40" in lines["closed loop: API WAL KiB per request (median)"]
    assert "3.80" in lines["closed loop: pgbench WAL KiB per tx (median)"]
    assert "1.96" in lines["closed loop: API page images per request, most in a round"]
    assert lines["closed loop: checkpoints counted meanwhile"].split()[5] == "1"


def test_the_next_run_compares_the_apis_wal_per_request_lower_is_better() -> None:
    """A run compares its API WAL per submission with the previous run's: less is better (a
    run in a checkpoint's wake, or a database grown past what an interval touches, writes
    more); a previous run without the figure compares nothing for it."""
    before = {
        "closed_loop": ClosedLoop([_lr(1)], [_lr(2)], api_wal=[WalUse(14.4, 2.0, 0)]).to_dict()
    }
    after = {"closed_loop": ClosedLoop([_lr(1)], [_lr(2)], api_wal=[WalUse(3.6, 0.0, 0)]).to_dict()}
    (change,) = [c for c in compare(before, after, COMPARED) if "wal" in c.path]
    assert change.path == "closed_loop.wal.api.kib_per_request"
    assert change.better is True
    assert not [c for c in compare({"closed_loop": {}}, after, COMPARED) if "wal" in c.path]
