"""End to end in headless Chromium: `streamlit run app.py`, click Train, watch the run learn.

Screenshots and the measured figures (click to first loss point, refresh period, server
memory) go to test-artifacts/. Any Streamlit exception box on a page fails the test.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]  # fmt: skip
VIEWPORT = {"width": 1600, "height": 2000}  # tall: the whole Playground in one screenshot
RUN_SECONDS = 240  # the default recipe trains in well under this on 2 CPU cores

# Plotly charts on the page: title and, per trace, how many points Plotly drew.
CHARTS_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(g => ({
    title: (g.layout && g.layout.title && g.layout.title.text || '').replace(/<\\/?b>/g, ''),
    points: (g._fullData || []).map(t => (t.x && t.x.length) || 0)}))"""
# Records each change of the progress line (it names the step), to measure the refresh period.
WATCH_PROGRESS_JS = """() => { window.progressChanges = []; let last = null;
    window.progressTimer = setInterval(() => {
        const bar = document.querySelector('[data-testid="stProgress"]');
        const text = bar ? bar.innerText : null;
        if (text !== last) { last = text; window.progressChanges.push([performance.now(), text]); }
    }, 20); }"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists():  # Debian's package; the Playwright download needs the internet
        subprocess.run(["make", "chromium"], cwd=ROOT, check=False)
    if not CHROMIUM.exists():
        pytest.fail(f"chromium: {CHROMIUM} is missing and `make chromium` could not install it")
    return CHROMIUM


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`streamlit run app.py` on a free port over an empty store; killed with its workers at the end."""
    ARTIFACTS.mkdir(exist_ok=True)
    port = free_port()
    env = os.environ | {"CONTRAST_HOME": str(tmp_path_factory.mktemp("home"))}
    flags = {
        "--server.headless": "true",
        "--server.port": str(port),
        "--browser.gatherUsageStats": "false",
        "--server.fileWatcherType": "none",  # no module reloads mid-test
    }
    command = [sys.executable, "-m", "streamlit", "run", "app.py", *(part for item in flags.items() for part in item)]
    with open(ARTIFACTS / "server.log", "w") as log:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        yield {"url": url, "pid": proc.pid}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the workers are in its process group
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"streamlit exited with {proc.returncode}; see test-artifacts/server.log")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read() == b"ok":
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"streamlit did not answer on {url} within {timeout} s")


@pytest.fixture(scope="module")
def page(server, chromium):

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=VIEWPORT)
        page.set_default_timeout(60_000)
        page.goto(server["url"])
        yield page
        browser.close()


def shoot(page, name: str) -> None:
    """Screenshot into test-artifacts/, failing if the page shows a Streamlit exception."""
    page.wait_for_timeout(300)
    page.screenshot(path=ARTIFACTS / f"{name}.png")
    boxes = page.locator('[data-testid="stException"]')
    assert boxes.count() == 0, boxes.first.inner_text()


def main_button(page, name: str):
    return page.get_by_test_id("stMain").get_by_role("button", name=name, exact=True)


def charts(page) -> list[dict]:
    return page.evaluate(CHARTS_JS)


def wait_for_chart(page, title_start: str, ok, timeout: float = 60) -> dict:
    """Polls the page until a chart whose title starts with `title_start` satisfies `ok`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for found in charts(page):
            if found["title"].startswith(title_start) and ok(found):
                return found
        time.sleep(0.05)
    pytest.fail(f"no chart {title_start!r} as expected within {timeout} s: {charts(page)}")


def rss_mb(pid: int) -> float:
    return int(subprocess.run(["ps", "-o", "rss=", "-p", str(pid)], capture_output=True, text=True).stdout) / 1024


def embedding_step(chart: dict) -> int:
    return int(chart["title"].rsplit("step ", 1)[1].rstrip(")"))


def test_train_the_default_recipe_and_watch_it_learn(page, server):
    train = main_button(page, "Train")
    train.wait_for()
    assert train.is_enabled()
    shoot(page, "playground-start")
    train.click()
    wait_for_chart(page, "Loss", lambda c: c["points"] and c["points"][0] > 0)
    scatter = wait_for_chart(page, "Embedding", lambda c: embedding_step(c) > 0 and sum(c["points"][:-1]) > 0)
    assert sum(scatter["points"]) >= 300  # digits holds out 360 items for snapshots, all drawn
    shoot(page, "playground-live")
    page.get_by_test_id("stProgress").filter(has_text="finished").wait_for(timeout=RUN_SECONDS * 1000)
    expect(main_button(page, "Train")).to_be_enabled()  # the page reruns once when the run ends
    shoot(page, "playground-finished")


def test_warm_worker_timings_then_stop(page, server):
    """A second, longer run: the worker is warm. Measures and records the figures, then stops it."""
    steps = page.get_by_label("Steps", exact=True)
    steps.fill("20000")  # still running when Stop is clicked, however fast the machine
    steps.press("Enter")
    page.wait_for_timeout(1000)
    page.evaluate(WATCH_PROGRESS_JS)
    clicked = time.monotonic()
    main_button(page, "Train").click()
    wait_for_chart(page, "Loss", lambda c: c["points"] and c["points"][0] > 0 and "running" in _progress(page))
    first_point = time.monotonic() - clicked
    assert "/ 20,000" in _progress(page)
    page.wait_for_timeout(8000)
    server_rss = rss_mb(server["pid"])
    changes = page.evaluate("() => { clearInterval(window.progressTimer); return window.progressChanges; }")
    running = [t for t, text in changes if text and "running" in text]
    periods = [(b - a) / 1000 for a, b in zip(running, running[1:], strict=False)]
    main_button(page, "Stop").click()
    page.get_by_test_id("stProgress").filter(has_text="cancelled").wait_for(timeout=30_000)
    shoot(page, "playground-stopped")
    figures = {
        "click_to_first_loss_point_s": round(first_point, 2),
        "refresh_period_mean_s": round(statistics.mean(periods), 2),
        "refresh_period_max_s": round(max(periods), 2),
        "refreshes_measured": len(periods),
        "server_rss_mb_one_run_live": round(server_rss, 1),
    }
    (ARTIFACTS / "browser-figures.json").write_text(json.dumps(figures, indent=2))
    assert len(periods) >= 4 and statistics.mean(periods) < 3


def _progress(page) -> str:
    bar = page.get_by_test_id("stProgress")
    return bar.inner_text() if bar.count() else ""


def test_runs_compare_and_explore_pages(page):
    nav = page.get_by_test_id("stSidebarNavLink")
    nav.filter(has_text="Runs").click()
    table = page.get_by_test_id("stDataFrame")
    table.wait_for()
    shoot(page, "runs")
    nav.filter(has_text="Compare").click()
    wait_for_chart(page, "Loss", lambda c: len(c["points"]) == 2 and min(c["points"]) > 0)
    shoot(page, "compare")
    nav.filter(has_text="Explore").click()
    wait_for_chart(page, "Step", lambda c: sum(c["points"]) > 0)
    box = page.locator(".js-plotly-plot .nsewdrag").first.bounding_box()  # the plot area
    page.mouse.move(box["x"] + box["width"] * 0.05, box["y"] + box["height"] * 0.05)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5, steps=10)
    page.mouse.up()
    page.get_by_text("selected").first.wait_for()
    page.get_by_test_id("stImage").first.wait_for()
    shoot(page, "explore-selection")
