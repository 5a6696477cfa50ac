"""Fixtures for the fault drills and the chaos scenarios: clusters of their own (they break them
on purpose), each stopped right after the last test that uses it (deploy.harness.SharedCluster),
so that no idle cluster shares the 2 cores with the next one's faults."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import chaos_cluster
import pytest

from deploy import admin
from deploy.harness import TEST_PORT_OFFSETS, LocalCluster, SharedCluster

DRILL_PORT_OFFSET = int(
    os.environ.get("ROCARS_DRILL_PORT_OFFSET", str(TEST_PORT_OFFSETS["drills"]))
)

HERE = Path(__file__).parent
SHARED = {
    name: SharedCluster(name, HERE) for name in ("shared_chaos", "drill_cluster", "netns_cluster")
}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    try:
        return (yield)
    finally:
        SharedCluster.after_test(item, item.session.items)


@pytest.fixture(scope="session")
def shared_chaos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """The chaos scenarios' cluster (every link through Toxiproxy), shared by the modules that
    heal it and settle it before each scenario (links, nemesis: each names it `chaos`): one
    start and stop, not one per module. The modules whose cluster is built differently
    (processes, on volumes) or restarted whole (rolling) start their own `chaos`, on the same
    ports, after this one has stopped."""
    started = chaos_cluster.running(tmp_path_factory.mktemp("chaos"))
    with SHARED["shared_chaos"].running(started) as c:
        yield c


@pytest.fixture(scope="session")
def drill_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("drills")
    started = LocalCluster.running(root, port_offset=DRILL_PORT_OFFSET)
    with SHARED["drill_cluster"].running(started) as c:
        yield c


@pytest.fixture(scope="session")
def drill_key(drill_cluster: LocalCluster) -> str:
    account = asyncio.run(
        admin.admin_create_account(
            drill_cluster.topo,
            drill_cluster.state,
            kind="trader",
            name="drills",
            trader_kind="shipper",
        )
    )
    return str(account["api_key"])


@pytest.fixture(scope="session")
def netns_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A cluster with each site in a network namespace of its own, for partition drills.
    Its addresses exist only inside its namespaces, so its ports cannot meet anyone's. It runs
    its monitoring as production would: Prometheus in the witness site's namespace scrapes the
    others across the bridge."""
    root = tmp_path_factory.mktemp("netns-drills")
    started = LocalCluster.running(root, port_offset=0, namespace_prefix="rdrill", monitoring=True)
    with SHARED["netns_cluster"].running(started) as c:
        yield c
