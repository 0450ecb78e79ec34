"""The live panels of a run: progress, warnings, loss, embedding, pair distances, metrics, VAE.

Two fragments: the progress line reruns every REFRESH_SECONDS while the run is queued or running
(paused or not), and reruns the page once when the run ends so that its buttons follow; the charts
rerun as often while the run is live and the view is not paused (less often while that line's ticks
come late: see Pace), and after it ends only while a chosen UMAP / t-SNE is computing. A third,
short-lived one redraws as soon as a new run's first step is stored.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np
import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from contrast_core import rules
from contrast_core.projection import in_plane, project
from contrast_core.rules import METRICS
from contrast_core.store import LIVE_STATUSES, Run, StoreError
from ui import backend, figures, items, tab
from ui.live_chart import live_chart
from ui.run_view import RunView, as_measured, class_names, loss_distance, margin_distance, similarity

REFRESH_SECONDS = 1.0
# A queued run's progress line (its place, the wait): less often, as a queue of visitors each polling every
# second for a line that changes when a run ends is what slows the watched runs' refresh on a shared server.
QUEUED_REFRESH_SECONDS = 2.0
# A free worker stores a new run's first step (after its step-0 snapshot) 0.1-0.3 s after the click.
# The click's own page run waits for it and draws it: FIRST_CLAIM_SECONDS for a worker to take the
# run (an idle one looks every jobs.POLL_SECONDS), FIRST_STEP_WAIT_SECONDS at most after queueing it.
FIRST_CLAIM_SECONDS, FIRST_STEP_WAIT_SECONDS = 0.2, 0.5
# Else (a worker still starting, or busy) the page looks for the first step this often, for this long
# after the click, and redraws as soon as it is there, rather than a whole refresh later.
FIRST_STEP_POLL_SECONDS, FIRST_STEP_WATCH_SECONDS = 0.1, 10.0
# A run whose steps left end within this, at its rate so far, is waited for this long at most by its progress
# line's tick, which then says "finished" as it happens. No longer: a run that ends later than its rate says
# (its last snapshot and checkpoint) would make that tick this much late.
END_WAIT_SECONDS = 0.5
VIEW = "live_view"  # session_state key of this tab's RunView
PACE = "live.pace"  # session_state key of this tab's Pace
# Computed off the page by the live projector; PCA comes with the snapshot.
PROJECTIONS = {"UMAP": "umap", "t-SNE": "tsne"}
# How often an ended run's panels look for the projection they wait for. No faster than the live refresh:
# each poll reruns every panel plus Streamlit's full garbage collection, GIL time the projector needs.
POLL_SECONDS = 1.0
WAITING = "live.waiting"  # session_state: the run whose chosen projection was last seen computing
POLLING = "live.polling"  # session_state: whether live_panels made the panels poll for it (None: a live run)
# Drawn over time; the tiles show these and the retrieval and VAE metrics (labels, help: rules.METRICS).
HISTORY_METRICS = ("rand_index", "adjusted_rand", "nmi", "ami", "davies_bouldin", "silhouette", "knn_accuracy",
                   "knn_r2", "spearman")  # fmt: skip
TILE_METRICS = (*HISTORY_METRICS, "precision_at_1", "map_at_r", "linear_probe_accuracy", "recon_mse", "kl")
DELTA_COLOURS = {"higher": "normal", "lower": "inverse", "neither": "off"}  # by Metric.better
# The tiles' container key, columns and values' size: on a laptop's screen (1280 px) the column is about 230 px
# wide, and Streamlit's 2.25rem values in three tiles a row read "0.9…", their labels "Rand…".
TILES, TILE_COLUMNS, TILE_VALUE_SIZE = "live-metric-tiles", 2, "1.75rem"
TILE_LABELS = {"davies_bouldin": "DB index", "knn_accuracy": "k-NN acc."}  # whole in half the column
NOTES = {
    "loss": "The training loss per step (faint) and smoothed (bold). It should fall quickly, then flatten; "
    "a curve that stays flat from the start, or rises, points at the margin or the learning rate.",
    "scatter": "Held-out items, coloured by their true class, placed by the model. Good training pulls each "
    "colour into its own tight cluster; all points on one spot is a collapsed embedding.",
    "scatter_target": "Held-out items, coloured by their target, placed by the model. Good training orders the "
    "points by colour: items with close targets near each other, a smooth gradient across the embedding.",
    "unit": "The cosine distance ignores length, so the points are the embeddings on the unit sphere (scaled to "
    "length 1), projected.",
    "hover": "Freeze the charts to hover a point for its image (or its features, for tables).",
    "circle": "The dashed circle has the margin as radius around the star: negatives inside it still cost loss.",
    "metrics": "Clustering and retrieval quality of the held-out embedding, with the change since the last "
    "snapshot. Rand, ARI, NMI, silhouette and k-NN accuracy: higher is better (1 at best); "
    "Davies-Bouldin: lower is better (below 1 is well separated).",
    "metrics_target": "How well the held-out embedding orders items by their target, with the change since the "
    "last snapshot: k-NN R² (a 5-nearest-neighbour regression of the target, 1 at best, 0 = no better than the "
    "mean) and Spearman (rank correlation of pair distances with target differences, 1 at best).",
    "mining": "Per training step: how many pairs, triplets or items the sampler handed the loss, and the share "
    "of their terms that cost loss (smoothed as the loss curve). When that share falls towards 0 the loss has "
    "little left to learn from: the margin is met, or the miner finds only easy negatives.",
    "vae": "Top: held-out inputs; bottom: the VAE's reconstructions of them. Blurry but recognisable is normal; "
    "identical grey blobs mean the KL term (beta) is winning.",
    "aae": "Top: held-out inputs; bottom: the AAE's reconstructions of them, decoded from their codes.",
    "prior": "Faint points: samples of the AAE's prior (one mode per class, in its colour, for the mixture); "
    "the discriminator pushes the codes onto them.",
}
LOSS_TERMS = {  # the terms drawn on a log scale for the VAE family (they differ by orders of magnitude)
    "vae": ["loss", "recon", "kl", "contrastive"],
    "aae": ["loss", "recon", "discriminator", "generator", "contrastive"],
}


class Pace:
    """How often this page's charts redraw: every REFRESH_SECONDS while its progress line keeps time,
    less often while that line's ticks come late.

    A late tick means the server (one process: every visitor's charts are built under one GIL) or
    the browser (drawing the last charts) could not keep up. The charts then step down the LADDER, one
    rung at a time, so that the progress line (step, rate, status) keeps its second and every chart
    still moves. They step back up one rung at the page's next run (a run starting or ending) once
    CALM_SECONDS have passed without a late tick."""

    LADDER = (REFRESH_SECONDS, 2.0, 3.0)
    LATE_SECONDS = 0.5  # a tick this much after its period is late
    LATE_OF_RECENT = (2, 3)  # this many of the last so many ticks late: one rung down
    CALM_SECONDS = 30.0

    def __init__(self) -> None:
        self.rung, self.last, self.calm_since = 0, None, time.monotonic()
        self.late: deque[bool] = deque(maxlen=self.LATE_OF_RECENT[1])

    @property
    def chart_seconds(self) -> float:
        return self.LADDER[self.rung]

    def tick(self, period: float, timed: bool, now: float | None = None) -> bool:
        """Notes a run of the progress line that asks to run every `period` s (`timed`: its timer ran
        it, not a run of the whole page); True when the charts just stepped down a rung."""
        now = time.monotonic() if now is None else now
        last, self.last = self.last, now
        if not timed or last is None:
            return False
        late = now - last > period + self.LATE_SECONDS
        self.late.append(late)
        if late:
            self.calm_since = now
        if sum(self.late) < self.LATE_OF_RECENT[0] or self.rung == len(self.LADDER) - 1:
            return False
        self.rung += 1
        self.late.clear()
        return True

    def settle(self, now: float | None = None) -> None:
        """At a run of the whole page: one rung back up after CALM_SECONDS without a late tick."""
        now = time.monotonic() if now is None else now
        if self.rung and now - self.calm_since >= self.CALM_SECONDS:
            self.rung -= 1
            self.calm_since = now


def _pace() -> Pace:
    return st.session_state.setdefault(PACE, Pace())


def live_panels(run_id: str, drawn: str | None = None) -> None:
    """Every panel of the run, refreshing while it is live or while a chosen projection computes.
    `drawn`: the run's status as the rest of the page was drawn for it (the Playground's buttons); if a
    worker took the run meanwhile, the page runs again at once, so that Pause and Step are there."""
    try:
        run = backend.run_store().get_run(run_id)
    except StoreError:
        st.info("This run no longer exists.")
        return
    paused = st.toggle(
        "Freeze charts",
        key="live.paused",
        help="Freeze the charts to look closely; training goes on (Pause, under Train, holds the training).",
    )
    run = _first_step(run)
    if drawn is not None and run.status != drawn:
        st.rerun()
    live, queued = run.status in LIVE_STATUSES, run.status == "queued"
    # The progress line keeps going while the charts are paused (or the run waits in the queue), and
    # reruns the page when the run starts or ends.
    held = run.status == "running" and run.held_since is not None  # nothing new to draw until a Step reruns the page
    period = QUEUED_REFRESH_SECONDS if queued else REFRESH_SECONDS if live else None
    st.fragment(run_every=period)(tab.guarded(_progress))(run_id, live, queued, held)
    # An ended run's panels poll only while a projection the user chose is computing (see _scatter_panel);
    # a queued run's not at all: there is nothing new to draw until it starts, and a queue of visitors
    # polling for nothing is what slows everyone's refresh on a shared server.
    waiting = not live and st.session_state.get(WAITING) == run_id
    pace = _pace()
    pace.settle()
    period = (
        pace.chart_seconds if live and not queued and not paused and not held else POLL_SECONDS if waiting else None
    )
    if live and not queued and not paused and not held and pace.rung:
        st.caption(f":material/speed: Busy server: the charts redraw every {pace.chart_seconds:.0f} s, the progress "
                   "line every second.")  # fmt: skip
    st.session_state[POLLING] = None if live else waiting
    st.fragment(run_every=period)(tab.guarded(_panels))(run_id, refreshing=period is not None)
    if live and run.step == 0 and _starts_soon(run):
        st.fragment(run_every=FIRST_STEP_POLL_SECONDS)(tab.guarded(_rerun_at_first_step))(run_id)


def _first_step(run: Run) -> Run:
    """The run once its first step is stored; as it is once no worker took it in FIRST_CLAIM_SECONDS
    after it was queued, or FIRST_STEP_WAIT_SECONDS after a worker took it. So the page run that sees
    a run start, after a click or after a wait in the queue, draws it once with its first step, not
    once without it and again when it comes."""
    while run.status in LIVE_STATUSES and run.step == 0:
        if run.status == "queued":
            if time.time() - run.created_at > FIRST_CLAIM_SECONDS:
                break
        elif time.time() - (run.started_at or run.created_at) > FIRST_STEP_WAIT_SECONDS:
            break
        time.sleep(0.02)
        try:
            run = backend.run_store().get_run(run.id)
        except StoreError:  # deleted meanwhile: the panels say so
            break
    return run


def _starts_soon(run: Run) -> bool:
    """Whether a run without its first step is about to show it: started (or queued with no run ahead
    training: a worker is starting or about to take it) less than FIRST_STEP_WATCH_SECONDS ago. A run
    queued behind others starts when they end, and its progress line sees that."""
    if time.time() - (run.started_at or run.created_at) >= FIRST_STEP_WATCH_SECONDS:
        return False
    return run.status == "running" or not backend.run_store().list_runs(status="running")


def _rerun_at_first_step(run_id: str) -> None:
    """Reruns the page once the run's first step is stored, it ended, or FIRST_STEP_WATCH_SECONDS passed."""
    try:
        run = backend.run_store().get_run(run_id)
    except StoreError:
        st.rerun()
    if run.step > 0 or run.status not in LIVE_STATUSES or not _starts_soon(run):
        st.rerun()


