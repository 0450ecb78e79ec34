"""Compare: a sweep's runs as small multiples with one clock, and any runs' curves and metrics side by side.

The view is in the URL (`?sweep=NAME&step=N`, or `?runs=ID,ID`), so a link opens it again.
"""

import pandas as pd
import streamlit as st

from contrast_core import sweep
from contrast_core.rules import METRICS
from contrast_core.store import LIVE_STATUSES
from ui import backend, demo, figures, sweep_view, tab
from ui.config_form import CHOSEN_DISTANCE, DEFAULTS, SAVED
from ui.run_table import (
    CONTINUOUS_ONLY,
    TABLE_METRICS,
    config_differences,
    last_metrics,
    short_id,
    short_label,
    sortable,
    status,
    summary,
)

MODES = ("A sweep", "Chosen runs")
PLAY_SECONDS = 0.8  # a step of the play button
HISTORY = ("knn_accuracy", "silhouette", "adjusted_rand", "nmi", "ami", "davies_bouldin", "map_at_r", "knn_r2",
           "spearman")  # fmt: skip
REFRESH_SECONDS = 1.0  # while a sweep's run is live


def _example(slot: str) -> None:
    knob = st.session_state[f"sweep.knob{slot}"]
    st.session_state[f"sweep.values{slot}"] = sweep_view.example(knob, _base()) if knob else ""


def _base() -> dict:
    """The Playground's current settings (its defaults if it was not opened in this tab)."""
    base = DEFAULTS | st.session_state.get(SAVED, {})
    if not st.session_state.get(CHOSEN_DISTANCE):
        base["distance"] = None  # each run measures with its own loss's distance
    return base


def sweep_form(store) -> None:
    base = _base()
    for slot, knob in (("1", "margin"), ("2", None)):
        st.session_state.setdefault(f"sweep.knob{slot}", knob)
        st.session_state.setdefault(f"sweep.values{slot}", sweep_view.EXAMPLES.get(knob, ""))
    st.caption("Every combination of the values below; everything else is the Playground's current settings: "
               f"{summary(dict(base, distance=base['distance'] or 'natural distance'))}, {base['steps']:,.0f} steps.")  # fmt: skip
    left, right = st.columns(2)
    knobs = list(sweep.KNOBS)
    left.selectbox("Knob", knobs, key="sweep.knob1", on_change=_example, args=("1",))
    left.text_input("Values", key="sweep.values1", help="Separated by commas, in the knob's units.")
    right.selectbox("Second knob", [None, *knobs], key="sweep.knob2", on_change=_example, args=("2",),
                    format_func=lambda k: "none" if k is None else k, placeholder="none")  # fmt: skip
    right.text_input("Values", key="sweep.values2", disabled=st.session_state["sweep.knob2"] is None)
    name = st.text_input("Sweep name", key="sweep.name", placeholder="optional: the knobs and the time")
    if not st.button("Queue sweep", icon=":material/grid_view:", type="primary"):
        return
    try:
        axes = {}
        for slot in ("1", "2"):
            knob = st.session_state[f"sweep.knob{slot}"]
            if knob is None:
                continue
            if knob in axes:
                raise sweep.SweepError("second knob: choose a different knob from the first")
            axes[knob] = sweep.parse_values(knob, st.session_state[f"sweep.values{slot}"])
        if refused := demo.refusal(store, [config for _, config in sweep.expand(base, axes)]):
            raise sweep.SweepError(refused)
        if demo.enabled():
            demo.make_room(store)
        name, ids = sweep.queue(store, base, axes, name, owner=demo.visitor())
    except sweep.SweepError as exc:
        st.error(str(exc), icon=":material/error:")
        return
    backend.job_queue()  # its workers take the runs
    st.session_state["compare.mode"], st.session_state["compare.sweep"] = MODES[0], name
    st.session_state.pop("compare.step", None)
    tab.notify(f"Sweep {name!r} queued: {len(ids)} runs.", icon=":material/grid_view:")
    st.rerun()


def sweep_section(store, name: str) -> list[str]:
    """The sweep's small multiples at one step; returns its run ids for the curves below."""
    runs = store.list_runs(sweep=name)
    grid = sweep_view.grid_of(runs)
    live = any(run.status in LIVE_STATUSES for run in runs)
    playing = st.session_state.get("compare.play", False)
    period = PLAY_SECONDS if playing else REFRESH_SECONDS if live else None
    st.fragment(run_every=period)(tab.guarded(_multiples))(name, live, playing)
    return [run.id for run in grid.runs]


