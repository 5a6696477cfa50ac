"""Pre-checks of a planned switchover: only to a live site whose member is the streaming,
in-sync, zero-lag standby of an unpaused cluster with a leader."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from failover.precheck import only_lag, precheck
from kernel.cluster import (
    ClusterStatus,
    Contingency,
    Entry,
    Etcd,
    Member,
    Node,
    Postgres,
    Redis,
)

LEADER_A = Member("pg-A", "leader", "running", 0, 3)
SYNC_B = Member("pg-B", "sync_standby", "streaming", 0, 3)


def _view(
    *,
    leader: str | None = "pg-A",
    paused: bool = False,
    b: Member | None = SYNC_B,
    node_b_up: bool | None = True,
) -> ClusterStatus:
    """A two-site status; `b=None` leaves member B out, `node_b_up=None` leaves node B out."""
    members = (LEADER_A,) if b is None else (LEADER_A, b)
    nodes = [Node("A", "http://a", "active", True, reason="ok")]
    if node_b_up is not None:
        error = None if node_b_up else "ClientConnectorError()"
        nodes.append(Node("B", "http://b", "standby", False, error=error))
    return ClusterStatus(
        api="http://entry",
        entry=Entry("http://entry", True, "active"),
        nodes=tuple(nodes),
        postgres=Postgres(leader, paused, members),
        etcd=Etcd((), None),
        redis=Redis(None),
        contingency=Contingency("normal"),
    )


def _b(**changes: object) -> Member:
    return dataclasses.replace(SYNC_B, **changes)  # type: ignore[arg-type]


def test_streaming_sync_standby_with_zero_lag_is_accepted() -> None:
    """A healthy cluster passes every pre-check."""
    assert precheck(_view(), "B") is None


def test_the_active_site_is_refused_as_nothing_to_do() -> None:
    """Switching over to the site that already leads is refused before anything else."""
    assert precheck(_view(), "A") == "site A is already active; nothing to do"
    assert precheck(_view(leader="pg-B", paused=True), "B") == (
        "site B is already active; nothing to do"
    )


def test_lagging_standby_is_refused_with_the_lag() -> None:
    """Any lag refuses the switchover and says how much."""
    assert precheck(_view(b=_b(lag_bytes=4096)), "B") == (
        "pg-B lags by 4096 bytes; wait until it is zero"
    )


def test_unknown_lag_is_refused() -> None:
    """A lag Patroni cannot compute is not taken for zero."""
    assert precheck(_view(b=_b(lag_bytes=None)), "B") == (
        "the lag of pg-B is unknown; wait until Patroni reports it"
    )


@pytest.mark.parametrize(
    ("role", "state"),
    [
        ("replica", "streaming"),
        ("sync_standby", "stopped"),
        ("sync_standby", "running"),
        ("replica", "stopped"),
        (None, "unreachable"),
    ],
)
def test_asynchronous_or_not_streaming_candidate_is_refused_naming_what_it_is(
    role: str | None, state: str
) -> None:
    """Only the streaming synchronous standby may be promoted (RPO 0); the answer says what
    the candidate is instead."""
    assert precheck(_view(b=_b(role=role, state=state)), "B") == (
        f"pg-B is not a streaming synchronous standby ({role}/{state})"
    )


def test_absent_candidate_is_refused() -> None:
    """A target site whose member Patroni does not list is refused as absent."""
    assert precheck(_view(b=None), "B") == "pg-B is not a streaming synchronous standby (absent)"


def test_paused_cluster_is_refused() -> None:
    """Maintenance mode is respected."""
    assert precheck(_view(paused=True), "B") == (
        "the cluster is paused (Patroni maintenance mode); resume it first"
    )


def test_cluster_without_a_leader_is_refused() -> None:
    """Without a leader there is nothing to switch over from."""
    assert precheck(_view(leader=None), "B") == "there is no leader to switch over from"


@pytest.mark.parametrize("node_b_up", [False, None])
def test_dead_or_missing_target_node_is_refused(node_b_up: bool | None) -> None:
    """Moving the active site to a site whose API node is down (or unknown) would not help."""
    assert precheck(_view(node_b_up=node_b_up), "B") == "the API node of site B is not running"


def test_accepted_exactly_when_every_condition_holds() -> None:
    """Over every combination of the inputs, the switchover to B is accepted iff A leads, the
    cluster is not paused, B is the streaming sync standby with lag 0, and node B is up; a
    refusal always names one reason."""
    for leader, paused, role, state, lag, node_b_up in itertools.product(
        ("pg-A", "pg-B", None),
        (False, True),
        ("sync_standby", "replica", "leader", None),
        ("streaming", "running", "stopped", "unreachable"),
        (0, 1, None),
        (True, False, None),
    ):
        view = _view(
            leader=leader,
            paused=paused,
            b=_b(role=role, state=state, lag_bytes=lag),
            node_b_up=node_b_up,
        )
        want = (
            leader == "pg-A"
            and not paused
            and role == "sync_standby"
            and state == "streaming"
            and lag == 0
            and node_b_up is True
        )
        got = precheck(view, "B")
        assert (got is None) == want, (view, got)
        assert got is None or (got and "\n" not in got)


def test_only_lag_of_a_streaming_sync_standby_is_worth_waiting_for() -> None:
    """Over every combination of the inputs, `only_lag` holds exactly when the switchover is
    refused and the target is the streaming synchronous standby with a lag above zero or not
    yet known, and nothing else objects: what passes by itself, so the command looks again
    before refusing."""
    for leader, paused, role, state, lag, node_b_up in itertools.product(
        ("pg-A", "pg-B", None),
        (False, True),
        ("sync_standby", "replica", None),
        ("streaming", "stopped"),
        (0, 40, None),
        (True, False),
    ):
        view = _view(
            leader=leader,
            paused=paused,
            b=_b(role=role, state=state, lag_bytes=lag),
            node_b_up=node_b_up,
        )
        refused = precheck(view, "B") is not None
        lagging = role == "sync_standby" and state == "streaming" and lag != 0
        rest_fine = leader == "pg-A" and not paused and node_b_up
        expected = refused and lagging and rest_fine
        assert only_lag(view, "B") == expected, (leader, paused, role, state, lag, node_b_up)
