"""Every main page: under 300 KB of assets, no script errors, usable on a laptop and a tablet
(nothing wider than the screen), with screenshots of each."""

from __future__ import annotations

import pytest

from tests.browser.conftest import LAPTOP, TABLET
from tests.conftest import add_user

MAX_ASSET_BYTES = 300 * 1024
# user → pages they work in
PAGES = {
    "anna": ["/console", "/customers", "/customers/new", "/customers/merge"],
    "mia": [
        "/marketing/campaigns",
        "/marketing/segments",
        "/marketing/templates",
        "/customers/import",
    ],
    "sam": ["/supervisor/calls", "/supervisor/stats", "/supervisor/wallboard", "/admin/audit"],
}
ASSETS = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const res = performance.getEntriesByType("resource")
    .filter((r) => !["fetch", "xmlhttprequest"].includes(r.initiatorType));
  return { total: nav.decodedBodySize + res.reduce((s, r) => s + r.decodedBodySize, 0),
           files: res.map((r) => r.name) };
}"""


@pytest.mark.parametrize("device", ["laptop", "tablet"])
async def test_main_pages_are_light_and_fit_the_screen(hub, client, app_url, pages, expect, device):
    await add_user(hub, "anna", "agent", extension="201", devices=("PJSIP/201",))
    await add_user(hub, "mia", "marketer")
    await add_user(hub, "sam", "supervisor")
    viewport = TABLET if device == "tablet" else LAPTOP
    for username, paths in PAGES.items():
        page = await pages.login(app_url, username, path=paths[0], viewport=viewport)
        for path in paths:
            await page.goto(app_url + path)
            await page.wait_for_load_state("load")
            assets = await page.evaluate(ASSETS)
            assert 0 < assets["total"] < MAX_ASSET_BYTES, (path, assets)
            assert not [f for f in assets["files"] if not f.startswith(app_url)], assets["files"]
            overflow = await page.evaluate(
                "() => document.documentElement.scrollWidth - window.innerWidth"
            )
            assert overflow <= 0, f"{path} is {overflow}px wider than a {device} screen"
            name = path.strip("/").replace("/", "-")
            await pages.shot(page, f"{device}-{name}")
