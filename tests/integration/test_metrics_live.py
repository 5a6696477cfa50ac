"""#13 item 2 on the real cluster: after a short load through HAProxy (submissions, one of them
replayed, a bundle, two arrivals) the active node's /metrics shows every domain family moving,
and the state families present: replication lag with a streaming synchronous standby, the
write probe, etcd, the leader, the journal's size and the database pool."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import aiohttp
import psycopg
import pytest
from apikit import Accounts, Api, bundle, consignment_body, new_vrn, open_gate, submit
from prometheus_client.parser import text_string_to_metric_families

from deploy.admin import leader_site
from deploy.harness import LocalCluster
from kernel.names import member_name

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(session: aiohttp.ClientSession, node_url: str) -> Samples:
    async with session.get(node_url + "/metrics") as r:
        assert r.status == 200
        text = await r.text()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


async def test_domain_and_state_metrics_move_on_the_active_node(
    cluster: LocalCluster, api: Api, accounts: Accounts, db: psycopg.AsyncConnection[Any]
) -> None:
    """#13 item 2: each family is present on the active node and the domain counters move
    with the load: accepted and replayed submissions, a created bundle, a release and a hold
    decision; a synchronous standby streams and its lag is exported in bytes and seconds."""
    site = await leader_site(cluster.topo)
    node = cluster.topo.node_url(site).rstrip("/")
    async with cluster.session(timeout=aiohttp.ClientTimeout(total=10)) as session:
        before = await scrape(session, node)

        key = str(uuid.uuid4())
        body = consignment_body()
        hdrs = {"Idempotency-Key": key}
        first = await api.post("/v1/consignments", accounts.trader.key, json=body, headers=hdrs)
        again = await api.post("/v1/consignments", accounts.trader.key, json=body, headers=hdrs)
        assert first.status == again.status == 201
        assert again.headers.get("Idempotent-Replayed") == "true"
        c = await submit(api, accounts.trader.key)
        await submit(api, accounts.trader.key)
        vrn = new_vrn()
        b = await bundle(api, accounts.trucker.key, [c["ccrn"]], vrn=vrn)
        await open_gate(db, b["id"])
        gate = f"/v1/lbcp/{b['lbcp']}/arrivals"
        released = await api.post(gate, accounts.officer.key, json={"vrn": vrn})
        assert released.json["decision"] == "release", released.text
        held = await api.post(gate, accounts.officer.key, json={"vrn": new_vrn()})
        assert held.json["decision"] == "hold", held.text

        def moved(after: Samples, name: str, **labels: str) -> float:
            return (value(after, name, **labels) or 0) - (value(before, name, **labels) or 0)

        deadline = time.monotonic() + 30  # replication is sampled every 5 s
        while True:
            after = await scrape(session, node)
            if (
                value(after, "rocars_sync_standby_streaming") == 1
                and "rocars_replication_lag_seconds" in names(after)
            ) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)

    subs = "rocars_submissions_total"
    assert moved(after, subs, kind="single", outcome="accepted") >= 3
    assert moved(after, subs, kind="single", outcome="replayed") == 1
    assert moved(after, "rocars_bundles_total", action="create", outcome="accepted") == 1
    assert moved(after, "rocars_arrivals_total", outcome="accepted") == 2
    assert moved(after, "rocars_arrival_decisions_total", decision="release") == 1
    assert moved(after, "rocars_arrival_decisions_total", decision="hold") == 1

    assert value(after, "rocars_sync_standby_streaming") == 1
    standby = member_name(next(s for s in cluster.topo.data_sites if s != site))
    lag_bytes = value(after, "rocars_replication_lag_bytes", standby=standby)
    lag_seconds = value(after, "rocars_replication_lag_seconds", standby=standby)
    assert lag_bytes is not None
    assert lag_bytes >= 0
    assert lag_seconds is not None
    assert lag_seconds >= 0

    assert value(after, "rocars_write_probe_success") == 1
    assert value(after, "rocars_etcd_up") == 1
    assert value(after, "rocars_node_ready") == 1
    assert value(after, "rocars_patroni_leader", member=member_name(site)) == 1
    journal = value(after, "rocars_contingency_journal_bytes")
    assert journal is not None
    assert journal > 0
    pool = value(after, "rocars_db_pool_connections")
    assert pool is not None
    assert pool >= 1
    requests = value(after, "rocars_db_pool_requests_total")
    assert requests is not None
    assert requests > (value(before, "rocars_db_pool_requests_total") or 0)
    for family in (
        "rocars_db_pool_wait_seconds_total",
        "rocars_db_pool_requests_waiting",
        "rocars_patroni_leader_changes_total",
        "rocars_node_role_changes_total",
    ):
        assert family in names(after), family
