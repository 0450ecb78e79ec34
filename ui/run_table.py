"""Runs as rows: one-line labels, config summaries and a table with their final metrics."""

from __future__ import annotations

import hashlib
import time

import pandas as pd

from contrast_core.config import RunConfig
from contrast_core.rules import LOSSES, METRICS
from contrast_core.store import Run, RunStore
from contrast_core.sweep import STOPPED_EARLY, stopped_early
from ui.run_view import measured_metrics

# The final metrics a run table shows, as {key: column label}.
TABLE_METRICS = {key: METRICS[key].label for key in
                 ("knn_accuracy", "silhouette", "adjusted_rand", "nmi", "ami", "davies_bouldin", "map_at_r",
                  "knn_r2", "spearman")}  # fmt: skip
CONTINUOUS_ONLY = ("knn_r2", "spearman")  # a continuous target's: a column only where some run has them
NOT_USED = "not used"  # a run's setting that it does not read, in tables that compare runs
CONFIG_COLUMNS = ("dataset", "model", "embedding_dim", "loss", "distance", "margin", "reduction", "temperature",
                  "sampler", "augment", "batch_size", "steps", "lr", "seed")  # fmt: skip


def summary(config: dict) -> str:
    """ "contrastive, euclidean m=1 · random-pairs · mlp 2-D · digits": what a run trains.

    Only the knobs its loss reads are shown (cosine-embedding's margin is a similarity, no distance).
    """
    knobs = LOSSES[config["loss"]].knobs
    objective = [config["distance"]] if "distance" in knobs else []
    if "margin" in knobs:
        objective.append(f"m={config['margin']:g}")
    if "temperature" in knobs:
        objective.append(f"t={config['temperature']:g}")
    if "reduction" in knobs and config.get("reduction", "mean") != "mean":
        objective.append(config["reduction"])
    objective = f"{config['loss']}, {' '.join(objective)}"
    model = f"{config['model']} {config['embedding_dim']}-D"
    return " · ".join([objective, config["sampler"], model, config["dataset"]])


def run_label(run: Run) -> str:
    """A one-line name for pickers: the name (or id), what it trains and its status."""
    return f"{run.name or run.id} · {summary(run.config)} · {run.status}"


def status(run: Run) -> str:
    """The run's status, "stopping…" for a running run asked to stop (it ends at its next step), "stopped
    early" for a sweep's run its early stopping ended."""
    if run.status == "running" and run.cancel_requested:
        return "stopping…"
    return STOPPED_EARLY if stopped_early(run) else run.status


def short_id(run_id: str) -> str:
    """A run id without its year and with 6 of its 16 random digits ("1124-054338-15b8f9"): enough to
    tell runs apart in a chip or a legend; tables show the whole id."""
    date, _, rest = run_id.partition("-")
    return f"{date[4:]}-{rest[:13]}" if len(date) == 8 and date.isdigit() and len(rest) > 13 else run_id


def short_label(run: Run) -> str:
    """A few words for a picker chip: the name, else the short id, then the loss and the status."""
    return f"{run.name or short_id(run.id)} · {run.config['loss']} · {run.status}"


def runs_frame(runs: list[Run]) -> pd.DataFrame:
    """One row per run: id, status, progress, summary, final metrics, error."""
    rows = []
    for run in runs:
        final = run.final_metrics or {}
        row = {"id": run.id, "name": run.name, "status": status(run),
               "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(run.created_at)),
               "step": f"{run.step} / {run.config['steps']}", "run": summary(run.config), "device": run.device}  # fmt: skip
        row |= {label: final.get(key) for key, label in TABLE_METRICS.items()}
        rows.append(row | {"error": run.error})
    table = pd.DataFrame(rows, columns=["id", "name", "status", "created", "step", "run", "device",
                                        *TABLE_METRICS.values(), "error"])  # fmt: skip
    unused = [c for c in ("name", "error") if not table[c].any()]
    unused += [TABLE_METRICS[k] for k in CONTINUOUS_ONLY if table[TABLE_METRICS[k]].isna().all()]
    return table.drop(columns=unused)


def config_differences(runs: list[Run]) -> pd.DataFrame:
    """The config fields on which the runs differ (all of CONFIG_COLUMNS if they agree on all). A field a run
    does not read says NOT_USED, not the value it happens to hold (a SupCon run's margin, a triplet run's
    temperature): a table or an axis of settings would otherwise credit that value with the run's score."""
    rows = []
    for run in runs:
        unused = _unused(run.config)
        rows.append({c: NOT_USED if c in unused else run.config.get(c) for c in CONFIG_COLUMNS})
    table = pd.DataFrame(rows)
    varying = [c for c in table.columns if table[c].astype(str).nunique() > 1]
    return table[varying or list(table.columns)]


def sortable(table: pd.DataFrame) -> pd.DataFrame:
    """The table as a page shows it: a column of numbers with NOT_USED in it holds numbers and None (NaN),
    so that it sorts as numbers (mixed, it became text: 10 before 2)."""
    shown = table.copy()
    for column in shown.columns:
        values = shown[column]
        used = values[values.astype(str) != NOT_USED]
        if 0 < len(used) < len(values) and all(pd.api.types.is_number(v) for v in used):
            shown[column] = pd.to_numeric(used).reindex(values.index)
    return shown


def _unused(config: dict) -> set[str]:
    try:
        return RunConfig.model_validate(config).unused()
    except ValueError:  # a run stored by an older version, with a setting this one no longer takes
        return set()


def last_metrics(store: RunStore, run: Run) -> dict:
    """The run's final metrics, or while it has none each metric as its snapshots last measured it."""
    if run.final_metrics:
        return run.final_metrics
    return measured_metrics(store.list_snapshots(run.id))


def selection_key(runs: list[Run]) -> str:
    """The Runs table's widget key, one for each list of runs it shows: its selection is of row positions,
    so a run added or deleted starts a new, empty selection instead of moving the ticks onto other runs."""
    return "runs.table." + hashlib.sha1(",".join(run.id for run in runs).encode()).hexdigest()[:12]