def _view(run_id: str, config: dict) -> RunView:
    view = st.session_state.get(VIEW)
    if view is None or view.run_id != run_id:  # one run per tab: drop what was read of another
        view = st.session_state[VIEW] = RunView(run_id, config)
    return view


def _panels(run_id: str, refreshing: bool) -> None:
    store = backend.run_store()
    try:
        run = store.get_run(run_id)
    except StoreError:
        st.info("This run no longer exists.")
        return
    view = _view(run_id, run.config)
    view.update(store)
    if view.arrays is None and run.status not in LIVE_STATUSES:
        st.info(f"This run ended ({run.status}) before its first snapshot: there is nothing to draw.")
        return
    for message in view.warnings(run.error):
        st.warning(message, icon=":material/warning:")
    top_left, top_right = st.columns(2, gap="medium")
    with top_left:
        _loss_panel(view)
    with top_right:
        _scatter_panel(view, thumbnails=not refreshing)
    bottom_left, bottom_right = st.columns(2, gap="medium")
    with bottom_left:
        _pairs_panel(view)
    with bottom_right:
        _metrics_panel(view)
    if view.latest_metrics()[0]:
        _metrics_history_panel(view)
    _mining_panel(view)
    if view.arrays is not None and "reconstructions" in view.arrays:
        _reconstruction_panel(view)


