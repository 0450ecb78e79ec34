"""Early stopping of a sweep's hopeless runs: asynchronous successive halving (ASHA).

Li et al. 2020, "A System for Massively Parallel Hyperparameter Tuning". The rule needs no scheduler
of its own: whoever sees a sweep's metrics as they come (the Ray backend's channel) asks `Ladder.judge`
at each of a run's rows and snapshots, and stops the run when it says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from contrast_core.sweep import STOPPED_EARLY

RUNGS = 2  # a run is judged at steps / eta**2 and steps / eta


@dataclass(frozen=True)
class EarlyStop:
    """Stops a sweep's hopeless runs by asynchronous successive halving (ASHA: Li et al. 2020, "A System
    for Massively Parallel Hyperparameter Tuning"). A run is judged at RUNGS steps (steps / eta**2, then
    steps / eta) by the first value of `metric` it reports there; a value worse than the best 1/eta of
    the values its sweep's runs reported at that rung before it stops the run. The first run at a rung
    always goes on, so a sweep keeps at least one run to the end.
    """

    metric: str  # a snapshot metric (knn_accuracy, silhouette, ...) or a step row's (loss, ...)
    mode: str = "max"  # "max": bigger is better; "min" for a loss
    eta: int = 3  # the reduction factor: about 1/eta of the runs pass each rung

    @classmethod
    def parse(cls, text: str) -> EarlyStop:
        """ "knn_accuracy" or "loss:min" (the metric, and whether smaller is better)."""
        metric, _, mode = str(text).strip().partition(":")
        if not metric:
            raise ValueError(f"early_stop: {text!r} names no metric (e.g. knn_accuracy, or loss:min)")
        if mode not in ("", "max", "min"):
            raise ValueError(f"early_stop: {mode!r} is not max or min (e.g. loss:min)")
        return cls(metric, mode or "max")

    def rungs(self, steps: int) -> list[int]:
        return sorted({steps // self.eta**k for k in range(1, RUNGS + 1)} - {0})

    def cutoff(self, earlier: list[float]) -> float:
        """The value a run must reach at a rung: the best 1/eta of those reached there before."""
        keep = 100.0 / self.eta
        return float(np.percentile(earlier, 100.0 - keep if self.mode == "max" else keep))

    def worse(self, value: float, cutoff: float) -> bool:
        return value < cutoff if self.mode == "max" else value > cutoff


@dataclass
class Ladder:
    """The values each sweep's runs reached at each rung (an EarlyStop's state, kept by the channel)."""

    rule: EarlyStop
    reached: dict[tuple[str, int], list[float]] = field(default_factory=dict)  # (sweep, rung) -> values
    judged: dict[str, set[int]] = field(default_factory=dict)  # run id -> rungs it was judged at

    def judge(self, run_id: str, sweep: str | None, steps: int, step: int, values: dict) -> str | None:
        """Why the run stops early now, or None."""
        value = values.get(self.rule.metric)
        if sweep is None or value is None or not math.isfinite(value):
            return None
        judged = self.judged.setdefault(run_id, set())
        for rung in self.rule.rungs(steps):
            if step < rung or rung in judged:
                continue
            judged.add(rung)
            earlier = self.reached.setdefault((sweep, rung), [])
            cutoff = self.rule.cutoff(earlier) if earlier else None
            earlier.append(value)
            if cutoff is not None and self.rule.worse(value, cutoff):
                return (f"{STOPPED_EARLY}: {self.rule.metric} {value:.4g} at step {step}, "
                        f"{'below' if self.rule.mode == 'max' else 'above'} the sweep's best 1/{self.rule.eta} "
                        f"there ({cutoff:.4g}; ASHA)")  # fmt: skip
        return None
