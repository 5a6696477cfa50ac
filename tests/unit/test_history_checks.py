"""#14 item 2: the checks the history alone decides (deploy.drills.history_checks), on
synthetic histories: a clean one passes, and each anomaly kind is found where it is planted."""

from __future__ import annotations

from typing import Any

from deploy.drills.checker import operation_counts
from deploy.drills.history import Completion, Event, History, Invoke, Kind, Outcome, RoleSample
from deploy.drills.history_checks import history_anomalies, unavailability

CCRN = "1000000000000017"
PG_A, PG_B = "pg-A", "pg-B"


class Builder:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.n = 0

    def op(
        self,
        kind: Kind,
        start: float,
        end: float | None,
        outcome: Outcome = "ok",
        result: Any = None,
        *,
        node: str = "A",
        role: str = "active",
        key: str | None = None,
        account: int = 1,
    ) -> int:
        self.n += 1
        key = key if key is not None else f"k{self.n}"
        self.events.append(Invoke(self.n, self.n, account, kind, key, {}, start, 1e9 + start))
        if end is not None:
            self.events.append(Completion(self.n, outcome, end, 1e9 + end, result, 200, node, role))
        return self.n

    def sample(self, t: float, leader: str | None, revision: int, error: str | None = None) -> None:
        self.events.append(RoleSample(t, 1e9 + t, leader, revision, {}, error))

    def history(self) -> History:
        return History(sorted(self.events, key=lambda e: e.t))


def version(v: int, ccrn: str = CCRN) -> dict[str, Any]:
    return {"ccrn": ccrn, "version": v, "package_description": f"v{v}"}


def clean() -> Builder:
    """Submission, two sequential amendments, two concurrent ones, a batch, all under pg-A."""
    b = Builder()
    b.sample(0.0, PG_A, 10)
    b.op("submit", 0.1, 0.2, result=version(1))
    b.op("amend", 0.3, 0.4, result=version(2))
    b.op("amend", 0.5, 0.6, result=version(3))
    b.op("amend", 0.7, 1.0, result=version(5))  # concurrent pair: any order is linearizable
    b.op("amend", 0.8, 0.9, result=version(4))
    b.op("batch", 1.1, 1.2, result={"accepted": 1, "results": [{"index": 0, "ccrn": "2" * 16}]})
    b.op("amend", 1.3, 1.4, "fail", {"title": "Conflict"})
    b.op("bundle", 1.5, None)  # never completed: info
    b.sample(2.0, PG_A, 10)
    return b


def kinds(b: Builder) -> list[str]:
    found, _ = history_anomalies(b.history())
    return sorted(a.kind for a in found)


def test_clean_history_has_no_anomaly() -> None:
    """#14 item 2: a history where every promise holds yields no anomaly and no warning, and
    its operations are counted by kind and outcome."""
    found, warnings = history_anomalies(clean().history())
    assert found == []
    assert warnings == []
    counts = operation_counts(clean().history().operations())
    assert counts["amend"] == {"ok": 4, "fail": 1, "info": 0}
    assert counts["bundle"] == {"ok": 0, "fail": 0, "info": 1}


def test_same_key_with_two_answers_is_an_i2_anomaly() -> None:
    """#14 item 2 (I2): two acknowledged operations under one account's key with different
    answers; the same answer twice (a replay) is fine, and so is the same key of another
    account, and a `mode: manual` the client was told on top."""
    b = clean()
    b.op("submit", 3.0, 3.1, result=version(1, "3" * 16), key="dup")
    b.op("submit", 3.2, 3.3, result={**version(1, "3" * 16), "mode": "manual"}, key="dup")
    b.op("submit", 3.4, 3.5, result=version(1, "4" * 16), key="dup", account=2)
    assert kinds(b) == []
    b.op("submit", 3.6, 3.7, result=version(1, "5" * 16), key="dup")
    assert kinds(b) == ["key-answered-differently"]


