"""Drill scenarios: what fault to inject on the active site, with what RTO budget.

Budgets follow the targets of the failover issue: planned switchover 3 s, PostgreSQL killed 6 s,
API node killed 5 s, and anything that needs the leader key to expire `ttl` + 6 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import psutil

from deploy import admin, launcher, netns, processes, status
from deploy.drills.drill import Drill, DrillResult, Event, write_report
from deploy.state import StateDir
from deploy.topology import Topology
from failover.controller import LAST_SWITCHOVER_KEY
from kernel.errors import LaunchError, RocarsError
from replication.etcd_gateway import EtcdGateway
from replication.patroni_rest import PatroniRest


@dataclass
class Context:
    topo: Topology
    state: StateDir
    site: str  # the active site the fault hits
    other: str
    frozen: list[int]
    partitioned: list[str] = field(default_factory=list)


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
    spec = launcher.specs(ctx.topo, ctx.state)[process]
    return processes.running_pid(ctx.state, spec)


def _kill(pid: int | None, sig: signal.Signals = signal.SIGKILL) -> None:
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _postmaster(ctx: Context, site: str) -> int | None:
    return processes.postmaster_pid(ctx.state.member_dir(site) / "data")


async def checkpoint_leader(topo: Topology, state: StateDir) -> None:
    """A CHECKPOINT just before a planned switchover leaves little for the shutdown checkpoint
    of the demotion to write, so the old primary stops sooner."""
    conn = await admin.connect_leader(topo, state, superuser=True)
    async with conn:
        await conn.execute("CHECKPOINT")


async def switchover(drill: Drill, ctx: Context) -> None:
    await checkpoint_leader(ctx.topo, ctx.state)
    drill.event("CHECKPOINT on the leader")
    async with aiohttp.ClientSession() as s:
        code, text = await PatroniRest(s).switchover(
            ctx.topo.patroni_url(ctx.site), leader=f"pg-{ctx.site}", candidate=f"pg-{ctx.other}"
        )
    drill.event(f"Patroni switchover answered {code}: {text[:120]}")


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
    async with aiohttp.ClientSession() as s:
        # A drill is a deliberate test: forget earlier switchovers so the controller's minimum
        # interval (a guard against flapping) does not block this one.
        await EtcdGateway(s, ctx.topo.etcd_urls()).delete(LAST_SWITCHOVER_KEY)
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
    doc = await status.redis_status(ctx.topo)
    primary = doc.get("primary")
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
    )
}


async def wait_healthy(topo: Topology, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    doc = await status.collect(topo)
    while not doc["healthy"] and time.monotonic() < deadline:
        await asyncio.sleep(1)
        doc = await status.collect(topo)
    return doc


async def restore(topo: Topology, state: StateDir, ctx: Context) -> str:
    """Heal partitions, thaw what was frozen, restart what was killed, and wait until healthy
    again (a deposed primary rejoins as a replica, rewound by pg_rewind if it must); returns a
    sentence saying how the fault site's member came back."""
    t0 = time.monotonic()
    for site in ctx.partitioned:
        await asyncio.to_thread(netns.heal, topo, site)
    for pid in ctx.frozen:
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).resume()
    # Through the real CLI in a process of its own, so the restarted daemons are not children
    # of the drill (or of pytest) and outlive it cleanly.
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "node",
        "cluster",
        "up",
        "--state-dir",
        str(state.root),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"cluster up after the drill failed:\n{out.decode()[-2000:]}")
    doc = await wait_healthy(topo)
    if not doc["healthy"]:
        raise RuntimeError(f"cluster did not recover after the drill: {doc['problems']}")
    member = next(m for m in doc["postgres"]["members"] if m["site"] == ctx.site)
    return (
        f"restored: member {member['name']} is {member['role']}/{member['state']} on timeline "
        f"{member['timeline']}, leader {doc['postgres']['leader']}, "
        f"{time.monotonic() - t0:.1f}s after the drill's end"
    )


async def ensure_leader(topo: Topology, state: StateDir, site: str) -> None:
    """Make `site` the leader by a planned switchover, if it is not already."""
    current = await admin.leader_site(topo)
    if current == site:
        return
    await checkpoint_leader(topo, state)
    async with aiohttp.ClientSession() as s:
        await PatroniRest(s).switchover(
            topo.patroni_url(current), leader=f"pg-{current}", candidate=f"pg-{site}"
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        doc = await status.collect(topo)
        if doc["healthy"] and doc["postgres"]["leader"] == f"pg-{site}":
            return
        await asyncio.sleep(0.5)
    raise RuntimeError(f"could not move the leader to site {site} before the drill")


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
    write_report(result, state.reports)
    return result
