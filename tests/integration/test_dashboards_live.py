"""Every dashboard query answers on the live stack (#13 item 4): Grafana cannot be installed
here, so each target expr of every dashboard in deploy/dashboards.py runs against the session
cluster's Prometheus after a little traffic, and must return data; and the same overview is
served by Prometheus itself as the console page /consoles/rocars.html.

The console test needs Prometheus started with
`--web.console.templates=monitoring/consoles` and
`--web.console.libraries=monitoring/consoles/libraries` (deploy/process_specs.py).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from apikit import Accounts, Api, submit

from deploy.admin import leader_site
from deploy.dashboards import all_panels, dashboards
from deploy.harness import LocalCluster

pytestmark = pytest.mark.integration

# Grafana's built-in variables, as a panel of the default "last hour" view would fill them in.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
# Queries allowed to answer nothing (each is still run and must be valid PromQL), by a string
# their expr contains, with the reason: each needs an event this test cannot cause cheaply.
MAY_BE_EMPTY = {
    # The rocars-slo-30d group is evaluated every 5 minutes, the first time up to 5 minutes
    # after Prometheus starts.
    "error_budget_remaining_ratio": "30-day rule group evaluates every 5 min",
    # Published to etcd by `rocars drill run`; the nodes export nothing before the first drill.
    "rocars_drill_": "no drill has run on the test cluster",
    # Exported only for certificates in the state folder's pki/ (none while TLS is off).
    "rocars_certificate_expiry_seconds": "no certificate issued on the test cluster",
    # Nothing need be firing; the stat panel ("or vector(0)") covers the count.
    'count by (severity) (ALERTS{alertstate="firing"})': "no alert need be firing",
}
DEADLINE_S = 90.0


def _allowed_empty(expr: str) -> str | None:
    return next((why for key, why in MAY_BE_EMPTY.items() if key in expr), None)


def _queries(sites: list[str]) -> dict[str, list[str]]:
    """Every target expr of every dashboard ("dashboard / panel: expr") -> the PromQL to run,
    one per site where the expr uses the site variable (a panel shows data when some site
    has it: a replica's link state exists only on the replica)."""
    out: dict[str, list[str]] = {}
    for stem, d in dashboards().items():
        for p in all_panels(d):
            for t in p.targets:
                expr = t.expr
                for var, value in GRAFANA_VARS.items():
                    expr = expr.replace(var, value)
                variants = [expr.replace("$site", s) for s in sites] if "$site" in expr else [expr]
                assert all("$" not in v for v in variants), f"unreplaced variable in {expr}"
                out[f"{stem} / {p.title}: {t.expr}"] = variants
    return out


async def _query(s: aiohttp.ClientSession, prom: str, expr: str) -> list[Any]:
    async with s.get(f"{prom}/api/v1/query", params={"query": expr}) as r:
        doc = await r.json()
    assert r.status == 200, (expr, doc)
    assert doc["status"] == "success", (expr, doc)
    result: list[Any] = doc["data"]["result"]
    return result


async def _traffic(api: Api, accounts: Accounts) -> None:
    """A few submissions and reads through HAProxy, so the request, latency, submission and
    pool series have samples."""
    key = accounts.trader.key
    for _ in range(5):
        await submit(api, key)
        r = await api.get("/v1/consignments", key)
        assert r.status == 200, r.text


async def test_every_dashboard_query_returns_data(
    cluster: LocalCluster, api: Api, accounts: Accounts
) -> None:
    """#13 item 4: every panel's query of every dashboard (Grafana's variables filled in,
    $site by each real site) is valid PromQL on the live Prometheus and returns data, except
    the few in MAY_BE_EMPTY, within DEADLINE_S of some traffic (scrapes and rules run every
    5 s; a rate needs two samples)."""
    prom = cluster.topo.monitoring_url("prometheus")
    queries = _queries(sorted(cluster.topo.sites))
    assert len(queries) > 100
    await _traffic(api, accounts)
    pending = {name: v for name, v in queries.items() if not _allowed_empty(name)}
    t0 = time.monotonic()
    async with cluster.session(timeout=aiohttp.ClientTimeout(total=10)) as s:
        # Allow-listed ones must still be valid PromQL.
        empty = []
        for name, variants in queries.items():
            if _allowed_empty(name):
                answers = [await _query(s, prom, expr) for expr in variants]
                if not any(answers):
                    empty.append(name)
        while pending and time.monotonic() - t0 < DEADLINE_S:
            for name, variants in list(pending.items()):
                for expr in variants:
                    if await _query(s, prom, expr):
                        del pending[name]
                        break
            if pending:
                await asyncio.sleep(1)
    took = time.monotonic() - t0
    assert not pending, f"{len(pending)} queries without data after {took:.0f}s:\n" + "\n".join(
        sorted(pending)
    )
    print(f"\n[measure] {len(queries)} dashboard queries answered with data {took:.1f}s in")
    print("[measure] allowed to be empty and empty:", *sorted(empty), sep="\n  ")


async def test_console_page_shows_the_overview(cluster: LocalCluster) -> None:
    """#13 item 4: Prometheus serves the overview at /consoles/rocars.html (needs the console
    flags, see the module docstring): 200, the template expanded without error, and it names
    the active site."""
    prom = cluster.topo.monitoring_url("prometheus")
    active = await leader_site(cluster.topo)
    async with cluster.session(timeout=aiohttp.ClientTimeout(total=10)) as s:

        async def page() -> tuple[int, str]:
            async with s.get(f"{prom}/consoles/rocars.html") as r:
                return r.status, await r.text()

        # The node's role series appears with its first scrape; poll for it, not for time.
        t0 = time.monotonic()
        status, text = await page()
        while f'id="active-site">{active}<' not in text and time.monotonic() - t0 < 30:
            await asyncio.sleep(1)
            status, text = await page()
    assert status == 200, text[:2000]
    assert "error executing template" not in text, text[:2000]
    assert "template:" not in text, text[:2000]
    assert f'id="active-site">{active}<' in text, text[:4000]
    assert "new PromConsole.Graph" in text