def _progress(run_id: str, was_live: bool, was_queued: bool = False, was_held: bool = False) -> None:
    """The progress line: status, step, the run's real rate, elapsed time, device."""
    store = backend.run_store()
    try:
        run = store.get_run(run_id)
        if _ends_soon(run):
            run = _until_ended(store, run)
    except StoreError:  # deleted while watched: the page says so
        st.rerun()
    last = store.read_metrics(run_id, since=run.step - 1)  # the newest row only
    elapsed = (run.finished_at or time.time()) - run.started_at if run.started_at else None
    held = run.status == "running" and run.held_since is not None
    status = "stopping…" if run.status == "running" and run.cancel_requested else "paused" if held else run.status
    parts = [f"**{status}**", f"step {run.step:,} / {run.config['steps']:,}"]
    if elapsed and run.step and not held:
        row = last[-1] if last else {}
        parts.append(rate_text(run.config, run.step, elapsed - row.get("waited_seconds", 0.0),
                               row.get("pairs_per_second")))  # fmt: skip
    if run.config.get("steps_per_second") and run.status in LIVE_STATUSES and not held:
        parts.append(f"slow motion, {run.config['steps_per_second']:g} steps a second")  # waits the rate leaves out
    if elapsed:
        parts.append(f"{elapsed:.1f} s elapsed")
    parts.append(run.device or backend.job_queue().status()["device"])
    if run.status == "queued":
        parts.append(waiting_text(store, run))
    st.progress(min(run.step / run.config["steps"], 1.0), text=" · ".join(parts))
    if run.status == "failed":
        st.error(f"Run failed: {run.error}", icon=":material/error:")
    elif run.status in ("cancelled", "interrupted") and run.error:  # why, where it was not a click on Stop
        st.warning(f"Run {run.status}: {run.error}", icon=":material/info:")
    if (was_live and run.status not in LIVE_STATUSES) or (was_queued and run.status != "queued") or held != was_held:
        st.rerun()  # once: the page's buttons and the charts' refresh period follow the new status
    period = QUEUED_REFRESH_SECONDS if was_queued else REFRESH_SECONDS
    stepped_down = _pace().tick(period, timed=bool(get_script_run_ctx().fragment_ids_this_run))
    if stepped_down and was_live and not was_queued and not held and not st.session_state.get("live.paused"):
        st.rerun()  # once: the charts' new period is set where the page draws them


