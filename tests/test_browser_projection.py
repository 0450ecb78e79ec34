"""End to end in headless Chromium: t-SNE and UMAP of a finished 8-D run replace its PCA on their own.

A short 8-D run is trained with the CLI into a temporary store, `streamlit run app.py` serves it on
127.0.0.1, and the page opens `/?run=<id>` (a shared link). Picking t-SNE, then UMAP, must show
a "computing" line at once and the layout as soon as the background projector has it, with no
further click: the panels poll while it computes and stop once it is there. The measured
figures go to test-artifacts/browser-projection.json, screenshots beside them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from contrast_core.store import RunStore
from ui.serve import CHROMIUM, CHROMIUM_ARGS, ROOT, local_app

pytestmark = pytest.mark.browser

ARTIFACTS = ROOT / "test-artifacts"
VIEWPORT = {"width": 1600, "height": 1400}
TRAIN_SECONDS = 240  # 40 steps and 3 snapshots: about 15 s on 2 busy CPU cores
ARRIVAL_SECONDS = {"t-SNE": 60, "UMAP": 120}  # measured about 5 s and 25 s (UMAP compiles first) on 2 cores

# The embedding chart: its title, whether the title fits in the chart, and its point count.
SCATTER_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot'))
    .filter(g => g.layout && g.layout.title && /embedding/i.test(g.layout.title.text || ''))
    .map(g => { const t = g.querySelector('.gtitle'); const box = t ? t.getBBox() : null;
        return {title: g.layout.title.text.replace(/<\\/?b>/g, ''), points: (g._fullData || []).reduce(
            (n, d) => n + ((d.x && d.x.length) || 0), 0), fits: !!box && box.x >= 0 && box.x + box.width <= g._fullLayout.width};
    })"""


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A store holding one finished 8-D run, trained by the CLI."""
    home = tmp_path_factory.mktemp("projection-home")
    command = [sys.executable, "-m", "contrast_core", "train", "--home", str(home), "--embedding-dim", "8",
               "--steps", "40", "--snapshot-every", "20", "--device", "cpu", "--quiet"]  # fmt: skip
    subprocess.run(command, cwd=ROOT, check=True, timeout=TRAIN_SECONDS, capture_output=True)
    return home


@pytest.fixture(scope="module")
def run_id(home) -> str:
    store = RunStore(home)
    try:
        (run,) = store.list_runs()
    finally:
        store.close()
    assert run.status == "finished" and run.config["embedding_dim"] == 8
    return run.id


@pytest.fixture(scope="module")
def server(home):
    """`streamlit run app.py` on 127.0.0.1 over that store, stopped at the end."""
    if not CHROMIUM.exists():
        pytest.fail(f"chromium: {CHROMIUM} is missing (`make chromium` installs it)")
    ARTIFACTS.mkdir(exist_ok=True)
    with local_app(home, ARTIFACTS / "server-projection.log") as (url, _):
        yield url


def _scatter(page) -> dict | None:
    found = page.evaluate(SCATTER_JS)
    return found[0] if len(found) == 1 else None


def _wait_for_title(page, start: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        chart = _scatter(page)
        if chart and chart["title"].startswith(start) and chart["points"] > 0:
            return chart
        time.sleep(0.1)
    pytest.fail(f"no embedding chart titled {start!r} within {timeout} s: {_scatter(page)}")


def _shoot(page, name: str) -> None:
    page.screenshot(path=ARTIFACTS / f"{name}.png")
    boxes = page.locator('[data-testid="stException"]')
    assert boxes.count() == 0, boxes.first.inner_text()


def test_a_chosen_projection_replaces_pca_on_a_finished_run(server, run_id):
    figures = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(60_000)
            sent = []  # the browser's messages to the server: a poll of the panels is one
            page.on("websocket", lambda ws: ws.on("framesent", lambda _: sent.append(time.monotonic())))
            page.goto(f"{server}/?run={run_id}")
            assert _wait_for_title(page, "PCA of the 8-D embedding, step 40", 60)["fits"]
            _shoot(page, "projection-pca")
            main = page.get_by_test_id("stMain")
            for method in ("t-SNE", "UMAP"):
                clicked = time.monotonic()
                main.get_by_role("radio", name=method, exact=True).click()
                main.get_by_test_id("stCaptionContainer").filter(has_text="computing").first.wait_for(timeout=10_000)
                figures[f"{method}_computing_line_s"] = round(time.monotonic() - clicked, 2)
                shown = _scatter(page)  # None for a moment while the page redraws
                if method == "t-SNE" and shown and shown["title"].startswith("PCA"):  # PCA until t-SNE is done
                    _shoot(page, "projection-tsne-computing")
                chart = _wait_for_title(page, f"{method} of the 8-D embedding, step 40", ARRIVAL_SECONDS[method])
                figures[f"{method}_appeared_s"] = round(time.monotonic() - clicked, 2)
                assert chart["fits"] and chart["points"] >= 300, chart  # the whole title shows; every point drawn
                main.get_by_test_id("stCaptionContainer").filter(has_text="newest snapshot").first.wait_for()
                polls = sum(1 for t in sent if clicked + 1 < t < clicked + figures[f"{method}_appeared_s"])
                page.wait_for_timeout(1000)  # the rerun that stops the polling
                quiet_from = time.monotonic()
                page.wait_for_timeout(3000)
                figures[f"{method}_messages_while_computing"] = polls
                figures[f"{method}_messages_in_3_s_after"] = sum(1 for t in sent if t > quiet_from)
                _shoot(page, f"projection-{method.lower()}")
                assert figures[f"{method}_messages_in_3_s_after"] == 0  # arrived: polling stopped
        finally:
            browser.close()
    (ARTIFACTS / "browser-projection.json").write_text(json.dumps(figures, indent=2))
