"""The server is killed mid-run (the app and its worker, as a crash or a reboot would) and started
again on the same store: the page says the run was interrupted, every metric row stored before is
still there, and Resume on the Runs page continues it from its checkpoint with no gap in its rows.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from playwright.sync_api import expect, sync_playwright

from contrast_core.store import RunStore
from ui.serve import CHROMIUM, CHROMIUM_ARGS, ROOT, local_app

pytestmark = pytest.mark.browser
expect.set_options(timeout=60_000)

ARTIFACTS = ROOT / "test-artifacts"
URL_RUN_JS = "() => new URLSearchParams(location.search).get('run')"


def rows(home, run_id: str) -> list[dict]:
    store = RunStore(home)
    try:
        return store.read_metrics(run_id)
    finally:
        store.close()


def test_a_killed_server_loses_no_row_and_the_run_resumes_after_it_restarts(tmp_path):
    if not CHROMIUM.exists():
        pytest.fail(f"chromium: {CHROMIUM} is missing (`make chromium` installs it)")
    ARTIFACTS.mkdir(exist_ok=True)
    # 4,000 steps of large batches (slow enough to kill mid-way): a checkpoint every 1,000 steps,
    # what Resume continues from.
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1200})
            with local_app(tmp_path, ARTIFACTS / "server-restart-1.log") as (url, pid):
                page.goto(f"{url}/?steps=4000&batch_size=1024")
                main = page.get_by_test_id("stMain")
                main.get_by_role("button", name="Train").click()
                page.wait_for_function(URL_RUN_JS)
                run_id = page.evaluate(URL_RUN_JS)
                deadline = time.monotonic() + 300  # a bound on a hung run, not a speed check
                while len(rows(tmp_path, run_id)) < 1100:  # past the first checkpoint
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
                os.killpg(pid, signal.SIGKILL)  # the app and its worker, at once: nothing is shut down cleanly
            before = rows(tmp_path, run_id)
            assert before[-1]["step"] < 4000, "the run ended before the kill: nothing to resume"
            with local_app(tmp_path, ARTIFACTS / "server-restart-2.log") as (url, _):
                page.goto(f"{url}/?run={run_id}")
                main = page.get_by_test_id("stMain")
                expect(main.get_by_test_id("stProgress").filter(has_text="interrupted")).to_be_visible()
                assert rows(tmp_path, run_id)[: len(before)] == before  # nothing stored was lost
                page.goto(f"{url}/runs")
                grid = main.get_by_test_id("stDataFrame").first
                expect(grid).to_be_visible()
                box = grid.bounding_box()
                page.mouse.click(box["x"] + 15, box["y"] + 35 + 17)  # the first row's selection box
                expect(main.get_by_role("button", name="Resume")).to_be_enabled()
                main.get_by_role("button", name="Resume").click()
                page.get_by_test_id("stToast").filter(has_text="Resumed").wait_for()
                page.screenshot(path=ARTIFACTS / "restart-resume-clicked.png")
                page.goto(f"{url}/?run={run_id}")
                expect(main.get_by_test_id("stProgress").filter(has_text="running")).to_be_visible()
                deadline = time.monotonic() + 300
                while (after := rows(tmp_path, run_id))[-1]["step"] < before[-1]["step"] + 50:
                    assert time.monotonic() < deadline
                    time.sleep(0.5)
                page.screenshot(path=ARTIFACTS / "restart-resumed.png")
                main.get_by_role("button", name="Stop").click()
            steps = [row["step"] for row in after]
            assert steps == list(range(1, len(steps) + 1))  # continued from its checkpoint: no gap, no repeat
            assert after[:1000] == before[:1000]  # the rows up to the checkpoint, unchanged
        finally:
            browser.close()