def _ends_soon(run: Run, now: float | None = None) -> bool:
    """Whether a running run's steps left, at its rate so far, end within END_WAIT_SECONDS."""
    if run.status != "running" or not run.step or not run.started_at or run.pause_at is not None:
        return False
    seconds_per_step = ((now or time.time()) - run.started_at) / run.step
    return (run.config["steps"] - run.step) * seconds_per_step < END_WAIT_SECONDS


def _until_ended(store, run: Run) -> Run:
    """The run once it has ended, or as it is END_WAIT_SECONDS later: the page says "finished" when it
    is, not up to a period after (a person waiting for a short run sees that second)."""
    deadline = time.monotonic() + END_WAIT_SECONDS
    while run.status in LIVE_STATUSES and time.monotonic() < deadline:
        time.sleep(FIRST_STEP_POLL_SECONDS / 2)
        run = store.get_run(run.id)
    return run


def waiting_text(store, run: Run, now: float | None = None) -> str:
    """ "queue position 3 · about 40 s to wait (the run training is at step 500 / 1,000)": the wait is the
    steps left of the runs training and ahead, at the rate the runs training now go, over as many workers."""
    now = now or time.time()
    ahead, running = store.queue_ahead(run.id) or [], store.list_runs(status="running")
    text = f"queue position {len(ahead) + 1}"
    rates = [r.step / (now - r.started_at) for r in running if r.step and r.started_at and now > r.started_at]
    if rates:
        left = sum(max(0, r.config["steps"] - r.step) for r in running) + sum(r.config["steps"] for r in ahead)
        text += f" · about {_duration(left / (sum(rates) / len(rates)) / len(running))} to wait"
    if running:
        first = min(running, key=lambda r: r.started_at or now)
        text += f" (the run training is at step {first.step:,} / {first.config['steps']:,})"
    return text


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def rate_text(config: dict, steps: int, elapsed: float, stepping_rate: float | None) -> str:
    """ "9,800 pairs/s (12,000 while stepping; snapshots and logging 18%)": the run's real rate over
    `elapsed`, its wall-clock time less the time it waited (paused, or slowed down by slow motion),
    beside the rate of its training steps alone (what the worker reports)."""
    unit = "pairs" if config["sampler"] == "random-pairs" else "items"
    overall = steps * config["batch_size"] / max(elapsed, 1e-9)
    text = f"{overall:,.0f} {unit}/s"
    if stepping_rate and stepping_rate > overall:
        text += f" ({stepping_rate:,.0f} while stepping; snapshots and logging {1 - overall / stepping_rate:.0%})"
    return text


