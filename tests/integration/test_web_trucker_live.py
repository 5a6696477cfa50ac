"""The trucker's web pages in a real browser (#15 item 3) on the session cluster, through
HAProxy's entry: open the bundle form from the QR code's link, bundle a fresh CCRN and see
"Cross after HH:MM" with a countdown, bundle one whose information is older than 30 minutes
and see "Cross now", cancel the open bundle, declare an empty truck, scan several QR codes
into one bundle. Read back over the API.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import psycopg
import pytest
import webkit
from apikit import Account, Api, backdate_consignments, new_vrn, submit, until
from playwright.async_api import Browser, Page

from deploy.harness import LocalCluster

pytestmark = pytest.mark.integration


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with webkit.chromium() as b:
        yield b


async def _bundle(page: Page, base: str, ccrn: str) -> int:
    """Bundle `ccrn` from the link its QR code carries; the bundle's number."""
    await page.goto(f"{base}/trucker?ccrn={ccrn}")
    assert await _scanned(page) == [ccrn]
    await page.fill("#f-vrn", new_vrn())
    await page.click("button.big-button")
    await page.wait_for_url(re.compile(r"/trucker/b/\d+$"))
    return int(page.url.rsplit("/", 1)[1])


async def _scanned(page: Page) -> list[str]:
    """The CCRNs the bundle form lists as scanned, in order."""
    found = await page.locator("#scanned li").evaluate_all("ls => ls.map(li => li.dataset.ccrn)")
    return list(found)


async def test_trucker_sees_cross_after_then_cross_now_and_cancels(
    cluster: LocalCluster,
    new_account: Callable[[str], Account],
    api: Api,
    db: psycopg.AsyncConnection[Any],
    browser: Browser,
) -> None:
    """#15 item 3: cargo information changed minutes ago gives "Cross after" the gate's time,
    with a countdown that ticks; cargo older than the 30-minute window gives "Cross now"; an
    open bundle is cancelled from its page (the API then says cancelled)."""
    trader, trucker = new_account("trader"), new_account("trucker")
    base = cluster.topo.entry_url().rstrip("/")
    fresh = (await submit(api, trader.key))["ccrn"]
    old = (await submit(api, trader.key))["ccrn"]
    await backdate_consignments(db, [old], timedelta(minutes=31))
    async with webkit.page_of(browser) as page:
        await webkit.sign_in(page, base, trucker.key)
        assert page.url.endswith("/trucker")
        await webkit.check_page(page, "trucker-home")

        waiting = await _bundle(page, base, fresh)
        text = (await page.inner_text("#instruction-text")).strip()
        assert re.fullmatch(r"Cross after \d\d:\d\d", text), text
        first = (await page.inner_text("#countdown")).strip()
        assert re.fullmatch(r"\d+:\d\d", first), first

        async def ticked() -> bool:
            return (await page.inner_text("#countdown")).strip() != first

        await until("the countdown ticking", ticked, 5)
        got = await api.get(f"/v1/bundles/{waiting}", trucker.key)
        assert got.json["instruction"] == "cross_after"
        await webkit.check_page(page, "trucker-cross-after")

        page.on("dialog", lambda dialog: dialog.accept())
        await page.click("button.danger")
        await page.wait_for_url(re.compile(r"done=cancelled$"))
        got = await api.get(f"/v1/bundles/{waiting}", trucker.key)
        assert got.json["status"] == "cancelled"

        going = await _bundle(page, base, old)
        assert (await page.inner_text("#instruction-text")).strip() == "Cross now"
        got = await api.get(f"/v1/bundles/{going}", trucker.key)
        assert got.json["instruction"] == "cross_now"
        await webkit.check_page(page, "trucker-cross-now")

        await page.goto(base + "/trucker")
        listed = await page.locator("ul.bundles a").all_inner_texts()
        assert any(str(going) in t for t in listed)
        assert any(str(waiting) in t for t in listed)


async def test_trucker_declares_an_empty_truck(
    cluster: LocalCluster, new_account: Callable[[str], Account], api: Api, browser: Browser
) -> None:
    """#15 item 3: an empty truck is a bundle without CCRNs, made from its own form."""
    trucker = new_account("trucker")
    base = cluster.topo.entry_url().rstrip("/")
    async with webkit.page_of(browser) as page:
        await webkit.sign_in(page, base, trucker.key)
        await page.fill("#f-empty-vrn", new_vrn())
        await page.click("form[action='/trucker/empty'] button[type=submit]")
        await page.wait_for_url(re.compile(r"/trucker/b/\d+$"))
        bid = int(page.url.rsplit("/", 1)[1])
        assert "Empty truck" in await page.inner_text("dl.facts")
        got = await api.get(f"/v1/bundles/{bid}", trucker.key)
        assert (got.json["empty"], got.json["ccrns"]) == (True, [])
        await webkit.check_page(page, "trucker-empty")


async def test_trucker_scans_several_qr_codes_into_one_bundle(
    cluster: LocalCluster, new_account: Callable[[str], Account], api: Api, browser: Browser
) -> None:
    """#15 item 3: each QR code's link adds its CCRN to the ones scanned before (a phone's
    camera opens each in turn); one scanned by mistake is removed from the list; the rest are
    bundled together (read back over the API) and leave the list."""
    trader, trucker = new_account("trader"), new_account("trucker")
    base = cluster.topo.entry_url().rstrip("/")
    first, second, mistake = [(await submit(api, trader.key))["ccrn"] for _ in range(3)]
    async with webkit.page_of(browser) as page:
        await webkit.sign_in(page, base, trucker.key)
        for ccrn in (first, second, mistake):
            await page.goto(f"{base}/trucker?ccrn={ccrn}")
        assert await _scanned(page) == [first, second, mistake]
        await page.click(f"#scanned li[data-ccrn='{mistake}'] button")
        await page.wait_for_url(f"{base}/trucker")
        assert await _scanned(page) == [first, second]
        await webkit.check_page(page, "trucker-scanned")
        await page.fill("#f-vrn", new_vrn())
        await page.press("#f-vrn", "Enter")  # Enter sends the bundle, not a remove button
        await page.wait_for_url(re.compile(r"/trucker/b/\d+$"))
        bid = int(page.url.rsplit("/", 1)[1])
        got = await api.get(f"/v1/bundles/{bid}", trucker.key)
        assert sorted(got.json["ccrns"]) == sorted([first, second])
        await page.goto(base + "/trucker")
        assert await _scanned(page) == []
