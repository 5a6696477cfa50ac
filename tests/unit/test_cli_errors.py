"""Command-line errors say what went wrong and what to do, and exit non-zero."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from deploy.state import DEFAULT_TOPOLOGY
from deploy.topology import load_topology


def _rocars(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deploy", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_missing_binaries_are_named_with_their_package(tmp_path: Path) -> None:
    """With etcd, Redis and HAProxy off PATH, `cluster up` names each and the package to install."""
    proc = _rocars(
        "cluster", "up", "--state-dir", str(tmp_path / "var"), env={"PATH": "/nonexistent"}
    )
    assert proc.returncode == 2
    assert "missing binaries" in proc.stderr
    assert "etcd (Debian package etcd-server)" in proc.stderr
    assert "haproxy" in proc.stderr
    assert "make run" in proc.stderr


def test_invalid_topology_file_is_reported_with_the_key(tmp_path: Path) -> None:
    """A topology with a port clash stops `cluster up` before anything starts."""
    topo = tmp_path / "t.yaml"
    text = (Path(__file__).parents[2] / "deploy" / "topology.yaml").read_text()
    topo.write_text(text.replace("redis: {port: 26379}", "redis: {port: 28081}"))
    proc = _rocars("cluster", "up", "--topology", str(topo), "--state-dir", str(tmp_path / "v"))
    assert proc.returncode == 2
    assert "port clash" in proc.stderr
    assert "sites.B.redis.port" in proc.stderr
    assert not (tmp_path / "v").exists()


def test_status_of_a_system_that_is_not_running_exits_non_zero(tmp_path: Path) -> None:
    """`cluster status` on nothing running exits 1 and lists what is wrong."""
    topo = tmp_path / "t.yaml"
    # Ports nobody uses, so a running `make run` system does not answer.
    shifted = load_topology(DEFAULT_TOPOLOGY).with_port_offset(7000)
    topo.write_text(yaml.safe_dump(shifted.model_dump()))
    proc = _rocars("cluster", "status", "--topology", str(topo), "--state-dir", str(tmp_path / "v"))
    assert proc.returncode == 1
    assert "NOT HEALTHY" in proc.stdout
    assert "no PostgreSQL leader" in proc.stdout


def test_create_account_rejects_a_blank_name(tmp_path: Path) -> None:
    """`admin create-account --name '  '` is a usage error naming the option."""
    proc = _rocars(
        "admin",
        "create-account",
        "--kind",
        "officer",
        "--name",
        "  ",
        "--state-dir",
        str(tmp_path),
    )
    assert proc.returncode == 2
    assert "--name" in proc.stderr


def test_partition_drill_on_a_loopback_cluster_says_which_topology(tmp_path: Path) -> None:
    """`rocars drill isolate-site` on a cluster without network namespaces stops before it
    touches anything and names the topology file and commands to use instead."""
    topo = tmp_path / "t.yaml"
    topo.write_text(
        yaml.safe_dump(load_topology(DEFAULT_TOPOLOGY).with_port_offset(7000).model_dump())
    )
    proc = _rocars(
        "drill", "isolate-site", "--topology", str(topo), "--state-dir", str(tmp_path / "v")
    )
    assert proc.returncode == 2
    assert "deploy/topology.netns.yaml" in proc.stderr
    assert "rocars cluster up --topology" in proc.stderr


def test_commands_on_a_namespaced_cluster_that_is_down_say_to_start_it(tmp_path: Path) -> None:
    """A namespaced cluster's commands enter its hub namespace; when it does not exist they
    say the cluster is not up and how to start it, instead of failing to connect."""
    from deploy.state import NETNS_TOPOLOGY

    topo = tmp_path / "t.yaml"
    renamed = load_topology(NETNS_TOPOLOGY).with_namespace_prefix("rnotup")
    topo.write_text(yaml.safe_dump(renamed.model_dump()))
    proc = _rocars("cluster", "status", "--topology", str(topo), "--state-dir", str(tmp_path / "v"))
    assert proc.returncode == 2
    assert "network namespace rnotup-hub does not exist" in proc.stderr
    assert "rocars cluster up" in proc.stderr
