"""In headless Chromium: a live run's charts are updated in place (ui.live_chart), not built again at every
refresh: the same plot stays on the page, and what the person zoomed to stays while the curve grows."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import sync_playwright

from ui.serve import CHROMIUM, CHROMIUM_ARGS, ROOT, local_app

pytestmark = pytest.mark.browser

ARTIFACTS = ROOT / "test-artifacts"
# The chart whose title starts with `title`: its x range, its first curve's last x, and whether it is the
# plot marked earlier (a plot built again is a new element, without the mark).
CHART_JS = """([title, mark]) => {
    const g = Array.from(document.querySelectorAll('.js-plotly-plot')).find(g =>
        ((g.layout && g.layout.title && g.layout.title.text) || '').replace(/<\\/?b>/g, '').startsWith(title));
    if (!g || !g._fullLayout) return null;
    if (mark) g.dataset.marked = 'yes';
    const x = ((g._fullData || [])[0] || {}).x || [];
    return {range: g._fullLayout.xaxis.range, last: x.length ? x[x.length - 1] : null,
            marked: g.dataset.marked === 'yes'};
}"""


def _wait(read, ok, what: str, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = read()
        if found is not None and ok(found):
            return found
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}: {read()}")


def test_a_live_chart_is_updated_in_place_and_keeps_a_zoom(tmp_path):
    if not CHROMIUM.exists():
        pytest.fail(f"chromium: {CHROMIUM} is missing (`make chromium` installs it)")
    ARTIFACTS.mkdir(exist_ok=True)
    with local_app(tmp_path, ARTIFACTS / "server-live-chart.log") as (url, _), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1800})
        page.set_default_timeout(60_000)
        page.goto(f"{url}/?steps=3000&steps_per_second=20&snapshot_every=20")
        page.get_by_test_id("stMain").get_by_role("button", name="Train", exact=True).click()
        loss = lambda mark=False: page.evaluate(CHART_JS, ["Loss", mark])
        embedding = lambda mark=False: page.evaluate(CHART_JS, ["Embedding", mark])
        _wait(loss, lambda c: (c["last"] or 0) >= 20, "the loss curve's first steps")
        _wait(embedding, lambda c: True, "the embedding")
        loss(mark=True), embedding(mark=True)

        # Zoom the loss chart as a person does: drag a box over the left tenth of its plot area.
        box = page.locator(".js-plotly-plot", has=page.locator(".gtitle", has_text="Loss")).locator(".nsewdrag")
        area = box.first.bounding_box()
        y = area["y"] + area["height"] / 2
        page.mouse.move(area["x"] + 2, y)
        page.mouse.down()
        page.mouse.move(area["x"] + area["width"] * 0.05, y + 20, steps=5)
        page.mouse.move(area["x"] + area["width"] * 0.1, y + 40, steps=5)
        page.mouse.up()
        zoomed = _wait(loss, lambda c: c["range"][1] < 1000, "the zoom")["range"]

        # Three refreshes later the curve has grown, on the same plot, still zoomed where the person left it.
        grown = loss()["last"] + 40
        after = _wait(loss, lambda c: c["last"] >= grown, "the loss curve to grow")
        assert after["marked"], "the loss chart was built again: a new plot element"
        assert after["range"] == pytest.approx(zoomed), "the refresh dropped the zoom"
        assert embedding()["marked"], "the embedding chart was built again: a new plot element"
        page.screenshot(path=ARTIFACTS / "live-chart-zoomed.png")
        boxes = page.locator('[data-testid="stException"]')
        assert boxes.count() == 0, boxes.first.inner_text()
        page.get_by_test_id("stMain").get_by_role("button", name="Stop", exact=True).click()
        browser.close()
