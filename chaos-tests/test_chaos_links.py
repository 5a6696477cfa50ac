"""#14 item 3: faults on single links of a chaos cluster (every link through a Toxiproxy proxy,
chaos_cluster.py), one scenario per test, each under the recorded history workload and checked
afterwards by the history checker (deploy/drills/checker.py): no anomaly once the fault healed.

Each test first proves its fault took effect (a fact seen from outside: a node's Redis view, a
slower commit, HAProxy's error counters, a moved leader, a dropped synchronous standby), so
none can pass by breaking nothing. CI runs the Redis scenario every time (`-m "not slow"`); the
others are `slow` (`make drills`). The history of each is saved as JSON Lines in the test's
temporary folder.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import chaos_cluster
import chaos_report
import psycopg
import pytest
from chaos_cluster import Links

from deploy import http_client, readiness, status
from deploy.drills import checker
from deploy.drills.checker import CheckReport
from deploy.drills.history import History, Operation
from deploy.drills.workload import Settings, WorkloadAccounts, make_accounts, recording
from deploy.harness import LocalCluster
from kernel.names import member_name

pytestmark = [pytest.mark.integration, pytest.mark.chaos]
QUIET_S = 3.0  # workload before the fault and after it heals
MOVE_S = 60.0  # a site move after a fault, at most (Patroni's ttl is 20 s)


@pytest.fixture
def chaos(shared_chaos: LocalCluster) -> LocalCluster:
    """The suite's shared chaos cluster (chaos-tests/conftest.py)."""
    return shared_chaos


@pytest.fixture
def accounts(chaos: LocalCluster) -> WorkloadAccounts:
    """Fresh accounts for each scenario: the checker counts every record of its accounts, so
    another scenario's writes under them would be unexplained."""
    return asyncio.run(make_accounts(chaos.topo, chaos.state))


@pytest.fixture
def links(chaos: LocalCluster) -> Iterator[Links]:
    """The cluster's proxies, healed before (and the cluster settled) and after each test,
    also when it fails."""
    proxies = Links(chaos.topo)
    proxies.heal()
    asyncio.run(chaos_cluster.settled(chaos))
    try:
        yield proxies
    finally:
        proxies.heal()


@dataclass
class Run:
    """One scenario: its history, when the fault was on, and what was measured."""

    name: str
    history: History = field(default_factory=History)
    fault: tuple[float, float] = (0.0, 0.0)
    measured: dict[str, float] = field(default_factory=dict)
    t0: float = field(default_factory=time.monotonic)

    @property
    def settings(self) -> Settings:
        """The workload's, seeded by the scenario's name: a failing run replays alike, and no
        two scenarios share VRNs."""
        return Settings(seed=zlib.crc32(self.name.encode()))

    def during(self) -> list[Operation]:
        a, b = self.fault
        return [op for op in self.history.operations() if a <= op.start <= b]

    def after(self) -> list[Operation]:
        return [op for op in self.history.operations() if op.start > self.fault[1]]


async def _check(c: LocalCluster, run: Run, tmp_path: Path) -> CheckReport:
    """The checker over the healed cluster; prints the scenario's figures."""
    # ROCARS_CHAOS_HISTORY_DIR keeps the histories beyond pytest's temporary folders.
    folder = Path(os.environ.get("ROCARS_CHAOS_HISTORY_DIR") or tmp_path)
    os.makedirs(folder, exist_ok=True)
    saved = run.history.save(folder / f"{run.name}.jsonl")
    report = await checker.check_cluster(c.topo, c.state, run.history)
    chaos_report.record(run.name, report)
    a, b = run.fault
    ops = run.history.operations()
    phases = {
        "before": [op for op in ops if op.start < a],
        "during": run.during(),
        "after": run.after(),
    }
    counts = {
        phase: {t: sum(op.type == t for op in some) for t in ("ok", "fail", "info")}
        for phase, some in phases.items()
    }
    print(
        f"\n[measure] chaos {run.name}: fault {b - a:.1f} s, total {time.monotonic() - run.t0:.1f}"
        f" s, ops {counts}, anomalies {len(report.anomalies)},"
        f" worst write gap {report.worst_gap():.2f} s, {run.measured}\n{report.summary()}\n"
        f"history: {saved}"
    )
    assert report.anomalies == [], report.summary()
    assert run.after(), "no operation after the fault healed"
    assert any(op.type == "ok" for op in run.after()), "no write succeeded after healing"
    return report