def _loss_panel(view: RunView) -> None:
    smoothing = st.slider("Smoothing", 0.0, 0.99, 0.6, 0.01, key="live.smoothing")
    terms = LOSS_TERMS.get(view.config["model"], ["loss"])
    log_y = view.config["model"] in LOSS_TERMS
    fig = figures.loss_figure(view.rows, view.config["steps"], terms, smoothing, log_y=log_y)
    live_chart(fig, key="live.loss", revision=view.run_id, config={"displayModeBar": False})
    st.caption(NOTES["loss"])


def _layout(view: RunView, method: str) -> tuple[np.ndarray, str, str, str, bool]:
    """(E, 2) points to draw, a title, the projection drawn (PCA until `method`'s first layout), a
    status line ("" for PCA) and whether a newer layout is computing. UMAP / t-SNE come from the
    background projector: the newest layout it has finished, maybe of an earlier snapshot."""
    step, cosine = view.snapshot_step, loss_distance(view.config) == "cosine"
    embeddings = as_measured(view.arrays["embeddings"], view.config)  # (E, D)
    dim, finite = embeddings.shape[1], np.isfinite(embeddings).all()
    if dim == 2:
        return embeddings, f"Embedding (2-D{', normalised' if cosine else ''}, step {step})", "2-D", "", False
    status, waiting = "", False
    if method in PROJECTIONS and finite:
        done, status, waiting = _projected(view.run_id, step, embeddings, method)
        if done is not None:
            return done[1], f"{method} of the {dim}-D embedding, step {done[0]}", method, status, waiting
    pca = view.arrays.get("pca")  # of the embeddings as measured (unit length for the cosine)
    if pca is None and finite:  # a snapshot written before snapshots held their PCA
        pca = view.pca = project(embeddings, "pca", view.pca)
    if pca is None:
        pca = np.nan_to_num(embeddings[:, :2])
    return pca, f"PCA of the {dim}-D embedding, step {step}", "PCA", status, waiting


