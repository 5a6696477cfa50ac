"""The trader's web pages in a real browser (#15 item 2) on the session cluster, through
HAProxy's entry: sign in with the API key, submit one consignment (a field error first, from
the API's validation), see its CCRN with the QR code, amend it, cancel it, upload a batch and
see per-row results (downloadable as CSV). Every page is photographed at 360 and 1280 px and
checked with axe-core. What the pages did is read back through the API: one store, one
write path.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest
import webkit
from apikit import Account, Api, consignment_body
from playwright.async_api import Browser, FilePayload, Page, Route

from deploy.harness import LocalCluster
from kernel.domain.lbcp import HK_TZ

pytestmark = pytest.mark.integration
CCRN_TEXT = re.compile(r"^[A-Z0-9-]{8,32}$")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with webkit.chromium() as b:
        yield b


def _local(lead: timedelta) -> str:
    return (datetime.now(UTC) + lead).astimezone(HK_TZ).strftime("%Y-%m-%dT%H:%M")


async def _fill_consignment(page: Page, package_count: str) -> None:
    body = consignment_body()
    await page.check("input[name=direction][value=import]")
    await page.select_option("#f-lbcp", "LMC")
    await page.fill("#f-package_count", package_count)
    for name in (
        "package_description",
        "article_description",
        "consignor_name",
        "consignor_address",
        "consignee_name",
        "consignee_address",
    ):
        await page.fill(f"#f-{name}", str(body[name]))
    await page.fill("#f-expected_at", _local(timedelta(hours=3)))


async def test_trader_submits_amends_and_cancels_one_consignment(
    cluster: LocalCluster, new_account: Callable[[str], Account], api: Api, browser: Browser
) -> None:
    """#15 items 1 and 2: the session cookie is Secure, HttpOnly and SameSite=Strict over the
    HTTPS entry; the form shows the API's field error beside the field, then the CCRN with its
    QR code, copied by its button; the amendment and the cancellation are the API's (read back
    over it); the list filters by status and the search finds the CCRN."""
    trader = new_account("trader")
    base = cluster.topo.entry_url().rstrip("/")
    async with webkit.page_of(browser) as page:
        await page.goto(base + "/")
        await webkit.check_page(page, "signin")
        await webkit.sign_in(page, base, trader.key)
        assert page.url.endswith("/trader")
        # The entry is HTTPS, so the browser holds the session cookie as Secure (#15 item 1).
        cookie = next(c for c in await page.context.cookies() if c["name"] == "rocars_session")
        assert (cookie["secure"], cookie["httpOnly"], cookie["sameSite"]) == (True, True, "Strict")
        await page.goto(base + "/trader/new")
        await webkit.check_page(page, "trader-new")

        await _fill_consignment(page, "twelve")
        await page.click("form.card button[type=submit]")
        error = page.locator("#e-package_count")
        await error.wait_for()
        assert "integer" in (await error.inner_text())
        assert await page.get_attribute("#f-package_count", "aria-invalid") == "true"
        await webkit.check_page(page, "trader-new-field-error")

        await page.fill("#f-package_count", "12")
        async with page.expect_navigation():
            await page.click("form.card button[type=submit]")
        assert re.search(r"/trader/c/[^/?]+\?done=submitted$", page.url), (
            page.url,
            (await page.content())[:3000],
        )
        ccrn = (await page.inner_text("#ccrn")).strip()
        assert CCRN_TEXT.match(ccrn), ccrn
        assert await page.locator("figure.qr-figure svg title").count() == 1
        # Copy and print come with the page's script (without it the buttons stay hidden).
        await page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
        await page.click("button[data-copy]")
        await page.locator(".copied", has_text="Copied").wait_for()
        assert await page.evaluate("navigator.clipboard.readText()") == ccrn
        assert await page.is_visible("button[data-print]")
        await webkit.check_page(page, "trader-consignment")
        stored = await api.get(f"/v1/consignments/{ccrn}", trader.key)
        assert stored.status == 200
        assert stored.json["package_count"] == 12

        await page.click("a[href$='/amend']")
        await page.fill("#f-package_count", "15")
        await webkit.check_page(page, "trader-amend")
        await page.click("form.card button[type=submit]")
        await page.wait_for_url(re.compile(r"done=amended$"))
        stored = await api.get(f"/v1/consignments/{ccrn}", trader.key)
        assert (stored.json["package_count"], stored.json["version"]) == (15, 2)
        assert await page.locator("table.history tbody tr").count() == 2

        page.on("dialog", lambda dialog: dialog.accept())
        await page.click("button.danger")
        await page.wait_for_url(re.compile(r"done=cancelled$"))
        assert (await page.inner_text("#status")).strip() == "cancelled"
        stored = await api.get(f"/v1/consignments/{ccrn}", trader.key)
        assert stored.json["status"] == "cancelled"

        await page.goto(base + "/trader?status=cancelled")
        assert await page.locator(f"a.ccrn:text-is('{ccrn}')").count() == 1
        await webkit.check_page(page, "trader-list")
        await page.fill("#f-find", ccrn.lower())
        await page.click("form[action='/trader/find'] button[type=submit]")
        await page.wait_for_url(f"{base}/trader/c/{ccrn}")


def _batch_csv() -> bytes:
    good = consignment_body()
    fields = list(good)
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(fields)
    w.writerow([good[f] for f in fields])
    w.writerow([{**good, "package_count": "many"}[f] for f in fields])
    w.writerow([{**good, "lbcp": "XXX"}[f] for f in fields])
    w.writerow([good[f] for f in fields])
    return out.getvalue().encode()


async def test_trader_uploads_a_batch_and_sees_each_rows_result(
    cluster: LocalCluster, new_account: Callable[[str], Account], api: Api, browser: Browser
) -> None:
    """#15 item 2: a CSV batch of four rows, two bad, sent by the page's script with a progress
    bar: the page shows 2 accepted, 2 rejected, a CCRN or the API's errors per row, and the
    same results as a CSV download."""
    trader = new_account("trader")
    base = cluster.topo.entry_url().rstrip("/")
    async with webkit.page_of(browser) as page:
        await webkit.sign_in(page, base, trader.key)
        await page.goto(base + "/trader/batch")
        await webkit.check_page(page, "trader-batch")
        upload: FilePayload = {"name": "batch.csv", "mimeType": "text/csv", "buffer": _batch_csv()}
        await page.set_input_files("#f-file", files=[upload])
        # The upload is held back until the page has shown its progress bar.
        kinds: list[str] = []
        bar_shown = asyncio.Event()

        async def hold(route: Route) -> None:
            kinds.append(route.request.resource_type)
            await bar_shown.wait()
            await route.continue_()

        await page.route("**/trader/batch", hold)
        await page.click("form[data-upload] button[type=submit]")
        await page.locator("form[data-upload] progress#upload-progress").wait_for(state="visible")
        bar_shown.set()
        await page.locator("#batch-results, #error-summary, pre").first.wait_for()
        await page.unroute("**/trader/batch")
        # Sent by the page's script (whose upload progress drives the bar), not as a form.
        assert kinds == ["xhr"]
        assert await page.locator("#batch-results").count() == 1, await page.content()
        assert (await page.inner_text("#accepted")).strip() == "2"
        assert (await page.inner_text("#rejected")).strip() == "2"
        rows = page.locator("table.results tbody tr")
        assert await rows.count() == 4
        assert "package_count" in await rows.nth(1).inner_text()
        assert "lbcp" in await rows.nth(2).inner_text()
        await webkit.check_page(page, "trader-batch-results")

        async with page.expect_download() as info:
            await page.click("#results-csv")
        download = await info.value
        path = await download.path()
        got = list(csv.DictReader(io.StringIO(path.read_text())))
        assert [r["row"] for r in got] == ["1", "2", "3", "4"]
        assert [bool(r["ccrn"]) for r in got] == [True, False, False, True]
        mine = await api.get("/v1/consignments", trader.key)
        assert {c["ccrn"] for c in mine.json["items"]} == {got[0]["ccrn"], got[3]["ccrn"]}


async def test_trader_uploads_a_json_batch(
    cluster: LocalCluster, new_account: Callable[[str], Account], api: Api, browser: Browser
) -> None:
    """#15 item 2: a JSON batch (the API's array of consignment documents) from the same page:
    three items, the middle one with a package count that is not a number: 2 accepted, 1
    rejected with the API's error on its row, the accepted ones stored for the trader."""
    trader = new_account("trader")
    base = cluster.topo.entry_url().rstrip("/")
    good = consignment_body()
    items = [good, {**good, "package_count": "many"}, good]
    upload: FilePayload = {
        "name": "batch.json",
        "mimeType": "application/json",
        "buffer": json.dumps(items).encode(),
    }
    async with webkit.page_of(browser) as page:
        await webkit.sign_in(page, base, trader.key)
        await page.goto(base + "/trader/batch")
        await page.set_input_files("#f-file", files=[upload])
        await page.click("form[data-upload] button[type=submit]")
        await page.locator("#batch-results, #error-summary, pre").first.wait_for()
        assert await page.locator("#batch-results").count() == 1, await page.content()
        assert (await page.inner_text("#accepted")).strip() == "2"
        assert (await page.inner_text("#rejected")).strip() == "1"
        rows = page.locator("table.results tbody tr")
        assert await rows.count() == 3
        assert "package_count" in await rows.nth(1).inner_text()
        shown = await page.locator("table.results tbody tr.ok a.ccrn").all_inner_texts()
        assert len(shown) == 2, shown
        assert all(CCRN_TEXT.match(c) for c in shown), shown
        mine = await api.get("/v1/consignments", trader.key)
        assert {c["ccrn"] for c in mine.json["items"]} == set(shown)
