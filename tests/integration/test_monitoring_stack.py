"""Prometheus, Alertmanager and the exporters as `make run` starts them (#13 items 1 and 3), on
the shared session cluster: every target up, the status command lists them, and a real alert
travels from a stopped standby to Alertmanager and back."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from apikit import until

from deploy import processes
from deploy.harness import LocalCluster
from deploy.monitoring_config import scrape_targets
from deploy.process_specs import specs
from kernel.names import member_name

pytestmark = pytest.mark.integration


async def _get(s: aiohttp.ClientSession, url: str) -> Any:
    async with s.get(url, timeout=aiohttp.ClientTimeout(total=5)) as r:
        assert r.status == 200, f"{url}: {r.status}"
        return await r.json()


async def _targets(s: aiohttp.ClientSession, prom: str) -> list[dict[str, Any]]:
    doc = await _get(s, f"{prom}/api/v1/targets?state=active")
    targets: list[dict[str, Any]] = doc["data"]["activeTargets"]
    return targets


async def test_every_scrape_target_is_up(cluster: LocalCluster) -> None:
    """#13 item 1: Prometheus on the witness site scrapes both nodes, both Patroni members,
    PostgreSQL through its exporters, every Redis and Sentinel, etcd, HAProxy, itself and
    Alertmanager, and every one of them is up."""
    prom = cluster.topo.monitoring_url("prometheus")
    expected = {
        (job, addr) for job, pairs in scrape_targets(cluster.topo).items() for _s, addr in pairs
    }
    async with cluster.session() as s:

        async def all_up() -> list[dict[str, Any]] | None:
            targets = await _targets(s, prom)
            ok = all(t["health"] == "up" for t in targets) and len(targets) == len(expected)
            return targets if ok else None

        try:
            targets, took = await until("every target up", all_up, 60)
        except AssertionError:
            bad = [(t["labels"]["job"], t["scrapeUrl"], t["lastError"]) for t in await _targets(
                s, prom) if t["health"] != "up"]  # fmt: skip
            raise AssertionError(f"targets not up: {bad}") from None
        print(f"\n[measure] {len(targets)} targets up {took:.1f}s into the test")
        seen = {(t["labels"]["job"], t["labels"]["instance"]) for t in targets}
        assert seen == expected
        # Each exporter really reaches what it watches, not only answers itself.
        for query, count in (
            ("pg_up", 2),
            ("redis_up", 5),
            ("etcd_server_has_leader", 3),
            ("patroni_postgres_running", 2),
            ("haproxy_process_start_time_seconds", 1),
            ("rocars_node_ready", 2),
        ):
            doc = await _get(s, f"{prom}/api/v1/query?query={query}")
            values = [float(r["value"][1]) for r in doc["data"]["result"]]
            assert len(values) == count, (query, doc["data"]["result"])
            if query != "rocars_node_ready" and query.endswith(("_up", "_leader", "running")):
                assert all(v == 1 for v in values), (query, values)


async def test_series_nothing_reads_are_not_stored(cluster: LocalCluster) -> None:
    """#11 target 5: once etcd, the PostgreSQL exporters and the nodes have been scraped,
    Prometheus holds their used series and none of those dropped at scrape time: etcd's
    administration-method counters and debugging histograms, PostgreSQL's settings but
    max_connections (under its own name), the nodes' `_created` series."""
    prom = cluster.topo.monitoring_url("prometheus")

    async def count(query: str) -> int:
        doc = await _get(s, f"{prom}/api/v1/query?query=count({query})")
        result = doc["data"]["result"]
        return int(result[0]["value"][1]) if result else 0

    async with cluster.session() as s:

        async def scraped() -> bool:
            return all(
                [
                    await count('grpc_server_handled_total{grpc_service="etcdserverpb.KV"}'),
                    await count("pg_up") == 2,
                    await count("pg_settings_max_connections") == 2,  # the one setting kept
                    await count("rocars_http_requests_total") > 0,
                ]
            )

        await until("etcd, PostgreSQL and the nodes scraped", scraped, 60)
        for dropped in (
            'grpc_server_handled_total{grpc_service="etcdserverpb.Cluster"}',
            '{__name__=~"etcd_debugging_.+|grpc_server_started_total"}',
            '{__name__=~"pg_settings_.+", __name__!="pg_settings_max_connections"}',
            '{__name__=~"rocars_kept_.+"}',
            '{__name__=~"rocars_.+_created"}',
        ):
            assert await count(dropped) == 0, dropped


def test_status_lists_prometheus_and_alertmanager(cluster: LocalCluster) -> None:
    """#13 item 1: `rocars cluster status --json` names Prometheus and Alertmanager with their
    URLs, both answering, and no target down."""
    code, doc = cluster.status()
    mon = doc["monitoring"]
    assert mon["prometheus"]["url"] == cluster.topo.monitoring_url("prometheus")
    assert mon["prometheus"]["up"] is True
    assert mon["alertmanager"]["url"] == cluster.topo.monitoring_url("alertmanager")
    assert mon["alertmanager"]["up"] is True
    assert mon["prometheus"]["targets_down"] == [], doc
    assert code == 0, doc["problems"]


async def test_a_stopped_standby_pages_through_alertmanager_and_resolves(
    cluster: LocalCluster,
) -> None:
    """#13 item 3: stopping the synchronous standby's Patroni (and so its PostgreSQL) makes
    "synchronous standby missing" reach Alertmanager's API within the rule's `for` (30 s) plus
    a scrape and an evaluation; once it is back and streaming the alert resolves."""
    code, doc = cluster.status()
    assert code == 0, doc["problems"]
    leader = doc["postgres"]["leader"]
    standby = next(s for s in cluster.topo.data_sites if member_name(s) != leader)
    spec = specs(cluster.topo, cluster.state)[f"patroni-{standby}"]
    am = cluster.topo.monitoring_url("alertmanager")

    async with cluster.session() as s:

        async def paged(active: bool) -> bool | None:
            alerts = await _get(s, f"{am}/api/v2/alerts?active=true")
            names = {a["labels"]["alertname"] for a in alerts}
            present = "RocarsSyncStandbyMissing" in names
            return True if present == active else None

        try:
            processes.stop_many(cluster.state, [spec])
            _, took = await until("the alert in Alertmanager", lambda: paged(True), 30 + 30)
            print(f"\n[measure] RocarsSyncStandbyMissing in Alertmanager {took:.1f}s after stop")
        finally:
            cluster.up()

        async def streaming() -> bool | None:
            code, _ = await asyncio.to_thread(cluster.status)
            return True if code == 0 else None

        await until("the standby streaming again", streaming, 90)
        _, took = await until("the alert resolved", lambda: paged(False), 30)
        print(f"[measure] the alert resolved {took:.1f}s after the standby streamed again")
