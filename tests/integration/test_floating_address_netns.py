"""#17 item 2 on the namespaced topology: the floating address (deploy/topology.netns-vip.yaml)
is held by the site whose Patroni leads, moves with a switchover and with the loss of the
active site, and the drills' writers, which use only that address, see RPO 0."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import yaml

from deploy import floating_address, processes
from deploy.harness import TEST_ABUSE_LIMITS, LocalCluster
from deploy.process_specs import specs
from deploy.state import REPO_ROOT, StateDir
from deploy.topology import Topology, load_topology

# About 85 s with its own namespaced cluster: `make drills` runs it; CI's default run had
# reached 28 of its 30 minutes (stop 24).
pytestmark = [pytest.mark.integration, pytest.mark.slow]

VIP_TOPOLOGY = REPO_ROOT / "deploy" / "topology.netns-vip.yaml"
MOVE_BUDGET_S = 10.0  # the address follows the leader key within a few seconds
SITE_LOSS_BUDGET_S = 45.0  # the leader key's ttl (20 s) plus the promotion, plus the move


@pytest.fixture(scope="module")
def vip_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A namespaced cluster with a floating address (its own namespaces rvip-*)."""
    root = tmp_path_factory.mktemp("floating")
    topo = load_topology(VIP_TOPOLOGY).with_abuse_limits(TEST_ABUSE_LIMITS)
    topo_file = root / "topology.yaml"
    topo_file.write_text(yaml.safe_dump(topo.model_dump(), sort_keys=False))
    c = LocalCluster(topo, StateDir((root / "var").resolve()), topo_file)
    try:
        c.up()
        yield c
    finally:
        c.close()


def _floating(topo: Topology) -> str:
    assert topo.entry.floating is not None
    return topo.entry.floating.address


def _holders(topo: Topology) -> list[str]:
    """The data sites whose (up) interface carries the floating address."""
    held = floating_address.holders(topo)
    assert held is not None
    return list(held)


