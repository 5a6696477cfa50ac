"""#14 item 2: the operation history: what each client call is recorded as (ok / fail / info,
with the answering node and role), and the JSON Lines round trip."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from deploy.drills.history import Completion, History, Invoke, RoleSample
from node.client import ApiError, ClientError, Response, Unavailable


def _history() -> History:
    ticks = itertools.count()
    return History(clock=lambda: float(next(ticks)), wall=lambda: 1_700_000_000.0)


async def _ok() -> Response:
    return Response(
        201,
        {"x-rocars-node": "B", "x-rocars-role": "active"},  # as HAProxy passes them on
        {"ccrn": "1234567890123456", "version": 1},
        None,
    )


async def _conflict() -> Response:
    raise ApiError(409, {"title": "Conflict"}, {"X-Rocars-Node": "A", "X-Rocars-Role": "active"})


async def _server_error() -> Response:
    raise ApiError(500, {"title": "Internal Server Error"}, {"X-Rocars-Node": "A"})


async def _gave_up() -> Response:
    raise Unavailable("POST /v1/consignments: gave up after 9 attempts")


async def _broken() -> Response:
    raise ClientError("POST /v1/consignments: connection reset")


async def test_ok_answer_is_recorded_with_node_and_role() -> None:
    """#14 item 2: a 2xx is `ok`, with its body, status, the answering site (X-Rocars-Node)
    and that node's role (X-Rocars-Role), header names in any case, after an invoke holding
    the input and the key."""
    h = _history()
    done = await h.call(3, 42, "submit", "k1", {"package_count": 1}, _ok)
    assert done.type == "ok"
    assert done.node == "B"
    assert done.role == "active"
    (op,) = h.operations()
    assert op.invoke == Invoke(1, 3, 42, "submit", "k1", {"package_count": 1}, 0.0, 1.7e9)
    assert op.type == "ok"
    assert op.result["ccrn"] == "1234567890123456"
    assert op.end == 1.0


@pytest.mark.parametrize(
    ("send", "outcome"),
    [(_conflict, "fail"), (_server_error, "info"), (_gave_up, "info"), (_broken, "info")],
)
async def test_only_a_4xx_is_a_definite_failure(send: object, outcome: str) -> None:
    """#14 item 2: a 4xx refusal is `fail` (nothing was written); a 5xx, giving up on retries
    or a broken connection leave the outcome unknown: `info`."""
    h = _history()
    done = await h.call(1, 1, "amend", "k", {}, send)  # type: ignore[arg-type]
    assert done.type == outcome


async def test_an_operation_never_completed_counts_as_info() -> None:
    """#14 item 2: an invoke without completion (the recorder was cancelled) is `info`, open
    until the end of time."""
    h = _history()
    h.invoke(1, 1, "bundle", "k", {"vrn": "AB1"})
    (op,) = h.operations()
    assert op.type == "info"
    assert op.completion is None
    assert op.end == float("inf")


async def test_json_lines_round_trip(tmp_path: Path) -> None:
    """#14 item 2: a saved history loads back event for event (invokes, completions, role
    samples), one JSON document a line, and keeps numbering new operations after the last."""
    h = _history()
    h.sample("pg-A", 7, {"A": "active", "B": "standby"})
    await h.call(1, 5, "submit", "k1", {"n": 1}, _ok)
    await h.call(2, 5, "amend", "k2", {"ccrn": "x"}, _conflict)
    h.invoke(3, 6, "arrival", "k3", {"vrn": "AB1"})
    h.sample(None, 0, error="no quorum")
    path = h.save(tmp_path / "run" / "history.jsonl")
    assert len(path.read_text().splitlines()) == len(h.events) == 7
    back = History.load(path)
    assert back.events == h.events
    assert [type(e) for e in back.events] == [
        RoleSample, Invoke, Completion, Invoke, Completion, Invoke, RoleSample
    ]  # fmt: skip
    assert back.invoke(1, 1, "submit", "k4", {}) == 4