def _projected(run_id: str, step: int, embeddings: np.ndarray, method: str) -> tuple[tuple | None, str, bool]:
    """(the projector's newest (step, (E, 2) layout) or None, a status line, whether `step` is computing).

    The status goes under the projection control, not in the chart title: a narrow chart cuts
    its title off, and this line is what says that work is going on."""
    projector, name = backend.projector(), PROJECTIONS[method]
    done = projector.get(run_id, step, embeddings, name)
    if done is not None and done[0] == step:
        return done, f":material/check_circle: {method} of step {step:,}, the newest snapshot", False
    error = projector.error(run_id, name)
    if error is not None:
        return done, f":material/error: {method} of step {step:,} failed ({error})", False
    seconds = projector.waiting(run_id, name) or 0.0
    status = f":material/hourglass_top: {method} of {len(embeddings):,} points computing… {seconds:.0f} s"
    if projector.compiling(name):
        status += " (compiling UMAP first, about 20 s)"
    status += "; PCA meanwhile" if done is None else f"; step {done[0]:,} meanwhile"
    if st.session_state.get(POLLING) is None and st.session_state.get("live.paused"):
        status += ". Unfreeze the charts to see it."
    return done, status, True


def _scatter_panel(view: RunView, thumbnails: bool) -> None:
    """The embedding; hover thumbnails only on a still chart (a refresh closes any hover label)."""
    if view.arrays is None:
        st.info("The embedding appears at the first snapshot.")
        return
    config, arrays = view.config, view.arrays
    method = "PCA"
    if arrays["embeddings"].shape[1] > 2:
        choices = ["PCA", *PROJECTIONS]
        method = st.segmented_control("Projection", choices, default="PCA", key="live.projection") or "PCA"
    xy, title, drawn, status, waiting = _layout(view, method)
    if status:
        st.caption(status)
    prior = prior_points(arrays, config, xy, drawn)
    shown = xy if prior is None else np.concatenate([xy, prior])
    view.ranges[drawn] = ranges = figures.square_ranges(shown, view.ranges.get(drawn))
    circle = _margin_circle(xy, config) if arrays["embeddings"].shape[1] == 2 else None
    classes = class_names(arrays)
    hover = items.hover_texts(view.run_id, arrays["index"]) if thumbnails else None
    fig = figures.scatter_figure(xy, arrays["labels"], classes, ranges, hover=hover, circle=circle, title=title,
                                 values=arrays.get("targets"))  # fmt: skip
    if prior is not None:
        figures.add_prior(fig, prior, arrays["labels"] if config.get("prior") == "mixture" else None)
    live_chart(fig, key="live.scatter", revision=f"{view.run_id}:{drawn}", config={"displayModeBar": False})
    scatter_note = NOTES["scatter"] if "targets" not in arrays else NOTES["scatter_target"]
    unit = NOTES["unit"] if loss_distance(config) == "cosine" and arrays["embeddings"].shape[1] > 2 else ""
    notes = [scatter_note, unit, NOTES["prior"] if prior is not None else "", NOTES["circle"] if circle else "",
             "" if thumbnails else NOTES["hover"]]  # fmt: skip
    st.caption(" ".join(note for note in notes if note))
    # A fragment's period is set by the page around it: rerun that to start or stop polling an ended run.
    polling = st.session_state.get(POLLING)
    st.session_state[WAITING] = view.run_id if waiting else None
    if polling is not None and polling != waiting:
        st.rerun(scope="app")