def _multiples(name: str, was_live: bool, was_playing: bool) -> None:
    store = backend.run_store()
    runs = store.list_runs(sweep=name)
    grid = sweep_view.grid_of(runs)
    counts = pd.Series([status(run) for run in runs]).value_counts()
    st.caption(f"{len(runs)} runs: " + ", ".join(f"{n} {shown}" for shown, n in counts.items())
               + " · " + " x ".join(f"{k} ({len(v)})" for k, v in grid.axes.items()))  # fmt: skip
    steps = sweep_view.snapshot_steps(store, grid.runs)
    if not steps:
        st.info("The runs have no snapshot yet: the panels appear with their first one.")
        return
    key = "compare.step"
    if st.session_state.get("compare.play"):  # the play button moves the clock a snapshot a tick
        current = st.session_state.get(key, steps[0])
        later = [s for s in steps if s > current]
        st.session_state[key] = later[0] if later else steps[0]
    elif st.session_state.get(key) not in steps:
        st.session_state[key] = sweep_view.step_at_or_before(steps, st.session_state.get(key, steps[-1])) or steps[-1]
    slider, play = st.columns([5, 1], vertical_alignment="bottom")
    step = slider.select_slider("Training step (every panel)", steps, key=key,
                                help="Each panel shows its run's newest snapshot at or before this step.")  # fmt: skip
    if (
        play.toggle("Play", key="compare.play", help="Step every panel through the run, a snapshot a tick.")
        != was_playing
    ):
        st.rerun()  # the whole page: the fragment's tick follows the button
    st.query_params["step"] = str(step)
    damaged = []
    scatter, hist, table = sweep_view.panels_at(store, grid, step, damaged)
    for reason in damaged:
        st.warning(f"{reason}: its panel is left out at this step.", icon=":material/broken_image:")
    classes = next(iter(scatter.values()))["classes"] if scatter else []
    same = st.toggle("Same scale in every panel", value=True, key="compare.same_scale",
                     help="On: the margin's effect on the embedding's size shows. Off: each panel fills its frame.")  # fmt: skip
    ranges = sweep_view.shared_ranges(grid, scatter, shared=same)
    # Static: an overview redrawn at every step, drawn in about half the time without its hover layers.
    st.plotly_chart(figures.small_multiples(scatter, grid.rows, grid.cols, classes, ranges), key="compare.grid",
                    config={"staticPlot": True})  # fmt: skip
    st.caption("Held-out items of each run at the chosen step, coloured by class. Euclidean panels share one "
               "scale and cosine panels show the unit circle, so the eye compares like with like; wider "
               "embeddings are drawn by their PCA. Explore shows one run in depth.")  # fmt: skip
    st.plotly_chart(figures.histogram_multiples(hist, grid.rows, grid.cols, step), key="compare.hist",
                    config={"staticPlot": True})  # fmt: skip
    if grid.axes and not table.empty:
        knobs = list(grid.axes)
        metric_keys = [k for k in METRICS if k in table]
        pick, _ = st.columns([2, 3])
        metric = pick.selectbox("Metric", metric_keys, format_func=lambda k: METRICS[k].label, key="compare.metric",
                                index=metric_keys.index("knn_accuracy") if "knn_accuracy" in metric_keys else 0)  # fmt: skip
        shown = table.rename(columns={metric: METRICS[metric].label})
        line = knobs[1] if len(knobs) > 1 else None
        st.plotly_chart(figures.metric_by_knob(shown, knobs[0], METRICS[metric].label, line), key="compare.knob")
    if was_live and not any(run.status in LIVE_STATUSES for run in runs):
        st.rerun()  # once, when the last run ends: the refresh stops


def chosen_runs(runs: dict, watched: str | None) -> list[str]:
    from_url = [i for i in st.query_params.get("runs", "").split(",") if i]
    if unknown := [i for i in from_url if i not in runs]:
        st.warning(f"runs: no run {', '.join(unknown)} (the link is wrong or the run was deleted).")
    default = [i for i in from_url if i in runs] or (
        ([watched] if watched in runs else []) + [i for i in runs if i != watched]
    )[:2]
    chosen = st.multiselect("Runs", list(runs), default=default, format_func=lambda i: short_label(runs[i]),
                            help="Each run's settings are in the table below the chart.")  # fmt: skip
    st.query_params["runs"] = ",".join(chosen)
    return chosen


