"""A drill's compact timeline (monitoring.drill_results, #15 item 6): built from what a drill
measured, published with its record in etcd, bounded in size, and read back by nodes, with
records published before timelines existed still read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from deploy.drills.drill import Ack, Drill, DrillResult
from deploy.drills.publish import record_of
from deploy.state import DEFAULT_TOPOLOGY, StateDir
from deploy.topology import load_topology
from monitoring.drill_results import (
    MAX_BUCKETS,
    MAX_EVENT_CHARS,
    MAX_EVENTS,
    DrillRecord,
    DrillTimeline,
    build_timeline,
    read_results,
    with_result,
)

TOPO = load_topology(DEFAULT_TOPOLOGY)


def test_writes_are_counted_per_second() -> None:
    """#15 item 6: acknowledgements land in the second they happened; a call that met an
    error counts as retrying in every second it spanned; the fault and the gap are kept."""
    t = build_timeline(
        [0.2, 0.9, 1.1, 6.5],
        [(0.1, 0.2, False), (2.5, 6.5, True), (3.0, 3.4, True)],
        end_s=7.2,
        fault_s=2.0,
        gap=(1.1, 6.5),
    )
    assert t.step_s == 1
    assert t.ok == [2, 1, 0, 0, 0, 0, 1, 0]
    assert t.retrying == [0, 0, 1, 2, 1, 1, 1, 0]
    assert t.fault_s == 2.0
    assert t.gap == (1.1, 6.5)
    assert t.end_s == 8.0


def test_a_long_drill_gets_wider_buckets_not_more() -> None:
    """#15 item 6: at most MAX_BUCKETS buckets whatever the drill's length (the record stays
    small): a 10-minute drill counts per 5 s; nothing is lost at the edges."""
    acked = [i * 0.5 for i in range(1200)] + [599.99, 700.0]
    t = build_timeline(acked, [], end_s=600.0, fault_s=None, gap=None)
    assert t.step_s == 5
    assert len(t.ok) == MAX_BUCKETS
    assert sum(t.ok) == len(acked)  # a late acknowledgement lands in the last bucket


def test_events_are_few_short_and_not_per_request() -> None:
    """#15 item 6: "write failed" lines (one per failed request) are left out, texts are cut
    to MAX_EVENT_CHARS and at most MAX_EVENTS are kept."""
    events = [(1.0, "write failed: 503")] * 50 + [
        (float(i), f"event {i} " + "x" * 200) for i in range(20)
    ]
    t = build_timeline([], [], end_s=30, fault_s=None, gap=None, events=events)
    assert len(t.events) == MAX_EVENTS
    assert all(len(e.what) == MAX_EVENT_CHARS for e in t.events)
    assert not any(e.what.startswith("write failed") for e in t.events)


def test_a_timeline_must_be_consistent() -> None:
    """#15 item 6: one count per bucket in both series, no negative counts, a gap in order."""
    with pytest.raises(ValidationError):
        DrillTimeline(step_s=1, ok=[1, 2], retrying=[0])
    with pytest.raises(ValidationError):
        DrillTimeline(step_s=1, ok=[-1], retrying=[0])
    with pytest.raises(ValidationError):
        DrillTimeline(step_s=1, ok=[1], retrying=[0], gap=(5.0, 2.0))
    with pytest.raises(ValidationError):
        DrillTimeline(step_s=1, ok=[0] * (MAX_BUCKETS + 1), retrying=[0] * (MAX_BUCKETS + 1))


def _result_with_timeline() -> DrillResult:
    r = DrillResult("switchover", "A->B", "2030-01-07T08:00:00", rto_s=2.5, budget_s=10)
    r.timeline = build_timeline(
        [0.5, 1.5, 4.0],
        [(1.6, 4.0, True)],
        end_s=5.0,
        fault_s=1.6,
        gap=(1.5, 4.0),
        events=[(1.6, "fault injected: switchover")],
    ).model_dump()
    return r


def test_the_published_record_carries_the_timeline_and_stays_small() -> None:
    """#15 item 6: deploy.drills.publish puts the drill's timeline in its record; it reads
    back equal, and a record of a 90 s drill is about a kilobyte."""
    result = _result_with_timeline()
    raw = with_result(None, "switchover", record_of(result, 1_900_000_000.0))
    back = read_results(raw)["switchover"]
    assert back.timeline is not None
    assert back.timeline.model_dump() == result.timeline
    long = DrillResult("kill-node", "A->B", "2030-01-07T08:00:00", rto_s=21.0)
    long.timeline = build_timeline(
        [i * 0.05 for i in range(1800)],
        [(3.0, 24.0, True)] * 4,
        end_s=90.0,
        fault_s=3.0,
        gap=(3.0, 24.0),
        events=[(3.0 + i, "leader key: pg-A -> pg-B") for i in range(MAX_EVENTS)],
    ).model_dump()
    raw = with_result(raw, "kill-node", record_of(long, 1_900_000_100.0))
    size = len(json.dumps(json.loads(raw)["kill-node"]))
    assert 500 < size < 2000, size


def test_records_without_a_timeline_still_read_and_are_stored_as_before() -> None:
    """#15 item 6: a record published before timelines existed reads with timeline None, and
    merging another result does not add a `timeline` member to it; a malformed timeline is
    dropped, never its record (nor the other scenarios)."""
    old = {
        "kill-node": {
            "rto_seconds": None,
            "rpo_records": 1,
            "passed": False,
            "finished_at": 1.0,
            "direction": "B->A",
        },
        "switchover": {
            "rto_seconds": 2.0,
            "rpo_records": 0,
            "passed": True,
            "finished_at": 2.0,
            "timeline": {"step_s": 0, "ok": "lots"},
        },
    }
    results = read_results(json.dumps(old).encode())
    assert results["kill-node"].timeline is None
    assert results["switchover"].timeline is None
    assert results["switchover"].rto_seconds == 2.0
    raw = with_result(json.dumps(old).encode(), "partition", record_of(_result_with_timeline(), 3))
    stored = json.loads(raw)
    assert stored["kill-node"] == old["kill-node"]
    assert "timeline" not in stored["switchover"]
    assert "timeline" in stored["partition"]
    assert DrillRecord.model_validate(stored["partition"]).timeline is not None


def test_a_drill_records_its_timeline_from_what_it_measured(tmp_path: Path) -> None:
    """#15 item 6: the drill's acknowledgements and its client's calls become its result's
    timeline, the write gap being the RTO's window (from the last acknowledgement before the
    outage to the first after it) and the drill's events kept."""
    drill = Drill(TOPO, StateDir(tmp_path), scenario="switchover", direction="A->B", budget_s=10)
    drill.acks = [Ack(f"k{t}", f"C{t}", t - 0.01, t, "A", {}) for t in (0.5, 1.5, 2.0, 6.0, 6.5)]
    drill.result.fault_at = 2.1
    drill.event("fault injected: switchover")
    drill._rto()
    drill._timeline([(2.2, 6.0, True), (0.4, 0.5, False)])
    assert drill.result.rto_s == 4.0
    t = DrillTimeline.model_validate(drill.result.timeline)
    assert t.gap == (2.0, 6.0)
    assert t.fault_s == 2.1
    assert t.ok[:7] == [1, 1, 1, 0, 0, 0, 2]
    assert t.retrying[:7] == [0, 0, 1, 1, 1, 1, 1]
    assert [e.what for e in t.events] == [
        "fault injected: switchover",
        "first successful write after the outage",
    ]
