"""Fixtures of the schemathesis fuzz run (#10 Tests): a cluster of its own (module-scoped),
an officer, a trader and a trucker made by `rocars admin`, the cluster's own /openapi.json
loaded through the HAProxy entry point, and the tally of every request sent (fuzzkit.TALLY),
printed at the end of the run."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from fuzzkit import TALLY, Caller, FuzzAccount, load_schema
from schemathesis.specs.openapi.schemas import OpenApiSchema

from deploy.harness import TEST_PORT_OFFSETS, LocalCluster


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TALLY.total:
        terminalreporter.section("schemathesis fuzz: requests sent")
        for line in TALLY.lines():
            terminalreporter.write_line(line)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A cluster of the fuzz run's own, not the integration tests' session cluster: the fuzzer
    creates risk rules and switches manual mode on and off, and manual mode leaves a two-hour
    grace for late submissions behind, which other tests' advance-window checks would meet."""
    root = tmp_path_factory.mktemp("fuzz-cluster")
    with LocalCluster.running(root, port_offset=TEST_PORT_OFFSETS["fuzz"]) as c:
        yield c


def _create_account(cluster: LocalCluster, kind: str) -> FuzzAccount:
    account_id, key = cluster.create_account(kind, f"fuzz {kind} {uuid.uuid4().hex[:8]}")
    return FuzzAccount(account_id, kind, key)


@pytest.fixture(scope="module")
def fuzz_accounts(cluster: LocalCluster) -> dict[str, FuzzAccount]:
    """The fuzzer's own officer, trader and trucker (by kind)."""
    return {kind: _create_account(cluster, kind) for kind in ("officer", "trader", "trucker")}


@pytest.fixture(scope="module")
def entry_url(cluster: LocalCluster) -> str:
    return cluster.topo.entry_url().rstrip("/")


@pytest.fixture(scope="module")
def caller(
    cluster: LocalCluster, entry_url: str, fuzz_accounts: dict[str, FuzzAccount]
) -> Iterator[Caller]:
    with requests.Session() as session:
        # The cluster's own CA; not the environment's REQUESTS_CA_BUNDLE (which requests lets
        # win over `verify`), nor its proxies (everything here is on loopback).
        session.trust_env = False
        session.verify = str(cluster.state.ca_bundle)
        yield Caller(entry_url, fuzz_accounts, session)


@pytest.fixture(scope="module")
def fuzz_schema(
    cluster: LocalCluster, entry_url: str, fuzz_accounts: dict[str, FuzzAccount]
) -> OpenApiSchema:
    schemathesis.serializer.alias("text/csv", "text/plain")
    return load_schema(entry_url, fuzz_accounts, str(cluster.state.ca_bundle))
