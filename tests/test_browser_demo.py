"""End to end in headless Chromium: a hosted demo (CONTRAST_DEMO=1) keeps each visitor's runs theirs.

Two browser contexts are two visitors. The first trains a run, reloads the page (a new Streamlit
session: the cookie must keep the run theirs) and can still stop it; the second opens the first's
link and can watch it, not stop it, and finds no runs of their own on the Runs page.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect, sync_playwright

from ui.serve import CHROMIUM, CHROMIUM_ARGS, ROOT, local_app

pytestmark = pytest.mark.browser
# What a page draws can take a while on 2 busy cores (a run training beside two sessions): wait for it.
expect.set_options(timeout=30_000)

ARTIFACTS = ROOT / "test-artifacts"
URL_RUN_JS = "() => new URLSearchParams(location.search).get('run')"
EMBEDDING_DRAWN_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).some(g =>
    /Embedding/.test((g.layout && g.layout.title && g.layout.title.text) || '') && (g._fullData || []).length > 0)"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.fail(f"chromium: {CHROMIUM} is missing (`make chromium` installs it)")
    ARTIFACTS.mkdir(exist_ok=True)
    home, log = tmp_path_factory.mktemp("demo-home"), ARTIFACTS / "server-demo.log"
    with local_app(home, log, env={"CONTRAST_DEMO": "1", "CONTRAST_DEMO_MAX_STEPS": "100000"}) as (url, _):
        yield url


def _shoot(page, name: str) -> None:
    page.screenshot(path=ARTIFACTS / f"{name}.png")
    boxes = page.locator('[data-testid="stException"]')
    assert boxes.count() == 0, boxes.first.inner_text()


def test_two_visitors_one_run(server):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            first = browser.new_context(viewport={"width": 1600, "height": 1400}).new_page()
            first.set_default_timeout(60_000)
            first.goto(f"{server}/?steps=100000")  # still running below (the demo allows it, see the server)
            main = first.get_by_test_id("stMain")
            main.get_by_role("button", name="Train").click()
            first.wait_for_function(URL_RUN_JS)
            run_id = first.evaluate(URL_RUN_JS)
            expect(main.get_by_text("running ·").first).to_be_visible()
            assert "contrast_visitor" in {c["name"] for c in first.context.cookies()}
            first.reload()  # a new session: the cookie says who this is
            expect(main.get_by_role("button", name="Stop")).to_be_enabled()

            second = browser.new_context(viewport={"width": 1600, "height": 1400}).new_page()
            second.set_default_timeout(60_000)
            second.goto(f"{server}/?run={run_id}")
            other = second.get_by_test_id("stMain")
            expect(other.get_by_text("another visitor's run, shared with you to watch")).to_be_visible()
            expect(other.get_by_role("button", name="Stop")).to_be_disabled()
            expect(other.get_by_text("running ·").first).to_be_visible()  # it can watch it live
            second.wait_for_function(EMBEDDING_DRAWN_JS)
            _shoot(second, "demo-other-visitor")
            second.goto(f"{server}/runs")
            expect(other.get_by_text("No runs yet").first).to_be_visible()

            main.get_by_role("button", name="Stop").click()  # its owner can
            expect(main.get_by_text("cancelled ·").first).to_be_visible()
            _shoot(first, "demo-owner-stopped")
        finally:
            browser.close()
