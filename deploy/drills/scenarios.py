"""Drill scenarios: what fault to inject on the active site, with what RTO budget.

Budgets follow the targets of the failover issue: planned switchover 3 s, PostgreSQL killed 6 s,
API node killed 5 s, and anything that needs the leader key to expire `ttl` + 6 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import psutil

from deploy import etcd_auth, http_client, netns, processes, status
from deploy.drills.drill import Drill
from deploy.drills.fault_context import Context
from deploy.failover_ops import planned_switchover
from deploy.process_specs import specs
from deploy.topology import Topology
from failover.switchover import SwitchoverRefused
from kernel.errors import LaunchError, RocarsError
from kernel.names import LAST_SWITCHOVER_KEY

Inject = Callable[[Drill, Context], Awaitable[None]]


@dataclass(frozen=True)
class Scenario:
    name: str
    inject: Inject
    budget: Callable[[Topology], float]
    description: str
    allowed_failures: int = 0
    needs_namespaces: bool = False  # the sites must run in network namespaces


def _pid(ctx: Context, process: str) -> int | None:
    spec = specs(ctx.topo, ctx.state)[process]
    return processes.running_pid(ctx.state, spec)


def _kill(pid: int | None, sig: signal.Signals = signal.SIGKILL) -> None:
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _postmaster(ctx: Context, site: str) -> int | None:
    return processes.postmaster_pid(ctx.state.member_dir(site) / "data")


async def switchover(drill: Drill, ctx: Context) -> None:
    try:
        await planned_switchover(
            ctx.topo, ctx.state, ctx.other, leader=ctx.site, wait=False, progress=drill.event
        )
    except SwitchoverRefused as exc:  # nothing moved: the drill must not pass for it
        drill.result.checks_failed.append(str(exc))


async def kill_postgres(drill: Drill, ctx: Context) -> None:
    pid = _postmaster(ctx, ctx.site)
    _kill(pid)
    drill.event(f"SIGKILL PostgreSQL postmaster of site {ctx.site} (pid {pid})")


async def kill_patroni_and_postgres(drill: Drill, ctx: Context) -> None:
    pids = [_pid(ctx, f"patroni-{ctx.site}"), _postmaster(ctx, ctx.site)]
    for pid in pids:
        _kill(pid)
    drill.event(f"SIGKILL Patroni and PostgreSQL of site {ctx.site} (pids {pids})")


def _freeze_tree(ctx: Context, pid: int | None) -> None:
    """SIGSTOP a process and its descendants; `restore` thaws them."""
    if pid is None:
        return
    proc = psutil.Process(pid)
    for p in (proc, *proc.children(recursive=True)):
        with contextlib.suppress(psutil.Error):
            p.suspend()
            ctx.frozen.append(p.pid)


async def freeze_patroni(drill: Drill, ctx: Context) -> None:
    pid = _pid(ctx, f"patroni-{ctx.site}")
    _freeze_tree(ctx, pid)
    drill.event(f"SIGSTOP Patroni of site {ctx.site} (pid {pid}); PostgreSQL keeps running")


def _node_workers(ctx: Context, site: str) -> list[int]:
    """The API node processes under a site's supervisor (a restart changes them)."""
    sup = _pid(ctx, f"node-{site}")
    with contextlib.suppress(psutil.Error):
        return sorted(c.pid for c in psutil.Process(sup).children()) if sup else []
    return []


async def kill_node(drill: Drill, ctx: Context) -> None:
    workers = _node_workers(ctx, ctx.site)
    for pid in workers:
        _kill(pid)
    drill.event(f"SIGKILL API node of site {ctx.site} (pids {workers})")


async def hang_node(drill: Drill, ctx: Context) -> None:
    # Freeze the active node and its supervisor: nothing restarts it, the database is fine,
    # so only the failover controller on the other site can move the active site.
    async with http_client.session(ctx.topo) as s:
        # A drill is a deliberate test: forget earlier switchovers so the controller's minimum
        # interval (a guard against flapping) does not block this one.
        await etcd_auth.operator_gateway(s, ctx.topo).delete(LAST_SWITCHOVER_KEY)
    _freeze_tree(ctx, _pid(ctx, f"node-{ctx.site}"))
    drill.event(f"SIGSTOP the API node of site {ctx.site} and its supervisor")


async def kill_site(drill: Drill, ctx: Context) -> None:
    # Everything of the site except HAProxy, which stands for the entry tier in front of both
    # sites (in production one per site behind a VIP). Supervisors first, so nothing restarts.
    names = [
        f"node-{ctx.site}",
        f"patroni-{ctx.site}",
        f"etcd-{ctx.site}",
        f"redis-{ctx.site}",
        f"sentinel-{ctx.site}",
    ]
    pids = []
    for name in names:
        pid = _pid(ctx, name)
        if pid is not None:
            pids.append(pid)
            with contextlib.suppress(psutil.Error):
                pids += [c.pid for c in psutil.Process(pid).children(recursive=True)]
    pm = _postmaster(ctx, ctx.site)
    if pm is not None:
        pids.append(pm)
    for pid in pids:
        _kill(pid)
    drill.event(f"SIGKILL every process of site {ctx.site} ({len(pids)} processes)")


async def isolate_site(drill: Drill, ctx: Context) -> None:
    # The site keeps running and stays reachable from the entry tier (HAProxy in the hub), so
    # clients keep arriving at a primary that can no longer reach its standby or etcd's
    # majority: it must acknowledge nothing until it has demoted itself.
    ctx.partitioned.append(ctx.site)
    await asyncio.to_thread(netns.partition, ctx.topo, ctx.site)
    others = ", ".join(n for n in ctx.topo.sites if n != ctx.site)
    drill.event(
        f"nftables in namespace {ctx.topo.netns(ctx.site)}: site {ctx.site} cut off from {others}"
    )


