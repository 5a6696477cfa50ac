"""The bench's one table, its targets (#11) and the plot, from the run's JSON document (pure)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from deploy.bench import svg
from deploy.bench.cpu import ACTIVE_NODE
from deploy.bench.phases import RSS_PHASES
from deploy.bench.stats import Change, lookup, lookup_mapping


@dataclass(frozen=True)
class Target:
    number: int
    what: str
    path: str
    limit: float
    higher_is_better: bool

    def met(self, doc: Mapping[str, Any]) -> bool | None:
        v = lookup(doc, self.path)
        if v is None:
            return None
        return v >= self.limit if self.higher_is_better else v <= self.limit


TARGETS = (
    Target(1, "closed loop API / pgbench", "closed_loop.ratio", 0.5, True),
    Target(2, "open loop submission p99 ms", "open_loop.kinds.submission.latency.p99", 50, False),
    Target(2, "open loop arrival p99 ms", "open_loop.kinds.arrival.latency.p99", 10, False),
    Target(2, "open loop errors", "open_loop.errors", 0, False),
    Target(3, "overload accepted p99 ms", "overload.accepted_latency.p99", 250, False),
    Target(3, "overload acknowledged but not stored", "overload.lost", 0, False),
    Target(4, "batch of 10,000 s", "batch.seconds", 2.0, False),
    Target(5, "node RSS max MiB", "memory.node_rss_max_mb", 150, False),
    Target(5, "idle PSS of the system MiB", "memory.idle_pss_mib", 500, False),
)


def target_rows(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "target": t.number,
            "what": t.what,
            "value": lookup(doc, t.path),
            "limit": t.limit,
            "met": t.met(doc),
        }
        for t in TARGETS
    ]


def _num(v: float | None, digits: int = 1) -> str:
    if v is None:
        return "-"
    return f"{v:,.{digits}f}"


Row = tuple[str, str, str, str]  # figure, this run, previous, target


def _rows(doc: Mapping[str, Any], prev: Mapping[str, Any] | None) -> list[Row]:
    def row(label: str, path: str, digits: int = 1, target: str = "") -> Row:
        before = lookup(prev, path) if prev is not None else None
        return (label, _num(lookup(doc, path), digits), _num(before, digits), target)

    rows: list[Row] = [
        row("database at the start: MiB", "database.size_mib", 0),
        row("database at the start: consignments (estimate)", "database.consignments", 0),
        row("closed loop: API req/s (16 conn, median)", "closed_loop.api.rps"),
        row("closed loop: API p50 ms", "closed_loop.api.p50_ms"),
        row("closed loop: API p99 ms", "closed_loop.api.p99_ms"),
        row("closed loop: pgbench tx/s (16 clients)", "closed_loop.pgbench.tps"),
        row("closed loop: pgbench p99 ms", "closed_loop.pgbench.p99_ms"),
        row("closed loop: API / pgbench", "closed_loop.ratio", 3, ">= 0.5"),
        row(
            "closed loop: API WAL KiB per request (median)",
            "closed_loop.wal.api.kib_per_request",
            2,
        ),
        row(
            "closed loop: pgbench WAL KiB per tx (median)",
            "closed_loop.wal.pgbench.kib_per_request",
            2,
        ),
        row(
            "closed loop: API WAL KiB per request, most in a round",
            "closed_loop.wal.api.kib_per_request_max",
            2,
        ),
    ]
    rows += _cpu_rows(doc, row)
    rows += _floor_rows(doc, row)
    for kind, limit in (("submission", "<= 50"), ("arrival", "<= 10")):
        base = f"open_loop.kinds.{kind}"
        rows += [
            row(f"open loop: {kind} offered /s", f"{base}.offered_rate"),
            row(f"open loop: {kind} achieved /s", f"{base}.achieved_rate"),
            row(f"open loop: {kind} p50 ms", f"{base}.latency.p50", 2),
            row(f"open loop: {kind} p90 ms", f"{base}.latency.p90", 2),
            row(f"open loop: {kind} p99 ms", f"{base}.latency.p99", 2, limit),
            row(f"open loop: {kind} max ms", f"{base}.latency.max", 2),
        ]
    rows += [
        row("open loop: errors (non-2xx, no answer)", "open_loop.errors", 0, "0"),
        row("open loop: generator CPU, share of a core", "open_loop.generator.cpu_share", 2),
        row("open loop: generator send lag p99 ms", "open_loop.generator.send_lag_p99_ms", 2),
        row("overload: offered /s (3x sustained)", "overload.offered_rate"),
        row("overload: accepted /s", "overload.accepted_rate"),
        row("overload: shed (429/503)", "overload.shed", 0),
        row("overload: shed with Retry-After", "overload.shed_with_retry_after", 0),
        row("overload: failed otherwise", "overload.failed", 0),
        row("overload: accepted p99 ms", "overload.accepted_latency.p99", 1, "< 250"),
        row("overload: acknowledged, not stored", "overload.lost", 0, "0"),
        row("overload: recovery after the drop s", "overload.recovery_s", 1, "at once"),
        row("overload: first clean second after the drop s", "overload.first_clean_s", 1),
        row("overload: calm offer /s (before and after)", "overload.calm_rate"),
        row("calm before: unclean seconds", "overload.calm_before.unclean_seconds", 0),
        row("calm after the drop: unclean seconds", "overload.calm_after.unclean_seconds", 0),
        row("calm before: shed", "overload.calm_before.shed", 0),
        row("calm after the drop: shed", "overload.calm_after.shed", 0),
        row("overload: generator CPU, share of a core", "overload.generator.cpu_share", 2),
        row("overload: generator send lag p99 ms", "overload.generator.send_lag_p99_ms", 2),
        row("batch of 10,000: seconds", "batch.seconds", 2, "<= 2"),
        row("node RSS peak MiB (largest process)", "memory.node_rss_max_mb", 0, "<= 150"),
        *(
            row(f"node RSS peak in the {phase} MiB", f"memory.node_rss_peak_by_phase_mb.{phase}", 0)
            for phase in RSS_PHASES
        ),
        row("node RSS after MiB (largest process)", "memory.node_rss_after_max_mb", 0, "<= 150"),
        row("idle PSS of the whole system MiB", "memory.idle_pss_mib", 0, "<= 500"),
        row("idle PSS: of it monitoring's processes MiB", "memory.idle_pss_monitoring_mib", 0),
        row(
            "idle PSS read with the youngest process up, s",
            "memory.idle_pss_youngest_process_age_s",
            0,
        ),
    ]
    for d in doc.get("distance", {}).get("delays", []):
        ms = d["delay_ms"]
        rows.append(
            row(f"DR distance {ms} ms: submission p50 ms", f"distance.by_delay.{ms}.p50_ms")
        )
        rows.append(row(f"DR distance {ms} ms: req/s", f"distance.by_delay.{ms}.rps"))
    return rows


def _floor_rows(doc: Mapping[str, Any], row: Callable[..., Row]) -> list[Row]:
    """The commit alone, then target 2's mix at each fraction of its rates (deploy.bench.floor)."""
    if lookup_mapping(doc, "floor") is None:
        return []
    rows = [
        row(f"commit alone, {how}: {p} ms", f"floor.commit.{key}.{p}", 2)
        for key, how in (("synchronous", "synchronous"), ("local", "primary's flush only"))
        for p in ("p50", "p99")
    ]
    rate = lookup(doc, "floor.arrival_alone.paced_rate")
    for key, how in (
        ("paced", f"at {rate:g}/s" if rate else "paced"),
        ("back_to_back", "back to back"),
    ):
        if lookup_mapping(doc, f"floor.arrival_alone.{key}") is not None:
            rows += [
                row(f"arrival alone from curl, {how}: {p} ms", f"floor.arrival_alone.{key}.{p}", 2)
                for p in ("p50", "p99")
            ]
    for percent in lookup_mapping(doc, "floor.by_percent") or {}:
        base = f"floor.by_percent.{percent}"
        at = f"target 2 at {percent}%"
        rows += [
            row(f"{at}: submission p99 ms", f"{base}.kinds.submission.latency.p99", 2, "<= 50"),
            row(f"{at}: arrival p50 ms", f"{base}.kinds.arrival.latency.p50", 2),
            row(f"{at}: arrival p99 ms", f"{base}.kinds.arrival.latency.p99", 2, "<= 10"),
            row(f"{at}: machine busy, cores", f"{base}.machine_busy_cores", 2),
        ]
    rows.append(row("target 2's latencies held up to, share of its offer", "floor.highest_held", 1))
    return rows


