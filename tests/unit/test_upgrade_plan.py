"""The steps of `rocars upgrade` (#17 item 4, deploy.upgrade_plan): what serves writes is never
restarted, standbys go first, and where the leader ends."""

from __future__ import annotations

import pytest

from deploy.upgrade_plan import Step, plan
from kernel.errors import InvalidInput


def test_nodes_roll_standby_first_then_switch_over_then_the_old_active() -> None:
    """#17 item 4: the standby's node restarts, the active site moves onto it, then the old
    active's node restarts; the leader ends on the former standby."""
    p = plan(["A", "B"], "A", nodes=True, postgres=False)
    assert p.steps == (
        Step("restart-node", "B"),
        Step("switchover", "B"),
        Step("restart-node", "A"),
    )
    assert p.ends_on == "B"


def test_postgres_rolls_the_replica_first_then_switch_over_then_the_old_primary() -> None:
    """#17 item 4: the replica member restarts, a switchover, then the old primary."""
    p = plan(["A", "B"], "B", nodes=False, postgres=True)
    assert p.steps == (
        Step("restart-member", "A"),
        Step("switchover", "A"),
        Step("restart-member", "B"),
    )
    assert p.ends_on == "A"


@pytest.mark.parametrize(("active", "other"), [("A", "B"), ("B", "A")])
def test_both_parts_end_on_the_site_that_was_active(active: str, other: str) -> None:
    """#17 item 4: nodes then PostgreSQL; the second switchover goes back, so the cluster ends
    where it started, and no step restarts the site that holds the leader at that moment."""
    p = plan(["A", "B"], active, nodes=True, postgres=True)
    assert p.steps == (
        Step("restart-node", other),
        Step("switchover", other),
        Step("restart-node", active),
        Step("restart-member", active),
        Step("switchover", active),
        Step("restart-member", other),
    )
    assert p.ends_on == active
    leader = active
    for step in p.steps:
        if step.kind == "switchover":
            assert step.site != leader
            leader = step.site
        else:
            assert step.site != leader, step
    assert leader == p.ends_on


def test_a_second_standby_is_restarted_before_the_switchover() -> None:
    """#17 item 4: every standby site (a second one, #17 item 5) restarts before the switchover."""
    p = plan(["A", "B", "C"], "A", nodes=True, postgres=False)
    assert p.steps == (
        Step("restart-node", "B"),
        Step("restart-node", "C"),
        Step("switchover", "B"),
        Step("restart-node", "A"),
    )


def test_a_read_replica_restarts_first_among_the_postgresql_members() -> None:
    """#17 items 4 and 5: a read replica runs the same PostgreSQL binaries, so a minor upgrade
    restarts it too, after the main members (it serves no writes, and the restart of the
    member it cascades from breaks its stream, so the upgrade ends waiting on it), never with
    the nodes alone."""
    p = plan(["A", "B"], "A", nodes=True, postgres=True, read_replicas=["B"])
    assert p.steps == (
        Step("restart-node", "B"),
        Step("switchover", "B"),
        Step("restart-node", "A"),
        Step("restart-member", "A"),
        Step("switchover", "A"),
        Step("restart-member", "B"),
        Step("restart-read-replica", "B"),
    )
    assert Step("restart-read-replica", "B").describe() == "restart the read replica pg-B-replica"
    nodes_only = plan(["A", "B"], "A", nodes=True, postgres=False, read_replicas=["B"])
    assert all(step.kind != "restart-read-replica" for step in nodes_only.steps)


@pytest.mark.parametrize(
    ("sites", "active", "nodes", "postgres", "field"),
    [
        (["A", "B"], "A", False, False, "parts"),
        (["A", "B"], "C", True, True, "active"),
        (["A"], "A", True, True, "sites"),
    ],
)
def test_refuses_what_cannot_roll(
    sites: list[str], active: str, nodes: bool, postgres: bool, field: str
) -> None:
    """#17 item 4: nothing chosen, an unknown active site, or no standby: a clear refusal."""
    with pytest.raises(InvalidInput) as exc:
        plan(sites, active, nodes=nodes, postgres=postgres)
    assert exc.value.field == field


def test_steps_describe_themselves_for_the_progress_lines() -> None:
    """#17 item 4: each step names what it restarts (the member by its Patroni name)."""
    assert Step("restart-node", "B").describe() == "restart the API node of site B"
    assert Step("switchover", "A").describe() == "switch over to site A"
    assert Step("restart-member", "A").describe() == "restart PostgreSQL member pg-A"


def test_with_three_sites_the_leader_still_ends_where_it_began() -> None:
    """#17 item 4: the PostgreSQL switchover goes back to the site active before the upgrade,
    not merely to the first replica."""
    p = plan(["A", "B", "C"], "C", nodes=True, postgres=True)
    assert [s for s in p.steps if s.kind == "switchover"] == [
        Step("switchover", "A"),
        Step("switchover", "C"),
    ]
    assert p.ends_on == "C"
