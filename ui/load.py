"""`python -m ui.load`: many visitors on one hosted demo, as they would come.

Starts `streamlit run app.py` in demo mode on 127.0.0.1 over a fresh store, opens one headless
Chromium context per visitor (each its own cookie, so its own runs), and has each press Train a
moment after the one before and watch its own live page. It counts what went wrong (pages that
did not load, exception boxes, runs that did not end) and measures what each visitor saw: how
often its progress line changed while its own run trained (the live refresh period), how long it
waited in the queue, and the app's memory at the start and end. Bounded in time; it stops by itself.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ui.serve import CHROMIUM, CHROMIUM_ARGS, local_app, memory_mb

# Records each change of the progress line as [seconds, text], from the moment it is installed; and each
# change of the embedding chart's title (it names the snapshot's step) in window.charts, alike.
WATCH_JS = """() => { window.changes = []; window.charts = []; let last = null, chart = null;
    const t0 = performance.now();
    window.watchTimer = setInterval(() => {
        const now = (performance.now() - t0) / 1000;
        const bar = document.querySelector('[data-testid="stProgress"]');
        const text = bar ? bar.innerText : null;
        if (text !== last) { last = text; window.changes.push([now, text]); }
        const title = [...document.querySelectorAll('.gtitle')].map(t => t.textContent).find(t => t.includes('step'));
        if (title && title !== chart) { chart = title; window.charts.push([now, text]); }
    }, 50); }"""


def rss_mb(pid: int) -> float:
    return int(subprocess.run(["ps", "-o", "rss=", "-p", str(pid)], capture_output=True, text=True).stdout) / 1024


def cpu_seconds(app: int) -> dict[str, float]:
    """CPU seconds used so far by the app's process, its workers (and projection processes) and this
    test's Chromium: where the machine's cores went."""
    used = {"app": 0.0, "workers": 0.0, "chromium": 0.0}
    ps = subprocess.run(["ps", "-e", "-o", "sid=,cputimes=,args="], capture_output=True, text=True).stdout
    for line in ps.splitlines():
        sid, seconds, args = line.split(maxsplit=2)
        if int(sid) == app:
            used["app" if "streamlit" in args else "workers"] += int(seconds)
        elif "chromium" in args:
            used["chromium"] += int(seconds)
    return used


def seen(changes: list) -> dict:
    """From one visitor's progress-line changes: the gaps between changes while its run trained, and when
    its run was first seen running and first seen ended (seconds from the watch's start)."""
    gaps = running_gaps(changes)
    running = [(t, text) for t, text in changes if text and text.startswith("running")]
    ended = next((t for t, text in changes if text and text.split(" ")[0] in ("finished", "failed", "cancelled")), None)
    return {"gaps": gaps, "running_at": running[0][0] if running else None, "ended_at": ended}


def running_gaps(changes: list) -> list[float]:
    """The gaps between [seconds, progress line] changes seen while the line said "running"."""
    running = [t for t, text in changes if text and text.startswith("running")]
    return [b - a for a, b in zip(running, running[1:], strict=False)]


def percentile_95(values: list[float]) -> float | None:
    return sorted(values)[int(0.95 * (len(values) - 1))] if values else None


def load(
    visitors: int, steps: int, seconds: float, stagger: float = 0.5, home: Path | None = None, shots: Path | None = None
) -> dict:
    """Runs the visitors against one app; returns the counts and figures (see the module's docstring).
    `shots`: a folder for a screenshot of each visitor whose run was not seen to end."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        home = home or Path(tmp)
        # The demo's caps, but as long a run as asked for (a soak).
        settings = {"CONTRAST_DEMO": "1", "CONTRAST_DEMO_RUNS_PER_VISITOR": "1",
                    "CONTRAST_DEMO_MAX_STEPS": str(max(steps, 5000)), "CONTRAST_DEMO_RUN_SECONDS": str(seconds)}  # fmt: skip
        with local_app(home, home / "server.log", env=settings) as (url, pid), sync_playwright() as p:
            memory_start, cpu_start, wall_start = rss_mb(pid), cpu_seconds(pid), time.monotonic()
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            pages, failed_loads = [], 0
            for _ in range(visitors):
                page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
                page.set_default_timeout(60_000)
                try:
                    page.goto(f"{url}/?steps={steps}")
                    page.get_by_text("Press Train").first.wait_for()  # the page has run: a click is heard
                    page.evaluate(WATCH_JS)
                    page.get_by_test_id("stMain").get_by_role("button", name="Train").click()
                    page.wait_for_function("() => new URLSearchParams(location.search).get('run')")  # queued
                    pages.append(page)
                except Exception:  # a page that did not load, or a Train click that queued nothing
                    failed_loads += 1
                time.sleep(stagger)
            deadline, samples, next_sample = time.monotonic() + seconds, [], time.monotonic()
            while time.monotonic() < deadline:
                if time.monotonic() >= next_sample:  # a soak: the app's memory every half minute
                    samples.append(round(rss_mb(pid)))
                    next_sample += 30
                if all(seen(page.evaluate("() => window.changes"))["ended_at"] is not None for page in pages):
                    break
                time.sleep(1)
            changes = [page.evaluate("() => window.changes") for page in pages]
            charts = [page.evaluate("() => window.charts") for page in pages]
            views = [seen(found) for found in changes]
            if shots is not None:  # what each visitor whose run did not end sees
                for i, (page, view) in enumerate(zip(pages, views, strict=True)):
                    if view["ended_at"] is None:
                        page.screenshot(path=shots / f"visitor-{i + 1}.png", full_page=True)
            exceptions = sum(page.locator('[data-testid="stException"]').count() for page in pages)
            memory_end, processes, cpu_end = rss_mb(pid), memory_mb(pid), cpu_seconds(pid)
            wall = time.monotonic() - wall_start
            browser.close()
    gaps = [gap for view in views for gap in view["gaps"]]
    chart_gaps = [gap for found in charts for gap in running_gaps(found)]
    return {
        "visitors": visitors,
        "failed_loads": failed_loads,
        "exception_boxes": exceptions,
        "runs_not_ended": sum(view["ended_at"] is None for view in views),
        "visitors_with_fewer_than_3_updates_while_training": sum(len(view["gaps"]) < 2 for view in views),
        "refresh_seconds_median": statistics.median(gaps) if gaps else None,
        "refresh_seconds_p95": percentile_95(gaps),
        "refresh_seconds_max": max(gaps) if gaps else None,
        # the embedding chart's redraws while the run trained (each names a newer snapshot)
        "chart_refresh_seconds_median": statistics.median(chart_gaps) if chart_gaps else None,
        "chart_refresh_seconds_p95": percentile_95(chart_gaps),
        "queue_wait_seconds_max": max((v["running_at"] for v in views if v["running_at"] is not None), default=None),
        "app_memory_mb_start": round(memory_start),
        "app_memory_mb_end": round(memory_end),
        "app_memory_mb_every_30_s": samples,
        "processes_mb_end": processes,
        "wall_seconds": round(wall),
        "cpu_seconds": {name: cpu_end[name] - cpu_start[name] for name in cpu_end},
        "each_visitor": [
            {
                "updates_while_training": len(view["gaps"]) + 1 if view["running_at"] is not None else 0,
                "running_at": view["running_at"],
                "ended_at": view["ended_at"],
                "gaps": [round(gap, 2) for gap in view["gaps"]],
                "last_line": (found[-1][1] or "")[:120] if found else None,
            }
            for view, found in zip(views, changes, strict=True)
        ],  # fmt: skip
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ui.load", description="Contrast Lab under many visitors")
    parser.add_argument("--visitors", type=int, default=8, help="browser contexts, each a visitor with a run")
    parser.add_argument("--steps", type=int, default=1000, help="each visitor's run")
    parser.add_argument("--seconds", type=float, default=300, help="the most the test runs")
    parser.add_argument("--out", type=Path, default=Path("load.json"), help="JSON file for the figures")
    parser.add_argument("--shots", type=Path, help="folder for screenshots of visitors whose run was not seen to end")
    args = parser.parse_args(argv)
    if not 1 <= args.visitors <= 32:
        print("error: --visitors: from 1 to 32", file=sys.stderr)
        return 2
    if args.shots:
        args.shots.mkdir(parents=True, exist_ok=True)
    found = load(args.visitors, args.steps, args.seconds, shots=args.shots)
    args.out.write_text(json.dumps(found, indent=2))
    for key, value in found.items():
        if key == "each_visitor":
            continue
        print(f"{key:>50}  {value:.2f}" if isinstance(value, float) else f"{key:>50}  {value}")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