# CPU groups shown per phase (deploy.bench.cpu); the JSON keeps every group.
CPU_GROUPS_SHOWN = 5
# Phases whose active node's minor page faults per request are shown too (the JSON keeps every
# group's), by the phase's path, with their unit.
FAULT_ROWS = {"closed_loop.cpu.api": "minor page faults per submission"}
CPU_PHASES = (
    ("idle", "idle_cpu", "cores", "cores"),
    ("closed loop API", "closed_loop.cpu.api", "ms_per_request", "CPU ms per submission"),
    ("closed loop pgbench", "closed_loop.cpu.pgbench", "ms_per_request", "CPU ms per tx"),
    ("open loop", "open_loop.cpu", "cores", "cores"),
)


def _cpu_rows(doc: Mapping[str, Any], row: Callable[..., Row]) -> list[Row]:
    """Where each phase's CPU went: the machine's busy cores, then its busiest groups."""
    out = []
    for label, path, key, unit in CPU_PHASES:
        usage = lookup_mapping(doc, path)
        if usage is None:
            continue
        out.append(row(f"{label}: machine busy, cores", f"{path}.machine_busy_cores", 2))
        out.append(
            row(f"{label}: stolen by the hypervisor, cores", f"{path}.machine_stolen_cores", 2)
        )
        groups = list(usage.get(key, {}))[:CPU_GROUPS_SHOWN]
        out += [row(f"{label}: {unit}, {g}", f"{path}.{key}.{g}", 3) for g in groups]
        faults_unit = FAULT_ROWS.get(path)
        if faults_unit and ACTIVE_NODE in usage.get("faults_per_request", {}):
            fault_path = f"{path}.faults_per_request.{ACTIVE_NODE}"
            out.append(row(f"{label}: {faults_unit}, {ACTIVE_NODE}", fault_path, 2))
    return out