async def kill_redis_primary(drill: Drill, ctx: Context) -> None:
    primary = (await status.redis_status(ctx.topo, ctx.state)).primary
    if primary is None:
        drill.result.checks_failed.append("no Redis primary before the fault")
        return

    def workers() -> dict[str, list[int]]:
        return {site: _node_workers(ctx, site) for site in ctx.topo.data_sites}

    before = workers()
    for name, site in ctx.topo.sites.items():
        if site.redis is not None and primary == f"{site.host}:{site.redis.port}":
            _kill(_pid(ctx, f"redis-{name}"))
            drill.event(f"SIGKILL Redis primary on site {name} ({primary})")
    # The writers go on meanwhile (Redis only holds rate-limit counters): what this drill
    # checks besides RPO/RTO is that both nodes move to Sentinel's new primary by themselves.
    t0 = time.monotonic()
    try:
        new = await status.wait_nodes_follow_redis(ctx.topo, away_from=primary, timeout_s=30)
    except RocarsError as exc:
        drill.result.checks_failed.append(str(exc))
        return
    drill.event(
        f"both API nodes use the new Redis primary {new} "
        f"({time.monotonic() - t0:.2f}s after the kill)"
    )
    if workers() != before:
        drill.result.checks_failed.append("an API node was restarted to follow Redis")


async def upgrade(drill: Drill, ctx: Context) -> None:
    # The whole rolling upgrade is the "fault": the drill's RTO is its longest write gap. The
    # restarted nodes get a version of their own, so each must prove it runs a new process.
    from deploy import upgrade as rolling
    from monitoring.health import VERSION_OVERRIDE_ENV, code_version

    version = f"{code_version()}+drill.{int(time.time())}"
    marks: list[tuple[float, str]] = [(drill.now(), "start")]

    def progress(line: str) -> None:
        drill.event(line)
        if line.startswith("["):  # a step's line, printed as it ends
            marks.append((drill.now(), line.split("]")[0] + "]"))

    try:
        await rolling.run_upgrade(
            ctx.topo,
            ctx.state,
            nodes=True,
            postgres=True,
            version=version,
            node_env={VERSION_OVERRIDE_ENV: version},
            progress=progress,
        )
    except RocarsError as exc:
        drill.result.checks_failed.append(str(exc))
    # Which step the writes waited on: the longest gap between acknowledgements ending in each.
    acked = sorted(a.acked_at for a in drill.acks)
    for (start, _), (end, step) in itertools.pairwise(marks):
        before = [t for t in acked if t <= start][-1:]
        inside = [t for t in acked if start < t <= end]
        gaps = [b - a for a, b in itertools.pairwise(before + inside)]
        drill.result.notes.append(
            f"step {step}: longest write gap {max(gaps, default=end - start):.2f}s"
            f" ({len(inside)} writes acknowledged)"
        )


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("switchover", switchover, lambda t: 3.0, "planned Patroni switchover"),
        Scenario(
            "kill-postgres",
            kill_postgres,
            lambda t: 6.0,
            "SIGKILL the primary's PostgreSQL, Patroni alive",
        ),
        Scenario(
            "kill-patroni-and-postgres",
            kill_patroni_and_postgres,
            lambda t: t.patroni.ttl + 6.0,
            "SIGKILL the primary's Patroni and PostgreSQL",
        ),
        Scenario(
            "freeze-patroni",
            freeze_patroni,
            lambda t: t.patroni.ttl + 6.0,
            "SIGSTOP the primary's Patroni while PostgreSQL runs on",
        ),
        Scenario("kill-node", kill_node, lambda t: 5.0, "SIGKILL the active API node"),
        Scenario(
            "hang-node",
            hang_node,
            lambda t: 6.0 + 6.0,  # the controller grace period, then a switchover
            "freeze the active API node (no restart): the failover controller switches over",
        ),
        Scenario(
            "kill-site",
            kill_site,
            lambda t: t.patroni.ttl + 6.0,
            "SIGKILL every process of the active site",
        ),
        Scenario(
            "isolate-site",
            isolate_site,
            lambda t: t.patroni.ttl + 6.0,
            "cut the active site off from the other two sites (nftables in its namespace)",
            needs_namespaces=True,
        ),
        Scenario(
            "kill-redis-primary",
            kill_redis_primary,
            lambda t: 3.0,
            "SIGKILL the Redis primary; Sentinel promotes the replica",
        ),
        Scenario(
            "upgrade",
            upgrade,
            lambda t: 3.0,  # each switchover's gap: restarts of standbys must not stop writes
            "rolling upgrade: standby node, switchover, old node; then the same for PostgreSQL",
        ),
    )
}


def check_runnable(topo: Topology, name: str) -> Scenario:
    """The scenario, if this cluster can run it; else a LaunchError saying what to start."""
    scenario = SCENARIOS[name]
    if scenario.needs_namespaces and topo.namespaces is None:
        raise LaunchError(
            f"the {name} drill needs each site in its own network namespace: run it on a "
            "cluster started from deploy/topology.netns.yaml, e.g. 'rocars cluster up "
            "--topology deploy/topology.netns.yaml --state-dir var-netns' then 'rocars drill "
            f"{name} --state-dir var-netns'"
        )
    return scenario
