"""A local cluster driven through the real `rocars cluster` command, for tests and drills.

Each harness has its own state folder and a port offset, so a test cluster never touches the
one `make run` left running. `close()` stops every process and deletes every file it made, and
is safe to call after a failure part-way through `start()`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import aiohttp
import yaml

from deploy import etcd_auth, http_client, processes, teardown
from deploy.process_specs import running_pids, specs
from deploy.state import DEFAULT_TOPOLOGY, NETNS_TOPOLOGY, StateDir
from deploy.topology import AbuseLimits, Topology, load_topology

# Port offsets of the clusters the test suites start, beside `make run`'s (offset 0). They must
# not collide with each other (tests/unit/test_port_offsets.py checks), since CI may run a
# session cluster while another test module starts its own.
TEST_PORT_OFFSETS = {
    "make-run": 0,
    "session": 1000,
    "lifecycle": 2000,
    "drills": 3000,
    "contingency": 500,
    "fuzz": 1500,
    "checker-scale": 2500,
    "web": 2250,  # the browser stories' cluster (officer, SRE, status modules in turn)
    "backup": 2750,
    "chaos": 3500,  # its Toxiproxy block: deploy.chaos_links.TEST_TOXIPROXY_PORT
    "read-replica": 1250,  # with a read replica on site B (READ_REPLICA_TEST_PORTS)
}
# The read replica of test clusters that ask for one (#17 item 5), on site B, before the offset:
# PostgreSQL and Patroni REST ports no suite's cluster uses (tests/unit/test_read_replica.py).
READ_REPLICA_TEST_PORTS = {"postgres_port": 25532, "patroni_port": 28108}
# Every test client is 127.0.0.1 and the suites make many deliberate 401s, so test clusters
# raise HAProxy's per-address limits far above what they send (tests/integration/
# test_hostile_proxy.py checks the limits themselves with low ones).
TEST_ABUSE_LIMITS = AbuseLimits(unauthenticated_requests=1_000_000, auth_failures=1_000_000)


# Set to a folder, the logs of every test cluster are copied there before its files are deleted
# (one sub-folder per cluster), to read after a failure.
KEEP_LOGS_ENV = "ROCARS_KEEP_LOGS"


def _keep_logs(state: StateDir) -> None:
    target = os.environ.get(KEEP_LOGS_ENV)
    if not target or not state.logs.is_dir():
        return
    name = f"{state.root.parent.name}-{time.strftime('%H%M%S')}"
    shutil.copytree(state.logs, Path(target) / name, dirs_exist_ok=True)


@dataclass
class LocalCluster:
    topo: Topology
    state: StateDir
    topology_file: Path

    def __post_init__(self) -> None:
        # In-process operations on this cluster (status, drills) log in to etcd as the
        # operator with this state folder's password (#12 item 3).
        etcd_auth.use_state(self.topo, self.state)

    @classmethod
    def create(
        cls,
        root: Path,
        *,
        port_offset: int,
        namespace_prefix: str | None = None,
        monitoring: bool = False,
        read_replica: bool = False,
    ) -> LocalCluster:
        """A cluster on loopback ports shifted by `port_offset`; with `namespace_prefix`, one
        with each site in a network namespace of its own (deploy/topology.netns.yaml, its
        namespaces renamed so they never meet those of another cluster). Prometheus,
        Alertmanager and the exporters run only with `monitoring`: drills and benchmarks
        measure the service alone. With `read_replica`, site B has one (#17 item 5)."""
        if namespace_prefix is None:
            topo = load_topology(DEFAULT_TOPOLOGY).with_port_offset(port_offset)
        else:
            topo = load_topology(NETNS_TOPOLOGY).with_namespace_prefix(namespace_prefix)
            topo = topo.with_port_offset(port_offset)
        if read_replica:
            shifted = {k: v + port_offset for k, v in READ_REPLICA_TEST_PORTS.items()}
            topo = topo.with_read_replica("B", **shifted)
        topo = topo.with_abuse_limits(TEST_ABUSE_LIMITS)
        if not monitoring:
            topo = topo.without_monitoring()
        root.mkdir(parents=True, exist_ok=True)
        topo_file = root / "topology.yaml"
        topo_file.write_text(yaml.safe_dump(topo.model_dump(), sort_keys=False))
        return cls(topo, StateDir((root / "var").resolve()), topo_file)

    @classmethod
    @contextlib.contextmanager
    def running(
        cls,
        root: Path,
        *,
        port_offset: int,
        namespace_prefix: str | None = None,
        monitoring: bool = False,
        read_replica: bool = False,
    ) -> Iterator[LocalCluster]:
        """A started cluster that is stopped and deleted afterwards (namespaces too), also
        when start-up or the block fails."""
        c = cls.create(
            root,
            port_offset=port_offset,
            namespace_prefix=namespace_prefix,
            monitoring=monitoring,
            read_replica=read_replica,
        )
        try:
            c.up()
            yield c
        finally:
            c.close()

    def rocars(self, *args: str, timeout: float = 180, check: bool = True) -> str:
        """Run the real CLI as a separate process (so started daemons are not our children)."""
        proc = subprocess.run(
            [sys.executable, "-m", "deploy", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            check=False,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"rocars {' '.join(args)} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc.stdout + proc.stderr

    def session(self, **kwargs: Any) -> aiohttp.ClientSession:
        """An HTTP client for this cluster's links: TLS checked against its CA, with the
        operator's client certificate (deploy.http_client); `kwargs` as there."""
        return http_client.session(self.topo, self.state, **kwargs)

    def create_account(self, kind: str, name: str) -> tuple[int, str]:
        """A new account made with `rocars admin create-account`: (its id, its API key)."""
        out = self.rocars(
            "admin", "create-account", "--kind", kind, "--name", name,
            "--state-dir", str(self.state.root),
        )  # fmt: skip
        doc = json.loads(out.strip().splitlines()[-1])
        return int(doc["id"]), str(doc["api_key"])

    def up(self, *, timeout: float = 120) -> str:
        return self.rocars(
            "cluster",
            "up",
            "--topology",
            str(self.topology_file),
            "--state-dir",
            str(self.state.root),
            "--timeout",
            str(timeout),
            timeout=timeout * 3,
        )

    def status(self) -> tuple[int, dict[str, Any]]:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "deploy",
                "cluster",
                "status",
                "--json",
                "--state-dir",
                str(self.state.root),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return proc.returncode, json.loads(proc.stdout)

    def _healthy_status(self) -> dict[str, Any] | None:
        """The status when it reports every component healthy; None otherwise, also before the
        first `up` (no state folder, or nothing the status can read)."""
        if not self.state.root.exists():
            return None
        try:
            code, doc = self.status()
        except ValueError:  # no JSON: the state folder holds no system yet
            return None
        return doc if code == 0 else None

    def wait_healthy(self, *, timeout: float = 60) -> dict[str, Any]:
        """The status once it reports every component healthy (an earlier step may have left
        the system settling); AssertionError naming the problems after `timeout`."""
        deadline = time.monotonic() + timeout
        code, doc = self.status()
        while code != 0 and time.monotonic() < deadline:
            time.sleep(0.5)
            code, doc = self.status()
        assert code == 0, doc.get("problems")
        return doc

    def ensure_healthy(self, *, timeout: float = 60) -> dict[str, Any]:
        """The healthy status; `cluster up` first, then `wait_healthy`, only when it is not
        healthy already (a status is about a second; an `up` that finds everything running
        still checks every component, 3-4 s in CI)."""
        doc = self._healthy_status()
        if doc is not None:
            return doc
        self.up()
        return self.wait_healthy(timeout=timeout)

    def down(self) -> str:
        return self.rocars("cluster", "down", "--state-dir", str(self.state.root), check=False)

    def close(self) -> None:
        try:
            teardown.discard(self.topo, self.state)
        finally:
            _keep_logs(self.state)
            teardown.purge(self.state)

    def pid(self, process: str) -> int | None:
        spec = specs(self.topo, self.state)[process]
        return processes.running_pid(self.state, spec)

    def leftovers(self) -> list[str]:
        procs = processes.leftovers([str(self.state.root), str(self.state.runtime)])
        return [" ".join(p.cmdline()) for p in procs]

    def memory_bytes(self) -> dict[str, int]:
        """Memory (PSS) per process of the system (with children), for the memory target."""
        return {
            name: processes.tree_memory(pid)
            for name, pid in running_pids(self.topo, self.state).items()
        }


class PytestItem(Protocol):
    """What SharedCluster reads of a pytest item."""

    @property
    def fixturenames(self) -> list[str]: ...

    @property
    def path(self) -> Path: ...


class SharedCluster:
    """A test cluster behind a session-scoped fixture named `fixture`, stopped right after the
    last test that uses it rather than when the session ends.

    Why: pytest keeps a session fixture's cluster until every test has run, so the integration
    tests' cluster (with its monitoring) idled through the unit tests and every chaos drill,
    and the drills' cluster through the partition drill, on 2 cores. Only tests under `folder`
    count: a module elsewhere may give the same fixture name to a cluster of its own.

    The fixture wraps its cluster's context manager in `running`; a conftest's
    `pytest_runtest_teardown` calls `after_test` once each test's teardown has run."""

    _all: ClassVar[weakref.WeakSet[SharedCluster]] = weakref.WeakSet()

    def __init__(self, fixture: str, folder: Path) -> None:
        self.fixture = fixture
        self._folder = folder.resolve()
        self._stack: contextlib.ExitStack | None = None
        self._last: PytestItem | None = None
        SharedCluster._all.add(self)

    @classmethod
    def after_test(cls, item: PytestItem, items: Sequence[PytestItem]) -> None:
        """Every shared cluster whose last user `item` was stops."""
        for shared in list(cls._all):
            shared.test_done(item, items)

    @contextlib.contextmanager
    def running(
        self, cluster: contextlib.AbstractContextManager[LocalCluster]
    ) -> Iterator[LocalCluster]:
        with contextlib.ExitStack() as stack:
            started = stack.enter_context(cluster)
            self._stack = stack
            try:
                yield started
            finally:
                self._stack = None

    @property
    def is_running(self) -> bool:
        return self._stack is not None

    def test_done(self, item: PytestItem, items: Sequence[PytestItem]) -> None:
        """Stop the cluster when `item`, whose teardown has just run, was its last user."""
        if self._stack is None:
            return
        if self._last is None:
            users = [
                i
                for i in items
                if self.fixture in i.fixturenames and i.path.resolve().is_relative_to(self._folder)
            ]
            self._last = users[-1] if users else None
        if item is self._last:
            # ExitStack.close twice is harmless: the fixture's own exit finds nothing left.
            self._stack.close()
            self._stack = None
