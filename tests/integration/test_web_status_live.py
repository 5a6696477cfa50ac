"""The public status page in a real browser (#15 item 5): no sign-in, every LBCP normal, then
manual clearance switched on for one LBCP through the officers' API and the open page follows
by itself (its own refresh, no reload), with the notice and the late-submission grace; in
Traditional Chinese too. Switched off again in a finally.

With both API nodes dead, HAProxy answers /status with its own page
(deploy/pages/status-unreachable.html), which is checked here too.

On a cluster of its own: manual mode leaves a two-hour grace for late submissions that would
change the advance-window answers other tests on the session cluster expect, and killing both
nodes would fail every test running beside it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest
import webkit
from apikit import Api, until
from playwright.async_api import Browser, Route

from deploy.harness import LocalCluster

pytestmark = pytest.mark.integration

status_cluster = webkit.cluster_fixture()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with webkit.chromium() as b:
        yield b


async def test_status_page_follows_a_contingency_switch(
    status_cluster: LocalCluster, browser: Browser
) -> None:
    """#15 item 5: the page shows normal, then (without a reload) manual at HZMB since a time,
    with the officer's notice and the grace for late submissions; back to normal afterwards."""
    c = status_cluster
    base = c.topo.entry_url().rstrip("/")
    officer = c.create_account("officer", "web status officer")[1]
    notice = f"Paper forms at HZMB {uuid.uuid4().hex[:6]}"
    async with c.session() as session:
        api = Api(session, base)
        async with webkit.page_of(browser) as page:
            await page.goto(base + "/status")
            mode = page.locator("#overall-mode")
            assert await mode.get_attribute("data-mode") == "normal"
            await webkit.check_page(page, "status-normal")
            try:
                r = await api.post(
                    "/v1/contingency/activate",
                    officer,
                    json={"reason": "web status test", "lbcps": ["HZMB"], "message": notice},
                )
                assert r.status == 200, r.text

                async def manual_shown() -> bool:
                    return await page.locator("#overall-mode").get_attribute("data-mode") == (
                        "manual"
                    )

                await until("the open page showing manual mode", manual_shown, 40)
                assert await page.locator("tr[data-lbcp=HZMB] td.manual").count() == 1
                assert await page.locator("tr[data-lbcp=LMC] td.normal").count() == 1
                assert notice in await page.inner_text(".notice-text")
                assert "Since" in await page.inner_text(".mode-banner")
                assert await page.locator(".mode-banner time[datetime]").count() == 1
                assert "Late submissions are accepted" in await page.inner_text("#grace")
                assert await page.locator("table.changes tbody tr").count() >= 1
                await webkit.check_page(page, "status-manual")
                await page.click("a[hreflang=zh-Hant]")
                await page.wait_for_url(base + "/status")
                assert await page.get_attribute("html", "lang") == "zh-Hant"
                assert "人手清關" in await page.inner_text("main")
                await webkit.check_page(page, "status-manual-zh-Hant")
            finally:
                r = await api.post(
                    "/v1/contingency/deactivate", officer, json={"reason": "web status test done"}
                )
                assert r.status == 200, r.text
            await page.reload()
            assert await page.locator("#overall-mode").get_attribute("data-mode") == "normal"


def _kill_nodes(c: LocalCluster) -> None:
    """SIGKILL both API nodes (each supervisor and its worker); returns once they are gone."""
    procs: list[psutil.Process] = []
    for site in c.topo.data_sites:
        pid = c.pid(f"node-{site}")
        assert pid is not None, site
        supervisor = psutil.Process(pid)
        procs += [supervisor, *supervisor.children(recursive=True)]
    for proc in procs:
        proc.kill()
    _, alive = psutil.wait_procs(procs, timeout=10)
    assert not alive, alive


async def test_haproxy_answers_the_status_page_while_both_nodes_are_down(
    status_cluster: LocalCluster, browser: Browser
) -> None:
    """#15 item 5: with both API nodes dead, /status through the entry is still a page: HAProxy's
    own, in English and Traditional Chinese, readable at 360 px; once the nodes are back the
    nodes' page answers again."""
    c = status_cluster
    base = c.topo.entry_url().rstrip("/")
    async with webkit.page_of(browser) as page:
        try:
            await asyncio.to_thread(_kill_nodes, c)

            async def fallback_shown() -> bool:
                answer = await page.goto(base + "/status")
                return answer is not None and answer.ok and "unreachable" in await page.title()

            await until("HAProxy's own status page", fallback_shown, 30)
            assert await page.get_attribute("html", "lang") == "en"
            assert "ROCARS is unreachable" in await page.inner_text("h1")
            assert "人手清關" in await page.inner_text("p[lang=zh-Hant]")
            assert await page.get_attribute("#check-again", "href") == "/status"
            await webkit.shoot(page, "status-unreachable")
            await page.set_viewport_size({"width": webkit.PHONE, "height": 800})
            assert not await webkit.overflows(page)
        finally:
            await asyncio.to_thread(c.up)

        async def nodes_page_shown() -> bool:
            await page.goto(base + "/status")
            return await page.locator("#overall-mode").count() == 1

        await until("the nodes' status page again", nodes_page_shown, 60)


FALLBACK_PAGE = Path(__file__).resolve().parents[2] / "deploy" / "pages" / "status-unreachable.html"


async def test_haproxys_status_page_has_no_serious_accessibility_violation(
    browser: Browser,
) -> None:
    """#15: HAProxy's own status page (no cluster needed: it is a file of the release) passes
    the same axe-core check as the nodes' pages."""
    async with webkit.page_of(browser) as page:
        await page.goto(FALLBACK_PAGE.as_uri())
        assert await webkit.axe_violations(page) == []


async def test_haproxys_status_page_moves_to_the_nodes_page_once_they_answer(
    browser: Browser,
) -> None:
    """#15 item 5: HAProxy's page checks /status again by itself (its script, no meta
    refresh): still HAProxy's page, it stays; the nodes' page, it goes there. The answers
    come from the test (no cluster), the 30 seconds from the browser's fake clock."""
    site = "https://rocars.test"
    nodes_up = asyncio.Event()
    asked: list[str] = []

    async def answer(route: Route) -> None:
        asked.append(route.request.resource_type)
        if nodes_up.is_set():
            body = '<!doctype html><html lang="en"><title>Status</title><p id="overall-mode">Normal'
        else:
            body = FALLBACK_PAGE.read_text()
        await route.fulfill(status=200, content_type="text/html; charset=utf-8", body=body)

    async with webkit.page_of(browser) as page:
        await page.clock.install()
        await page.route(f"{site}/status", answer)
        await page.goto(f"{site}/status")
        assert await page.locator("#check-again").get_attribute("href") == "/status"
        for _ in range(2):
            async with page.expect_response(f"{site}/status"):
                await page.clock.run_for("00:30")
        # Asked twice in the background, never navigated: the page is still the first one.
        assert asked == ["document", "fetch", "fetch"], asked
        assert "unreachable" in await page.title()
        nodes_up.set()
        await page.clock.run_for("00:30")
        await page.locator("#overall-mode").wait_for()
        assert page.url == f"{site}/status"
