"""Memory figures for #11 target 5: the nodes' RSS while the bench runs and after, and the idle
PSS of the whole local system (the same reading as the lifecycle test's, `LocalCluster`)."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field

import psutil

from deploy import processes
from deploy.harness import LocalCluster
from deploy.process_specs import monitoring_names, specs
from deploy.state import StateDir
from deploy.topology import Topology

MiB = 2**20


def node_processes(topo: Topology, state: StateDir) -> dict[str, list[psutil.Process]]:
    """Per node name, the processes that serve it: the supervisor's children (the service
    processes), or the process itself when it has none."""
    out: dict[str, list[psutil.Process]] = {}
    for name, spec in specs(topo, state).items():
        if not name.startswith("node-"):
            continue
        pid = processes.running_pid(state, spec)
        if pid is None:
            continue
        try:
            root = psutil.Process(pid)
            out[name] = root.children(recursive=True) or [root]
        except psutil.Error:
            continue
    return out


def node_rss(topo: Topology, state: StateDir) -> dict[str, float]:
    """RSS in MiB of the largest serving process of each node."""
    out = {}
    for name, procs in node_processes(topo, state).items():
        sizes = []
        for p in procs:
            with contextlib.suppress(psutil.Error):
                sizes.append(p.memory_info().rss / MiB)
        if sizes:
            out[name] = max(sizes)
    return out


@dataclass
class RssSampler:
    """Samples node RSS every `interval` seconds in a thread; `peak` is the largest seen per
    node, `phase_peak` the largest of any node per phase (`enter` names the phase), which says
    which load grew the node. A phase shorter than the interval still gets its reading: one is
    taken as it ends."""

    topo: Topology
    state: StateDir
    interval: float = 0.5
    phase: str = "start"
    peak: dict[str, float] = field(default_factory=dict)
    phase_peak: dict[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    def sample(self) -> None:
        with self._lock:
            for name, mb in node_rss(self.topo, self.state).items():
                self.peak[name] = max(self.peak.get(name, 0.0), mb)
                self.phase_peak[self.phase] = max(self.phase_peak.get(self.phase, 0.0), mb)

    def enter(self, phase: str) -> None:
        self.sample()
        with self._lock:
            self.phase = phase

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread = threading.Thread(target=self._loop, name="bench-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()


def system_pss(topo: Topology, state: StateDir) -> dict[str, float]:
    """PSS in MiB per process (with children) of the whole local system."""
    c = LocalCluster(topo, state, state.topology_copy)
    return {k: v / MiB for k, v in c.memory_bytes().items()}


def monitoring_share(topo: Topology, pss: dict[str, float]) -> float:
    """How much of `pss` (system_pss) monitoring's own processes hold (Prometheus, Alertmanager,
    the exporters; not the backends their queries keep open in PostgreSQL): target 5's budget
    was set before #13 added them, so the bench shows the share beside the whole."""
    return sum(v for k, v in pss.items() if k in monitoring_names(topo))


def youngest_process_age(topo: Topology, state: StateDir) -> float | None:
    """Seconds the most recently started process of the system has been running (None when
    none runs): idle PSS read a minute after a start is not the PSS of a settled system (the Go
    processes' heaps and PostgreSQL's caches grow for minutes), so the bench says which it
    read."""
    started = []
    for spec in specs(topo, state).values():
        pid = processes.running_pid(state, spec)
        if pid is not None:
            with contextlib.suppress(psutil.Error):
                started.append(psutil.Process(pid).create_time())
    return time.time() - max(started) if started else None


def settled_pss(topo: Topology, state: StateDir, timeout: float = 15.0) -> dict[str, float]:
    """`system_pss` once two readings a second apart differ by less than 2 MiB in total (or the
    last reading after `timeout`)."""
    deadline = time.monotonic() + timeout
    last = system_pss(topo, state)
    while time.monotonic() < deadline:
        time.sleep(1)
        now = system_pss(topo, state)
        if abs(sum(now.values()) - sum(last.values())) < 2:
            return now
        last = now
    return last
