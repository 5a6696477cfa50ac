"""Fixtures for the fault drills: a cluster of their own (they break it on purpose)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest

from deploy import admin
from deploy.harness import TEST_PORT_OFFSETS, LocalCluster

DRILL_PORT_OFFSET = int(
    os.environ.get("ROCARS_DRILL_PORT_OFFSET", str(TEST_PORT_OFFSETS["drills"]))
)


@pytest.fixture(scope="session")
def drill_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("drills")
    with LocalCluster.running(root, port_offset=DRILL_PORT_OFFSET) as c:
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
    with LocalCluster.running(root, port_offset=0, namespace_prefix="rdrill", monitoring=True) as c:
        yield c
