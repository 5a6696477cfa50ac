"""Where the CPU of a load goes (#11): each process group of the local system's CPU seconds over
a phase, per request and in cores, beside how busy the whole machine was.

Everything shares the machine's cores, so a throughput figure alone cannot say what limits it:
these figures do. On a virtual machine the hypervisor may run other guests on our cores: that
time (steal) is neither ours nor idle, so it is counted apart (`machine_stolen_cores`) and not
in the busy cores; a phase that lost much of the machine to it is slower for a reason outside
the system. A group is a process of the topology with its descendants (a node's
supervisor and its node; HAProxy), or several alike (etcd's three members), and each site's
PostgreSQL (`postgres-<site>`: the postmaster and its backends) apart from Patroni; the
bench's document names these by role (`by_role`). A descendant that exits during the phase (a
pgbench connection's backend) is still counted: its parent reaped it, and psutil's
`children_*` times carry it from then on.

Beside the CPU, each group's minor page faults per request: a process that maps and unmaps
memory for every request (day 8 in the README: a 256 KiB buffer mapped for every TLS read, five
faults a submission) shows there at once, where its CPU cost hides in the noise.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from deploy.bench.stats import median
from deploy.process_specs import running_pids
from deploy.state import StateDir
from deploy.topology import Topology

# Spec name prefix -> group; a spec matching none is its own group.
_GROUPS = (
    ("redis-exporter", "monitoring"),
    ("postgres-exporter", "monitoring"),
    ("prometheus", "monitoring"),
    ("alertmanager", "monitoring"),
    ("sentinel-", "redis"),
    ("redis-", "redis"),
    ("etcd-", "etcd"),
    ("patroni-", "patroni"),
)


def group_of(spec_name: str) -> str:
    """The group a process of the topology is counted in: per site for the nodes (active and
    standby differ), together for the rest."""
    for prefix, group in _GROUPS:
        if spec_name.startswith(prefix):
            return group
    return spec_name


@dataclass(frozen=True)
class CpuSample:
    at: float  # monotonic seconds
    machine_busy_s: float  # CPU seconds of every core spent running (our guest's own work)
    by_group: Mapping[str, float]  # CPU seconds so far, per group
    machine_stolen_s: float = 0.0  # CPU seconds the hypervisor gave to others (steal)
    faults_by_group: Mapping[str, int] = field(default_factory=dict)  # minor page faults so far


def machine_times(t: Any) -> tuple[float, float]:
    """(busy, stolen) CPU seconds of every core so far, from psutil's `cpu_times()`. Linux counts
    a guest's own guests in user and nice already, and steal, idle and I/O wait are not work
    done here."""
    stolen = getattr(t, "steal", 0.0)
    not_busy = t.idle + getattr(t, "iowait", 0.0) + stolen
    guests = getattr(t, "guest", 0.0) + getattr(t, "guest_nice", 0.0)
    return sum(t) - not_busy - guests, stolen


def minor_faults(stat_line: str) -> int:
    """A process's minor page faults so far, its own and its reaped children's, from its
    /proc/<pid>/stat line (minflt and cminflt, fields 10 and 11; counted after the command
    name, which may hold spaces and parentheses)."""
    fields = stat_line.rsplit(")", 1)[1].split()
    return int(fields[7]) + int(fields[8])  # fields[0] is field 3, the state


def _faults(pid: int) -> int:
    return minor_faults(Path(f"/proc/{pid}/stat").read_text())


def sample(
    topo: Topology, state: StateDir, clock: Callable[[], float] = time.monotonic
) -> CpuSample:
    """CPU seconds and minor page faults so far of every group of the running local system."""
    by_group: dict[str, float] = {}
    faults: dict[str, int] = {}
    for name, pid in running_pids(topo, state).items():
        group = group_of(name)
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            # Live processes' own time, and their reaped children's (a restarted node, a
            # pgbench connection's backend) from the parent that reaped them.
            for p in (root, *root.children(recursive=True)):
                with contextlib.suppress(psutil.Error):
                    t = p.cpu_times()
                    spent = t.user + t.system + t.children_user + t.children_system
                    by_group[group] = by_group.get(group, 0.0) + spent
                with contextlib.suppress(OSError, IndexError, ValueError):  # gone, or not Linux
                    faults[group] = faults.get(group, 0) + _faults(p.pid)
    busy, stolen = machine_times(psutil.cpu_times())
    return CpuSample(clock(), busy, by_group, stolen, faults)


@dataclass(frozen=True)
class Usage:
    """What a phase used: the machine's busy cores, each group's cores and, when the requests
    answered in it are known, each group's CPU milliseconds and minor page faults per request;
    and the cores the hypervisor took meanwhile."""

    machine_busy_cores: float
    cores: Mapping[str, float]
    ms_per_request: Mapping[str, float] | None = None
    machine_stolen_cores: float = 0.0
    faults_per_request: Mapping[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        def ordered(table: Mapping[str, float]) -> dict[str, float]:
            return {g: round(v, 3) for g, v in sorted(table.items(), key=lambda kv: -kv[1])}

        out: dict[str, Any] = {
            "machine_busy_cores": round(self.machine_busy_cores, 2),
            "machine_stolen_cores": round(self.machine_stolen_cores, 2),
            "cores": ordered(self.cores),
        }
        if self.ms_per_request is not None:
            out["ms_per_request"] = ordered(self.ms_per_request)
        if self.faults_per_request is not None:
            out["faults_per_request"] = ordered(self.faults_per_request)
        return out


# Groups below this share of a core in a phase are left out of its figures.
MIN_CORES = 0.01


def usage(before: CpuSample, after: CpuSample, *, requests: int | None = None) -> Usage:
    """What the phase between two samples used (groups below MIN_CORES left out). A group
    missing from either sample started or stopped within the phase: left out too; so are a
    group's faults when either sample lacks them."""
    wall = after.at - before.at
    if wall <= 0:
        raise ValueError("the second sample must be taken after the first")
    spent = {
        g: after.by_group[g] - before.by_group[g]
        for g in after.by_group.keys() & before.by_group.keys()
    }
    spent = {g: s for g, s in spent.items() if s / wall >= MIN_CORES}
    faults = None
    if requests:
        faults = {
            g: (after.faults_by_group[g] - before.faults_by_group[g]) / requests
            for g in spent.keys() & after.faults_by_group.keys() & before.faults_by_group.keys()
        }
    return Usage(
        machine_busy_cores=(after.machine_busy_s - before.machine_busy_s) / wall,
        cores={g: s / wall for g, s in spent.items()},
        ms_per_request=None if not requests else {g: 1000 * s / requests for g, s in spent.items()},
        machine_stolen_cores=(after.machine_stolen_s - before.machine_stolen_s) / wall,
        faults_per_request=faults,
    )


