"""deploy.bench.cpu: a phase's CPU by process group, per request and in cores, from two
samples; the groups the local system's processes fall in; medians over rounds; the table's
rows for them; minor page faults per request beside the CPU."""

from __future__ import annotations

import mmap
from pathlib import Path
from typing import NamedTuple

import pytest

from deploy.bench import report
from deploy.bench.cpu import (
    CpuSample,
    Usage,
    by_role,
    group_of,
    machine_times,
    median_usage,
    minor_faults,
    usage,
)


def test_groups_of_the_topologys_processes() -> None:
    """Nodes stay per site (active and standby differ); the Patronis, etcd, Redis with
    Sentinel and the monitoring processes are each one group."""
    assert group_of("node-A") == "node-A"
    assert {group_of(n) for n in ("patroni-A", "patroni-B")} == {"patroni"}
    assert {group_of(n) for n in ("etcd-A", "etcd-C")} == {"etcd"}
    assert {group_of(n) for n in ("redis-A", "sentinel-C")} == {"redis"}
    assert {group_of(n) for n in ("prometheus", "alertmanager", "redis-exporter")} == {"monitoring"}
    assert group_of("postgres-exporter-A") == "monitoring"
    assert group_of("haproxy") == "haproxy"


def _at(t: float, busy: float, **groups: float) -> CpuSample:
    return CpuSample(at=t, machine_busy_s=busy, by_group=groups)


def test_usage_per_request_and_in_cores() -> None:
    """Two seconds apart, 1.2 s of a node's CPU over 1,000 requests is 0.6 core and 1.2 ms a
    request; the machine's busy seconds become its busy cores."""
    u = usage(_at(10, 100, **{"node-A": 5.0}), _at(12, 103, **{"node-A": 6.2}), requests=1000)
    assert u.machine_busy_cores == pytest.approx(1.5)
    assert u.cores == {"node-A": pytest.approx(0.6)}
    assert u.ms_per_request == {"node-A": pytest.approx(1.2)}


def test_usage_leaves_out_idle_and_appearing_groups() -> None:
    """A group under a hundredth of a core, or present in one sample only (it started or
    stopped within the phase), is left out; without a request count there is no per-request
    figure."""
    u = usage(
        _at(0, 0, **{"node-A": 1.0, "etcd": 1.0, "gone": 3.0}),
        _at(10, 5, **{"node-A": 3.0, "etcd": 1.05, "new": 9.0}),
    )
    assert set(u.cores) == {"node-A"}
    assert u.ms_per_request is None


def test_usage_refuses_samples_out_of_order() -> None:
    """The second sample must be the later one."""
    with pytest.raises(ValueError, match="after the first"):
        usage(_at(5, 0), _at(5, 0))


def test_median_over_rounds_counts_a_missing_group_as_zero() -> None:
    """Each figure's median over the rounds; a group absent from a round is 0 there."""
    runs = [
        Usage(1.0, {"node-A": 0.5, "haproxy": 0.1}, {"node-A": 0.7}),
        Usage(2.0, {"node-A": 0.7}, {"node-A": 0.9}),
        Usage(1.5, {"node-A": 0.6, "haproxy": 0.2}, {"node-A": 0.8}),
    ]
    m = median_usage(runs)
    assert m.machine_busy_cores == 1.5
    assert m.cores == {"node-A": pytest.approx(0.6), "haproxy": pytest.approx(0.1)}
    assert m.ms_per_request == {"node-A": pytest.approx(0.8)}


def test_document_lists_groups_busiest_first() -> None:
    """The JSON puts the busiest group first and rounds to a thousandth."""
    doc = Usage(1.234, {"etcd": 0.05, "node-A": 0.61234}, {"node-A": 0.8}).to_dict()
    assert list(doc["cores"]) == ["node-A", "etcd"]
    assert doc == {
        "machine_busy_cores": 1.23,
        "machine_stolen_cores": 0.0,
        "cores": {"node-A": 0.612, "etcd": 0.05},
        "ms_per_request": {"node-A": 0.8},
    }


def test_table_shows_each_phases_busiest_groups() -> None:
    """The bench's table has, per phase measured, the machine's busy cores and its busiest
    groups (at most CPU_GROUPS_SHOWN), in the document's order."""
    groups = {f"g{i}": 1.0 - i / 10 for i in range(7)}
    doc = {
        "closed_loop": {"cpu": {"api": {"machine_busy_cores": 1.6, "ms_per_request": groups}}},
        "open_loop": {"cpu": {"machine_busy_cores": 1.9, "cores": {"node-A": 0.9}}},
    }
    text = report.table(doc, None)
    assert "closed loop API: machine busy, cores" in text
    assert "closed loop API: CPU ms per submission, g4" in text
    assert "g5" not in text
    assert "open loop: cores, node-A" in text
    assert "closed loop pgbench" not in text  # not measured in this document


class _LinuxCpuTimes(NamedTuple):
    """The fields of psutil.cpu_times() on Linux, in its order."""

    user: float
    nice: float
    system: float
    idle: float
    iowait: float
    irq: float
    softirq: float
    steal: float
    guest: float
    guest_nice: float


def test_steal_is_neither_busy_nor_idle() -> None:
    """On a virtual machine the hypervisor's steal is counted apart from the busy seconds, and
    a guest's own guests (already in user and nice) are not counted twice."""
    times = _LinuxCpuTimes(
        user=10.0, nice=1.0, system=4.0, idle=50.0, iowait=2.0, irq=0.5, softirq=0.5,
        steal=7.0, guest=3.0, guest_nice=0.0,
    )  # fmt: skip
    assert machine_times(times) == (16.0, 7.0)


