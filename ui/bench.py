"""`python -m ui.bench`: the dashboard's latency, measured off the page.

Click to first point with a warm worker, and the cost of one live refresh (new rows, the newest
snapshot, three figures built and serialised) with nothing training and while a run trains.
It lives with the UI because it builds the dashboard's figures; the engine's own figures come
from `python -m contrast_core bench`. Writes its figures as JSON, as that one does.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import plotly.graph_objects as go

from contrast_core.bench import wait_for
from contrast_core.config import RunConfig
from contrast_core.jobs import JobQueue
from contrast_core.store import RunStore
from ui import figures
from ui.run_view import RunView, as_measured, class_names

POLLS = 50  # refreshes timed for each median
POLL_GAP_SECONDS = 0.05  # between timed refreshes, so a training worker gets the cores meanwhile
WARM_UP_SECONDS = 8.0  # a new worker's warm-up run (imports, data, kernels) before the first click


def refresh(view: RunView, store: RunStore) -> list[go.Figure]:
    """One live refresh, as the Playground's fragment does every REFRESH_SECONDS: reads the new
    metric rows and the newest snapshot (RunView.update), then builds the loss, embedding and
    pair-distance figures (the last two once there is a snapshot)."""
    view.update(store)
    shown = [figures.loss_figure(view.rows, view.config["steps"], ["loss"], smoothing=0.6)]
    if view.arrays is not None:
        xy = as_measured(view.arrays["embeddings"], view.config)[:, :2]  # (E, 2)
        shown.append(figures.scatter_figure(xy, view.arrays["labels"], class_names(view.arrays)))
    if view.pairs is not None:
        pos, neg = view.pairs["pos_distances"], view.pairs["neg_distances"]
        shown.append(figures.distance_histogram(pos, neg, 1.0, (0.0, 3.0)))
    return shown


def refresh_seconds(store: RunStore, run_id: str, polls: int = POLLS) -> float:
    """Median seconds of one `refresh` of the run, its figures serialised for the browser."""
    view, took = RunView(run_id, store.get_run(run_id).config), []
    for _ in range(polls):
        start = time.perf_counter()
        for fig in refresh(view, store):
            fig.to_json()
        took.append(time.perf_counter() - start)
        time.sleep(POLL_GAP_SECONDS)
    return statistics.median(took)


def dashboard_latency(home: Path, polls: int = POLLS) -> dict:
    """Click-to-first-point with a warm worker, and one refresh's cost with and without a run training."""
    store = RunStore(home)
    queue = JobQueue(store, n_workers=1).start()
    try:
        wait_for(lambda: queue.status()["workers"], 60)
        time.sleep(WARM_UP_SECONDS)
        finished = queue.submit(RunConfig(steps=50))
        wait_for(lambda: store.get_run(finished).status == "finished", 120)
        idle_refresh = refresh_seconds(store, finished, polls)
        start = time.perf_counter()
        run_id = queue.submit(RunConfig(steps=100_000))
        wait_for(lambda: store.read_metrics(run_id), 30)
        first_point = time.perf_counter() - start
        busy_refresh = refresh_seconds(store, run_id, polls)
        queue.cancel(run_id)
    finally:
        queue.shutdown()
    return {
        "click_to_first_point_seconds": first_point,
        "refresh_seconds_idle": idle_refresh,
        "refresh_seconds_training": busy_refresh,
    }


