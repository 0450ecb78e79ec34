"""A sweep's runs on a grid at one training step: what the Compare page's small multiples draw.

Rows are the first swept knob's values, columns the other knobs' combinations. Every panel shows
its run's newest snapshot at or before the chosen step, so one slider moves them all together.
Panels that measure alike share their axes: cosine runs the unit circle, the others one range.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from contrast_core import rules
from contrast_core.config import ConfigError, RunConfig
from contrast_core.rules import METRICS
from contrast_core.store import Run, RunStore, StoreError
from contrast_core.sweep import axes_of, label
from ui.run_view import as_measured, class_names, loss_distance, margin_distance, measured_metrics, pair_distances

BADGES = ("knn_accuracy", "silhouette", "knn_r2", "spearman")  # shown in each panel's title, where measured
UNIT = ((-1.15, 1.15), (-1.15, 1.15))  # the cosine panels' range: the unit circle, a margin around it


@dataclass
class Grid:
    """Where each run of a sweep sits: `cells[run_id] = (row, col)`."""

    runs: list[Run]  # oldest first: the order they were swept
    axes: dict[str, list]
    rows: list[str]
    cols: list[str]
    cells: dict[str, tuple[int, int]]


def grid_of(runs: list[Run]) -> Grid:
    """Rows: one swept knob's values; columns: the other knobs' combinations (one column if none)."""
    runs = sorted(runs, key=lambda run: run.created_at)
    found = axes_of(runs)
    # Rows (and the x-axis of "metric against knob"): a numeric knob before a named one, then the one with more values.
    numeric = lambda k: all(isinstance(v, int | float) and not isinstance(v, bool) for v in found[k])
    axes = {k: found[k] for k in sorted(found, key=lambda k: (not numeric(k), -len(found[k])))}
    if not axes:  # one run, or runs that differ in nothing
        return Grid(runs, {}, [""], [r.name or r.id for r in runs], {r.id: (0, i) for i, r in enumerate(runs)})
    first, *rest = axes
    combos = list(itertools.product(*(axes[k] for k in rest)))
    cells = {}
    for run in runs:
        combo = tuple(run.config.get(k) for k in rest)
        cells[run.id] = (axes[first].index(run.config.get(first)), combos.index(combo))
    rows = [label({first: value}) for value in axes[first]]
    cols = [label(dict(zip(rest, combo, strict=True))) for combo in combos] if rest else [""]
    return Grid(runs, axes, rows, cols, cells)


def snapshot_steps(store: RunStore, runs: list[Run]) -> list[int]:
    """Every step at which any of the runs has a snapshot, ascending."""
    return sorted({snap["step"] for run in runs for snap in store.list_snapshots(run.id)})


def step_at_or_before(steps: list[int], step: int) -> int | None:
    """The newest of `steps` (ascending) at or before `step`; None if all are later."""
    index = int(np.searchsorted(steps, step, side="right")) - 1
    return steps[index] if index >= 0 else None


@st.cache_data(max_entries=1024, show_spinner=False)
def _panel(home: str, run_id: str, step: int, config: dict) -> dict:
    """A run's snapshot at `step`, reduced to what a panel draws (snapshots do not change once written)."""
    arrays = RunStore(home).load_snapshot(run_id, step)
    measured = as_measured(arrays["embeddings"], config)
    xy = measured if measured.shape[1] == 2 else arrays.get("pca", measured[:, :2])
    pairs = pair_distances(arrays, config)
    return {
        "xy": np.asarray(xy, dtype=np.float32),
        "labels": arrays["labels"],
        "classes": class_names(arrays),
        "targets": arrays.get("targets"),  # a continuous target's values, or None
        "positive": pairs["pos_distances"] if pairs else np.array([]),
        "negative": pairs["neg_distances"] if pairs else np.array([]),
    }


