"""Pre-checks of a planned switchover: only to a streaming, in-sync, zero-lag standby."""

from __future__ import annotations

import copy
from typing import Any

from deploy.failover_ops import precheck

HEALTHY: dict[str, Any] = {
    "postgres": {
        "leader": "pg-A",
        "paused": False,
        "members": [
            {"name": "pg-A", "role": "leader", "state": "running", "lag_bytes": 0},
            {"name": "pg-B", "role": "sync_standby", "state": "streaming", "lag_bytes": 0},
        ],
    },
    "nodes": [{"site": "A", "up": True}, {"site": "B", "up": True}],
}


def _doc(**changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(HEALTHY)
    b = doc["postgres"]["members"][1]
    b.update(changes.pop("member_b", {}))
    doc["postgres"].update(changes)
    return doc


def test_streaming_sync_standby_with_zero_lag_is_accepted() -> None:
    """A healthy cluster passes every pre-check."""
    assert precheck(_doc(), "B") is None


def test_lagging_standby_is_refused_with_the_lag() -> None:
    """Any lag refuses the switchover and says how much."""
    assert "lags by 4096 bytes" in (precheck(_doc(member_b={"lag_bytes": 4096}), "B") or "")


def test_asynchronous_or_stopped_candidate_is_refused() -> None:
    """Only the synchronous standby may be promoted (RPO 0)."""
    assert "not a streaming synchronous standby" in (
        precheck(_doc(member_b={"role": "replica"}), "B") or ""
    )
    assert "replica/stopped" not in (precheck(_doc(member_b={"state": "stopped"}), "B") or "x")


def test_paused_cluster_is_refused() -> None:
    """Maintenance mode is respected."""
    assert "paused" in (precheck(_doc(paused=True), "B") or "")


def test_dead_target_node_is_refused() -> None:
    """Moving the active site to a site whose API node is down would not help."""
    doc = _doc()
    doc["nodes"][1]["up"] = False
    assert "API node of site B is not running" in (precheck(doc, "B") or "")