def curves_and_table(store, runs: dict, chosen: list[str]) -> None:
    labels = {i: runs[i].name or short_id(i) for i in chosen}
    if len(set(labels.values())) < len(labels):  # two runs of the same name: the legend needs their ids
        labels = {i: f"{runs[i].name} ({i})" if runs[i].name else i for i in chosen}
    differences = config_differences([runs[i] for i in chosen])
    knobs = [k for k in differences.columns if differences[k].astype(str).nunique() > 1]
    left, right = st.columns([3, 1])
    with right:
        smoothing = st.slider("Smoothing", 0.0, 0.99, 0.8, 0.01)
        log_y = st.toggle("Log scale")
        by = st.selectbox("Colour by", [None, *knobs], format_func=lambda k: "run" if k is None else k,
                          key="compare.colour", help="One colour per value of a setting on which the runs differ.")  # fmt: skip
        metric = st.selectbox(
            "Metric over time", HISTORY, format_func=lambda k: METRICS[k].label, key="compare.history"
        )
    colours = figures.knob_colours(list(differences[by])) if by else None  # "not used" where a run does not read it
    if by:
        labels = {
            i: f"{sweep.label({by: value})} · {labels[i]}" for i, value in zip(chosen, differences[by], strict=True)
        }
    curves = {labels[i]: pd.DataFrame(store.read_metrics(i)) for i in chosen}
    history = {labels[i]: pd.DataFrame([{"step": s["step"], **s["metrics"]} for s in store.list_snapshots(i)])
               for i in chosen}  # fmt: skip
    with left:
        st.plotly_chart(figures.compare_figure(curves, smoothing, log_y, colours), key="compare.loss")
        st.plotly_chart(figures.compare_figure(history, 0.0, False, colours, metric, METRICS[metric].label),
                        key="compare.metric_history")  # fmt: skip
    latest = {i: last_metrics(store, runs[i]) for i in chosen}
    table = pd.DataFrame({"run": [labels[i] for i in chosen], "status": [status(runs[i]) for i in chosen],
                          "what it trains": [summary(runs[i].config) for i in chosen]})  # fmt: skip
    for key, label in TABLE_METRICS.items():
        found = [latest[i].get(key) for i in chosen]
        if key not in CONTINUOUS_ONLY or any(value is not None for value in found):
            table[label] = found
    table = table.join(differences)
    st.dataframe(sortable(table), hide_index=True)
    st.download_button("Download the table (CSV)", table.to_csv(index=False), "compare.csv", "text/csv",
                       icon=":material/download:")  # fmt: skip
    st.caption("Config columns are the settings on which the runs differ (None or 'not used': a setting that run "
               "does not read); metrics are from each run's last snapshot. Click a column's name to sort by it.")  # fmt: skip
    final = TABLE_METRICS.get(metric, METRICS[metric].label)
    if knobs and final in table and table[final].notna().sum() > 1:
        st.plotly_chart(figures.parallel_figure(table.dropna(subset=[final]), knobs, final, final),
                        key="compare.parallel")  # fmt: skip
        st.caption(f"Each line is a run: its settings where they differ, and its last {final}. Drag along an "
                   "axis to pick the runs in a range.")  # fmt: skip


st.title("Compare runs")
tab.show_notices()
watched = tab.watched_run()
tab.show_in_url(watched)  # the tab's run stays in the URL: F5 here, then the Playground, finds it
store = backend.run_store()
sweeps = store.sweeps(owner=demo.visitor())  # in a hosted demo, the visitor's own
with st.expander("New sweep", icon=":material/grid_view:", expanded=not sweeps):
    sweep_form(store)
asked = st.query_params.get("sweep")
if asked and asked not in sweeps and asked in store.sweeps():  # another visitor's, from a link: to look at
    sweeps.append(asked)
runs = {run.id: run for run in store.list_runs()}
linked = [i for i in st.query_params.get("runs", "").split(",") if i]
runs = {i: run for i, run in runs.items() if i in linked or demo.can_change(run)}  # own runs, and the link's

if asked and "compare.sweep" not in st.session_state:  # a link: open its sweep
    if asked in sweeps:
        st.session_state["compare.mode"], st.session_state["compare.sweep"] = MODES[0], asked
        if st.query_params.get("step", "").isdigit():
            st.session_state["compare.step"] = int(st.query_params["step"])
        elif "step" in st.query_params:
            st.warning(f"step: {st.query_params['step']!r} is not a step number; showing the last one.")
    else:
        st.warning(f"sweep: no sweep named {asked!r} (the link is wrong or its runs were deleted).")
st.session_state.setdefault("compare.mode", MODES[0] if sweeps and not linked else MODES[1])  # a link's runs
mode = st.radio("Compare", MODES, key="compare.mode", horizontal=True, label_visibility="collapsed")
if mode == MODES[0]:
    if not sweeps:
        st.info("No sweeps yet: open New sweep above, pick a knob and its values, and queue one.")
        st.stop()
    st.session_state.setdefault("compare.sweep", sweeps[0])
    if st.session_state["compare.sweep"] not in sweeps:
        st.session_state["compare.sweep"] = sweeps[0]
    name = st.selectbox("Sweep", sweeps, key="compare.sweep")
    st.query_params["sweep"] = name
    st.query_params.pop("runs", None)
    chosen = sweep_section(store, name)
    st.subheader("Loss curves and final metrics")
else:
    st.query_params.pop("sweep", None)
    st.query_params.pop("step", None)
    if len(runs) < 2:
        st.info("Compare needs at least two runs: start some on the Playground, or queue a sweep above.")
        st.stop()
    chosen = chosen_runs(runs, watched)
    if len(chosen) < 2:
        st.warning("Pick at least two runs.")
        st.stop()
curves_and_table(store, runs, [i for i in chosen if i in runs])