def _unavailable(ops: list[Operation]) -> list[tuple[str, str, int | None]]:
    """Operations the service did not answer or answered with a server error (a 4xx, such as
    two amendments racing for one version, is the workload's own business)."""
    return [
        (op.kind, op.type, op.completion.status if op.completion else None)
        for op in ops
        if op.type == "info"
        or (op.type == "fail" and (op.completion is None or (op.completion.status or 500) >= 500))
    ]


def _ok_latency(ops: list[Operation], kind: str = "submit") -> float:
    return statistics.median(op.end - op.start for op in ops if op.kind == kind and op.type == "ok")


async def _redis_ok(c: LocalCluster, site: str) -> bool | None:
    async with http_client.session(c.topo, c.state) as s:
        doc = (await status.node_health(s, c.topo))[site]
    if isinstance(doc, Exception):
        return None
    redis = doc.get("redis") or {}
    return redis.get("ok") if isinstance(redis, dict) else None


async def test_redis_slow_then_unreachable_requests_still_succeed(
    chaos: LocalCluster, accounts: WorkloadAccounts, links: Links, tmp_path: Path
) -> None:
    """#14 item 3 (Redis slow and unreachable): with 300 ms added each way on every link to
    Redis, then with Redis unreachable (both members' proxies down, so Sentinel cannot fail
    over either), the active node sees Redis failing and every request sent meanwhile still
    succeeds (Redis is a cache, never the truth); the checker finds no anomaly afterwards."""
    run = Run("redis-slow-then-unreachable")
    active = await chaos_cluster.leader(chaos)
    assert active is not None

    async def redis_down() -> bool:
        return await _redis_ok(chaos, active) is False

    async def redis_up() -> bool:
        return await _redis_ok(chaos, active) is True

    async with recording(chaos.topo, accounts, run.history, settings=run.settings):
        await asyncio.sleep(QUIET_S)
        start = time.monotonic()
        # Each phase is seen by the node (its Redis calls time out after 250 ms, then fail
        # at once), and Redis is seen well again in between.
        with links.toxic("redis", "latency", {"latency": 300, "jitter": 0}):
            run.measured["slow_seen_s"] = await chaos_cluster.poll(
                "the active node seeing Redis slow", redis_down, timeout=10
            )
            await asyncio.sleep(3.0)
        run.measured["fast_again_s"] = await chaos_cluster.poll(
            "the active node using Redis again", redis_up, timeout=30
        )
        with links.cut("redis"):
            run.measured["cut_seen_s"] = await chaos_cluster.poll(
                "the active node seeing Redis unreachable", redis_down, timeout=10
            )
            await asyncio.sleep(4.0)
        run.fault = (start, time.monotonic())
        run.measured["back_s"] = await chaos_cluster.poll(
            "the active node using Redis again", redis_up, timeout=30
        )
        await asyncio.sleep(QUIET_S)
    await _check(chaos, run, tmp_path)
    during = run.during()
    assert during, "no operation during the fault"
    assert _unavailable(during) == []


def _leaders(run: Run) -> set[str | None]:
    return {s.leader for s in run.history.samples() if s.error is None}


def _other(c: LocalCluster, site: str) -> str:
    return next(s for s in c.topo.data_sites if s != site)


@pytest.mark.slow
async def test_replication_latency_and_jitter_slows_writes_without_failover(
    chaos: LocalCluster, accounts: WorkloadAccounts, links: Links, tmp_path: Path
) -> None:
    """#14 item 3 (latency and jitter on the replication link): 100 +- 30 ms each way between
    the synchronous standby and the primary makes every commit wait about 200 ms more, yet no
    write fails, the leader never changes (the lag stays below every threshold) and nothing
    acknowledged is lost."""
    run = Run("replication-latency-jitter")
    primary = await chaos_cluster.leader(chaos)
    assert primary is not None
    async with recording(chaos.topo, accounts, run.history, settings=run.settings):
        await asyncio.sleep(QUIET_S)
        start = time.monotonic()
        with links.toxic("replication", "latency", {"latency": 100, "jitter": 30}, target=primary):
            await asyncio.sleep(8.0)
        run.fault = (start, time.monotonic())
        await asyncio.sleep(QUIET_S)
    await _check(chaos, run, tmp_path)
    before = [op for op in run.history.operations() if op.end < run.fault[0]]
    run.measured["submit_p50_before_s"] = round(_ok_latency(before), 3)
    run.measured["submit_p50_during_s"] = round(_ok_latency(run.during()), 3)
    print(f"[measure] chaos {run.name}: {run.measured}")
    assert run.measured["submit_p50_during_s"] > run.measured["submit_p50_before_s"] + 0.12
    assert _unavailable(run.during()) == []
    assert _leaders(run) == {member_name(primary)}


