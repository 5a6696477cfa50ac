"""The trucker's web pages in a real browser (#15 item 3) on the session cluster, through
HAProxy's entry: open the bundle form from the QR code's link, bundle a fresh CCRN and see
"Cross after HH:MM" with a countdown, bundle one whose information is older than 30 minutes
and see "Cross now", cancel the open bundle, declare an empty truck. Read back over the API.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import psycopg
import pytest
import webkit
from apikit import Account, Api, backdate_consignments, new_vrn, submit
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
    assert (await page.input_value("#f-ccrns")).strip() == ccrn
    await page.fill("#f-vrn", new_vrn())
    await page.click("button.big-button")
    await page.wait_for_url(re.compile(r"/trucker/b/\d+$"))
    return int(page.url.rsplit("/", 1)[1])


async def test_trucker_sees_cross_after_then_cross_now_and_cancels(
    cluster: LocalCluster,
    new_account: Callable[[str], Account],
    api: Api,
    db: psycopg.AsyncConnection[Any],
    browser: Browser,
) -> None:
    """#15 item 3: cargo information changed minutes ago gives "Cross after" the gate's time,
    with a countdown; cargo older than the 30-minute window gives "Cross now"; an open bundle
    is cancelled from its page (the API then says cancelled)."""
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
        assert re.fullmatch(r"\d+:\d\d", (await page.inner_text("#countdown")).strip())
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