def prior_points(arrays: dict, config: dict, xy: np.ndarray, drawn: str) -> np.ndarray | None:
    """(E, 2) an AAE snapshot's prior samples in the scatter's layout `xy` of the embedding, where that layout
    is linear in the embedding (`drawn` "2-D" or "PCA"); else None. The samples are taken as the loss
    measures the embedding (unit length for the cosine), then through the affine map that takes the measured
    embedding to `xy` (least squares: exact for a PCA, the identity in 2-D)."""
    if "prior_samples" not in arrays or drawn not in ("2-D", "PCA"):
        return None
    measured, samples = as_measured(arrays["embeddings"], config), as_measured(arrays["prior_samples"], config)
    if not (np.isfinite(measured).all() and np.isfinite(samples).all() and np.isfinite(xy).all()):
        return None
    return in_plane(samples - measured.mean(0), measured, xy) + xy.mean(0)


EUCLIDEAN_RADIUS = {"euclidean": lambda m: m, "squared-euclidean": np.sqrt}  # a margin as a circle's radius


def _margin_circle(xy: np.ndarray, config: dict) -> tuple[float, float, float] | None:
    """(x, y, radius) around the chosen anchor, for a Euclidean-family margin on a 2-D embedding."""
    margin, distance = margin_distance(config), loss_distance(config)
    if margin is None or distance not in EUCLIDEAN_RADIUS:
        return None
    anchor = st.number_input("Margin circle around item", 0, len(xy) - 1, 0, key="live.anchor")
    radius = float(EUCLIDEAN_RADIUS[distance](margin))
    x, y = xy[anchor]
    return (float(x), float(y), radius) if np.isfinite([x, y]).all() else None


def _pairs_panel(view: RunView) -> None:
    if view.pairs is None:
        st.info("Pair distances appear at the first snapshot with finite embeddings.")
        return
    pos, neg = view.pairs["pos_distances"], view.pairs["neg_distances"]
    margin = margin_distance(view.config)
    high = max(np.nanmax(np.concatenate([pos, neg, [0.0]])), margin or 0.0)
    bound = rules.distance(loss_distance(view.config)).high  # cosine: [0, 2]
    x_range = (0.0, bound) if np.isfinite(bound) else (0.0, high * 1.05 or 1.0)
    view.ranges["pairs"] = x_range = figures.steady_range(view.ranges.get("pairs"), *x_range, pad=0.0)
    fig = figures.distance_histogram(pos, neg, margin, x_range)
    live_chart(fig, key="live.pairs", revision=view.run_id, config={"displayModeBar": False})
    st.caption(pairs_caption(view.pairs, view.config, similarity(view.arrays)[1] if view.arrays is not None else None))


