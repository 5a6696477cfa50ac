"""The nemesis (#14 item 4): random faults, one every 10-30 s, each held a few seconds and then
healed, over a chaos cluster (chaos_cluster.py) under the recorded workload.

`schedule` is the pure part: a seed, a duration and a fault catalogue in, the planned faults
out (same seed, same schedule), so a failing run is replayed by its seed. `Nemesis` applies a
schedule: each fault is aimed when it starts (at the site that is then the leader), held, and
healed; what was applied is kept for the report.

Every fault in `CATALOGUE` heals by itself once removed, without a site move: the failover
controller moves the active site at most once per `min_interval` (300 s), so a fault that needed
a move could stay unhealed for the rest of a run. Hence no node -> PostgreSQL cut (the node
gives up its role after 3 s of silence and waits for a move), no Patroni -> etcd cut (a
demotion and a ttl-long failover), and a Patroni freeze well below `ttl` (20 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import chaos_cluster
import psutil
from chaos_cluster import Links

from deploy.drills import scenarios
from deploy.drills.drill import Drill
from deploy.drills.fault_context import Context
from deploy.harness import LocalCluster

GAP_S = (10.0, 30.0)  # between the starts of two faults


@dataclass(frozen=True)
class Fault:
    """A kind of fault and how long it is held (seconds, drawn uniformly)."""

    name: str
    hold_s: tuple[float, float]


CATALOGUE: tuple[Fault, ...] = (
    Fault("replication-latency", (4.0, 8.0)),  # 100 +- 30 ms each way, standby <-> primary
    Fault("replication-cut", (4.0, 8.0)),  # the sync standby dropped, the primary writes on
    Fault("node-etcd-cut", (4.0, 8.0)),  # the active node loses every etcd member
    Fault("node-postgres-latency", (4.0, 8.0)),  # 50 +- 10 ms, active node <-> its database
    Fault("redis-latency", (3.0, 6.0)),  # 300 ms each way on every Redis link
    Fault("redis-cut", (3.0, 6.0)),  # Redis unreachable to everyone
    Fault("haproxy-node-reset", (4.0, 8.0)),  # a third of HAProxy's connections reset
    Fault("freeze-patroni", (4.0, 8.0)),  # SIGSTOP the primary's Patroni, < ttl
    Fault("kill-node", (3.0, 5.0)),  # SIGKILL the active API node; its supervisor restarts it
)


@dataclass(frozen=True)
class Planned:
    at_s: float  # since the nemesis started
    fault: str
    hold_s: float


def schedule(
    seed: int,
    duration_s: float,
    faults: Sequence[Fault],
    *,
    gap_s: tuple[float, float] = GAP_S,
) -> list[Planned]:
    """Faults drawn from `faults`, the first `gap_s` after the start and each next `gap_s`
    after the previous one's start, all healed by `duration_s`. Pure: same arguments, same
    schedule."""
    assert faults, "no fault to choose from"
    rng = random.Random(seed)
    out: list[Planned] = []
    t = 0.0
    while True:
        at = t + rng.uniform(*gap_s)
        fault = rng.choice(faults)
        hold = rng.uniform(*fault.hold_s)
        if at + hold > duration_s:
            return out
        out.append(Planned(round(at, 3), fault.name, round(hold, 3)))
        t = at


@dataclass
class Applied:
    """One planned fault as it went: where it was aimed, when it started and healed (seconds
    since the nemesis started), and what the process faults did."""

    planned: Planned
    target: str | None = None
    started_s: float | None = None
    healed_s: float | None = None
    events: list[str] = field(default_factory=list)
    skipped: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Nemesis:
    def __init__(self, c: LocalCluster, links: Links) -> None:
        self.c = c
        self.links = links
        self.frozen: list[int] = []  # pids to thaw whatever happens
        self.applied: list[Applied] = []

    async def run(self, plan: Sequence[Planned], duration_s: float) -> list[Applied]:
        """Apply `plan` on time, then wait until `duration_s` has passed; everything healed
        on the way out, also on failure."""
        t0 = time.monotonic()
        try:
            for p in plan:
                await asyncio.sleep(max(0.0, t0 + p.at_s - time.monotonic()))
                a = Applied(p)
                self.applied.append(a)
                await self._apply(a, t0)
            await asyncio.sleep(max(0.0, t0 + duration_s - time.monotonic()))
        finally:
            self.heal()
        return self.applied

    def heal(self) -> None:
        """Every proxy enabled without toxics, every frozen process thawed."""
        self.links.heal()
        self._thaw()

    def _thaw(self) -> None:
        for pid in self.frozen:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).resume()
        self.frozen.clear()

    async def _leader(self) -> str | None:
        """The leader's site, waiting a little when a fault just moved it."""
        for _ in range(20):
            with contextlib.suppress(Exception):  # etcd between leaders: ask again
                site = await chaos_cluster.leader(self.c)
                if site is not None:
                    return site
            await asyncio.sleep(0.5)
        return None

    async def _apply(self, a: Applied, t0: float) -> None:
        site = await self._leader()
        if site is None:
            a.skipped = "no leader to aim at"
            return
        a.target = site
        a.started_s = round(time.monotonic() - t0, 3)
        try:
            async with self._fault(a, site):
                await asyncio.sleep(a.planned.hold_s)
        finally:
            a.healed_s = round(time.monotonic() - t0, 3)

    @contextlib.asynccontextmanager
    async def _fault(self, a: Applied, site: str) -> AsyncIterator[None]:
        name, links = a.planned.fault, self.links
        with contextlib.ExitStack() as stack:
            if name == "replication-latency":
                attrs = {"latency": 100, "jitter": 30}
                stack.enter_context(links.toxic("replication", "latency", attrs, target=site))
            elif name == "replication-cut":
                stack.enter_context(links.cut("replication", target=site))
            elif name == "node-etcd-cut":
                stack.enter_context(links.cut("node-etcd", site=site))
            elif name == "node-postgres-latency":
                attrs = {"latency": 50, "jitter": 10}
                stack.enter_context(links.toxic("node-postgres", "latency", attrs, site=site))
            elif name == "redis-latency":
                stack.enter_context(links.toxic("redis", "latency", {"latency": 300, "jitter": 0}))
            elif name == "redis-cut":
                stack.enter_context(links.cut("redis"))
            elif name == "haproxy-node-reset":
                stack.enter_context(links.node_resets(site))
            elif name in ("freeze-patroni", "kill-node"):
                await self._process_fault(a, site)
            else:
                raise AssertionError(f"unknown fault {name}")
            try:
                yield
            finally:
                self._thaw()

    async def _process_fault(self, a: Applied, site: str) -> None:
        """The drills' own injections (deploy.drills.scenarios), aimed at `site`."""
        drill = Drill(self.c.topo, self.c.state, scenario="nemesis", direction=site, budget_s=0)
        other = next(s for s in self.c.topo.data_sites if s != site)
        ctx = Context(self.c.topo, self.c.state, site, other, frozen=self.frozen)
        inject = scenarios.freeze_patroni if a.planned.fault == "freeze-patroni" else None
        await (inject or scenarios.kill_node)(drill, ctx)
        a.events += [e.what for e in drill.result.events]
