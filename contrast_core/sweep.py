"""Sweeps: every combination of a few knobs' values, queued as runs under one name.

A sweep is a base config (the Playground's settings, or the terminal's flags) and axes, e.g.
``{"margin": [0.25, 0.5, 1], "distance": ["euclidean", "cosine"]}``: six runs, each the base with
one combination. Every combination is checked by RunConfig before anything is queued, so a bad
value refuses the whole sweep with the field's name, and the store never holds half a grid.
"""

from __future__ import annotations

import itertools
import math
import os
import time

from contrast_core import rules
from contrast_core.config import ConfigError, RunConfig
from contrast_core.store import RunStore

MAX_RUNS = 16  # default cap on one sweep's grid; CONTRAST_MAX_SWEEP overrides it
# Knobs worth sweeping, in the order a picker offers them (any RunConfig field is accepted).
KNOBS = (
    "margin", "distance", "loss", "sampler", "reduction", "temperature", "lr", "batch_size",
    "embedding_dim", "augment", "m_per_class", "beta", "contrastive_weight", "adversarial_weight", "prior",
    "delta", "label_fraction", "steps", "seed",
)  # fmt: skip


STOPPED_EARLY = "stopped early"  # how the error line of a run ended by early stopping begins


class SweepError(ValueError):
    """A sweep refused before anything was queued; the message is one line naming the field."""


def max_runs() -> int:
    """The cap on a sweep's runs: CONTRAST_MAX_SWEEP, else MAX_RUNS."""
    text = os.environ.get("CONTRAST_MAX_SWEEP", "")
    try:
        return int(text) if text.strip() else MAX_RUNS
    except ValueError:
        raise SweepError(f"CONTRAST_MAX_SWEEP: {text!r} is not a whole number") from None


def parse_values(field: str, text: str) -> list[str]:
    """ "0.25, 0.5,1" -> ["0.25", "0.5", "1"]: the values of one axis (RunConfig converts them)."""
    values = [part.strip() for part in str(text).split(",")]
    if not all(values):
        raise SweepError(f"{field}: an empty value in {text!r} (separate values with commas)")
    if len(set(values)) < len(values):
        raise SweepError(f"{field}: a value is given twice in {text!r}")
    return values


def label(combination: dict) -> str:
    """ "margin=0.5 distance=cosine": a run's place in its sweep, also its name (a float as short as it
    goes: "margin=1", as typed, not "margin=1.0")."""
    return " ".join(f"{field}={value:g}" if isinstance(value, float) else f"{field}={value}"
                    for field, value in combination.items())  # fmt: skip


def expand(base: dict, axes: dict[str, list], limit: int | None = None) -> list[tuple[dict, RunConfig]]:
    """Every combination of the axes' values over `base`, checked: [(combination, config), ...].

    Raises:
        SweepError: no axis, an unknown field, more runs than the cap, or a combination RunConfig
            refuses (naming the field, its reason and the combination).
    """
    axes = {field: list(values) for field, values in axes.items()}
    if not axes or not all(axes.values()):
        raise SweepError("sweep: choose at least one knob and its values")
    for field in axes:
        if field not in RunConfig.model_fields:
            raise SweepError(f"{field}: not a run setting")
    limit = max_runs() if limit is None else limit
    size = math.prod(len(values) for values in axes.values())
    if size > limit:
        shape = " x ".join(f"{len(v)} {f}" for f, v in axes.items())
        raise SweepError(f"sweep: {shape} makes {size} runs, over the cap of {limit} (CONTRAST_MAX_SWEEP)")
    grid, refused = [], []
    for values in itertools.product(*axes.values()):
        combination = dict(zip(axes, values, strict=True))
        try:
            grid.append((combination, RunConfig.check(**_margin_carried(base, combination))))
        except ConfigError as exc:
            refused.append((combination, exc))
    if refused:  # the first, and how many more: fixing one value may leave others refused
        combination, exc = refused[0]
        field, reason = next(iter(exc.errors.items()))
        more = f"; {len(refused)} of the {size} combinations are refused" if len(refused) > 1 else ""
        raise SweepError(f"{field}: {reason} (at {label(combination)}{more})")
    for field in axes:  # a knob no run reads: the same run, trained again for each value
        if all(field in config.unused() for _, config in grid):
            first = grid[0][1]
            raise SweepError(f"{field}: not used by the {first.loss} loss, {first.model} model, {first.dataset} "
                             "data; every run of the sweep would be the same")  # fmt: skip
    return grid


