"""The SRE's pages in a real browser (#15 item 6), through HAProxy's entry: an SRE signs in and
lands on `/sre`, which shows both sites with the right roles and the leader; after a planned
switchover (the real `rocars failover switchover`) the open page shows the roles swapped by
itself (its own refresh, no reload), answered by the other node; a drill record published to
etcd the way drills publish it is drawn as an SVG chart on `/sre/drills`. Every page is
photographed at 360 and 1280 px and checked with axe-core.

On a cluster of its own: the switchover moves the leader, which tests on the session cluster
do not expect.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import webkit
from apikit import Api, submit, until
from playwright.async_api import Browser, Page

from deploy import etcd_auth
from deploy.drills.drill import DrillResult
from deploy.drills.publish import publish_to
from deploy.harness import LocalCluster
from kernel.names import member_name
from monitoring.drill_results import build_timeline

pytestmark = pytest.mark.integration

sre_cluster = webkit.cluster_fixture()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with webkit.chromium() as b:
        yield b


async def roles_shown(page: Page) -> dict[str, tuple[str | None, str | None]]:
    """Site -> (node role, leader yes/no) as the page's table shows them now."""
    out = {}
    for row in await page.locator("table.sites tbody tr").all():
        site = await row.get_attribute("data-site")
        if site is not None:
            out[site] = (
                await row.get_attribute("data-role"),
                await row.get_attribute("data-leader"),
            )
    return out


async def test_sre_page_follows_a_switchover_and_draws_a_drill(
    sre_cluster: LocalCluster, browser: Browser
) -> None:
    """#15 item 6: both sites, their roles and the leader; the roles swapped after a
    switchover without a reload; a published drill drawn as SVG with its bars, gap and fault."""
    c = sre_cluster
    base = c.topo.entry_url().rstrip("/")
    sre_key = c.create_account("sre", "web sre")[1]
    trader_key = c.create_account("trader", "web sre trader")[1]
    _, status = c.status()
    leader = status["postgres"]["leader"]
    first = next(s for s in c.topo.data_sites if member_name(s) == leader)
    other = next(s for s in c.topo.data_sites if s != first)
    async with c.session() as session:
        api = Api(session, base)
        for _ in range(5):  # something for the last hour's plot
            await submit(api, trader_key)
        async with webkit.page_of(browser, width=webkit.DESKTOP) as page:
            await webkit.sign_in(page, base, sre_key)
            await page.wait_for_url(base + "/sre")
            assert await roles_shown(page) == {first: ("active", "yes"), other: ("standby", "no")}
            assert await page.get_attribute("#leader", "data-leader") == leader
            assert await page.locator("#redis").get_attribute("data-ok") == "yes"
            assert await page.locator("table.etcd tr[data-healthy=yes]").count() == 3
            assert await page.locator("#write-history svg.write-history-chart").count() == 1
            assert await page.locator("#write-history rect.bar-ok").count() >= 1
            await webkit.check_page(page, "sre-overview")

            await asyncio.to_thread(
                c.rocars, "failover", "switchover", "--to", other, "--state-dir", str(c.state.root)
            )

            async def swapped() -> dict[str, tuple[str | None, str | None]] | None:
                shown = await roles_shown(page)
                want = {first: ("standby", "no"), other: ("active", "yes")}
                return shown if shown == want else None

            await until("the open page showing the roles swapped", swapped, 60)
            assert await page.get_attribute("#leader", "data-leader") == member_name(other)
            assert f"node {other}" in await page.inner_text("#updated >> xpath=..")
            await webkit.check_page(page, "sre-overview-switched")

            gw = etcd_auth.gateway(session, c.topo, c.state, etcd_auth.OPERATOR_USER)
            result = DrillResult(
                "web-sre-test", f"{first}->{other}", "2030-01-07T08:00:00", rto_s=2.6, budget_s=10
            )
            acked = [i * 0.1 for i in range(30)] + [5.6 + i * 0.1 for i in range(60)]
            result.timeline = build_timeline(
                acked,
                [(2.9, 5.6, True)] * 4,
                end_s=12.0,
                fault_s=3.0,
                gap=(3.0, 5.6),
                events=[
                    (3.0, "fault injected: switchover"),
                    (4.2, f"leader key: {member_name(first)} -> {member_name(other)}"),
                    (5.6, "first successful write after the outage"),
                ],
            ).model_dump()
            await publish_to(gw, result, time.time())
            await page.goto(base + "/sre/drills")
            chart = page.locator("#drill-web-sre-test svg.drill-chart")
            assert await chart.count() == 1
            assert await chart.get_attribute("role") == "img"
            assert await chart.locator("rect.bar-ok").count() == 10  # seconds 0-2 and 5-11
            assert await chart.locator("rect.gap").count() == 1
            assert await chart.locator("line.fault").count() == 1
            assert await chart.locator("circle.event").count() == 3
            await webkit.check_page(page, "sre-drills")
            await page.click("a[hreflang=zh-Hant]")
            await page.wait_for_url(base + "/sre/drills")
            assert "演練報告" in await page.inner_text("main")
            await webkit.check_page(page, "sre-drills-zh-Hant")
