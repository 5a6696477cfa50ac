"""Stopping the local system (`rocars cluster down`, `make stop`) and deleting its files."""

from __future__ import annotations

import shutil
import signal
from collections.abc import Callable

from deploy import netns, processes
from deploy.process_specs import member_keys, monitoring_names, patroni_names, specs
from deploy.state import StateDir
from deploy.topology import Topology

Progress = Callable[[str], None]


def down(topo: Topology, state: StateDir, progress: Progress) -> None:
    all_specs = specs(topo, state)
    # Tier by tier (each tier at once): monitoring, entry and API nodes, then Redis, then the
    # database members, then etcd last so Patroni can release its leader key cleanly.
    watchers = monitoring_names(topo)
    tiers = [
        ["haproxy", *[f"node-{n}" for n in topo.data_sites], *watchers],
        [n for n in all_specs if n.startswith(("sentinel-", "redis-")) and n not in watchers],
        list(patroni_names(topo)),
        [f"etcd-{n}" for n in topo.sites],
    ]
    for tier in tiers:
        for name in processes.stop_many(state, [all_specs[n] for n in tier]):
            progress(f"stopped {name}")
    # A PostgreSQL whose Patroni was killed keeps running on its own: stop it by its pid file.
    for name in member_keys(topo):
        pid = processes.postmaster_pid(state.member_dir(name) / "data")
        if pid is not None and processes.leftovers([str(state.member_dir(name))]):
            processes.stop_pids([pid])
            progress(f"stopped orphaned PostgreSQL of member {name}")
    rest = processes.leftovers([str(state.root), str(state.runtime)])
    if rest:
        processes.stop_pids([p.pid for p in rest], timeout=5)
        progress(f"stopped {len(rest)} leftover process(es)")
    if topo.namespaces is not None:
        removed = netns.destroy(topo)
        if removed:
            progress(f"deleted network namespaces {', '.join(removed)}")


def discard(topo: Topology, state: StateDir) -> None:
    """Stop a system whose files are deleted next (a test cluster): at once, not tier by tier.

    `down` lets each component shut down cleanly (Patroni releases its key, etcd hands over
    its leadership), which took 18 s a cluster, most of it waiting; with the data about to go,
    nothing needs that. Every process is killed, except each postmaster, which is told to
    shut down immediately (SIGQUIT) so that PostgreSQL still frees its shared memory."""
    postmasters = [
        pid
        for site in member_keys(topo)
        if (pid := processes.postmaster_pid(state.member_dir(site) / "data")) is not None
        and processes.leftovers([str(state.member_dir(site))])
    ]
    running = [
        pid for spec in specs(topo, state).values()
        if (pid := processes.running_pid(state, spec)) is not None
    ]  # fmt: skip
    processes.kill_trees(running)  # Patroni first: it would restart a stopped PostgreSQL
    processes.signal_pids(postmasters, signal.SIGQUIT)
    processes.stop_pids(postmasters, timeout=10)
    rest = processes.leftovers([str(state.root), str(state.runtime)])
    processes.kill_trees([p.pid for p in rest])
    if topo.namespaces is not None:
        netns.destroy(topo)


def purge(state: StateDir) -> None:
    """Remove the state folder and the PostgreSQL runtime folder (after `down`)."""
    shutil.rmtree(state.runtime, ignore_errors=True)
    shutil.rmtree(state.root, ignore_errors=True)
