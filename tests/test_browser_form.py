"""The Playground's form and run controls in Chromium, as a person types and clicks."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect, sync_playwright

from ui.serve import CHROMIUM, CHROMIUM_ARGS, local_app

pytestmark = pytest.mark.browser


def test_steps_out_of_range_are_named_and_train_waits_then_pause_comes_with_the_run(tmp_path):
    """A number typed past a bound used to stay in the box, marked, while Train ran the last valid one;
    and Pause / Step came only with a reload when a worker took the run as the page drew it."""
    if not CHROMIUM.exists():
        pytest.fail(f"chromium: {CHROMIUM} is missing (`make chromium` installs it)")
    with local_app(tmp_path) as (url, _), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1200})
            page.set_default_timeout(120_000)
            page.goto(url)
            main = page.get_by_test_id("stMain")
            train = main.get_by_role("button", name="Train", exact=True)
            expect(train).to_be_enabled(timeout=120_000)
            steps = page.get_by_label("Steps", exact=True)
            steps.fill("-10")
            steps.press("Enter")
            expect(page.get_by_test_id("stAlertContentError").filter(has_text="steps: at least 1")).to_be_visible()
            expect(train).to_be_disabled()
            steps.fill("100000")
            steps.press("Enter")
            expect(train).to_be_enabled()
            train.click()
            expect(main.get_by_role("button", name="Pause")).to_be_enabled(timeout=30_000)  # no reload
            main.get_by_role("button", name="Stop", exact=True).click()
            expect(main.get_by_test_id("stProgress").filter(has_text="cancelled")).to_be_visible(timeout=60_000)
        finally:
            browser.close()
