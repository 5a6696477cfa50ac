"""#14 item 3: the history checker (deploy.drills.checker) takes a manual clearance's
Idempotency-Key for what it is: the name of the record's UUID (node.api.contingency), not an
idempotency record, so it neither looks for one nor flags one missing; the clearance itself is
still checked by its UUID."""

from __future__ import annotations

from typing import Any

from deploy.drills.checker import _rows
from deploy.drills.history import Completion, History, Invoke, Kind, Outcome

UID = "6f1f5d3e-5b0e-4c52-9a57-0c4b3f0e8a21"


def _op(n: int, kind: Kind, outcome: Outcome, inp: dict[str, Any], result: Any) -> list[Any]:
    return [
        Invoke(n, 1, 7, kind, f"wl-{n}", inp, float(n), 1e9 + n),
        Completion(n, outcome, n + 0.5, 1e9 + n + 0.5, result, 200, "A", "active"),
    ]


def test_clearance_keys_are_not_idempotency_records() -> None:
    """#14 item 3: an acknowledged clearance under a key is checked as a clearance (its UUID,
    VRN and decision) and adds no idempotency record to look for; a refused one adds no
    "refused with a record" check; other writes' keys are still checked."""
    clearance = {"vrn": "AB1", "decision": "release"}
    events = [
        *_op(1, "clearance", "ok", clearance, {"uuid": UID, "stored": "database"}),
        *_op(2, "clearance", "fail", clearance, {"title": "Unprocessable Content"}),
        *_op(
            3,
            "arrival",
            "ok",
            {"vrn": "CD2"},
            {
                "lbcp": "LMC",
                "vrn": "CD2",
                "at": "2026-01-01T00:00:00+00:00",
                "decision": "release",
                "until": "x",
            },
        ),
        *_op(4, "arrival", "fail", {"vrn": "CD3"}, {"title": "Unprocessable Content"}),
    ]
    rows = _rows(History(events).operations())
    assert rows["chk_clearances"] == [(1, UID, "AB1", "release")]
    assert [r[0] for r in rows["chk_records"]] == [3]
    assert [r[0] for r in rows["chk_refused"]] == [4]
