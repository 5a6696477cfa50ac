"""Helpers for the web channel's browser tests (#15): Debian's Chromium driven by Playwright,
screenshots at phone and desktop widths kept as artifacts, and the accessibility check with
axe-core (the copy bundled in axe-playwright-python, injected into the page), and the
cluster fixture of the tests that need a cluster of their own.

Test modules import these by name (pytest puts this folder on sys.path).
"""

from __future__ import annotations

import importlib.resources
import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright

from deploy.harness import TEST_PORT_OFFSETS, LocalCluster

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "var" / "artifacts" / "web"
CHROMIUM = "/usr/bin/chromium"
PHONE, DESKTOP = 360, 1280
AXE_JS = Path(str(importlib.resources.files("axe_playwright_python") / "axe.min.js"))
# What must never be found: axe's two highest impacts.
SERIOUS = ("serious", "critical")
PORT_OFFSET = int(os.environ.get("ROCARS_WEB_PORT_OFFSET", str(TEST_PORT_OFFSETS["web"])))


def cluster_fixture() -> Callable[..., LocalCluster]:
    """A module-scoped fixture for the tests whose story other tests must not see (stopped
    databases, manual mode, a switchover): the web stories' cluster (`web_story_cluster`,
    tests/integration/conftest.py), shared by these modules one after the other and brought
    back to healthy before each module (each module ends its own story: manual mode off,
    databases and nodes back). Use as `my_cluster = webkit.cluster_fixture()`."""

    @pytest.fixture(scope="module")
    def cluster(web_story_cluster: LocalCluster) -> LocalCluster:
        web_story_cluster.ensure_healthy()
        return web_story_cluster

    return cluster


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM)
        try:
            yield browser
        finally:
            await browser.close()


@asynccontextmanager
async def page_of(
    browser: Browser, *, width: int = PHONE, lang: str = "en-GB"
) -> AsyncIterator[Page]:
    """A fresh browser context (its own cookies) and page. CSP is bypassed only so that the
    test can inject axe-core; the pages' own policy is checked by the unit tests."""
    context = await browser.new_context(
        viewport={"width": width, "height": 800},
        locale=lang,
        bypass_csp=True,
        accept_downloads=True,
        # The entry's certificate is from the cluster's private CA, which Chromium's store
        # does not hold; what the certificate proves is tested without a browser
        # (test_control_exposure_live.py). The Secure cookie flag still needs the https://.
        ignore_https_errors=True,
    )
    context.set_default_timeout(20_000)
    page = await context.new_page()
    try:
        yield page
    finally:
        await context.close()


async def shoot(page: Page, name: str) -> list[Path]:
    """Full-page screenshots of the page as it is, at phone and desktop widths."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size or {"width": PHONE, "height": 800}
    out = []
    for width in (PHONE, DESKTOP):
        await page.set_viewport_size({"width": width, "height": 800})
        path = ARTIFACTS / f"{name}-{width}.png"
        await page.screenshot(path=str(path), full_page=True)
        out.append(path)
    await page.set_viewport_size(size)
    return out


async def overflows(page: Page) -> bool:
    """The page is wider than the viewport (it would scroll sideways on a phone)."""
    return bool(await page.evaluate("document.documentElement.scrollWidth > window.innerWidth + 1"))


async def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page (WCAG 2.x A and AA rules and
    best practices), each with its rule id and the nodes it found."""
    await page.add_script_tag(path=str(AXE_JS))
    result = await page.evaluate("async () => JSON.stringify(await axe.run(document))")
    doc = json.loads(result)
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]]}
        for v in doc["violations"]
        if v["impact"] in SERIOUS
    ]


async def check_page(page: Page, name: str) -> None:
    """Screenshots at both widths, no sideways scrolling at 360 px, no serious axe finding."""
    await shoot(page, name)
    await page.set_viewport_size({"width": PHONE, "height": 800})
    assert not await overflows(page), f"{name}: wider than {PHONE} px"
    found = await axe_violations(page)
    assert found == [], f"{name}: {found}"


async def sign_in(page: Page, base: str, key: str) -> None:
    await page.goto(base + "/")
    await page.fill("#f-api_key", key)
    await page.click("button[type=submit]")
    await page.wait_for_load_state()