# Per-site groups named by what the site did in a phase (`by_role`).
ACTIVE_NODE = "node (active)"
_ROLE_NAMES = (("node-", ACTIVE_NODE, "node (standby)"),
               ("postgres-", "postgres (primary)", "postgres (standby)"))  # fmt: skip


def by_role(u: Usage, leader: str) -> Usage:
    """`u` with each site's node and PostgreSQL named by its part in the phase, `leader` being
    the site whose PostgreSQL was the primary: the active node and the primary, the standby
    node and PostgreSQL. A run compares with the previous one whichever site led each (by
    site name, a run led by A set A's busy node beside B's idle standby of the run before)."""

    def name(group: str) -> str:
        for prefix, active, standby in _ROLE_NAMES:
            if group.startswith(prefix):
                return active if group == f"{prefix}{leader}" else standby
        return group

    def renamed(table: Mapping[str, float]) -> dict[str, float]:
        out: dict[str, float] = {}
        for g, v in table.items():
            out[name(g)] = out.get(name(g), 0.0) + v  # two standby sites add up
        return out

    per_request = None if u.ms_per_request is None else renamed(u.ms_per_request)
    faults = None if u.faults_per_request is None else renamed(u.faults_per_request)
    return Usage(
        u.machine_busy_cores, renamed(u.cores), per_request, u.machine_stolen_cores, faults
    )


def median_usage(runs: Sequence[Usage]) -> Usage:
    """Each figure's median over rounds (a group missing from a round counts as 0 there)."""

    def med(tables: Sequence[Mapping[str, float]]) -> dict[str, float]:
        groups = {g for t in tables for g in t}
        return {g: median([t.get(g, 0.0) for t in tables]) for g in groups}

    per_request = [r.ms_per_request for r in runs if r.ms_per_request is not None]
    faults = [r.faults_per_request for r in runs if r.faults_per_request is not None]
    return Usage(
        machine_busy_cores=median([r.machine_busy_cores for r in runs]),
        cores=med([r.cores for r in runs]),
        ms_per_request=med(per_request) if per_request else None,
        machine_stolen_cores=median([r.machine_stolen_cores for r in runs]),
        faults_per_request=med(faults) if faults else None,
    )
