"""The launcher's plan and its loop, without processes: which steps `cluster up` takes in which
order, and how the loop starts, waits and reports (process start-up and HTTP are faked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from tenacity import wait_fixed

from deploy import launcher, processes
from deploy.launcher import Launch, Step
from deploy.process_specs import monitoring_names, specs
from deploy.processes import ProcessSpec
from deploy.state import DEFAULT_TOPOLOGY, NETNS_TOPOLOGY, StateDir
from deploy.topology import Topology, load_topology
from kernel.errors import EtcdUnavailable, LaunchError
from replication.etcd_gateway import EtcdRefused


@pytest.fixture(params=[DEFAULT_TOPOLOGY, NETNS_TOPOLOGY], ids=["loopback", "netns"])
def topo(request: pytest.FixtureRequest) -> Topology:
    path: Path = request.param
    return load_topology(path)


def _started(plan: list[Step]) -> list[str]:
    return [name for step in plan for name in step.start]


@pytest.mark.parametrize("fresh", [True, False])
def test_every_process_is_started_exactly_once(topo: Topology, tmp_path: Path, fresh: bool) -> None:
    """The plan starts each process of the system once, and names only known processes and
    logs."""
    names = set(specs(topo, StateDir(tmp_path)))
    plan = launcher.steps(topo, fresh=fresh)
    started = _started(plan)
    assert sorted(started) == sorted(names)
    for step in plan:
        assert set(step.logs) <= names, step.what


def test_start_order_follows_the_dependencies(topo: Topology) -> None:
    """etcd first (quorum before anything uses it), the primary's Patroni before the DR's, the
    database prepared before the nodes start, HAProxy last of the service, then monitoring
    (#13 item 1: its PostgreSQL exporters log in with the role the database step creates)."""
    plan = launcher.steps(topo, fresh=True)
    started = _started(plan)
    primary, dr = topo.data_sites
    watchers = monitoring_names(topo)
    assert watchers, "the shipped topologies run monitoring"
    assert started[: len(topo.sites)] == [f"etcd-{s}" for s in topo.sites]
    assert started.index(f"patroni-{primary}") < started.index(f"patroni-{dr}")
    assert started[-len(watchers) - 1] == "haproxy"
    assert started[-len(watchers) :] == list(watchers)
    prepare = next(i for i, s in enumerate(plan) if s.what == "a Patroni leader")
    nodes = next(i for i, s in enumerate(plan) if any(n.startswith("node-") for n in s.start))
    assert prepare < nodes
    assert plan[prepare].then is not None


def test_a_fresh_cluster_waits_for_the_primary_to_bootstrap(topo: Topology) -> None:
    """Only on empty data does `up` wait for the primary site to take the leader key before
    starting the DR member (so the primary site initialises the cluster)."""
    primary = topo.data_sites[0]

    def bootstrap(plan: list[Step]) -> Step:
        return next(s for s in plan if f"patroni-{primary}" in s.start)

    assert bootstrap(launcher.steps(topo, fresh=True)).ready is not None
    assert bootstrap(launcher.steps(topo, fresh=False)).ready is None


def test_the_last_step_moves_the_etcd_leadership_to_the_witness(topo: Topology) -> None:
    """`up` ends by handing etcd's leadership to the witness, once the standby streams (only
    monitoring starts after it, or nothing when the topology runs none)."""
    for t in (topo, topo.without_monitoring()):
        plan = launcher.steps(t, fresh=False)
        last = plan[-2] if t.monitored else plan[-1]
        assert last.what == "a streaming synchronous standby"
        assert last.then is launcher._etcd_leader_to_witness


def _spec(name: str) -> ProcessSpec:
    return ProcessSpec(name=name, site="A", argv=("true",), marker=name)


async def test_loop_starts_what_is_missing_waits_then_acts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each step starts what is not running (reporting it), waits until its check holds, then
    runs its action, in order; a process already running is not started again."""
    running = {"b"}
    log: list[str] = []

    def ensure_running(_state: StateDir, spec: ProcessSpec) -> int | None:
        if spec.name in running:
            return None
        running.add(spec.name)
        log.append(f"start {spec.name}")
        return 100 + len(running)

    monkeypatch.setattr(processes, "ensure_running", ensure_running)
    polls = 0

    async def ready_on_third_poll(_l: Launch) -> bool:
        nonlocal polls
        polls += 1
        return polls >= 3

    async def act(_l: Launch) -> None:
        log.append("act")

    plan = [
        Step("one", start=("a", "b"), ready=ready_on_third_poll, then=act),
        Step("two", start=("c",)),
    ]
    progress: list[str] = []
    state = StateDir(tmp_path)
    async with aiohttp.ClientSession() as session:
        launch = Launch(load_topology(DEFAULT_TOPOLOGY), state, session, progress.append)
        started = await launcher.run_steps(launch, plan, {n: _spec(n) for n in "abc"}, timeout=5)
    assert started == ["a", "c"]
    assert log == ["start a", "act", "start c"]
    assert polls == 3
    assert progress == ["started a (pid 102)", "started c (pid 103)"]


async def test_loop_fails_naming_the_step_and_showing_its_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A check that never holds (here: raises every time) ends `up` with a LaunchError naming
    what did not become ready and the last lines of the step's logs."""
    monkeypatch.setattr(processes, "ensure_running", lambda _s, _spec: None)
    state = StateDir(tmp_path)
    state.logfile("etcd-A").parent.mkdir(parents=True)
    state.logfile("etcd-A").write_text("line 1\nraft: no quorum\n")

    async def broken(_l: Launch) -> bool:
        raise ConnectionRefusedError

    plan = [Step("etcd quorum", start=("etcd-A",), ready=broken, logs=("etcd-A",))]
    async with aiohttp.ClientSession() as session:
        launch = Launch(load_topology(DEFAULT_TOPOLOGY), state, session, lambda _m: None)
        with pytest.raises(LaunchError) as info:
            await launcher.run_steps(launch, plan, {"etcd-A": _spec("etcd-A")}, timeout=0.5)
    msg = str(info.value)
    assert msg.startswith("etcd quorum did not become ready within 0s")
    assert "last lines of etcd-A.log" in msg
    assert "raft: no quorum" in msg


def test_each_node_runs_under_the_small_supervisor(tmp_path: Path) -> None:
    """#11 target 5: the launcher starts each node under `python -m node.supervise`, which
    loads none of the CLI (click, the topology, aiohttp): the node's own argv follows it, and
    the state folder stays in the command line that finds the process again."""
    topo = load_topology(DEFAULT_TOPOLOGY)
    state = StateDir(tmp_path)
    for site in topo.data_sites:
        argv = specs(topo, state)[f"node-{site}"].argv
        assert argv[1:3] == ("-m", "node.supervise")
        assert argv[3:] == (
            sys.executable, "-m", "deploy", "serve", "--site", site, "--state-dir", str(tmp_path)
        )  # fmt: skip
    probe = "import sys, node.supervise; print(sorted({m.split('.')[0] for m in sys.modules}))"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    for heavy in ("click", "aiohttp", "deploy", "pydantic", "psycopg", "yaml"):
        assert f"'{heavy}'" not in loaded


async def _auth_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failures: list[Exception]
) -> int:
    """Run the launcher's etcd authentication step with `etcd_auth.ensure` raising `failures`
    in turn, then succeeding; returns how many times it was called."""
    calls = 0

    async def ensure(*_args: object) -> list[str]:
        nonlocal calls
        calls += 1
        if failures:
            raise failures.pop(0)
        return []

    monkeypatch.setattr(launcher.etcd_auth, "ensure", ensure)
    monkeypatch.setattr(launcher, "_BLIP_WAIT", wait_fixed(0))
    async with aiohttp.ClientSession() as session:
        launch = Launch(load_topology(DEFAULT_TOPOLOGY), StateDir(tmp_path), session, print)
        await launcher._etcd_auth(launch)
    return calls


async def test_etcd_authentication_is_retried_through_an_election(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No member answering in time, or one answering "no leader" (5xx), is the blip of an
    election (a cut-off member rejoining after the isolate-site drill, CI stop 37): the step
    runs again and `up` goes on."""
    blips: list[Exception] = [
        EtcdUnavailable("no etcd member answered: TimeoutError()"),
        EtcdRefused("etcdserver: no leader", error="etcdserver: no leader", status=503),
    ]
    assert await _auth_step(tmp_path, monkeypatch, blips) == 3


async def test_an_etcd_refusal_is_not_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refusal every member would repeat (permission denied) ends the step at once: a
    second call (which would succeed here) is never made."""
    denied = EtcdRefused("permission denied", error="etcdserver: permission denied", status=403)
    with pytest.raises(EtcdRefused, match="permission denied"):
        await _auth_step(tmp_path, monkeypatch, [denied])