def pairs_caption(pairs: dict, config: dict, delta: float | None = None) -> str:
    """What the pair histogram shows, which pairs each share is of, and, for a triplet loss whose
    embedding grew far beyond its margin, why (it only sees differences of distances). `delta`: a
    continuous target's similarity width (pairs are then judged by their targets)."""
    margin = margin_distance(config)
    kinds = ("of the same class (green) and of different classes (red)" if delta is None
             else f"whose targets differ by at most delta = {delta:.3g} (green) and by more (red)")  # fmt: skip
    if margin is None:
        return (f"Distances between held-out items {kinds}. "
                f"The {config['loss']} loss has no margin: it pulls positives closer than negatives relative to each "
                "other, so training moves the green mass left of the red.")  # fmt: skip
    text = (f"Distances between held-out items {kinds}; "
            f"training pushes green left of the dashed margin ({margin:.3g}) and red right of it.")  # fmt: skip
    negatives, positives = pairs.get("violation_fraction"), pairs.get("pos_violation_fraction")
    if negatives is not None and np.isfinite(negatives):
        text += f" {negatives:.1%} of negative held-out pairs are closer than the margin"
        text += (
            f" and {positives:.1%} of positive pairs farther."
            if positives is not None and np.isfinite(positives)
            else "."
        )
    triplets = pairs.get("triplet_violation_fraction")
    if triplets is not None and np.isfinite(triplets):
        scale = np.median(pairs["neg_distances"]) / margin if len(pairs["neg_distances"]) and margin > 0 else 0
        if scale > figures.ZOOM_BEYOND:
            text += (f" The embedding has spread to about {scale:.0f}x the margin: a triplet loss only sees "
                     "d(a, n) - d(a, p), so growing every distance costs it nothing and the margin looks small.")  # fmt: skip
        text += (f" {triplets:.1%} of held-out triplets (one random positive and negative per anchor) still have "
                 "d(a, n) < d(a, p) + margin: those are what the loss pays for.")  # fmt: skip
    return text


def _metrics_panel(view: RunView) -> None:
    latest, previous = view.latest_metrics()
    if not latest:
        st.info("Metrics appear at the first snapshot.")
        return
    shown = [key for key in TILE_METRICS if np.isfinite(latest.get(key, np.nan))]
    st.html(f"<style>.st-key-{TILES} [data-testid='stMetricValue'] {{font-size: {TILE_VALUE_SIZE}}}</style>")
    tiles = st.container(key=TILES)
    for i, key in enumerate(shown):
        if i % TILE_COLUMNS == 0:  # a row of its own: a tile with a change line and one without stay side by side
            columns = tiles.columns(TILE_COLUMNS)
        value, before, metric = latest[key], previous.get(key), METRICS[key]
        moved = None if before is None or not np.isfinite(before) else value - before
        delta = f"{moved:+.3f}" if moved is not None and round(moved, 3) != 0 else None  # no green "↑ +0.000"
        label, about, colour = TILE_LABELS.get(key, metric.label), f"{metric.label}: {metric.help}", metric.better
        columns[i % TILE_COLUMNS].metric(label, f"{value:.3f}", delta, help=about, delta_color=DELTA_COLOURS[colour])
    st.caption(NOTES["metrics_target"] if "knn_r2" in latest else NOTES["metrics"])


def _metrics_history_panel(view: RunView) -> None:
    """The cluster metrics over the run, the page's full width: seven curves and their legend need it."""
    history = {key: METRICS[key].label for key in HISTORY_METRICS}
    fig = figures.metrics_history_figure(view.history(), history, view.config["steps"])
    live_chart(fig, key="live.metrics", revision=view.run_id, config={"displayModeBar": False})


def _mining_panel(view: RunView) -> None:
    """What the miner handed the loss, per step (runs from before mining was recorded have none)."""
    if "mined" not in view.rows:
        return
    smoothing = st.session_state.get("live.smoothing", 0.6)
    fig = figures.mining_figure(view.rows, view.config["steps"], smoothing)
    live_chart(fig, key="live.mining", revision=view.run_id, config={"displayModeBar": False})
    st.caption(NOTES["mining"])


def _reconstruction_panel(view: RunView) -> None:
    grid = figures.mosaic([view.arrays["originals"], view.arrays["reconstructions"]])
    st.image(grid, caption=f"Originals (top) and reconstructions (bottom), step {view.snapshot_step}", clamp=True)
    st.caption(NOTES["aae" if view.config["model"] == "aae" else "vae"])