def _margin_carried(base: dict, combination: dict) -> dict:
    """base | combination, where a combination that changes the loss or the distance but not the margin
    carries the base's margin over with its meaning on unit vectors, as the Playground does (a
    Euclidean margin of 1 is a cosine-embedding similarity of 0.5, not 1: that pushes no negative)."""
    values = base | combination
    if "margin" in combination or base.get("margin") is None or not {"loss", "distance"} & combination.keys():
        return values
    loss = RunConfig.model_fields["loss"].default
    old, new = (base.get("loss", loss), base.get("distance")), (values.get("loss", loss), values.get("distance"))
    try:
        return values | {"margin": rules.carried_margin(float(base["margin"]), old, new)}
    except (KeyError, TypeError, ValueError):  # an unknown loss or distance, a margin that is no number: RunConfig says
        return values


def queue(
    store: RunStore,
    base: dict,
    axes: dict[str, list],
    name: str = "",
    limit: int | None = None,
    owner: str | None = None,
) -> tuple[str, list[str]]:
    """Checks the grid, then queues each combination as a run of the sweep; returns (name, run ids).

    `name` defaults to the swept knobs and the time ("margin x distance 11-24 14:05"); a name
    already used by another sweep is refused. `owner`: the runs' owner (a hosted demo's visitor).
    """
    grid = expand(base, axes, limit)
    name = name.strip() or f"{' x '.join(axes)} {time.strftime('%m-%d %H:%M:%S')}"
    if name in store.sweeps():
        raise SweepError(f"name: a sweep named {name!r} exists; choose another name")
    ids = [
        store.create_run(config.model_dump(mode="json"), name=label(combination), sweep=name, owner=owner)
        for combination, config in grid
    ]
    return name, ids


def axes_of(runs: list) -> dict[str, list]:
    """The knobs on which a sweep's runs differ: numbers in order, other values as first seen
    (pass the runs oldest first, and the values come in the order they were swept).

    A knob that follows another one (each of the other's values gives it one value of its own: a swept
    loss's own distance and margin) is not an axis: of two that follow each other, the one the runs'
    names give (a sweep names its runs by their axes, "loss=triplet"), else the first in KNOBS, is."""
    axes: dict[str, list] = {}
    for field in RunConfig.model_fields:
        values = []
        for run in runs:
            value = run.config.get(field)
            if value not in values:
                values.append(value)
        if len(values) > 1:
            numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
            axes[field] = sorted(values) if numbers else values

    def rank(field: str) -> tuple[bool, int]:
        named = all(f"{field}=" in (run.name or "") for run in runs)
        return not named, KNOBS.index(field) if field in KNOBS else len(KNOBS)

    def follows(field: str, other: str) -> bool:
        seen: dict[str, object] = {}
        return all(seen.setdefault(repr(run.config.get(other)), run.config.get(field)) == run.config.get(field)
                   for run in runs)  # fmt: skip

    return {field: values for field, values in axes.items()
            if not any(follows(field, other) and (not follows(other, field) or rank(other) < rank(field))
                       for other in axes if other != field)}  # fmt: skip


def stopped_early(run) -> bool:
    """Whether a sweep's early stopping ended the run (it is cancelled, its error line says why)."""
    return run.status == "cancelled" and (run.error or "").startswith(STOPPED_EARLY)