def test_ack_by_the_site_not_holding_the_leader_key_is_an_i3_anomaly() -> None:
    """#14 item 2 (I3): site B acknowledged a write while samples before and after it show
    pg-A holding the leader key at one unchanged revision."""
    b = clean()
    b.sample(3.0, PG_A, 10)
    op = b.op("submit", 3.1, 3.2, result=version(1, "6" * 16), node="B")
    b.sample(3.5, PG_A, 10)
    found, _ = history_anomalies(b.history())
    assert [(a.kind, a.promise, a.op) for a in found] == [("ack-by-non-leader", "I3", op)]


def test_i3_flags_nothing_it_cannot_prove() -> None:
    """#14 item 2 (I3): a changed revision, an unknown leader, or no sample after the write
    proves nothing, so a write by B then is not flagged; B acknowledging while pg-B holds the
    key is normal."""
    for before, after in [
        ((PG_A, 10, None), (PG_A, 11, None)),  # someone took the lock in between
        ((PG_A, 10, None), (None, 0, "no quorum")),
        ((PG_B, 12, None), (PG_B, 12, None)),
    ]:
        b = Builder()
        b.sample(0.0, *before)
        b.op("submit", 0.1, 0.2, result=version(1), node="B")
        b.sample(0.3, *after)
        assert kinds(b) == []
    b = Builder()
    b.sample(0.0, PG_A, 10)
    b.op("submit", 0.1, 0.2, result=version(1), node="B")
    assert kinds(b) == []


def test_standby_role_header_on_an_ack_is_a_warning() -> None:
    """#14 item 2 (I3): a write acknowledged with the node's role header saying `standby` is
    reported as a warning naming the operation, not as an anomaly."""
    b = clean()
    op = b.op("submit", 3.0, 3.1, result=version(1, "7" * 16), role="standby")
    found, warnings = history_anomalies(b.history())
    assert found == []
    assert len(warnings) == 1
    assert f"op {op} " in warnings[0]


def test_version_acknowledged_twice_is_not_linearizable() -> None:
    """#14 item 2: two acknowledged amendments (different keys) of one consignment reporting
    the same version."""
    b = clean()
    b.op("amend", 3.0, 3.5, result=version(6))
    b.op("amend", 3.1, 3.4, result=version(6))
    assert kinds(b) == ["version-duplicated"]


def test_version_going_back_in_real_time_is_not_linearizable() -> None:
    """#14 item 2: an amendment invoked after another was acknowledged reports a lower (or the
    same) version; so does one invoked after the batch that acknowledged version 1."""
    b = clean()
    b.op("amend", 3.0, 3.1, result=version(7))
    op = b.op("amend", 3.2, 3.3, result=version(6))
    found, _ = history_anomalies(b.history())
    assert [(a.kind, a.op) for a in found] == [("version-not-increasing", op)]
    b = Builder()
    b.op("batch", 0.0, 0.1, result={"results": [{"index": 0, "ccrn": CCRN}]})
    b.op("amend", 0.2, 0.3, result=version(1))
    assert kinds(b) == ["version-duplicated", "version-not-increasing"]


def test_unavailability_windows() -> None:
    """#14 item 2: a stretch over the threshold with writes in flight and none acknowledged
    is a window (with the operations invoked in it and how many ended failed or unknown); an
    acknowledgement cuts it; a stretch with nothing in flight is none, however long."""
    b = Builder()
    b.op("submit", 0.0, 0.1, result=version(1))
    b.op("submit", 0.2, 5.0, "info")
    b.op("submit", 1.0, 1.2, "fail")
    b.op("submit", 3.0, 3.3, result=version(1, "8" * 16))
    b.op("submit", 10.0, 10.1, result=version(1, "9" * 16))  # 5.0 .. 10.0: nothing in flight
    b.op("submit", 20.0, 20.1, result=version(1, "1" * 16))
    windows = unavailability(b.history().operations(), gap_s=1.0)
    assert [(w.start, w.end, w.attempts, w.unresolved) for w in windows] == [
        (0.2, 3.3, 3, 1),
        (3.3, 5.0, 0, 1),
    ]
    assert round(windows[1].duration, 3) == 1.7