def test_usage_says_how_much_the_hypervisor_took() -> None:
    """Two samples' steal seconds become the phase's stolen cores, apart from its busy ones;
    the median over rounds keeps it."""
    before = CpuSample(at=0, machine_busy_s=0, by_group={}, machine_stolen_s=1.0)
    after = CpuSample(at=4, machine_busy_s=4, by_group={}, machine_stolen_s=3.0)
    u = usage(before, after)
    assert (u.machine_busy_cores, u.machine_stolen_cores) == (1.0, 0.5)
    assert u.to_dict()["machine_stolen_cores"] == 0.5
    assert median_usage([u, Usage(2.0, {}, None, 0.1), Usage(1.0, {}, None, 0.9)]) == Usage(
        1.0, {}, None, 0.5
    )


def test_table_shows_idle_cpu_and_steal_and_flags_a_robbed_phase() -> None:
    """The idle reading is a phase of the table like the loads, each phase says what the
    hypervisor took, and a phase over STOLEN_WARN_CORES is named for the warning."""
    idle = {"machine_busy_cores": 0.37, "machine_stolen_cores": 0.5, "cores": {"etcd": 0.13}}
    loaded = {"machine_busy_cores": 1.9, "machine_stolen_cores": 0.02, "cores": {}}
    doc = {"idle_cpu": idle, "open_loop": {"cpu": loaded}}
    text = report.table(doc, None)
    assert "idle: machine busy, cores" in text
    assert "idle: cores, etcd" in text
    assert "open loop: stolen by the hypervisor, cores" in text
    assert report.stolen_phases(doc) == [("idle", 0.5)]


def test_sites_named_by_their_part_so_runs_compare_whichever_site_led() -> None:
    """With B leading, B's node is the active one and B's PostgreSQL the primary; A's are the
    standby's; other groups keep their names, per request and in cores alike."""
    u = Usage(
        1.5,
        {"node-B": 0.6, "node-A": 0.05, "postgres-B": 0.3, "postgres-A": 0.1, "etcd": 0.1},
        {"node-B": 0.9, "postgres-A": 0.2},
        0.2,
    )
    named = by_role(u, "B")
    assert named.cores == {
        "node (active)": 0.6,
        "node (standby)": 0.05,
        "postgres (primary)": 0.3,
        "postgres (standby)": 0.1,
        "etcd": 0.1,
    }
    assert named.ms_per_request == {"node (active)": 0.9, "postgres (standby)": 0.2}
    assert (named.machine_busy_cores, named.machine_stolen_cores) == (1.5, 0.2)
    # A led the run before: the same names, so the table's "previous" column lines up.
    assert set(by_role(Usage(1.0, {"node-A": 0.6, "node-B": 0.05}), "A").cores) == {
        "node (active)",
        "node (standby)",
    }


def test_standby_sites_add_up_under_one_name() -> None:
    """A topology with two standby sites counts both under the standby's name."""
    u = by_role(Usage(1.0, {"node-A": 0.5, "node-B": 0.1, "node-D": 0.2}), "A")
    assert u.cores == {"node (active)": 0.5, "node (standby)": pytest.approx(0.3)}


def test_minor_faults_counted_after_a_command_name_with_spaces_and_parentheses() -> None:
    """minflt and cminflt (fields 10 and 11) are found after the last parenthesis, whatever the
    command name holds."""
    line = "4190 (python (x) y) S 4185 4190 4185 0 -1 4194560 78091 1200 7 3 25000 632 0 0 20 0"
    assert minor_faults(line) == 78091 + 1200


def test_touching_new_pages_counts_faults_in_this_process() -> None:
    """Read from this process's own /proc stat line: writing to each page of a new 8 MiB
    mapping adds at least a fault per page (2,048 of them). A mapping of its own, not malloc's
    memory, which may come from pages an earlier test already touched."""

    def now() -> int:
        return minor_faults(Path("/proc/self/stat").read_text())

    with mmap.mmap(-1, 8 * 2**20) as block:
        before = now()
        for offset in range(0, len(block), mmap.PAGESIZE):
            block[offset] = 1
        assert now() - before >= len(block) // mmap.PAGESIZE


def test_faults_per_request_beside_the_cpu_named_by_role_and_shown_for_the_active_node() -> None:
    """5,000 faults of node A over 1,000 requests is 5 a request; a group without faults in a
    sample has no fault figure; the median over rounds and the names by role carry it; the
    table shows the active node's, beside the previous run's."""
    before = CpuSample(0, 0, {"node-A": 1.0, "etcd": 1.0}, 0.0, {"node-A": 100})
    after = CpuSample(2, 3, {"node-A": 2.0, "etcd": 1.5}, 0.0, {"node-A": 5100})
    u = usage(before, after, requests=1000)
    assert u.faults_per_request == {"node-A": 5.0}
    assert usage(before, after).faults_per_request is None
    rounds = [u, Usage(1.0, {}, None, 0.0, {"node-A": 1.0}), Usage(1.0, {}, None, 0.0, {})]
    assert median_usage(rounds).faults_per_request == {"node-A": 1.0}
    named = by_role(u, "A")
    assert named.faults_per_request == {"node (active)": 5.0}
    doc = {"closed_loop": {"cpu": {"api": named.to_dict()}}}
    prev = {"closed_loop": {"cpu": {"api": {"faults_per_request": {"node (active)": 0.01}}}}}
    line = next(x for x in report.table(doc, prev).splitlines() if "page faults" in x)
    assert line.split()[-2:] == ["5.00", "0.01"]
