"""The search page in headless Debian Chromium: upload an image, see neighbours and stats."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simstream.stack.process import free_port
from tests.workers.api.conftest import Served
from workers.api import create_app
from workers.api.server import ThreadedServer

pytestmark = [pytest.mark.services, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def server(served: Served) -> Iterator[ThreadedServer]:
    """The API over the shared node, served by uvicorn on a free port."""
    with ThreadedServer(create_app(served.settings, served.node), "127.0.0.1", free_port()) as s:
        yield s


@pytest.fixture
def page(server: ThreadedServer) -> Iterator[Any]:
    """A Chromium page (the Debian package, never a downloaded browser)."""
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        reason = f"{CHROMIUM} is not installed (apt-get install -y chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.goto(server.url + "/")
            yield page
        finally:
            browser.close()


def test_uploading_an_image_shows_its_neighbours_with_thumbnails_and_live_stats(
    page: Any, served: Served, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    position = served.digits.index_of("digit-0063")
    upload = tmp_path / "query.png"
    upload.write_bytes(served.digits.pngs[position])
    page.fill("#k", "8")

    page.set_input_files("#file", str(upload))

    results = page.locator("#results li")
    expect(results).to_have_count(8)
    expect(results.first).to_contain_text("digit-0063")
    expect(page.locator("#results img.thumb")).to_have_count(8)
    expect(page.locator("#prediction")).to_contain_text(
        f"Predicted: {served.digits.labels[position]}"
    )
    expect(page.locator("#query-caption")).to_contain_text("uploaded: query.png")
    expect(page.locator("#stat-model")).to_have_text(served.version)
    expect(page.locator("#stat-items")).not_to_have_text("–")
    widths = page.eval_on_selector_all(
        "#results img.thumb", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)"
    )
    assert widths == [8] * 8, "every thumbnail is the item's own 8×8 image"
    page.screenshot(path=str(tmp_path / "search.png"), full_page=True)


def test_picking_a_random_item_searches_its_neighbours_without_itself(page: Any) -> None:
    from playwright.sync_api import expect

    page.click("#random")

    caption = page.locator("#query-caption")
    expect(caption).to_contain_text("item ")
    expect(page.locator("#results li")).to_have_count(10)
    query_id = caption.inner_text().split()[1].rstrip(",")
    assert query_id not in page.locator("#results .id").all_inner_texts()
    expect(page.locator("#status")).to_have_text("10 neighbours.")
