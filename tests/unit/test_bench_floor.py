"""The latency floor's verdicts (deploy.bench.floor) and its rows in the bench's table."""

from __future__ import annotations

from typing import Any

from deploy.bench import report
from deploy.bench.floor import Judged, highest_held, judge

HELD = Judged(True, ())
FAILED = Judged(False, ("arrival p99 12.0 ms > 10",))


def kind(p99: float, *, offered: int = 100, ok: int = 100) -> dict[str, Any]:
    return {"offered": offered, "ok": ok, "latency": {"p99": p99}}


def test_a_step_within_both_bounds_holds() -> None:
    """Submissions at 50 ms and arrivals at 10 ms, every request 2xx: target 2 held."""
    assert judge({"submission": kind(50.0), "arrival": kind(10.0)}) == HELD


def test_each_bound_broken_is_named() -> None:
    """A p99 over its bound fails the step, and the verdict says which kind and by how much."""
    verdict = judge({"submission": kind(50.1), "arrival": kind(12.0)})
    assert not verdict.held
    assert verdict.why_not == ("submission p99 50.1 ms > 50", "arrival p99 12.0 ms > 10")


def test_requests_not_answered_2xx_fail_a_fast_step() -> None:
    """Sheds or errors fail the step even when what was answered was fast: target 2 asks for no
    errors, and a service that refuses half its offer is not holding its latencies."""
    verdict = judge({"submission": kind(5.0, offered=100, ok=97), "arrival": kind(3.0)})
    assert verdict == Judged(False, ("3 not answered 2xx",))


def test_a_kind_with_no_answer_fails_rather_than_passing_empty() -> None:
    """A kind that got no 2xx (or was not offered) has no p99 to meet: not held."""
    assert judge({"submission": kind(5.0)}).why_not == ("no arrival answered",)
    assert judge({"submission": kind(5.0), "arrival": kind(0.0, ok=0)}).why_not == (
        "no arrival answered",
        "100 not answered 2xx",
    )


def test_highest_held_is_the_top_of_the_unbroken_run_from_below() -> None:
    """The largest fraction held with every smaller one held too, whatever order the steps
    come in; a step that held above a failed one does not count."""
    assert highest_held([(0.3, HELD), (0.1, HELD), (0.6, FAILED)]) == 0.3
    assert highest_held([(0.1, HELD), (0.3, FAILED), (0.6, HELD)]) == 0.1
    assert highest_held([(0.1, HELD), (0.3, HELD), (0.6, HELD)]) == 0.6


def test_highest_held_is_none_when_the_smallest_step_fails() -> None:
    """Not even a tenth of the offer within bounds: None, not the smallest fraction."""
    assert highest_held([(0.1, FAILED), (0.3, HELD)]) is None
    assert highest_held([]) is None


def _doc() -> dict[str, Any]:
    step = {
        "kinds": {
            "submission": kind(9.5),
            "arrival": {**kind(14.25), "latency": {"p50": 6.5, "p99": 14.25}},
        },
        "machine_busy_cores": 0.61,
    }
    return {
        "floor": {
            "commit": {
                "synchronous": {"p50": 0.74, "p99": 4.78},
                "local": {"p50": 0.47, "p99": 1.56},
            },
            "by_percent": {"10": step},
            "highest_held": 0.0,
        }
    }


def test_the_table_shows_the_commit_floor_and_each_step() -> None:
    """One row per commit figure and per step's figure, with target 2's bounds beside them."""
    text = report.table(_doc(), None)
    assert "commit alone, synchronous: p99 ms" in text
    assert "4.78" in text
    assert "commit alone, primary's flush only: p50 ms" in text
    (arrival,) = [ln for ln in text.splitlines() if ln.startswith("target 2 at 10%: arrival p99")]
    assert arrival.split()[-4:] == ["14.25", "-", "<=", "10"]  # this run, no previous, target
    assert "target 2's latencies held up to, share of its offer" in text


def test_a_run_without_the_floor_has_no_floor_rows() -> None:
    """The CI smoke of an older document (or a run that skipped it) shows no empty floor rows."""
    assert "commit alone" not in report.table({}, None)
    assert "target 2 at" not in report.table({}, None)
