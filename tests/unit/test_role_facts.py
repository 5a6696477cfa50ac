"""The soak test's evidence of a failover: which differences between two snapshots of the
leader key, node roles and role-change counters count as a change, and reading the counter
from a node's real /metrics exposition."""

from __future__ import annotations

from dataclasses import replace

from prometheus_client import generate_latest

from deploy.drills.role_facts import (
    DOWN,
    RoleSnapshot,
    changes,
    changes_over,
    role_change_count,
)
from kernel.names import member_name
from monitoring.metrics import NodeMetrics

PG_A, PG_B = member_name("A"), member_name("B")

QUIET = RoleSnapshot(
    leader=PG_A,
    leader_revision=42,
    roles={"A": "active", "B": "standby"},
    role_changes={"A": 1.0, "B": 0.0},
)


def test_identical_snapshots_show_no_change() -> None:
    """A quiet cluster: the same facts twice are no change."""
    assert changes(QUIET, replace(QUIET)) == []
    assert changes_over([QUIET, QUIET, QUIET]) == []


def test_new_leader_is_a_change() -> None:
    """Another member holding the leader key is reported once, not also as a rewrite."""
    after = replace(QUIET, leader=PG_B, leader_revision=50)
    assert changes(QUIET, after) == [f"leader key: {PG_A} -> {PG_B}"]


def test_leader_key_taken_again_by_the_same_member_is_a_change() -> None:
    """The same holder but a new revision: the lock was lost and re-taken in between (a
    flip-flop between two samples still shows)."""
    after = replace(QUIET, leader_revision=43)
    assert changes(QUIET, after) == [f"leader key of {PG_A} written again (revision 42 -> 43)"]


def test_role_and_counter_moves_are_changes() -> None:
    """A node's /health role moving (also to down) and its counter moving are each named."""
    after = replace(QUIET, roles={"A": DOWN, "B": "standby"}, role_changes={"A": 1.0, "B": 2.0})
    assert changes(QUIET, after) == [
        "node A role: active -> down",
        "node B role-change counter: 0.0 -> 2.0",
    ]


def test_changes_over_compares_consecutive_samples() -> None:
    """A change and its reversal both show, in order."""
    moved = replace(QUIET, roles={"A": "standby", "B": "standby"})
    assert changes_over([QUIET, moved, QUIET]) == [
        "node A role: active -> standby",
        "node A role: standby -> active",
    ]


def test_counter_is_read_from_a_nodes_metrics() -> None:
    """The counter the node increments on every role change is found in its exposition."""
    metrics = NodeMetrics()
    text = generate_latest(metrics.registry).decode()
    assert role_change_count(text) == 0.0
    metrics.role_changes.inc()
    metrics.role_changes.inc()
    assert role_change_count(generate_latest(metrics.registry).decode()) == 2.0


def test_counter_absent_is_none() -> None:
    """An exposition without the counter (not a rocars node) reads as None, not 0."""
    assert role_change_count("# HELP other x\n# TYPE other gauge\nother 1.0\n") is None