def panels_at(
    store: RunStore, grid: Grid, step: int, damaged: list[str] | None = None
) -> tuple[dict, dict, pd.DataFrame]:
    """(scatter panels, histogram panels, metrics table) of every run at `step`, by grid cell, each metric as
    last measured at or before it. A run whose snapshot there cannot be read has no panel; why is appended
    to `damaged`."""
    scatter, hist, rows = {}, {}, []
    for run in grid.runs:
        snaps = store.list_snapshots(run.id)
        shown = step_at_or_before([snap["step"] for snap in snaps], step)
        if shown is None:
            continue
        try:
            panel = _panel(str(store.home), run.id, shown, run.config)
        except StoreError as exc:
            (damaged if damaged is not None else []).append(str(exc))
            continue
        metrics = measured_metrics([snap for snap in snaps if snap["step"] <= shown])
        badges = " · ".join(f"{METRICS[k].label} {metrics[k]:.2f}" for k in BADGES if k in metrics)
        title = f"step {shown}" + (f" · {badges}" if badges else "")
        cell = grid.cells[run.id]
        scatter[cell] = {"xy": panel["xy"], "labels": panel["labels"], "classes": panel["classes"],
                         "values": panel["targets"], "title": title}  # fmt: skip
        hist[cell] = {"positive": panel["positive"], "negative": panel["negative"],
                      "margin": margin_distance(run.config), "title": run.name or run.id}  # fmt: skip
        rows.append({"run": run.id, "step": shown, **{k: run.config.get(k) for k in grid.axes}, **metrics})
    return scatter, hist, pd.DataFrame(rows)


def shared_ranges(grid: Grid, scatter: dict, shared: bool = True) -> dict:
    """Axis ranges per cell: the unit circle for cosine runs; one square range over all the others, or
    (shared=False) each its own square range, to look inside the small embeddings of a small margin."""
    by_cell = {grid.cells[run.id]: run for run in grid.runs}
    cosine = {cell for cell, run in by_cell.items() if loss_distance(run.config) == "cosine"}
    ranges = {cell: UNIT for cell in scatter if cell in cosine}
    others = {cell: _finite(scatter[cell]["xy"]) for cell in scatter if cell not in cosine}
    others = {cell: xy for cell, xy in others.items() if len(xy)}
    if shared and others:
        square = _square(np.concatenate(list(others.values())))
        return ranges | {cell: square for cell in others}
    return ranges | {cell: _square(xy) for cell, xy in others.items()}


def _finite(xy: np.ndarray) -> np.ndarray:
    return xy[np.isfinite(xy).all(axis=1)]


def _square(points: np.ndarray) -> tuple:
    """A square range around the points, 8% to spare."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    centre, half = (lo + hi) / 2, max(float((hi - lo).max()) / 2 * 1.08, 1e-6)
    return (centre[0] - half, centre[0] + half), (centre[1] - half, centre[1] + half)


# What a knob's values box on Compare starts with when the knob is picked (see `example`).
EXAMPLES = {
    "margin": "0.25, 0.5, 1, 2", "distance": "euclidean, cosine", "loss": "contrastive, triplet",
    "sampler": "random-pairs, batch-hard, semi-hard", "reduction": "mean, mean-nonzero", "temperature": "0.05, 0.1, 0.5",
    "lr": "0.0001, 0.001, 0.01", "batch_size": "32, 100, 256", "embedding_dim": "2, 8, 32", "augment": "0, 0.25, 0.5",
    "m_per_class": "2, 4, 8", "beta": "0.1, 1", "contrastive_weight": "0.1, 1, 10", "steps": "500, 2000", "seed": "0, 1, 2",
    "adversarial_weight": "0, 0.1, 1", "prior": "gaussian, mixture", "delta": "5, 20, 50", "label_fraction": "0, 0.1, 0.5, 1",
}  # fmt: skip


def example(knob: str, base: dict) -> str:
    """What a knob's values box starts with: EXAMPLES, where a sampler or a loss offers (up to three of)
    the ones that go with the Playground's other settings (semi-hard cannot feed the contrastive loss)."""
    names = {"sampler": rules.SAMPLERS, "loss": rules.LOSSES}.get(knob)
    if names is None:
        return EXAMPLES.get(knob, "")
    fits = [name for name in names if _goes_with(base | {knob: name})]
    return ", ".join(fits[:3]) if len(fits) > 1 else EXAMPLES[knob]  # none to sweep: the refusal says why


def _goes_with(values: dict) -> bool:
    try:
        RunConfig.check(**values)
    except ConfigError:
        return False
    return True