def _ready_code(c: LocalCluster) -> str:
    """HTTP status of GET /health/ready at the floating address, from the hub (a client that
    knows only that address)."""
    assert c.topo.namespaces is not None
    return subprocess.run(
        [
            "ip", "netns", "exec", c.topo.namespaces.hub(), "curl", "--silent", "--output",
            "/dev/null", "--write-out", "%{http_code}", "--max-time", "2", "--cacert",
            str(c.state.ca_bundle), f"{c.topo.entry_url()}/health/ready",
        ],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip


def _wait_held_by(c: LocalCluster, site: str, budget: float, since: float) -> float:
    """Seconds from `since` until only `site` holds the address and it answers ready."""
    deadline = since + budget
    while True:
        if _holders(c.topo) == [site] and _ready_code(c) == "200":
            return time.monotonic() - since
        assert time.monotonic() < deadline, (_holders(c.topo), _ready_code(c))
        time.sleep(0.1)


def _wait_holder(c: LocalCluster, site: str, since: float) -> float:
    """Seconds from `since` until only `site` holds the address (ready or not)."""
    while _holders(c.topo) != [site]:
        assert time.monotonic() < since + SITE_LOSS_BUDGET_S, _holders(c.topo)
        time.sleep(0.1)
    return time.monotonic() - since


def _kill_site(c: LocalCluster, site: str) -> None:
    """Site loss: every process of the site (supervisors first, then the rest, the postmaster
    included) is SIGKILLed and its link goes down, as when its host loses power."""
    pids = [
        pid
        for spec in specs(c.topo, c.state).values()
        if spec.site == site and (pid := processes.running_pid(c.state, spec)) is not None
    ]
    pm = processes.postmaster_pid(c.state.member_dir(site) / "data")
    processes.kill_trees([*pids, *([pm] if pm else [])])
    ns = c.topo.netns(site)
    assert ns is not None
    subprocess.run(["ip", "-n", ns, "link", "set", "eth0", "down"], check=True)


def test_floating_address_follows_the_leader(vip_cluster: LocalCluster) -> None:
    """#17 item 2: the leader's site holds the floating address and serves /health/ready 200 on
    it, and the standby does not take it while the leader's keepalived is down; `up` applies
    a changed site file (HAProxy taken over, keepalived told); `rocars
    failover switchover --to B` moves it to B within a few seconds, and `rocars cluster
    status` names B as its holder; keepalived runs its check with script security on; `rocars
    certs rotate` reloads each site's HAProxy; a switchover drill whose
    writers know only that address loses nothing (RPO 0); losing the active site moves it to
    the other one."""
    c = vip_cluster
    state = ["--state-dir", str(c.state.root)]
    assert c.topo.entry_url() == f"https://{_floating(c.topo)}:{c.topo.entry.port}"
    _wait_held_by(c, "A", MOVE_BUDGET_S, time.monotonic())
    # (1b) The leader's site wins it back: with A's keepalived stopped the standby B holds it
    # (its HAProxy routes to A's node too); A's, started again, takes it from B.
    keepalived_a = specs(c.topo, c.state)["keepalived-A"]
    assert processes.stop_many(c.state, [keepalived_a]) == ["keepalived-A"]
    _wait_held_by(c, "B", MOVE_BUDGET_S, time.monotonic())
    c.up()  # starts what is missing: keepalived-A
    _wait_held_by(c, "A", MOVE_BUDGET_S, time.monotonic())
    # keepalived ran its check with script security on: nothing was refused or disabled.
    for site in c.topo.data_sites:
        log = c.state.logfile(f"keepalived-{site}").read_text()
        for refusal in ("SECURITY VIOLATION", "Unsafe permissions", "Disabling track script"):
            assert refusal not in log, (site, refusal)

    # (1b') `up` applies a changed site file: HAProxy, which has no reread, is taken over by
    # a new process; keepalived rereads on SIGHUP and keeps its pid; A keeps the address.
    edited = [c.state.config / "haproxy-A.cfg", c.state.config / "keepalived-B.conf"]
    for path in edited:
        path.write_text(path.read_text() + "# edited\n")
    old_haproxy_a = c.pid("haproxy-A")
    keepalived_b = c.pid("keepalived-B")
    out = c.up()
    assert "reloaded haproxy-A (its configuration changed): pid" in out, out
    assert "reloaded keepalived-B (its configuration changed)" in out, out
    assert "reloaded haproxy-B" not in out, out
    assert all("# edited" not in path.read_text() for path in edited)
    assert c.pid("haproxy-A") not in (None, old_haproxy_a)
    assert c.pid("keepalived-B") == keepalived_b
    _wait_held_by(c, "A", MOVE_BUDGET_S, time.monotonic())

    # (1c) `rocars certs rotate` reloads each site's HAProxy too (a new process, -sf): each
    # presents the new certificate on its own address (the command waits for that), and the
    # floating address serves on.
    site_haproxies = [specs(c.topo, c.state)[f"haproxy-{s}"] for s in c.topo.data_sites]
    old_pids = [processes.running_pid(c.state, h) for h in site_haproxies]
    t_rotate = time.monotonic()
    rotated = c.rocars("certs", "rotate", *state, timeout=300)
    rotate_s = time.monotonic() - t_rotate
    for h, old in zip(site_haproxies, old_pids, strict=True):
        assert f"{h.name}: reloaded (pid " in rotated, rotated
        assert processes.running_pid(c.state, h) not in (None, old), rotated
    _wait_held_by(c, "A", MOVE_BUDGET_S, time.monotonic())

    # (2) A planned switchover: the address moves to B.
    t0 = time.monotonic()
    switch = subprocess.Popen(
        [sys.executable, "-m", "deploy", "failover", "switchover", "--to", "B", *state],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    moved_switchover = _wait_held_by(c, "B", MOVE_BUDGET_S + 30, t0)
    out, _ = switch.communicate(timeout=120)
    assert switch.returncode == 0, out
    print(out)
    # `rocars cluster status` names the holder (read from the sites' interfaces).
    shown = c.rocars("cluster", "status", *state, check=False)
    assert f"Floating address: {_floating(c.topo)} held by B\n" in shown, shown

    # (2b) The drills' writers use entry_url(), the floating address: RPO 0 through a switchover.
    reports = c.state.reports
    before = set(reports.glob("*.json")) if reports.exists() else set()
    drill_out = c.rocars("drill", "switchover", "--one-way", *state, check=False, timeout=600)
    print(drill_out)
    results = [json.loads(p.read_text()) for p in sorted(set(reports.glob("*.json")) - before)]
    assert len(results) == 1, drill_out
    r = results[0]
    assert r["rpo"] == 0, r["missing"][:10]
    assert r["duplicates"] == 0
    assert r["acked"] > 0
    assert r["checks_failed"] == []
    leader = r["direction"].split("->")[1]
    _wait_held_by(c, leader, MOVE_BUDGET_S, time.monotonic())

    # (3) Site loss of the active site: the address ends on the other one.
    other = next(s for s in c.topo.data_sites if s != leader)
    t1 = time.monotonic()
    _kill_site(c, leader)
    moved_site_loss = _wait_holder(c, other, t1)
    ready_site_loss = _wait_held_by(c, other, SITE_LOSS_BUDGET_S, t1)
    print(
        f"\n[measure] floating address: moved in {moved_switchover:.1f} s (switchover), "
        f"{moved_site_loss:.1f} s (site loss; ready on it after {ready_site_loss:.1f} s); "
        f"certs rotate {rotate_s:.1f} s; "
        f"drill RTO {r['rto_s']} s RPO {r['rpo']}"
    )
    assert r["rto_s"] is not None
    assert r["rto_s"] <= 2 * r["budget_s"], r["verdict"]
