"""The officers' pages in a real browser (#15 item 4), on a cluster of their own (the story
stops both databases, and manual mode leaves a two-hour grace for late submissions that other
tests on the session cluster would see):

- the arrivals page, open, shows an arrival the gate decides through the API (Server-Sent
  Events, no reload); a risk rule created and deactivated on its page; a registration approved
  on its page, the new key shown once and working; the selections queue and the ITFS view;
- with PostgreSQL stopped on both sites, an officer, through the public entry (with no node
  ready HAProxy sends sign-in and manual clearance to any live node), signs in, switches
  manual clearance on at LMC with a reason and a confirmation step, records a clearance
  ("journalled"); the databases come back; the officer switches off and sees the
  reconciliation report with the clearance "stored". The public /status page, open through
  HAProxy all along, follows by itself: normal, manual, normal.

Screenshots of each page at 360 px and 1280 px go to var/artifacts/web (webkit.check_page, with
the axe-core check and no sideways scrolling at 360 px).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator

import pytest
import webkit
from apikit import Api, keys_cached, kill_databases, new_vrn, submit, until
from playwright.async_api import Browser, Page

from deploy.harness import LocalCluster

pytestmark = pytest.mark.integration

officer_cluster = webkit.cluster_fixture()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with webkit.chromium() as b:
        yield b


async def _mode(page: Page) -> str | None:
    return await page.locator("#overall-mode").get_attribute("data-mode")


async def test_arrivals_stream_rules_registrations_and_the_queue(
    officer_cluster: LocalCluster, browser: Browser
) -> None:
    """#15 item 4: an arrival decided through the API appears on the open arrivals page
    without a reload; a rule is created, deactivated and activated again on its page; a
    registration is approved and its key, shown once, signs in; the selections queue lists a
    selected truck with its reason; the ITFS view answers."""
    c = officer_cluster
    base = c.topo.entry_url().rstrip("/")
    officer = c.create_account("officer", "web officer")[1]
    trader = c.create_account("trader", "web officer trader")[1]
    trucker = c.create_account("trucker", "web officer trucker")[1]
    keyword = f"fireworks{uuid.uuid4().hex[:6]}"
    async with c.session() as session:
        api = Api(session, base)
        async with webkit.page_of(browser, width=webkit.DESKTOP) as page:
            await webkit.sign_in(page, base, officer)
            assert page.url == base + "/officer"

            # Arrivals as they happen.
            await page.goto(base + "/officer/arrivals")
            await page.wait_for_selector("#arrivals-live[data-state=ok]")
            vrn = new_vrn()
            r = await api.post("/v1/lbcp/LMC/arrivals", officer, json={"vrn": vrn})
            assert r.status == 200, r.text
            row = page.locator("#arrivals tbody tr", has_text=vrn)
            await row.wait_for(timeout=15_000)
            assert r.json["decision"] == "hold"
            assert "Hold" in await row.inner_text()
            await webkit.check_page(page, "officer-arrivals")

            # A risk rule, created and switched off on its page.
            await page.goto(base + "/officer/rules")
            await page.select_option("#f-kind", "keyword")
            await page.fill("#f-value", keyword)
            await page.click("form[action='/officer/rules'] button[type=submit]")
            await page.wait_for_url(re.compile(r"done=created"))
            rule = page.locator("#rules tr", has_text=keyword)
            assert await rule.get_attribute("data-active") == "true"
            rule_id = await rule.get_attribute("data-rule")
            await webkit.check_page(page, "officer-rules")

            # The rule selects a consignment; the queue shows its truck with the reason.
            ccrn = (await submit(api, trader, package_description=f"boxes of {keyword}"))["ccrn"]
            truck = new_vrn()
            r = await api.post(
                "/v1/bundles", trucker, json={"vrn": truck, "lbcp": "LMC", "ccrns": [ccrn]}
            )
            assert r.status == 201, r.text
            await page.goto(base + "/officer?lbcp=LMC")
            queued = page.locator("#trucks tbody tr", has_text=truck)
            assert keyword in await queued.inner_text()
            assert ccrn in await page.inner_text("#consignments")
            await webkit.check_page(page, "officer-selections")

            await page.goto(base + "/officer/rules")
            await page.click(f"#rule-{rule_id} button[type=submit]")
            await page.wait_for_url(re.compile(r"done=deactivated"))
            assert await page.get_attribute(f"#rule-{rule_id}", "data-active") == "false"
            r = await api.get("/v1/risk-rules", officer)
            assert {i["id"]: i["active"] for i in r.json["items"]}[int(rule_id or 0)] is False
            # ... and back on (its keyword is this test's own: nothing else is selected).
            await page.click(f"#rule-{rule_id} button[type=submit]")
            await page.wait_for_url(re.compile(r"done=activated"))
            assert await page.get_attribute(f"#rule-{rule_id}", "data-active") == "true"
            r = await api.get("/v1/risk-rules", officer)
            assert {i["id"]: i["active"] for i in r.json["items"]}[int(rule_id or 0)] is True

            # A registration approved on its page; the key is shown once and works.
            name = f"Web Officer Trading {uuid.uuid4().hex[:6]}"
            r = await api.post(
                "/v1/registrations",
                json={
                    "kind": "trader",
                    "trader_kind": "shipper",
                    "name": name,
                    "brn": "12345678",
                    "contact": {"email": "ops@example.hk"},
                },
            )
            assert r.status == 201, r.text
            await page.goto(base + "/officer/registrations")
            card = page.locator("#registrations li", has_text=name)
            await webkit.check_page(page, "officer-registrations")
            await card.locator("form[action$='/approve'] button").click()
            key = (await page.inner_text("#issued-key")).strip()
            assert key.startswith("rk_")
            r = await api.get("/v1/consignments", key)
            assert r.status == 200, r.text

            # The ITFS view of a land-to-air consignment not yet cleared at the LBCP: the
            # airport may not inspect it yet (the API's rule).
            itfs = (await submit(api, trader, itfs={"airport": "HKG", "flight": "CX100"}))["ccrn"]
            await page.goto(f"{base}/officer/itfs?ccrn={itfs}")
            assert await page.get_attribute("#itfs-decision", "data-allowed") == "false"
            assert "no LBCP clearance" in await page.inner_text("#itfs-view")
            await webkit.check_page(page, "officer-itfs")


async def test_manual_clearance_with_the_database_stopped(
    officer_cluster: LocalCluster, browser: Browser
) -> None:
    """#15 item 4: PostgreSQL stopped on both sites: the officer signs in only then (at
    /signin, through HAProxy with no node active), manual mode on at LMC after a confirmation
    step, a clearance recorded and shown "journalled"; databases back: switched off with the
    reconciliation report, the clearance "stored". /status follows: normal, manual, normal.
    All through the public entry: with no node active HAProxy sends manual clearance to any
    live node."""
    c = officer_cluster
    c.up()
    entry = c.topo.entry_url().rstrip("/")
    officer = c.create_account("officer", "web officer outage")[1]
    await keys_cached(c, [officer])
    vrn = new_vrn()
    async with (
        c.session() as session,
        webkit.page_of(browser) as status,
        webkit.page_of(browser) as page,
    ):
        api = Api(session, entry)
        try:
            await status.goto(entry + "/status")
            assert await _mode(status) == "normal"

            await asyncio.to_thread(kill_databases, c)

            async def both_nodes_down() -> bool:
                return (await api.get("/", allow_503=True)).status == 503

            await until("HAProxy seeing no node active", both_nodes_down, 30)

            # Signed in only now, with no node active: the page sends the officer to /signin
            # (with its stylesheet and script) and back, all through HAProxy to a live node.
            assets: list[tuple[str, int]] = []
            page.on("response", lambda r: assets.append((r.url, r.status)))
            await page.goto(entry + "/officer/contingency")
            assert "/signin?next=" in page.url
            got = {u.removeprefix(entry): code for u, code in assets if "/static/" in u}
            assert got == {"/static/app.css": 200, "/static/app.js": 200}, assets
            await page.fill("#f-api_key", officer)
            await page.press("#f-api_key", "Enter")
            await page.wait_for_url(entry + "/officer/contingency")
            assert await page.get_attribute("#officer-mode", "data-mode") == "normal"
            await webkit.check_page(page, "officer-contingency-normal")

            # Manual mode on at LMC through the entry: the form, then its confirmation.
            await page.fill("#f-a-reason", "both database members stopped (web test)")
            await page.fill("#f-a-message", "Paper clearance at Lok Ma Chau")
            await page.check("#f-a-lbcp-LMC")
            await page.click("form[action='/officer/contingency/activate'] button[type=submit]")
            await page.wait_for_selector("#confirm-activate")
            assert "LMC" in await page.inner_text("#confirm-scope")
            await webkit.check_page(page, "officer-contingency-confirm")
            await page.click("#confirm-activate")
            await page.wait_for_url(re.compile(r"done=activated"))
            assert await page.get_attribute("#officer-mode", "data-mode") == "manual"
            assert await page.locator("tr[data-lbcp=LMC] td.manual").count() == 1
            assert await page.locator("tr[data-lbcp=MKT] td.normal").count() == 1

            async def status_is(mode: str) -> bool:
                return await _mode(status) == mode

            await until("/status showing manual mode", lambda: status_is("manual"), 40)

            # A truck cleared by hand: journalled on the node that served it.
            await page.select_option("#f-c-lbcp", "LMC")
            await page.fill("#f-c-vrn", vrn)
            await page.check("#f-c-decision-release")
            await page.fill("#f-c-documents", "manifest M-1\ninvoice I-2")
            await page.click("form[action='/officer/contingency/clearances'] button")
            await page.wait_for_url(re.compile(r"done=journalled"))
            found = re.search(r"uuid=([0-9a-f-]{36})", page.url)
            assert found is not None, page.url
            clearance = page.locator(f"tr[data-uuid='{found.group(1)}']")
            assert await clearance.get_attribute("data-state") == "journalled"
            assert "journalled" in await clearance.inner_text()
            await webkit.check_page(page, "officer-contingency-manual")
            # Screenshots only: the status page's own checks are test_web_status_live.py's.
            await webkit.shoot(status, "officer-status-manual")

            # The databases come back; switched off through the entry (the active node).
            await asyncio.to_thread(c.up)

            async def entry_serves_pages() -> bool:
                return (await api.get("/", allow_503=True)).status == 200

            # Every node opens the sessions the others sealed.
            await until("a ready node behind the entry", entry_serves_pages, 60)

            async def switched_off() -> bool:
                await page.goto(entry + "/officer/contingency")
                if await page.locator("#f-d-reason").count() == 0:
                    return await page.get_attribute("#officer-mode", "data-mode") == "normal"
                await page.fill("#f-d-reason", "databases back (web test)")
                await page.click("form[action='/officer/contingency/deactivate'] button")
                await page.wait_for_load_state()
                return await page.locator("#reconciliation").count() == 1

            await until("switching off with the reconciliation report", switched_off, 60)
            assert int(await page.inner_text("#report-imported")) >= 1
            assert await page.get_attribute("#officer-mode", "data-mode") == "normal"
            assert await clearance.get_attribute("data-state") == "stored"
            assert "stored" in await clearance.inner_text()
            await webkit.check_page(page, "officer-contingency-reconciled")
            await until("/status back to normal", lambda: status_is("normal"), 40)
        finally:
            await asyncio.to_thread(c.up)
            r = await api.get("/v1/status")
            if r.json["mode"] != "normal":
                await api.post(
                    "/v1/contingency/deactivate", officer, json={"reason": "web test cleanup"}
                )