def sweep_redraw(home: Path, moves: int = 20, steps: int = 400) -> dict:
    """The Compare page's redraw after a move of the step slider, on a 4 x 4 sweep of real digits runs
    (margin x distance-like grid: 16 runs, 40 snapshots each, trained here first): the panels read,
    the three figures built and serialised. Cold: a step no one has looked at (16 snapshots read);
    warm: one seen before (the page caches each snapshot's panel)."""
    from contrast_core import jobs, sweep
    from ui import sweep_view

    store = RunStore(home)
    axes = {"margin": [0.25, 0.5, 1.0, 2.0], "lr": [0.0003, 0.001, 0.003, 0.01]}
    name, ids = sweep.queue(store, {"steps": steps, "snapshot_every": steps // 40}, axes, "bench 4x4")
    while (run := store.claim_next("bench", "cpu", sweep=name)) is not None:
        jobs.execute(store, run.id)
    grid = sweep_view.grid_of(store.list_runs(sweep=name))
    all_steps = sweep_view.snapshot_steps(store, grid.runs)
    rng = random.Random(0)

    def redraw(step: int) -> float:
        start = time.perf_counter()
        scatter, hist, table = sweep_view.panels_at(store, grid, step)
        ranges = sweep_view.shared_ranges(grid, scatter)
        classes = next(iter(scatter.values()))["classes"]
        shown = [figures.small_multiples(scatter, grid.rows, grid.cols, classes, ranges),
                 figures.histogram_multiples(hist, grid.rows, grid.cols, step),
                 figures.metric_by_knob(table, "margin", "knn_accuracy", "lr")]  # fmt: skip
        for fig in shown:
            fig.to_json()
        return time.perf_counter() - start

    cold, warm = [], []
    for _ in range(moves):
        sweep_view._panel.clear()
        cold.append(redraw(rng.choice(all_steps)))
        warm.append(redraw(rng.choice(all_steps[:5])))  # a few steps, each seen after its first time
    return {
        "sweep_runs": len(grid.runs),
        "sweep_snapshots_per_run": len(all_steps),
        "sweep_redraw_seconds_cold_median": statistics.median(cold),
        "sweep_redraw_seconds_cold_max": max(cold),
        "sweep_redraw_seconds_warm_median": statistics.median(warm),
    }


# True once both grids show the step asked for: every embedding panel's title starts "step N " and the
# pair-distance grid is titled "Pair distances at step N".
_PANELS_AT_JS = """(step) => {
    const titled = (g) => (g.layout && g.layout.title && g.layout.title.text) || '';
    const plots = Array.from(document.querySelectorAll('.js-plotly-plot'));
    const scatter = plots.some(g => {
        const steps = titled(g).includes('Embeddings of every run')
            ? (g.layout.annotations || []).map(a => a.text).filter(t => t.startsWith('step ')) : [];
        return steps.length > 0 && steps.every(t => t.startsWith('step ' + step + ' '));
    });
    return scatter && plots.some(g => titled(g).includes('Pair distances at step ' + step + ' '));
}"""
READ_SECONDS = 0.5  # between slider moves: a person looks before moving again


def sweep_redraw_in_browser(home: Path, moves: int = 10) -> dict:
    """What a person sees: seconds from a key press on Compare's step slider (Home / End, in turn) until
    every panel of both grids of the sweep in `home` (made by `sweep_redraw`) shows the new step, in
    headless chromium against `streamlit run app.py` on a free local port, with READ_SECONDS between
    moves. The first move (cold) is reported apart."""
    import urllib.parse

    from playwright.sync_api import sync_playwright

    from ui.serve import CHROMIUM, CHROMIUM_ARGS, local_app

    with local_app(home) as (base, _):
        store = RunStore(home)
        steps = _sweep_steps(store)
        url = f"{base}/compare?sweep={urllib.parse.quote(store.sweeps()[0])}&step={steps[-1]}"
        took = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1600, "height": 2000})
            page.goto(url)
            page.wait_for_function(_PANELS_AT_JS, arg=str(steps[-1]), polling=20, timeout=120_000)
            slider = page.get_by_test_id("stSlider").filter(has_text="Training step").get_by_role("slider")
            slider.focus()
            for i in range(moves + 1):
                key, step = ("Home", steps[0]) if i % 2 == 0 else ("End", steps[-1])
                start = time.perf_counter()
                slider.press(key)
                page.wait_for_function(_PANELS_AT_JS, arg=str(step), polling=20, timeout=60_000)
                took.append(time.perf_counter() - start)
                page.wait_for_timeout(READ_SECONDS * 1000)
            browser.close()
    return {
        "sweep_browser_first_move_seconds": took[0],
        "sweep_browser_move_seconds_median": statistics.median(took[1:]),
        "sweep_browser_move_seconds_max": max(took[1:]),
    }


def default_run_in_browser(home: Path, runs: int = 3) -> dict:
    """What a person waits for: seconds from a click on Train to "finished" on the progress line for the
    default run (digits, 2,000 steps), in headless chromium against `streamlit run app.py` on a free local
    port, the worker warm (a first run trained and the page loaded again before each click); the median
    of `runs` clicks, with the worker's part (claimed to finished, from the store) and the run's own
    stepping time (its rows' pairs/s while stepping) beside it."""
    from playwright.sync_api import sync_playwright

    from ui.serve import CHROMIUM, CHROMIUM_ARGS, local_app

    walls, worker, stepping = [], [], []
    with local_app(home) as (base, _), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1200})
        for seed in range(runs + 1):  # the first warms the worker and the page up
            page.goto(f"{base}/?seed={seed}")
            train = page.get_by_test_id("stMain").get_by_role("button", name="Train", exact=True)
            train.wait_for(timeout=120_000)
            page.wait_for_timeout(1500)  # the page settled: nothing else competes with the click
            start = time.perf_counter()
            train.click()
            page.get_by_test_id("stProgress").filter(has_text="finished").wait_for(timeout=300_000)
            if seed == 0:
                continue
            walls.append(time.perf_counter() - start)
            store = RunStore(home)
            run = store.list_runs()[0]  # newest first
            rows = store.read_metrics(run.id)
            worker.append(run.finished_at - run.started_at)
            stepping.append(run.config["steps"] * run.config["batch_size"] / rows[-1]["pairs_per_second"])
            store.close()
        browser.close()
    return {
        "default_run_click_to_finished_seconds_median": statistics.median(walls),
        "default_run_click_to_finished_seconds_max": max(walls),
        "default_run_worker_seconds_median": statistics.median(worker),
        "default_run_stepping_seconds_median": statistics.median(stepping),
    }


def _sweep_steps(store: RunStore) -> list[int]:
    from ui import sweep_view

    return sweep_view.snapshot_steps(store, store.list_runs(sweep=store.sweeps()[0]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ui.bench", description="Contrast Lab dashboard latency")
    parser.add_argument("--out", type=Path, default=Path("bench-dashboard.json"), help="JSON file for the figures")
    parser.add_argument("--polls", type=int, default=POLLS, help="refreshes timed for each median")
    parser.add_argument("--home", type=Path, default=None, help="run store folder (default: a temporary one)")
    parser.add_argument("--browser", action="store_true",
                        help="also time the sweep's slider and the default run in headless chromium, as a person sees them")  # fmt: skip
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as sweeps:
        results = {"dashboard": dashboard_latency(args.home or Path(tmp), args.polls) | sweep_redraw(Path(sweeps))}
        if args.browser:
            results["dashboard"] |= sweep_redraw_in_browser(Path(sweeps))
            with tempfile.TemporaryDirectory() as clicks:
                results["dashboard"] |= default_run_in_browser(Path(clicks))
    args.out.write_text(json.dumps(results, indent=2))
    print("\ndashboard")
    for key, value in results["dashboard"].items():
        print(f"  {key:>34}  {value:.3f}" if isinstance(value, float) else f"  {key:>34}  {value}")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
