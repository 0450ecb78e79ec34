"""What a page has read of one run, grown by incremental reads: each refresh moves only new rows.

No Streamlit here: a RunView is kept in `st.session_state` by the live panels and tested alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from contrast_core import pair_stats, rules
from contrast_core.rules import LOSSES
from contrast_core.store import RunStore, StoreError
from ui import diagnosis

MAX_PAIRS = 5000  # pair distances kept per histogram (a seeded subsample)


def loss_distance(config: dict) -> str:
    """The distance the loss measures with (cosine-embedding is always cosine)."""
    return LOSSES[config["loss"]].measures_with(config.get("distance"))


def margin_distance(config: dict) -> float | None:
    """The margin in the loss's distance units, or None for losses without one."""
    return LOSSES[config["loss"]].margin_as_distance(config["margin"])


def as_measured(embeddings: np.ndarray, config: dict) -> np.ndarray:
    """(E, D) -> (E, D): the embeddings as the loss sees them, scaled to unit length for the cosine
    (it ignores length, and raw lengths can be tiny or huge)."""
    return rules.as_measured(embeddings, loss_distance(config))


def class_names(arrays: dict[str, np.ndarray]) -> list[str]:
    """The dataset's class names stored with a snapshot (ids as names for older snapshots)."""
    if "classes" in arrays:
        return [str(name) for name in arrays["classes"]]
    return [str(c) for c in range(int(arrays["labels"].max()) + 1)]


@dataclass
class RunView:
    """Metric rows, snapshot index and the latest snapshot of one run, as read so far."""

    run_id: str
    config: dict
    rows: pd.DataFrame = field(default_factory=pd.DataFrame)
    last_step: int = -1  # metric rows up to this step are read
    snapshots: list[dict] = field(default_factory=list)  # [{"step", "metrics"}], ascending
    arrays: dict[str, np.ndarray] | None = None  # the latest snapshot's arrays
    pairs: dict | None = None  # its positive / negative pair distances (see pairs.pair_distance_stats)
    ranges: dict = field(default_factory=dict)  # axis ranges kept between refreshes, by chart
    pca: np.ndarray | None = None  # (E, 2) last PCA drawn of normalised embeddings, to align the next to
    damaged: str | None = None  # why the newest snapshot could not be read (the one before is shown)

    def update(self, store: RunStore) -> bool:
        """Reads what the run wrote since the last call; True if anything was new."""
        new_rows = store.read_metrics(self.run_id, since=self.last_step)
        if new_rows:
            self.rows = pd.concat([self.rows, pd.DataFrame(new_rows)], ignore_index=True)
            self.last_step = int(new_rows[-1]["step"])
        since = self.snapshots[-1]["step"] if self.snapshots else -1
        new_snapshots = store.list_snapshots(self.run_id, since=since)
        for snapshot in new_snapshots:
            self.snapshots.append({"step": snapshot["step"], "metrics": snapshot["metrics"]})
        if new_snapshots:
            self._load(store, new_snapshots[-1]["step"])
        return bool(new_rows or new_snapshots)

    def _load(self, store: RunStore, step: int) -> None:
        """The snapshot at `step`; if its file is gone (a deleted run) or damaged, the one shown stays,
        or with none shown yet, the newest older one that reads."""
        self.damaged = None
        older = [s["step"] for s in self.snapshots if s["step"] < step][::-1] if self.arrays is None else []
        for tried in (step, *older):
            try:
                self.arrays = store.load_snapshot(self.run_id, tried)
                break
            except StoreError as exc:
                self.damaged = self.damaged or str(exc)
        else:
            return
        self.pairs = pair_distances(self.arrays, self.config)

    @property
    def snapshot_step(self) -> int | None:
        return self.snapshots[-1]["step"] if self.snapshots else None

    def losses(self) -> np.ndarray:
        """(T,) total loss per logged step."""
        return self.rows["loss"].to_numpy(dtype=np.float64) if "loss" in self.rows else np.empty(0)

    def history(self) -> pd.DataFrame:
        """One row per snapshot: "step" and each snapshot metric."""
        return pd.DataFrame([{"step": s["step"], **s["metrics"]} for s in self.snapshots])

    def latest_metrics(self) -> tuple[dict, dict]:
        """(each metric's latest value, its value at the snapshot before that which measured it), {} where
        missing: the whole-set metrics are measured every few snapshots (train.WHOLE_SET_EVERY)."""
        latest, previous = {}, {}
        for snapshot in reversed(self.snapshots):
            for key, value in snapshot["metrics"].items():
                (previous if key in latest else latest).setdefault(key, value)
        return latest, previous

    def warnings(self, error: str | None) -> list[str]:
        found = diagnosis.diagnose(self.losses(), self.arrays, self.config, error)
        return found + [f"{self.damaged}: the panels show the one before."] if self.damaged else found


def measured_metrics(snapshots: list[dict]) -> dict:
    """Each metric's value at the last of `snapshots` (in step order) that measured it: a snapshot measures
    the cheap metrics, and every few (train.WHOLE_SET_EVERY) the whole-set ones too."""
    found = {}
    for snapshot in snapshots:
        found |= snapshot["metrics"]
    return found


def similarity(arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, float | None]:
    """What judges a snapshot's pairs: (labels, None), or for a continuous target (targets, delta)."""
    if "targets" in arrays:
        return arrays["targets"], float(arrays["delta"])
    return arrays["labels"], None


def pair_distances(arrays: dict[str, np.ndarray], config: dict) -> dict | None:
    """Positive / negative pair distances of a snapshot, in the loss's distance; None if not finite."""
    embeddings = arrays["embeddings"]
    if not np.isfinite(embeddings).all():
        return None
    distance, margin = loss_distance(config), margin_distance(config)
    labels, delta = similarity(arrays)
    pairs = pair_stats.pair_distance_stats(embeddings, labels, distance, margin, max_pairs=MAX_PAIRS, delta=delta)
    if LOSSES[config["loss"]].kind == "triplets":  # what a triplet loss pays for, beside the pairs
        pairs["triplet_violation_fraction"] = pair_stats.triplet_violation_fraction(
            embeddings, labels, distance, margin, delta=delta
        )
    return pairs
