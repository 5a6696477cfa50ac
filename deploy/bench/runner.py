"""`rocars bench`: every measurement of #11 in one run against the running local system, the
JSON document and plot under <state>/bench/, and the comparison with the previous run.

Order: idle memory and CPU first (nothing loaded yet), then closed loop (wrk and pgbench
alternately, never at once), the latency floor (commits alone, target 2's mix at fractions of
its rates), open loop, overload, the 10,000-item batch, node memory after, and last the
distance to the DR site. Every load runs alone; the caller holds the cluster lock.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from deploy import admin, http_client
from deploy.bench import (
    closedloop,
    cpu,
    distance,
    floor,
    memory,
    openloop,
    phases,
    report,
    wal,
    workload,
)
from deploy.bench.schedule import (
    Outcome,
    Phase,
    by_kind,
    first_clean_seconds,
    recovery_seconds,
    summarize,
    timeline,
    unclean_seconds,
)
from deploy.bench.stats import COMPARED, Change, compare, median, percentile
from deploy.state import StateDir
from deploy.topology import Topology
from node.config import load_node_config

Echo = Callable[[str], None]
OVERLOAD_P99_MS = 250.0


@dataclass(frozen=True)
class Settings:
    closed_s: float = 10.0
    rounds: int = 3
    open_s: float = 30.0
    submission_rate: float = 500.0
    arrival_rate: float = 200.0
    overload_s: float = 10.0
    overload_factor: float = 3.0
    recovery_s: float = 10.0
    batch_items: int = 10_000
    batch_runs: int = 2
    bundles: int = 200
    generator_processes: int = 2
    distance_delays_ms: tuple[int, ...] = (0, 2, 5, 20)
    distance_s: float = 10.0
    idle_cpu_s: float = 10.0
    floor_fractions: tuple[float, ...] = floor.FRACTIONS
    floor_s: float = 10.0
    floor_commits: int = floor.COMMITS
    floor_arrivals: int = floor.ARRIVALS_ALONE

    @classmethod
    def full(cls, duration: float | None = None) -> Settings:
        s = cls()
        if duration is not None:
            s = replace(
                s,
                closed_s=duration,
                open_s=duration,
                overload_s=duration,
                recovery_s=duration,
                distance_s=duration,
                floor_s=duration,
            )
        return s

    @classmethod
    def quick(cls, duration: float | None = None) -> Settings:
        d = duration or 5.0
        return cls(
            closed_s=d,
            rounds=1,
            open_s=d,
            overload_s=d,
            recovery_s=d,
            batch_runs=1,
            bundles=100,
            distance_delays_ms=(),
            idle_cpu_s=min(d, 5.0),
            floor_s=d,
        )

    @classmethod
    def smoke(cls) -> Settings:
        """About 10 s of load, no overload (it sheds with 503 on purpose): the CI smoke."""
        return cls(
            closed_s=1,
            rounds=2,  # two rounds of the same script: the second must send new keys
            open_s=4,
            submission_rate=50,
            arrival_rate=20,
            overload_s=0,
            batch_items=200,
            batch_runs=1,
            bundles=20,
            generator_processes=1,
            distance_delays_ms=(),
            idle_cpu_s=1,
            floor_fractions=(0.1,),
            floor_s=2,
            floor_commits=50,
            floor_arrivals=20,
        )


def _wal_text(use: wal.WalUse) -> str:
    """A round's WAL per request (several times more in a checkpoint's wake, deploy.bench.wal)."""
    return f", {use.kib_per_request:.1f} KiB of WAL each"


def _calm_window(outcomes: Sequence[Outcome], start: float, end: float) -> dict[str, Any]:
    """What the calm offer got in one window of schedule: alone before the overload, or after
    the drop."""
    window = [o for o in outcomes if start <= o.scheduled < end]
    summary = summarize(window, end - start)
    return {
        "offered": summary.offered,
        "accepted": summary.ok,
        "shed": summary.shed,
        "accepted_p99_ms": round(summary.latency.p99, 1),
        "unclean_seconds": unclean_seconds(timeline(window), start, end, OVERLOAD_P99_MS),
    }


def bench_dir(state: StateDir) -> Path:
    return state.root / "bench"


def previous_run(folder: Path) -> tuple[Path, dict[str, Any]] | None:
    runs = sorted(folder.glob("*.json"))
    if not runs:
        return None
    return runs[-1], json.loads(runs[-1].read_text())


def _busy_processes(sample_s: float = 1.0) -> list[str]:
    """Processes using more than a tenth of a core right now (what else was running)."""
    procs = list(psutil.process_iter(["pid", "name"]))
    for p in procs:
        try:
            p.cpu_percent(None)
        except psutil.Error:
            continue
    time.sleep(sample_s)
    out = []
    for p in procs:
        try:
            pct = p.cpu_percent(None)
        except psutil.Error:
            continue
        if pct > 10 and p.pid != os.getpid():
            out.append(f"{p.info['name']}[{p.pid}] {pct:.0f}%")
    return out


class Bench:
    def __init__(self, topo: Topology, state: StateDir, settings: Settings, echo: Echo) -> None:
        self.topo, self.state, self.s, self.echo = topo, state, settings, echo
        self.run = secrets.token_hex(4)
        self.api = topo.entry_url()

    async def setup(self) -> None:
        # wrk's 16 connections are not rate-limited by us: room for 2,000/s before an account's
        # limit could answer 429.
        most = max(self.s.submission_rate, 2000.0)
        self.accounts = await workload.make_accounts(
            self.topo, self.state, traders=workload.traders_for(most), run=self.run
        )
        async with http_client.session(self.topo, self.state) as session:
            self.vrns = await workload.make_bundles(
                session, self.api, self.accounts, count=self.s.bundles, run=self.run
            )
        self.body = workload.body_bytes(workload.consignment(datetime.now(UTC)))

    def closed_loop(self) -> closedloop.ClosedLoop:
        leader = self._leader()
        db = load_node_config(self.state.node_config(leader)).database
        trader_id, _ = self.accounts.traders[0]
        sample = json.loads(self.body)
        at = datetime.now(UTC).isoformat()
        sample.update(ccrn="2000000000000000", status="submitted", version=1, itfs=None)
        sample.update(submitted_at=at, last_changed_at=at)  # the answer's shape and size
        pg_script = closedloop.pgbench_script(account_id=trader_id, run=self.run, sample=sample)
        wrk_script = closedloop.wrk_script(
            keys=[k for _, k in self.accounts.traders], body=self.body, run=self.run
        )
        api, pg = [], []
        api_cpu, pg_cpu = [], []
        api_wal, pg_wal = [], []
        # One WAL reading between runs serves as the end of one and the start of the next.
        w0 = self._wal_now()
        for i in range(self.s.rounds):
            t0 = self._cpu_now()
            api.append(closedloop.run_wrk(self.api, wrk_script, self.s.closed_s))
            api_cpu.append(cpu.usage(t0, self._cpu_now(), requests=api[-1].answered))
            w1 = self._wal_now()
            api_wal.append(wal.WalUse.between(w0, w1, api[-1].answered))
            self.echo(f"  round {i + 1}: API {api[-1].rate:,.0f} req/s{_wal_text(api_wal[-1])}")
            t0 = self._cpu_now()
            pg.append(closedloop.run_pgbench(db, pg_script, self.s.closed_s))
            pg_cpu.append(cpu.usage(t0, self._cpu_now(), requests=pg[-1].answered))
            w0 = self._wal_now()
            pg_wal.append(wal.WalUse.between(w1, w0, pg[-1].answered))
            self.echo(
                f"  round {i + 1}: pgbench {pg[-1].rate:,.0f} tx/s (member {leader})"
                f"{_wal_text(pg_wal[-1])}"
            )
        api_used, pg_used = cpu.median_usage(api_cpu), cpu.median_usage(pg_cpu)
        return closedloop.ClosedLoop(
            api,
            pg,
            cpu.by_role(api_used, leader),
            cpu.by_role(pg_used, leader),
            api_wal=api_wal,
            pgbench_wal=pg_wal,
        )

    def idle_cpu(self) -> dict[str, Any]:
        """What the system uses doing nothing (health checks, Patroni's loop, etcd's heartbeats,
        the nodes' polls, scrapes): the floor every load phase starts from on these cores."""
        leader = self._leader()
        t0 = self._cpu_now()
        time.sleep(self.s.idle_cpu_s)
        return cpu.by_role(cpu.usage(t0, self._cpu_now()), leader).to_dict()

    def _leader(self) -> str:
        return asyncio.run(admin.leader_site(self.topo))

    def _cpu_now(self) -> cpu.CpuSample:
        return cpu.sample(self.topo, self.state)

    def _wal_now(self) -> int:
        async def read() -> int:
            async with await admin.connect_leader(self.topo, self.state) as conn:
                return await wal.position(conn)

        return asyncio.run(read())

    def _target(self, trader_keys: list[str]) -> openloop.Target:
        return openloop.Target(
            api=self.api,
            ca=str(self.state.ca_bundle) if self.api.startswith("https:") else None,
            run=self.run + secrets.token_hex(2),
            trader_keys=tuple(trader_keys),
            officer_key=self.accounts.officer,
            consignment=self.body,
            lbcp=workload.LBCP,
            vrns=tuple(self.vrns),
        )

    def open_loop(self) -> dict[str, Any]:
        return self._offer(self.s.submission_rate, self.s.arrival_rate, self.s.open_s)

    def _offer(self, submissions: float, arrivals: float, seconds: float) -> dict[str, Any]:
        """Submissions and arrival decisions offered together at these rates (open loop)."""
        phases = [
            Phase(openloop.SUBMISSION, submissions, 0, seconds),
            Phase(openloop.ARRIVAL, arrivals, 0, seconds),
        ]
        target = self._target([k for _, k in self.accounts.traders])
        leader = self._leader()
        t0 = self._cpu_now()
        res = openloop.run(target, phases, processes=self.s.generator_processes)
        answered = sum(1 for o in res.outcomes if 200 <= o.status < 300)
        used = cpu.by_role(cpu.usage(t0, self._cpu_now(), requests=answered), leader)
        kinds = {k: summarize(v, seconds) for k, v in by_kind(res.outcomes).items()}
        lags = sorted(o.lag * 1000 for o in res.outcomes)
        return {
            "seconds": seconds,
            "kinds": {k: v.to_dict() for k, v in kinds.items()},
            "errors": sum(v.offered - v.ok for v in kinds.values()),
            "cpu": used.to_dict(),
            "generator": {
                "processes": self.s.generator_processes,
                "cpu_share": round(res.cpu_share, 3),
                "send_lag_p99_ms": round(percentile(lags, 99), 3),
            },
        }

    def latency_floor(self) -> dict[str, Any]:
        """The synchronous commit alone, arrivals alone from curl, and target 2's mix at
        fractions of its rates (deploy.bench.floor)."""
        commits = asyncio.run(self._commit_floor())
        target = self._target([k for _, k in self.accounts.traders])
        alone = {
            pace: floor.arrivals_alone(target, self.s.floor_arrivals, rate).to_dict()
            for pace, rate in (("paced", floor.ALONE_RATE), ("back_to_back", None))
        }
        steps, judged = [], []
        for fraction in self.s.floor_fractions:
            run = self._offer(
                self.s.submission_rate * fraction, self.s.arrival_rate * fraction, self.s.floor_s
            )
            verdict = floor.judge(run["kinds"])
            judged.append((fraction, verdict))
            steps.append(
                {
                    "fraction": fraction,
                    "kinds": run["kinds"],
                    "held": verdict.held,
                    "why_not": list(verdict.why_not),
                    "machine_busy_cores": run["cpu"]["machine_busy_cores"],
                    "machine_stolen_cores": run["cpu"]["machine_stolen_cores"],
                    "generator_send_lag_p99_ms": run["generator"]["send_lag_p99_ms"],
                }
            )
        return {
            "commit": commits,
            "arrival_alone": {**alone, "paced_rate": floor.ALONE_RATE},
            "steps": steps,
            # Keyed by percent ("10"), since the report's paths are dotted.
            "by_percent": {f"{round(s['fraction'] * 100)}": s for s in steps},
            # 0: not even the smallest fraction held (a fraction is never 0 itself).
            "highest_held": floor.highest_held(judged) or 0.0,
        }

    async def _commit_floor(self) -> dict[str, Any]:
        conn = await admin.connect_leader(self.topo, self.state)
        async with conn:
            sync = await floor.commit_latency(conn, self.s.floor_commits, sync=True)
            local = await floor.commit_latency(conn, self.s.floor_commits, sync=False)
        return {"synchronous": sync.to_dict(), "local": local.to_dict()}

    async def database(self) -> dict[str, Any]:
        """How much the leader's database holds before the run: every figure here slows as the
        indexes outgrow PostgreSQL's cache (a development state folder gathers a few hundred
        thousand consignments a bench), so runs compare only at similar sizes."""
        conn = await admin.connect_leader(self.topo, self.state)
        async with conn:
            cur = await conn.execute(
                "SELECT pg_database_size(current_database()),"
                " (SELECT reltuples FROM pg_class WHERE relname = 'consignments')"
            )
            row = await cur.fetchone()
        size, rows = row if row else (0, 0)
        return {"size_mib": round(int(size) / 2**20), "consignments": max(0, round(float(rows)))}

    async def _stored(self, owner_ids: list[int]) -> int:
        conn = await admin.connect_leader(self.topo, self.state)
        async with conn:
            cur = await conn.execute(
                "SELECT count(*) FROM consignments WHERE owner_id = ANY(%s)", (owner_ids,)
            )
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    def overload(self, sustained: float) -> dict[str, Any]:
        offered = self.s.overload_factor * sustained
        fresh = asyncio.run(
            workload.make_traders(
                self.topo, self.state, workload.traders_for(offered), f"bench {self.run} overload"
            )
        )
        calm = sustained / 2
        target = self._target([k for _, k in fresh])
        # The offer after the drop, first offered alone in a run of its own (its own warmed
        # connections: HAProxy closes a connection idle for 10 s, and an overload that opens
        # hundreds of TLS connections at once measures the handshakes): whether the system
        # "recovered" is judged against what it does at that offer untouched, since at half
        # the closed-loop rate it sheds in a bad second now and then (day 3).
        control = openloop.run(
            replace(target, run=f"{target.run}-calm"),  # keys of its own
            [Phase(openloop.SUBMISSION, calm, 0, self.s.recovery_s)],
            processes=self.s.generator_processes,
        )
        drop = self.s.overload_s
        phases = [
            Phase(openloop.SUBMISSION, offered, 0, drop),
            Phase(openloop.SUBMISSION, calm, drop, self.s.recovery_s),
        ]
        res = openloop.run(target, phases, processes=self.s.generator_processes)
        during = [o for o in res.outcomes if o.scheduled < drop]
        summary = summarize(during, drop)
        seconds = timeline(res.outcomes)
        acknowledged = sum(1 for o in [*control.outcomes, *res.outcomes] if 200 <= o.status < 300)
        stored = asyncio.run(self._stored([i for i, _ in fresh]))
        return {
            "sustained_rate": round(sustained, 1),
            "offered_rate": round(summary.offered_rate, 1),
            "seconds": self.s.overload_s,
            "accepted_rate": round(summary.achieved_rate, 1),
            "accepted": summary.ok,
            "shed": summary.shed,
            "shed_with_retry_after": summary.shed_with_retry_after,
            "failed": summary.offered - summary.ok - summary.shed,
            "errors": summary.errors,
            "accepted_latency": summary.latency.to_dict(),
            "recovery_s": recovery_seconds(seconds, drop, OVERLOAD_P99_MS),
            "first_clean_s": first_clean_seconds(seconds, drop, OVERLOAD_P99_MS),
            "calm_rate": round(calm, 1),
            "calm_before": _calm_window(control.outcomes, 0, self.s.recovery_s),
            "calm_after": _calm_window(res.outcomes, drop, drop + self.s.recovery_s),
            "acknowledged": acknowledged,
            "stored": stored,
            "lost": max(0, acknowledged - stored),
            "timeline": [s.to_dict() for s in seconds],
            "generator": {
                "processes": self.s.generator_processes,
                "cpu_share": round(res.cpu_share, 3),
                # On 2 cores the generator starves with the system at 3x: a late send counts
                # in the accepted latency (from the scheduled time), so say how late it got.
                "send_lag_p99_ms": round(summary.send_lag_p99_ms, 3),
            },
        }

    async def batch(self) -> dict[str, Any]:
        now = datetime.now(UTC)
        body = workload.body_bytes(
            [workload.consignment(now, i) for i in range(self.s.batch_items)]
        )
        runs: list[float] = []
        accepted: list[int] = []
        timeout = aiohttp.ClientTimeout(total=300)
        async with http_client.session(self.topo, self.state, timeout=timeout) as session:
            for i in range(self.s.batch_runs):
                # A batch counts its items against the account's rate limit: one account each.
                _, key = await workload.make_account(
                    self.topo, self.state, "trader", f"bench {self.run} batch {i}"
                )
                t0 = time.monotonic()
                async with session.post(
                    f"{self.api}/v1/consignments:batch",
                    data=body,
                    headers={
                        **workload.auth(key),
                        "Content-Type": "application/json",
                    },
                ) as r:
                    doc = await r.json(content_type=None)
                    runs.append(time.monotonic() - t0)
                    if r.status != 200:
                        raise RuntimeError(f"batch answered {r.status}: {doc}")
                accepted.append(int(doc["accepted"]))
                self.echo(f"  batch {i + 1}: {runs[-1]:.2f} s, {accepted[-1]} accepted")
        return {
            "items": self.s.batch_items,
            "seconds": round(median(runs), 3),
            "runs": [round(r, 3) for r in runs],
            "accepted": accepted,
        }


def run_bench(topo: Topology, state: StateDir, settings: Settings, echo: Echo) -> dict[str, Any]:
    """Run every measurement; returns the document (also written under <state>/bench/)."""
    started = datetime.now(UTC)
    b = Bench(topo, state, settings, echo)
    doc: dict[str, Any] = {
        "started_at": started.isoformat(timespec="seconds"),
        "settings": asdict(settings),
        "machine": {
            "cpus": psutil.cpu_count(),
            "loadavg_before": [round(x, 2) for x in os.getloadavg()],
            "busy_before": _busy_processes(),
        },
    }
    echo("idle memory (PSS) of the whole system")
    pss = memory.settled_pss(topo, state)
    pss_age = memory.youngest_process_age(topo, state)
    echo(f"idle CPU of the whole system over {settings.idle_cpu_s:g} s")
    doc["idle_cpu"] = b.idle_cpu()
    echo("set-up: accounts and bundles")
    asyncio.run(b.setup())
    doc["database"] = asyncio.run(b.database())
    with memory.RssSampler(topo, state) as rss:
        echo(f"closed loop: {settings.rounds} rounds of {settings.closed_s:g} s, wrk then pgbench")
        rss.enter(phases.CLOSED_LOOP)
        cl = b.closed_loop()
        doc["closed_loop"] = cl.to_dict()
        if settings.floor_fractions:
            echo(
                f"latency floor: {settings.floor_commits} commits alone,"
                f" {settings.floor_arrivals} arrivals from curl at {floor.ALONE_RATE:g}/s and back"
                " to back, then target 2's mix at "
                + ", ".join(f"{f:g}" for f in settings.floor_fractions)
                + f" of its rates, {settings.floor_s:g} s each"
            )
            rss.enter(phases.FLOOR)
            doc["floor"] = b.latency_floor()
        echo(
            f"open loop: {settings.submission_rate:g}/s submissions + "
            f"{settings.arrival_rate:g}/s arrivals for {settings.open_s:g} s"
        )
        rss.enter(phases.OPEN_LOOP)
        doc["open_loop"] = b.open_loop()
        if settings.overload_s > 0:
            echo(
                f"overload: {settings.overload_factor:g}x {cl.api_rate:,.0f}/s for "
                f"{settings.overload_s:g} s, then half of it for {settings.recovery_s:g} s "
                "(and that half alone first)"
            )
            rss.enter(phases.OVERLOAD)
            doc["overload"] = b.overload(cl.api_rate)
        echo(f"batch of {settings.batch_items:,}")
        rss.enter(phases.BATCH)
        doc["batch"] = asyncio.run(b.batch())
    time.sleep(2)  # let the last answers' buffers go before reading "after"
    after = memory.node_rss(topo, state)
    doc["memory"] = {
        "node_rss_peak_mb": {k: round(v, 1) for k, v in rss.peak.items()},
        "node_rss_after_mb": {k: round(v, 1) for k, v in after.items()},
        "node_rss_peak_by_phase_mb": {k: round(v, 1) for k, v in rss.phase_peak.items()},
        "node_rss_max_mb": round(max([*rss.peak.values(), *after.values()], default=0.0), 1),
        "node_rss_after_max_mb": round(max(after.values(), default=0.0), 1),
        "idle_pss_mib": round(sum(pss.values()), 1),
        "idle_pss_monitoring_mib": round(memory.monitoring_share(topo, pss), 1),
        "idle_pss_detail_mib": {k: round(v, 1) for k, v in sorted(pss.items())},
        "idle_pss_youngest_process_age_s": None if pss_age is None else round(pss_age),
    }
    if settings.distance_delays_ms:
        echo(f"distance to the DR site: {settings.distance_delays_ms} ms one way")
        script = closedloop.wrk_script(
            keys=[k for _, k in b.accounts.traders], body=b.body, run=b.run + "d"
        )
        try:
            doc["distance"] = distance.measure(
                topo, state, script, settings.distance_delays_ms, settings.distance_s, echo
            )
        except Exception as exc:
            # The last step, and the one that reconfigures replication: whatever goes wrong in
            # it (it restores the route itself) must not lose the figures measured above.
            echo(f"  distance not measured: {exc}")
            doc["distance"] = {"error": str(exc)}
    doc["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    doc["targets"] = report.target_rows(doc)
    stolen = report.stolen_phases(doc)
    if stolen:
        echo(
            "warning: the hypervisor took the machine's CPU from this run (steal, cores): "
            + ", ".join(f"{phase} {cores:.2f}" for phase, cores in stolen)
            + "; its figures are lower than the system's own"
        )
    return doc


def save(state: StateDir, doc: dict[str, Any]) -> tuple[Path, dict[str, Any] | None, list[Change]]:
    """Write <state>/bench/<timestamp>.json and .svg with the comparison to the previous run;
    returns the JSON path, the previous document and the changes since it."""
    folder = bench_dir(state)
    folder.mkdir(parents=True, exist_ok=True)
    prev = previous_run(folder)
    changes: list[Change] = []
    if prev is not None:
        changes = compare(prev[1], doc, COMPARED)
        doc["previous"] = str(prev[0])
        doc["changes"] = [c.to_dict() for c in changes]
    stamp = doc["started_at"].replace(":", "").replace("+0000", "Z")
    path = folder / f"{stamp}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    path.with_suffix(".svg").write_text(report.plot(doc))
    return path, None if prev is None else prev[1], changes
