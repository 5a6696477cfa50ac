"""Running drills: one scenario under write load (then restored and reported), and the round
trips of `rocars drill` and the chaos tests (A->B, then B->A)."""

from __future__ import annotations

from collections.abc import Callable

from deploy import admin
from deploy.drills.cluster_ops import ensure_leader, restore
from deploy.drills.drill import Drill, DrillResult, Event, write_report
from deploy.drills.fault_context import Context
from deploy.drills.publish import publish
from deploy.drills.scenarios import check_runnable
from deploy.state import StateDir
from deploy.topology import Topology


async def run_scenario(
    topo: Topology, state: StateDir, name: str, *, api_key: str, writers: int = 4
) -> DrillResult:
    scenario = check_runnable(topo, name)
    site = await admin.leader_site(topo)
    other = next(s for s in topo.data_sites if s != site)
    ctx = Context(topo, state, site, other, [])
    drill = Drill(
        topo,
        state,
        scenario=name,
        direction=f"{site}->{other}",
        budget_s=scenario.budget(topo),
        writers=writers,
        allowed_failures=scenario.allowed_failures,
    )

    async def inject(d: Drill) -> None:
        await scenario.inject(d, ctx)

    try:
        result = await drill.run(inject, api_key)
    finally:
        restored = await restore(topo, state, ctx)
    # After the timeline's end, not part of the RTO: how the fault site came back.
    result.events.append(Event(round(drill.now(), 3), restored))
    await publish(topo, result)  # for the nodes' rocars_drill_* series
    write_report(result, state.reports)
    return result


async def run_round_trips(
    topo: Topology,
    state: StateDir,
    scenario: str,
    *,
    api_key: str,
    runs: int = 1,
    one_way: bool = False,
    writers: int = 4,
    on_result: Callable[[DrillResult], None] = lambda _r: None,
) -> list[DrillResult]:
    """`runs` round trips of a drill, each failing A->B then B->A; with `one_way`, `runs`
    drills each away from whichever site leads. `on_result` sees each result as it comes (an
    exception there stops the rest)."""
    check_runnable(topo, scenario)
    sites = topo.data_sites
    results: list[DrillResult] = []
    for _ in range(runs):
        for direction in range(1 if one_way else 2):
            if not one_way:
                # Move the leader to this direction's start if the previous fault did not (a
                # restarted node keeps its site active).
                await ensure_leader(topo, state, sites[direction])
            r = await run_scenario(topo, state, scenario, api_key=api_key, writers=writers)
            on_result(r)
            results.append(r)
    return results


def describe(r: DrillResult) -> str:
    """One line per drill for the terminal: direction, RTO, RPO, duplicates and verdict."""
    return (
        f"{r.scenario} {r.direction}: RTO {r.rto_s}s, RPO {r.rpo}, duplicates {r.duplicates}, "
        f"acked {r.acked}, failed requests {r.failed_requests} -> {r.verdict()}"
    )