ERROR_METRICS = (
    "haproxy_server_connection_errors_total{",
    "haproxy_server_response_errors_total{",
    "haproxy_server_retry_warnings_total{",
    "haproxy_server_redispatch_warnings_total{",
    "haproxy_server_check_failures_total{",
)


async def _haproxy_errors(c: LocalCluster) -> float:
    """HAProxy's own count of failed connections, responses, retries and checks to the nodes."""
    url = f"https://{c.topo.entry_host()}:{c.topo.entry.stats_port}/metrics"
    async with http_client.session(c.topo, c.state) as s, s.get(url) as r:
        text = await r.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(ERROR_METRICS) and 'proxy="nodes"' in line
    )


@pytest.mark.slow
async def test_haproxy_to_node_resets_lose_no_acknowledged_write(
    chaos: LocalCluster, accounts: WorkloadAccounts, links: Links, tmp_path: Path
) -> None:
    """#14 item 3 (HAProxy -> node resets): a third of the connections from HAProxy to the
    active node are reset on their first request bytes; HAProxy counts the failures (retries,
    failed checks), clients see errors or retry, and no acknowledged write is lost or
    doubled."""
    run = Run("haproxy-node-resets")
    active = await chaos_cluster.leader(chaos)
    assert active is not None
    errors_before = await _haproxy_errors(chaos)
    async with recording(chaos.topo, accounts, run.history, settings=run.settings):
        await asyncio.sleep(QUIET_S)
        start = time.monotonic()
        with links.node_resets(active):
            await asyncio.sleep(8.0)
        run.fault = (start, time.monotonic())
        await asyncio.sleep(QUIET_S)
    await _check(chaos, run, tmp_path)
    run.measured["haproxy_errors"] = await _haproxy_errors(chaos) - errors_before
    print(f"[measure] chaos {run.name}: {run.measured}")
    assert run.measured["haproxy_errors"] > 0
    assert any(op.type == "ok" for op in run.during())


@pytest.mark.slow
async def test_replication_link_cut_drops_the_sync_standby_and_promotes_nobody(
    chaos: LocalCluster, accounts: WorkloadAccounts, links: Links, tmp_path: Path
) -> None:
    """#14 item 3 (replication link cut): with the standby's stream into the primary cut,
    Patroni stops counting it as the synchronous standby (so it is not eligible for promotion)
    and the primary goes on taking writes, as synchronous_mode (not strict) allows; the leader
    never changes, the standby catches up and is synchronous again after the cut heals, and
    nothing acknowledged is lost."""
    run = Run("replication-cut")
    primary = await chaos_cluster.leader(chaos)
    assert primary is not None

    async def sync_streams() -> bool:
        return await _sync_streams(chaos, primary)

    async def no_sync() -> bool:
        return not await _sync_streams(chaos, primary)

    async with recording(chaos.topo, accounts, run.history, settings=run.settings):
        await asyncio.sleep(QUIET_S)
        start = time.monotonic()
        with links.cut("replication", target=primary):
            run.measured["sync_dropped_s"] = await chaos_cluster.poll(
                "the primary dropping its synchronous standby", no_sync, timeout=30
            )
            await asyncio.sleep(6.0)
        run.fault = (start, time.monotonic())
        run.measured["sync_back_s"] = await chaos_cluster.poll(
            "the standby streaming as synchronous standby again", sync_streams, timeout=90
        )
        await asyncio.sleep(QUIET_S)
    await _check(chaos, run, tmp_path)
    assert _leaders(run) == {member_name(primary)}
    late = [op for op in run.during() if op.start > run.fault[0] + run.measured["sync_dropped_s"]]
    assert any(op.type == "ok" for op in late), "the primary took no write without its standby"


