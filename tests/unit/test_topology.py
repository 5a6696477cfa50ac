"""Topology parsing: the shapes and timings a deployment may have, rejected with clear messages."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.state import DEFAULT_TOPOLOGY, REPO_ROOT
from deploy.topology import TopologyError, load_topology, parse_topology


def _raw() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(DEFAULT_TOPOLOGY.read_text())
    return copy.deepcopy(data)


def test_default_topology_has_three_sites_with_roles() -> None:
    """The shipped local topology parses: primary A, DR B, witness C, HAProxy on A."""
    topo = load_topology(DEFAULT_TOPOLOGY)
    assert {n: s.role for n, s in topo.sites.items()} == {"A": "primary", "B": "dr", "C": "witness"}
    assert topo.data_sites == ["A", "B"]
    assert topo.entry_url() == "https://127.0.0.1:18080"
    assert len(topo.etcd_urls()) == 3


def test_production_topology_uses_the_same_format() -> None:
    """The multi-host example file validates with the same model."""
    topo = load_topology(REPO_ROOT / "deploy" / "topology.production.yaml")
    assert len({s.host for s in topo.sites.values()}) == 3


def test_port_clash_is_rejected_naming_both_users() -> None:
    """Two processes on one host:port are refused, and the message names both keys."""
    raw = _raw()
    raw["sites"]["B"]["redis"]["port"] = raw["sites"]["A"]["node"]["port"]
    raw["sites"]["B"]["host"] = raw["sites"]["A"]["host"]
    with pytest.raises(TopologyError) as info:
        parse_topology(raw)
    assert "port clash" in str(info.value)
    assert "sites.A.node.port" in str(info.value)
    assert "sites.B.redis.port" in str(info.value)


def test_same_port_on_different_hosts_is_fine() -> None:
    """Production sites reuse default ports on different addresses."""
    raw = _raw()
    raw["sites"]["B"]["host"] = "127.0.0.2"
    raw["sites"]["B"]["redis"]["port"] = raw["sites"]["A"]["redis"]["port"]
    parse_topology(raw)


@pytest.mark.parametrize(
    ("timing", "fragment"),
    [
        ({"ttl": 10}, "below Patroni 4's floor"),
        ({"loop_wait": 0}, "loop_wait 0 is below"),
        ({"retry_timeout": 2}, "retry_timeout 2 is below"),
        ({"ttl": 20, "loop_wait": 5, "retry_timeout": 8}, "exceeds ttl 20"),
    ],
)
def test_patroni_timing_invariant_is_enforced(timing: dict[str, int], fragment: str) -> None:
    """ttl >= 20, loop_wait >= 1, retry_timeout >= 3 and loop_wait + 2*retry_timeout <= ttl."""
    raw = _raw()
    raw["patroni"].update(timing)
    with pytest.raises(TopologyError, match=fragment):
        parse_topology(raw)


def test_timing_at_the_invariant_boundary_is_accepted() -> None:
    """loop_wait + 2*retry_timeout == ttl is allowed."""
    raw = _raw()
    raw["patroni"].update({"ttl": 20, "loop_wait": 2, "retry_timeout": 9})
    assert parse_topology(raw).patroni.retry_timeout == 9


def test_sites_must_be_one_primary_one_dr_one_witness() -> None:
    """A topology with two primaries is refused with the roles it saw."""
    raw = _raw()
    raw["sites"]["B"]["role"] = "primary"
    with pytest.raises(TopologyError, match="exactly one primary"):
        parse_topology(raw)


def test_witness_runs_no_database() -> None:
    """A witness site with a PostgreSQL port is refused."""
    raw = _raw()
    raw["sites"]["C"]["postgres"] = {"port": 35432}
    with pytest.raises(TopologyError, match="witness site runs only etcd, sentinel and monitoring"):
        parse_topology(raw)


def test_unknown_keys_are_rejected_with_their_path() -> None:
    """A typo in a key is named, not silently ignored."""
    raw = _raw()
    raw["sites"]["A"]["postgress"] = {"port": 1}
    with pytest.raises(TopologyError, match=r"sites\.A\.postgress"):
        parse_topology(raw)


def test_unreadable_and_invalid_yaml_files_say_so(tmp_path: Path) -> None:
    """A missing file and a broken YAML file give messages naming the file."""
    with pytest.raises(TopologyError, match="cannot read topology file"):
        load_topology(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sites: [unclosed")
    with pytest.raises(TopologyError, match="not valid YAML"):
        load_topology(bad)


def test_port_offset_shifts_every_port_and_keeps_hosts() -> None:
    """A test cluster's topology is the default one with all ports moved by the offset."""
    base = load_topology(DEFAULT_TOPOLOGY)
    moved = base.with_port_offset(1000)
    for (w1, h1, p1), (w2, h2, p2) in zip(base.endpoints(), moved.endpoints(), strict=True):
        assert (w1, h1) == (w2, h2)
        assert p2 == p1 + 1000


@pytest.mark.parametrize(
    ("tuning", "fragment"),
    [
        ({"shared_buffers": "4 GB"}, r"postgresql\.shared_buffers: '4 GB' is not a size"),
        ({"shared_buffers": "8MB"}, r"postgresql\.shared_buffers: 8MB is below 16MB"),
        ({"shared_buffers": "1GiB"}, r"postgresql\.shared_buffers: '1GiB' is not a size"),
        ({"max_wal_size": "128MB"}, r"postgresql\.max_wal_size: 128MB is below 256MB"),
        ({"checkpoint_timeout": "10s"}, r"postgresql\.checkpoint_timeout: 10s is not within"),
        ({"checkpoint_timeout": "2h"}, None),
        ({"checkpoint_timeout": "25h"}, r"postgresql\.checkpoint_timeout: 25h is not within"),
        ({"checkpoint_timeout": "5m"}, r"postgresql\.checkpoint_timeout: '5m' is not a time"),
        ({"wal_compression": "gzip"}, r"postgresql\.wal_compression: Input should be 'off'"),
        ({"shared_bufers": "1GB"}, r"postgresql\.shared_bufers: Extra inputs"),
    ],
)
def test_postgres_tuning_values_are_checked_naming_the_key(
    tuning: dict[str, str], fragment: str | None
) -> None:
    """#11: sizes and times are PostgreSQL's own spellings with a unit, within sane ranges; a
    bad one is refused naming `postgresql.<key>` before any process starts."""
    raw = _raw()
    raw["postgresql"] = tuning
    if fragment is None:
        assert parse_topology(raw).pg_tuning.checkpoint_timeout == tuning["checkpoint_timeout"]
        return
    with pytest.raises(TopologyError, match=fragment):
        parse_topology(raw)


def test_postgres_tuning_defaults_to_the_local_sizes_and_stays_out_of_the_dump() -> None:
    """#11: without a `postgresql` section the local sizes apply (small buffers for target 5's
    idle memory, checkpoints every 15 minutes, lz4 page images), and the topology dumps as it
    did before the section existed (its state copy is unchanged); the production example
    sizes buffers and WAL for database hosts."""
    local = load_topology(DEFAULT_TOPOLOGY)
    assert local.postgresql is None
    assert local.pg_tuning.parameters() == {
        "shared_buffers": "32MB",
        "max_wal_size": "4GB",
        "checkpoint_timeout": "15min",
        "wal_compression": "lz4",
    }
    assert "postgresql" not in local.model_dump()
    production = load_topology(REPO_ROOT / "deploy" / "topology.production.yaml")
    assert production.pg_tuning.shared_buffers == "4GB"
    assert production.model_dump()["postgresql"]["max_wal_size"] == "16GB"
