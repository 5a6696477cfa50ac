"""The public status page in a real browser (#15 item 5): no sign-in, every LBCP normal, then
manual clearance switched on for one LBCP through the officers' API and the open page follows
by itself (its own refresh, no reload), with the notice and the late-submission grace; in
Traditional Chinese too. Switched off again in a finally.

On a cluster of its own: manual mode leaves a two-hour grace for late submissions that would
change the advance-window answers other tests on the session cluster expect.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import webkit
from apikit import Api, until
from playwright.async_api import Browser

from deploy.harness import LocalCluster

pytestmark = pytest.mark.integration

status_cluster = webkit.cluster_fixture("web-status")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with webkit.chromium() as b:
        yield b


async def test_status_page_follows_a_contingency_switch(
    status_cluster: LocalCluster, browser: Browser
) -> None:
    """#15 item 5: the page shows normal, then (without a reload) manual at HZMB with the
    officer's notice and the grace for late submissions; back to normal afterwards."""
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
