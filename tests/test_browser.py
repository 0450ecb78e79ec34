"""End to end in headless Chromium: `streamlit run app.py`, click Train, watch the run learn.

Screenshots and the measured figures (click to first loss point, refresh period, server
memory) go to test-artifacts/. Any Streamlit exception box on a page fails the test.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from contrast_core.config import RunConfig
from contrast_core.store import RunStore
from ui.serve import CHROMIUM, CHROMIUM_ARGS, ROOT, local_app

pytestmark = pytest.mark.browser
# What a page draws can take a while on 2 busy cores (a run training beside two sessions): wait for it.
expect.set_options(timeout=30_000)

ARTIFACTS = ROOT / "test-artifacts"
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
# Installed just before a click on Train: seconds until the new run's first loss point and first
# embedding are drawn. The run before may still be on the page, so a chart counts once the step it
# shows (the loss curve's last x, the step in the embedding's title) is below what was shown then.
FIRST_DRAWN_JS = """() => { const t0 = performance.now(), drawn = window.firstDrawn = {};
    const shown = () => Array.from(document.querySelectorAll('.js-plotly-plot'), g => {
        const title = (g.layout && g.layout.title && g.layout.title.text || '').replace(/<\\/?b>/g, '');
        const x = ((g._fullData || [])[0] || {}).x || [];
        if (title.startsWith('Loss') && x.length) return ['loss', x[x.length - 1]];
        if (title.startsWith('Embedding') && x.length) return ['scatter', parseInt(title.split('step ').pop())];
        return [null, 0]; });
    const before = Math.max(-1, ...shown().map(([chart, step]) => chart ? step : -1));
    window.firstDrawnTimer = setInterval(() => { for (const [chart, step] of shown())
        if (chart && !(chart in drawn) && (before < 0 || step < before)) drawn[chart] = (performance.now() - t0) / 1000;
    }, 20); }"""
# True once every panel of the sweep's small multiples shows step 0 (each panel's title starts "step N").
PANELS_AT_STEP_0_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).some(g => {
    const title = (g.layout && g.layout.title && g.layout.title.text) || '';
    if (!title.includes('Embeddings of every run')) return false;
    const steps = (g.layout.annotations || []).map(a => a.text).filter(t => t.startsWith('step '));
    return steps.length > 0 && steps.every(t => t.startsWith('step 0 '));
})"""
FIRST_DRAWN_READ_JS = "() => { clearInterval(window.firstDrawnTimer); return window.firstDrawn; }"


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists():  # Debian's package; the Playwright download needs the internet
        subprocess.run(["make", "chromium"], cwd=ROOT, check=False)
    if not CHROMIUM.exists():
        pytest.fail(f"chromium: {CHROMIUM} is missing and `make chromium` could not install it")
    return CHROMIUM


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`streamlit run app.py` on a free port over an empty store; stopped with its workers at the end."""
    ARTIFACTS.mkdir(exist_ok=True)
    home = tmp_path_factory.mktemp("home")
    with local_app(home, ARTIFACTS / "server.log") as (url, pid):
        yield {"url": url, "pid": pid, "home": str(home)}


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
    page.evaluate(FIRST_DRAWN_JS)
    clicked = time.monotonic()
    train.click()  # the first click after the server started: its worker may still be starting
    wait_for_chart(page, "Loss", lambda c: c["points"] and c["points"][0] > 0)
    scatter = wait_for_chart(page, "Embedding", lambda c: embedding_step(c) > 0 and sum(c["points"][:-1]) > 0)
    assert sum(scatter["points"]) >= 300  # digits holds out 360 items for snapshots, all drawn
    shoot(page, "playground-live")
    page.get_by_test_id("stProgress").filter(has_text="finished").wait_for(timeout=RUN_SECONDS * 1000)
    end_to_end = time.monotonic() - clicked
    expect(main_button(page, "Train")).to_be_enabled()  # the page reruns once when the run ends
    shoot(page, "playground-finished")
    drawn = page.evaluate(FIRST_DRAWN_READ_JS)
    page.set_viewport_size({"width": 1280, "height": 1000})  # a laptop: the metric tiles read whole
    try:
        page.wait_for_timeout(500)
        tiles = page.get_by_test_id("stMetric").evaluate_all(
            """els => els.map(e => [e.innerText,
                ...[e.querySelector('[data-testid="stMetricValue"] div'), e.querySelectorAll('[data-testid="stMetricLabel"] div')[1]]
                   .map(part => part.scrollWidth - part.clientWidth)])"""
        )  # fmt: skip
        assert len(tiles) >= 8 and all(value == label == 0 for _, value, label in tiles), tiles  # "0.9…", "Rand…"
    finally:
        page.set_viewport_size(VIEWPORT)
    figures = {"first_click_to_first_loss_point_s": round(drawn["loss"], 2),
               "first_click_to_first_scatter_s": round(drawn["scatter"], 2),
               "first_click_default_run_end_to_end_s": round(end_to_end, 2)}  # fmt: skip
    (ARTIFACTS / "browser-figures.json").write_text(json.dumps(figures, indent=2))  # the warm test adds its own


def test_warm_worker_timings_then_stop(page, server):
    """A second, longer run: the worker is warm. Measures and records the figures, then stops it."""
    steps = page.get_by_label("Steps", exact=True)
    steps.fill("20000")  # still running when Stop is clicked, however fast the machine
    steps.press("Enter")
    page.wait_for_timeout(1000)
    page.evaluate(WATCH_PROGRESS_JS)
    page.evaluate(FIRST_DRAWN_JS)
    main_button(page, "Train").click()
    wait_for_chart(page, "Loss", lambda c: c["points"] and c["points"][0] > 0 and "running" in _progress(page))
    assert "/ 20,000" in _progress(page)
    page.wait_for_timeout(8000)
    drawn = page.evaluate(FIRST_DRAWN_READ_JS)
    server_rss = rss_mb(server["pid"])
    changes = page.evaluate("() => { clearInterval(window.progressTimer); return window.progressChanges; }")
    running = [t for t, text in changes if text and "running" in text]
    periods = [(b - a) / 1000 for a, b in zip(running, running[1:], strict=False)]
    main_button(page, "Stop").click()
    page.get_by_test_id("stProgress").filter(has_text="cancelled").wait_for(timeout=30_000)
    shoot(page, "playground-stopped")
    figures = {
        "click_to_first_loss_point_s": round(drawn["loss"], 2),
        "click_to_first_scatter_s": round(drawn["scatter"], 2),
        "refresh_period_mean_s": round(statistics.mean(periods), 2),
        "refresh_period_max_s": round(max(periods), 2),
        "refreshes_measured": len(periods),
        "server_rss_mb_one_run_live": round(server_rss, 1),
    }
    path = ARTIFACTS / "browser-figures.json"
    path.write_text(json.dumps((json.loads(path.read_text()) if path.exists() else {}) | figures, indent=2))
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
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)  # the toolbar shows on hover
    page.locator('.js-plotly-plot .modebar-btn[data-title="Box Select"]').first.click()  # a click picks one item
    page.mouse.move(box["x"] + box["width"] * 0.05, box["y"] + box["height"] * 0.05)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5, steps=10)
    page.mouse.up()
    page.get_by_text("selected").first.wait_for()
    page.get_by_test_id("stImage").first.wait_for()
    shoot(page, "explore-selection")


# --- the tab's run: in the URL from the click on, through F5 and page switches; what the buttons say ------------


def _url_run(page) -> str | None:
    query = urllib.parse.parse_qs(urllib.parse.urlparse(page.url).query)
    return query.get("run", [None])[0]


def _wait_for_url_run(page, run_id: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while _url_run(page) != run_id and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _url_run(page) == run_id, page.url


def test_the_tab_s_run_is_in_the_url_and_survives_f5_and_page_switches(page, server):
    page.goto(server["url"])
    main_button(page, "Train").wait_for()
    steps = page.get_by_label("Steps", exact=True)
    steps.fill("1e9")  # Streamlit's int input read this as 1, in silence
    steps.press("Enter")
    page.get_by_text("steps: at most 1,000,000").wait_for(timeout=10_000)
    expect(main_button(page, "Train")).to_be_disabled()
    steps.fill("200000")  # still running when Stop is clicked
    steps.press("Enter")
    page.get_by_label("Name", exact=True).fill("the F5 run")
    expect(main_button(page, "Train")).to_be_enabled()
    main_button(page, "Train").click()
    page.get_by_test_id("stProgress").wait_for()  # the click's rerun has drawn the run...
    run_id = _url_run(page)  # ...and the URL names it already
    assert run_id and RunStore(server["home"]).get_run(run_id).name == "the F5 run"
    page.get_by_test_id("stColumn").first.screenshot(path=ARTIFACTS / "playground-form-column.png")

    page.reload()
    page.get_by_test_id("stProgress").wait_for()
    assert _url_run(page) == run_id
    expect(page.get_by_label("Steps", exact=True)).to_have_value("200000")  # the run's config, not the default

    nav = page.get_by_test_id("stSidebarNavLink")
    nav.filter(has_text="Runs").click()
    page.get_by_test_id("stDataFrame").wait_for()
    _wait_for_url_run(page, run_id)
    page.reload()  # F5 on another page: the app's router draws it, not the page file on its own
    page.get_by_test_id("stDataFrame").wait_for()
    expect(nav.filter(has_text="Playground")).to_be_visible()
    _wait_for_url_run(page, run_id)
    nav.filter(has_text="Playground").click()
    page.get_by_test_id("stProgress").filter(has_text="running").wait_for(timeout=60_000)
    _wait_for_url_run(page, run_id)

    clicked = time.monotonic()
    main_button(page, "Stop").click()
    page.get_by_test_id("stProgress").filter(has_text="cancelled").wait_for(timeout=30_000)
    page.get_by_test_id("stToast").filter(has_text=f"Run {run_id} cancelled at step").wait_for(timeout=10_000)
    stopped = time.monotonic() - clicked
    shoot(page, "playground-stopped-with-toast")
    assert stopped < 15, stopped
    assert _url_run(page) == run_id


def test_watch_in_playground_puts_the_run_in_the_url(page, server):
    page.goto(f"{server['url']}/runs")
    table = page.get_by_test_id("stDataFrame")
    table.wait_for()
    page.wait_for_timeout(500)
    box = table.bounding_box()
    watch = main_button(page, "Watch in Playground")
    for _ in range(5):  # a click can land while the table refreshes (a live run): then it is lost
        if watch.is_enabled():
            break
        page.mouse.click(box["x"] + 18, box["y"] + 35 + 17)  # the selection checkbox of the first (newest) row
        page.wait_for_timeout(1000)
    expect(watch).to_be_enabled()
    watch.click()
    page.get_by_test_id("stProgress").wait_for()
    assert _url_run(page) == RunStore(server["home"]).list_runs()[0].id


def test_compare_shows_five_runs_whole(page, server):
    store = RunStore(server["home"])
    for i, name in enumerate(["", "margin 2", "", "cosine, wide margin", ""]):
        config = RunConfig(steps=200, margin=0.5 + i).model_dump(mode="json")
        run_id = store.create_run(config, status="finished", name=name)
        store.add_metrics(run_id, [{"step": s, "loss": 1.0 / (s * (i + 1))} for s in range(1, 201)])
    page.set_viewport_size({"width": 1280, "height": 1000})  # a laptop
    try:
        page.goto(f"{server['url']}/compare")
        picker = page.get_by_test_id("stMultiSelect")
        picker.wait_for()
        while picker.locator("[data-tag]").count() < 5:
            picker.locator("input").click()
            page.get_by_role("option").first.click()
            page.wait_for_timeout(500)
        page.keyboard.press("Escape")
        wait_for_chart(page, "Loss", lambda c: len(c["points"]) >= 5)
        shoot(page, "compare-five-runs")
        chips = picker.locator("[data-tag] span[title]").evaluate_all(
            "els => els.map(e => [e.innerText, e.scrollWidth, e.clientWidth])"
        )
        assert all(scroll <= client for _, scroll, client in chips), chips  # no label cut off
        tags = picker.get_by_test_id("stMultiSelectTagsContainer")
        height, shown = tags.evaluate("e => [e.scrollHeight, e.clientHeight]")
        assert height <= shown + 1, (height, shown)  # no chip scrolled out of the box
    finally:
        page.set_viewport_size(VIEWPORT)


def test_a_sweep_from_compare_moves_on_one_clock_and_its_link_reopens_it(page, server):
    page.goto(server["url"])
    steps = page.get_by_label("Steps", exact=True)
    steps.fill("200")  # the sweep's runs take the Playground's settings
    steps.press("Enter")
    expect(main_button(page, "Train")).to_be_enabled()
    page.get_by_test_id("stSidebarNavLink").filter(has_text="Compare").click()
    page.get_by_text("New sweep").first.wait_for()
    if not main_button(page, "Queue sweep").is_visible():
        page.get_by_text("New sweep").first.click()
    values = page.get_by_label("Values", exact=True).first
    values.fill("0.5, 1")
    values.press("Enter")
    page.get_by_test_id("stSelectbox").filter(has_text="Second knob").click()
    page.get_by_role("option", name="distance", exact=True).click()
    expect(page.get_by_label("Values", exact=True).nth(1)).to_have_value("euclidean, cosine")
    main_button(page, "Queue sweep").click()
    page.get_by_text("4 finished").wait_for(timeout=240_000)  # 2 margins x 2 distances, 200 steps each
    wait_for_chart(page, "Embeddings of every run", lambda c: sum(c["points"]) > 0)
    slider = page.get_by_test_id("stSlider").filter(has_text="Training step").get_by_role("slider")
    slider.focus()
    moved = time.monotonic()
    slider.press("Home")  # every panel back to the first snapshot
    page.wait_for_function(PANELS_AT_STEP_0_JS, polling=20, timeout=30_000)
    redraw = time.monotonic() - moved
    page.wait_for_function("() => new URLSearchParams(location.search).get('step') === '0'")
    path = ARTIFACTS / "browser-figures.json"
    figures = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps(figures | {"sweep_2x2_slider_move_to_redraw_s": round(redraw, 2)}, indent=2))
    shoot(page, "compare-sweep")
    link = page.url
    assert "sweep=" in link

    fresh = page.context.browser.new_context(viewport=VIEWPORT)  # nothing of this session: the link alone
    try:
        other = fresh.new_page()
        other.set_default_timeout(60_000)
        other.goto(link)
        wait_for_chart(other, "Embeddings of every run", lambda c: sum(c["points"]) > 0)
        expect(other.get_by_test_id("stSlider").filter(has_text="Training step")).to_contain_text("0")
        assert urllib.parse.parse_qs(urllib.parse.urlparse(other.url).query)["step"] == ["0"]
        shoot(other, "compare-sweep-from-link")
    finally:
        fresh.close()