@pytest.mark.slow
async def test_node_to_etcd_cut_on_the_active_site_keeps_one_writer(
    chaos: LocalCluster, accounts: WorkloadAccounts, links: Links, tmp_path: Path
) -> None:
    """#14 item 3 (node -> etcd cut): the active node loses every etcd member for 8 s while
    Patroni (whose own links are intact) keeps the leader; whatever the node does meanwhile,
    no write is acknowledged by a node that was not active, none is lost, the leader never
    changes and writes succeed again after the link heals."""
    run = Run("node-etcd-cut")
    active = await chaos_cluster.leader(chaos)
    assert active is not None
    async with recording(chaos.topo, accounts, run.history, settings=run.settings):
        await asyncio.sleep(QUIET_S)
        start = time.monotonic()
        with links.cut("node-etcd", site=active) as cut:
            assert len(cut) == len(chaos.topo.sites)
            await asyncio.sleep(8.0)
        run.fault = (start, time.monotonic())
        await asyncio.sleep(2 * QUIET_S)
    await _check(chaos, run, tmp_path)
    assert _leaders(run) == {member_name(active)}


@pytest.mark.slow
async def test_patroni_to_etcd_cut_on_the_primary_demotes_it_and_promotes_the_other(
    chaos: LocalCluster, accounts: WorkloadAccounts, links: Links, tmp_path: Path
) -> None:
    """#14 item 3 (Patroni -> etcd cut on the primary): the primary's Patroni cannot renew
    the leader key, demotes its PostgreSQL (read-only) within about retry_timeout, and the
    other member is promoted once the key expires (ttl); nothing acknowledged is lost and the
    old primary rejoins as a replica after the link heals."""
    run = Run("patroni-etcd-cut")
    primary = await chaos_cluster.leader(chaos)
    assert primary is not None
    other = _other(chaos, primary)

    async def demoted() -> bool:
        try:
            return not await readiness.accepts_writes(chaos.topo, chaos.state, primary)
        except (OSError, psycopg.Error):
            return True  # restarting as a replica: not taking writes either

    async def promoted() -> bool:
        return await chaos_cluster.leader(chaos) == other

    async with recording(chaos.topo, accounts, run.history, settings=run.settings):
        await asyncio.sleep(QUIET_S)
        start = time.monotonic()
        with links.cut("patroni-etcd", site=primary):
            run.measured["demoted_s"] = await chaos_cluster.poll(
                "the primary demoting itself", demoted, timeout=60
            )
            run.measured["promoted_s"] = run.measured["demoted_s"] + await chaos_cluster.poll(
                "the other member promoted", promoted, timeout=90
            )
            await asyncio.sleep(2.0)
        run.fault = (start, time.monotonic())
        await asyncio.sleep(QUIET_S)
    await _check(chaos, run, tmp_path)
    run.measured["rejoined_s"] = await chaos_cluster.poll(
        "the old primary streaming as synchronous standby",
        lambda: _sync_streams(chaos, other),
        timeout=120,
    )
    print(f"[measure] chaos {run.name}: {run.measured}")


async def _sync_streams(c: LocalCluster, leader: str) -> bool:
    async with http_client.session(c.topo, c.state) as s:
        return await readiness.sync_standby_streams(s, c.topo, c.state, leader)


@pytest.mark.slow
async def test_node_to_postgres_cut_on_the_active_site_moves_the_site(
    chaos: LocalCluster, accounts: WorkloadAccounts, links: Links, tmp_path: Path
) -> None:
    """#14 item 3 (node -> PostgreSQL cut on the active site): the active node cannot reach
    its own database while Patroni and the database are fine; it turns standby once its
    database has been silent to it for PG_SILENCE_LIMIT_S (failover.role_rule), the failover
    controller on the other site sees the active site's node not ready and switches the
    cluster over, and the other site's node takes the writes; nothing acknowledged is lost.
    (Before the rule the node stayed ready, answered every write 503, and nothing moved.)"""
    run = Run("node-postgres-cut")
    active = await chaos_cluster.leader(chaos)
    assert active is not None
    other = _other(chaos, active)

    async def moved() -> bool:
        return await chaos_cluster.leader(chaos) == other

    async with recording(chaos.topo, accounts, run.history, settings=run.settings):
        await asyncio.sleep(QUIET_S)
        start = time.monotonic()
        with links.cut("node-postgres", site=active):
            try:
                run.measured["site_moved_s"] = await chaos_cluster.poll(
                    "the active site moving", moved, timeout=MOVE_S
                )
                await asyncio.sleep(3.0)
            except AssertionError:
                pass  # judged after the checker has run
        run.fault = (start, time.monotonic())
        await asyncio.sleep(QUIET_S)
    await _check(chaos, run, tmp_path)
    assert "site_moved_s" in run.measured, f"the site did not move within {MOVE_S:.0f} s"
    assert any(
        op.type == "ok" and op.completion is not None and op.completion.node == other
        for op in run.history.operations()
    ), "the other site's node acknowledged nothing"