# A phase whose cores the hypervisor took more than this (steal) is flagged: on 2 cores a tenth
# of a core is 5% of the machine, more than the run-to-run noise of the ratios compared here.
STOLEN_WARN_CORES = 0.1


def stolen_phases(doc: Mapping[str, Any]) -> list[tuple[str, float]]:
    """The phases that lost more than STOLEN_WARN_CORES to the hypervisor, with how much."""
    out = []
    for label, path, _key, _unit in CPU_PHASES:
        stolen = lookup(doc, f"{path}.machine_stolen_cores")
        if stolen is not None and stolen > STOLEN_WARN_CORES:
            out.append((label, stolen))
    return out


def table(doc: Mapping[str, Any], prev: Mapping[str, Any] | None) -> str:
    """The run's figures beside the previous run's and the issue's targets, as plain text."""
    rows = _rows(doc, prev)
    head: Row = ("figure", "this run", "previous", "target")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    align: list[Callable[[str, int], str]] = [str.ljust, str.rjust, str.rjust, str.ljust]

    def fmt(r: Row) -> str:
        return "  ".join(align[i](r[i], widths[i]) for i in range(4)).rstrip()

    lines = [fmt(head), "  ".join("-" * w for w in widths)]
    return "\n".join([*lines, *(fmt(r) for r in rows)]) + "\n"


def changes_text(changes: Sequence[Change]) -> str:
    out = []
    for c in changes:
        rel = c.relative
        word = {True: "better", False: "worse", None: "same"}[c.better]
        pct = "" if rel is None else f" ({rel:+.0%})"
        out.append(f"  {c.path}: {c.before:,.2f} -> {c.after:,.2f}{pct} {word}")
    return "\n".join(out)


def plot(doc: Mapping[str, Any]) -> str:
    """The overload timeline, the open-loop percentiles and, when measured, the DR distance."""
    panels = []
    seconds = doc.get("overload", {}).get("timeline", [])
    if seconds:
        panels.append(
            svg.Panel(
                "Overload: half the sustained rate, 3x it, then half again",
                "second of the run",
                "requests per second",
                {
                    "offered": [(s["t"], s["offered"]) for s in seconds],
                    "accepted (2xx)": [(s["t"], s["ok"]) for s in seconds],
                    "shed (429/503)": [(s["t"], s["shed"]) for s in seconds],
                },
            )
        )
        panels.append(
            svg.Panel(
                "Overload: p99 of accepted requests per second",
                "second of the run",
                "ms from scheduled send",
                {"p99": [(s["t"], s["p99_ms"]) for s in seconds]},
            )
        )
    kinds = doc.get("open_loop", {}).get("kinds", {})
    if kinds:
        panels.append(
            svg.Panel(
                "Open loop latency (from scheduled send time)",
                "percentile (100 = max)",
                "ms",
                {
                    k: [
                        (p, v["latency"][n])
                        for p, n in ((50, "p50"), (90, "p90"), (99, "p99"), (100, "max"))
                    ]
                    for k, v in kinds.items()
                },
            )
        )
    delays = doc.get("distance", {}).get("delays", [])
    if delays:
        panels.append(
            svg.Panel(
                "Distance to the DR site",
                "one-way delay on the replication link, ms",
                "p50 ms / req/s / 10",
                {
                    "submission p50 ms": [(d["delay_ms"], d["p50_ms"]) for d in delays],
                    "req/s / 10": [(d["delay_ms"], d["rps"] / 10) for d in delays],
                },
            )
        )
    return svg.render(f"rocars bench {doc.get('started_at', '')}", panels)
