"""Shared fixtures. Integration tests get a real local cluster (etcd, Patroni/PostgreSQL, Redis
with Sentinel, HAProxy, two API nodes) started through the real `rocars cluster up` command."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.harness import TEST_PORT_OFFSETS, LocalCluster, SharedCluster

# Ports of test clusters are shifted away from `make run`'s so both can run at once (and, with
# ROCARS_TEST_PORT_OFFSET, two test runs on one machine).
SESSION_PORT_OFFSET = int(
    os.environ.get("ROCARS_TEST_PORT_OFFSET", str(TEST_PORT_OFFSETS["session"]))
)


SESSION_CLUSTER = SharedCluster("cluster", Path(__file__).parent)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One running cluster shared by the integration tests that do not break it, with its
    monitoring (Prometheus, Alertmanager, exporters), as `make run` starts it; stopped after
    the last of them (not idling through the unit tests and the chaos suite)."""
    root: Path = tmp_path_factory.mktemp("session-cluster")
    started = LocalCluster.running(root, port_offset=SESSION_PORT_OFFSET, monitoring=True)
    with SESSION_CLUSTER.running(started) as c:
        yield c


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    try:
        return (yield)
    finally:
        SharedCluster.after_test(item, item.session.items)
