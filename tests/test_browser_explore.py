"""End to end in headless Chromium: a click on Explore's scatter picks an item, or a place to decode.

Two short runs are trained with the CLI into a temporary store (a 2-D Siamese run and a 2-D VAE),
`streamlit run app.py` serves it on 127.0.0.1, and the page is clicked where Plotly drew a point:
an item's neighbours must appear and be marked on the scatter; on the VAE's latent space, a click
away from every item must decode there. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect, sync_playwright

from contrast_core.store import RunStore
from ui.serve import CHROMIUM, CHROMIUM_ARGS, ROOT, local_app

pytestmark = pytest.mark.browser

ARTIFACTS = ROOT / "test-artifacts"
TRAIN_SECONDS = 240  # 60 steps each: about 6 s on 2 CPU cores
SCATTER = "Array.from(document.querySelectorAll('.js-plotly-plot')).find(g => /^(<b>)*Step/.test((g.layout && g.layout.title && g.layout.title.text) || ''))"
# Where on the page Plotly drew the point whose customdata is `item`, and its data coordinates.
POINT_JS = f"""(item) => {{ const g = {SCATTER}; if (!g) return null;
    const layout = g._fullLayout, box = g.getBoundingClientRect();
    for (const trace of g._fullData) {{
        const i = Array.from(trace.customdata || []).indexOf(item);
        if (i >= 0) return {{left: box.left + layout.xaxis._offset + layout.xaxis.l2p(trace.x[i]),
                            top: box.top + layout.yaxis._offset + layout.yaxis.l2p(trace.y[i]), x: trace.x[i], y: trace.y[i]}};
    }}
    return null; }}"""
TRACES_JS = f"() => {{ const g = {SCATTER}; return g ? g._fullData.map(t => t.name) : []; }}"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("explore-home")
    for extra in ([], ["--model", "vae"]):
        command = [sys.executable, "-m", "contrast_core", "train", "--home", str(home), "--embedding-dim", "2",
                   "--steps", "60", "--snapshot-every", "30", "--device", "cpu", "--quiet", *extra]  # fmt: skip
        subprocess.run(command, cwd=ROOT, check=True, timeout=TRAIN_SECONDS, capture_output=True)
    store = RunStore(home)
    try:
        runs = {run.config["model"]: run.id for run in store.list_runs()}
    finally:
        store.close()
    if not CHROMIUM.exists():
        pytest.fail(f"chromium: {CHROMIUM} is missing (`make chromium` installs it)")
    ARTIFACTS.mkdir(exist_ok=True)
    with local_app(home, ARTIFACTS / "server-explore.log") as (url, _):
        yield url, runs


@pytest.fixture
def page(server):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.set_default_timeout(60_000)
        yield page
        browser.close()


def _click(page, item: int, then: str) -> dict:
    """Clicks where the point with customdata `item` is drawn until the text `then` shows: the page may
    redraw the chart once more as it settles (the sidebar's worker status), and a click during that is lost."""
    for _ in range(5):
        page.wait_for_function(POINT_JS, arg=item)
        page.wait_for_timeout(300)  # its event handlers are attached once it has drawn
        point = page.evaluate(POINT_JS, item)
        if point is None:
            continue
        page.mouse.click(point["left"], point["top"])
        try:
            # Long enough for a slow rerun: a second click on the same point would unselect it.
            page.get_by_text(then(point) if callable(then) else then, exact=True).wait_for(timeout=20_000)
            return point
        except PlaywrightTimeout:
            continue
    pytest.fail(f"no {then!r} after five clicks on point {item}")


def _shoot(page, name: str) -> None:
    page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)
    boxes = page.locator('[data-testid="stException"]')
    assert boxes.count() == 0, boxes.first.inner_text()


def test_a_click_on_a_point_shows_its_neighbours_and_marks_them(page, server):
    url, runs = server
    page.goto(f"{url}/explore?run={runs['mlp']}")
    _click(page, 3, "Item 3")
    page.wait_for_function(f"() => ({TRACES_JS})().includes('item 3')")
    assert {"nearest items", "hardest negatives"} <= set(page.evaluate(TRACES_JS))
    item_box = page.get_by_test_id("stNumberInput").filter(has_text="Item").locator("input")
    expect(item_box).to_have_value("3", timeout=20_000)
    _shoot(page, "explore-item-clicked")


def test_a_click_on_empty_latent_space_decodes_there(page, server):
    url, runs = server
    page.goto(f"{url}/explore?run={runs['vae']}")
    # The click grid's first point: a corner of the latent span, away from every item.
    _click(page, -1, lambda p: f"The decoder at step 60, at (z1, z2) = ({p['x']:.2f}, {p['y']:.2f})")
    page.wait_for_function(f"() => ({TRACES_JS})().includes('decoded')")
    _shoot(page, "explore-latent-clicked")
