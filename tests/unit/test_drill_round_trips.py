"""The one drill loop (`rocars drill` and chaos-tests/test_drills.py): which directions it runs,
where it puts the leader first, and when it reports each result (drills themselves faked)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.drills import runner
from deploy.drills.drill import DrillResult
from deploy.state import DEFAULT_TOPOLOGY, StateDir
from deploy.topology import load_topology
from kernel.errors import LaunchError

TOPO = load_topology(DEFAULT_TOPOLOGY)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fake ensure_leader/run_scenario recording the calls; the leader flips on each drill."""
    log: list[str] = []
    leader = ["A"]

    async def ensure_leader(_topo: object, _state: object, site: str) -> None:
        log.append(f"leader {site}")
        leader[0] = site

    async def run_scenario(
        _topo: object, _state: object, name: str, *, api_key: str, writers: int
    ) -> DrillResult:
        site = leader[0]
        other = "B" if site == "A" else "A"
        log.append(f"drill {name} {site}->{other} writers={writers} key={api_key}")
        leader[0] = other
        return DrillResult(scenario=name, direction=f"{site}->{other}", started_at="t")

    monkeypatch.setattr(runner, "ensure_leader", ensure_leader)
    monkeypatch.setattr(runner, "run_scenario", run_scenario)
    return log


async def test_round_trips_go_a_to_b_then_b_to_a(calls: list[str], tmp_path: Path) -> None:
    """Each round trip puts the leader on A, drills, then on B, drills; every result is
    reported as it comes."""
    seen: list[str] = []
    results = await runner.run_round_trips(
        TOPO,
        StateDir(tmp_path),
        "switchover",
        api_key="k",
        runs=2,
        writers=3,
        on_result=lambda r: seen.append(r.direction),
    )
    assert [r.direction for r in results] == ["A->B", "B->A", "A->B", "B->A"]
    assert seen == [r.direction for r in results]
    assert calls[:4] == [
        "leader A",
        "drill switchover A->B writers=3 key=k",
        "leader B",
        "drill switchover B->A writers=3 key=k",
    ]


async def test_one_way_never_moves_the_leader(calls: list[str], tmp_path: Path) -> None:
    """`--one-way`: each run drills away from whichever site leads, without a switchover
    first."""
    results = await runner.run_round_trips(
        TOPO,
        StateDir(tmp_path),
        "kill-node",
        api_key="k",
        runs=2,
        one_way=True,
    )
    assert [r.direction for r in results] == ["A->B", "B->A"]
    assert not any(c.startswith("leader") for c in calls)


async def test_a_failing_check_stops_the_rest(calls: list[str], tmp_path: Path) -> None:
    """An exception from `on_result` (a test's assertion) ends the loop at that drill."""

    def fail(_r: DrillResult) -> None:
        raise AssertionError("RPO")

    with pytest.raises(AssertionError):
        await runner.run_round_trips(
            TOPO,
            StateDir(tmp_path),
            "switchover",
            api_key="k",
            on_result=fail,
        )
    assert sum(c.startswith("drill") for c in calls) == 1


async def test_a_drill_the_cluster_cannot_run_is_refused_first(
    calls: list[str], tmp_path: Path
) -> None:
    """A partition drill on a loopback cluster fails before anything moves."""
    with pytest.raises(LaunchError):
        await runner.run_round_trips(
            TOPO,
            StateDir(tmp_path),
            "isolate-site",
            api_key="k",
        )
    assert calls == []


def test_describe_names_direction_rto_and_verdict() -> None:
    """The line printed per drill carries the figures the operator reads."""
    r = DrillResult(scenario="switchover", direction="A->B", started_at="t", rto_s=2.5)
    r.budget_s = 3.0
    assert runner.describe(r) == (
        "switchover A->B: RTO 2.5s, RPO 0, duplicates 0, acked 0, failed requests 0 -> "
        "PASS: RTO 2.50s <= 3s, RPO 0, no duplicates"
    )
