"""In headless Chromium: train from the Playground, pause the training, take one step and one to the
next snapshot, resume; the step counter, the stored rows and the scatter's step follow each click."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect, sync_playwright

from contrast_core.store import RunStore
from ui.serve import CHROMIUM, CHROMIUM_ARGS, ROOT, local_app

pytestmark = pytest.mark.browser
expect.set_options(timeout=60_000)

ARTIFACTS = ROOT / "test-artifacts"
URL_RUN_JS = "() => new URLSearchParams(location.search).get('run')"
SCATTER_STEP_JS = """() => { for (const g of document.querySelectorAll('.js-plotly-plot')) {
    const title = (g.layout && g.layout.title && g.layout.title.text || '').replace(/<\\/?b>/g, '');
    if (title.startsWith('Embedding')) return parseInt(title.split('step ').pop()); } return null; }"""


def _run(home, run_id: str):
    store = RunStore(home)
    try:
        return store.get_run(run_id), store.read_metrics(run_id)
    finally:
        store.close()


def _wait(predicate, timeout: float = 120.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := predicate():
            return found
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def _button(page, name: str):
    return page.get_by_test_id("stMain").get_by_role("button", name=name, exact=True)


def _shoot(page, name: str) -> None:
    page.screenshot(path=ARTIFACTS / f"{name}.png")
    boxes = page.locator('[data-testid="stException"]')
    assert boxes.count() == 0, boxes.first.inner_text()


def test_pause_step_to_a_snapshot_and_resume_from_the_playground(tmp_path):
    if not CHROMIUM.exists():
        pytest.fail(f"chromium: {CHROMIUM} is missing (`make chromium` installs it)")
    ARTIFACTS.mkdir(exist_ok=True)
    with (
        local_app(tmp_path, ARTIFACTS / "server-pause.log") as (url, _),
        sync_playwright() as p,
    ):
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1800})
        page.set_default_timeout(60_000)
        # Slow enough to pause mid-way on any machine: 10 steps a second, a snapshot every 20 steps.
        page.goto(f"{url}/?steps=3000&steps_per_second=10&snapshot_every=20")
        _button(page, "Train").click()
        page.wait_for_function(URL_RUN_JS)
        run_id = page.evaluate(URL_RUN_JS)
        _wait(lambda: _run(tmp_path, run_id)[0].step >= 3, what="the first steps")

        _button(page, "Pause").click()
        expect(page.get_by_test_id("stProgress")).to_contain_text("paused")
        held, rows = _run(tmp_path, run_id)
        assert held.held_since is not None and rows[-1]["step"] == held.step
        expect(_button(page, "Step")).to_be_enabled()
        page.wait_for_function(f"() => ({SCATTER_STEP_JS})() === {held.step}")  # the step held at, drawn
        _shoot(page, "pause-held")

        _button(page, "Step").click()
        expect(page.get_by_test_id("stProgress")).to_contain_text(re.compile(rf"paused.*step {held.step + 1} /"))
        stepped, rows = _run(tmp_path, run_id)
        assert stepped.step == held.step + 1 and rows[-1]["step"] == held.step + 1  # exactly one step
        page.wait_for_function(f"() => ({SCATTER_STEP_JS})() === {held.step + 1}")

        _button(page, "Snapshot").click()
        target = (stepped.step // 20 + 1) * 20
        expect(page.get_by_test_id("stProgress")).to_contain_text(re.compile(rf"paused.*step {target:,} /"))
        assert _run(tmp_path, run_id)[0].step == target
        _shoot(page, "pause-stepped")

        _button(page, "Resume").click()
        expect(page.get_by_test_id("stProgress")).to_contain_text("running")
        _wait(lambda: _run(tmp_path, run_id)[0].step > target + 5, what="training after Resume")
        assert _run(tmp_path, run_id)[0].held_since is None
        _button(page, "Stop").click()
        expect(page.get_by_test_id("stProgress")).to_contain_text("cancelled")
        _shoot(page, "pause-resumed-stopped")
        browser.close()
