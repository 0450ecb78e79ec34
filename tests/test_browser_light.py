"""The page process stays light: after every page has rendered in Chromium (a run trained from the
Playground, its live view with thumbnails, Compare, Explore with a t-SNE and a decoded VAE, Runs,
Docs), neither torch, scikit-learn, umap-learn nor numba is mapped into the Streamlit process.
Workers and the projection processes hold them; a hosted demo pays for them once, not per page.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from playwright.sync_api import expect, sync_playwright

from contrast_core.store import RunStore
from ui.serve import CHROMIUM, CHROMIUM_ARGS, ROOT, local_app, memory_mb

pytestmark = pytest.mark.browser
expect.set_options(timeout=60_000)

ARTIFACTS = ROOT / "test-artifacts"
HEAVY = ("libtorch", "/torch/", "/sklearn/", "/umap/", "/numba/")  # in the path of a mapped file


def mapped(pid: int) -> set[str]:
    """The files mapped into a process."""
    with open(f"/proc/{pid}/maps") as f:
        return {line.split(maxsplit=5)[5].strip() for line in f if len(line.split(maxsplit=5)) == 6}


def test_no_page_loads_torch_scikit_learn_or_umap_into_the_page_process(tmp_path):
    if not CHROMIUM.exists():
        pytest.fail(f"chromium: {CHROMIUM} is missing (`make chromium` installs it)")
    command = [sys.executable, "-m", "contrast_core", "train", "--home", str(tmp_path), "--model", "vae",
               "--embedding-dim", "3", "--steps", "40", "--snapshot-every", "20", "--device", "cpu", "--quiet"]  # fmt: skip
    subprocess.run(command, cwd=ROOT, check=True, timeout=300, capture_output=True)
    store = RunStore(tmp_path)
    try:
        (vae,) = [run.id for run in store.list_runs()]
    finally:
        store.close()
    ARTIFACTS.mkdir(exist_ok=True)
    with local_app(tmp_path, ARTIFACTS / "server-light.log") as (url, pid), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1400})
            page.set_default_timeout(120_000)
            page.goto(f"{url}/?steps=40")
            main = page.get_by_test_id("stMain")
            main.get_by_role("button", name="Train").click()
            main.get_by_test_id("stProgress").filter(has_text="finished").wait_for()
            trained = page.evaluate("() => new URLSearchParams(location.search).get('run')")
            page.goto(f"{url}/?run={vae}")  # a finished run: the scatter carries its hover thumbnails
            main.get_by_test_id("stProgress").filter(has_text="finished").wait_for()
            page.wait_for_function("() => Array.from(document.querySelectorAll('.js-plotly-plot'))"
                                   ".some(g => (g.data || []).some(t => t.text && t.text.length))")  # fmt: skip
            page.goto(f"{url}/compare?runs={trained},{vae}")
            page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length > 0")
            page.goto(f"{url}/explore?run={vae}&projection=t-SNE")
            expect(main.get_by_text("t-SNE of the 3-D embedding").first).to_be_attached()
            expect(main.get_by_text("Decoded along the straight line").first).to_be_visible()
            page.goto(f"{url}/runs")
            expect(main.get_by_text("finished").first).to_be_attached()  # a cell of the runs grid
            page.goto(f"{url}/docs")
            expect(main.get_by_role("heading").first).to_be_visible()
            assert page.locator('[data-testid="stException"]').count() == 0
        finally:
            browser.close()
        heavy = sorted(path for path in mapped(pid) if any(name in path for name in HEAVY))
        (ARTIFACTS / "page-process.json").write_text(
            json.dumps({"processes_mb": memory_mb(pid), "heavy": heavy}, indent=1)
        )
        assert heavy == []
