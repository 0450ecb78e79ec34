"""Warnings a person watching a run would want: collapse, a loss stuck at the margin, divergence,
VAE reconstructions blurred to the mean image.

Pure functions of the metric rows, the latest snapshot and the run's config; each returns a
one-line message or None.
"""

from __future__ import annotations

import numpy as np

from contrast_core.config import RunConfig
from contrast_core.rules import LOSSES, SAMPLERS, as_measured

COLLAPSE_FRACTION = 0.01  # points all within 1% of the margin (or of 1 without one): collapsed
STUCK_WINDOW = 100  # steps of loss looked at for "stuck"
STUCK_TOLERANCE = 0.05  # relative: flat within 5% and within 5% of the collapsed-loss value
MEAN_RECONSTRUCTION_SPREAD = 0.3  # reconstructions varying less than 30% as much as their inputs: the mean image
DIVERGE_FACTOR = 10.0  # recent loss this many times its best window mean (and above its start): diverging


def spread(embeddings: np.ndarray, distance: str) -> float:
    """RMS distance of the points to their centroid, as `distance` sees them (on the unit sphere
    for the cosine). (E, D) -> float."""
    points = as_measured(np.asarray(embeddings, dtype=np.float64), distance)
    return float(np.sqrt(((points - points.mean(axis=0)) ** 2).sum(axis=1).mean()))


def collapse(embeddings: np.ndarray, config: dict) -> str | None:
    """All points within a tiny radius of each other, in the distance the loss measures with:
    the embedding says nothing about the input."""
    rules = LOSSES[config["loss"]]
    distance, margin = rules.measures_with(config.get("distance")), rules.margin_as_distance(config["margin"])
    scale = margin if margin is not None and margin > 0 else 1.0  # a margin of 0 gives no scale
    radius = spread(embeddings, distance)
    if np.isfinite(radius) and radius < COLLAPSE_FRACTION * scale:
        stated = "" if margin is None else f" (margin {margin:g} in {distance} distance)"
        wider = "a larger margin"
        if config["loss"] == "cosine-embedding":  # its margin is the cosine similarity above which negatives cost
            stated, wider = f" (margin {config['margin']:g}, a cosine similarity)", "a lower margin"
        return (
            f"Embedding collapse: all {len(embeddings)} points lie within {radius:.2g} of their centre{stated}. "
            + remedy(config, f"Try a smaller learning rate, {wider} or another sampler.")
        )
    return None


def remedy(config: dict, usual: str) -> str:
    """What to try against a collapsed embedding: `usual`, unless the run's recipe is known to fall into it.

    Batch-hard under the cosine: an untrained network's embeddings start out in a narrow cone, and each
    anchor's hardest negative is the one most nearly parallel to it, where the cosine's gradient is zero.
    Seen on digits at 2-D, 300 steps: k-NN accuracy 0.15 with the triplet and the cosine-embedding loss, 0.60
    and 0.50 with batch-all instead, 0.90 and 0.87 at 16-D."""
    loss = LOSSES[config["loss"]]
    if config.get("sampler") == "batch-hard" and loss.measures_with(config.get("distance")) == "cosine":
        others = " or ".join(s for s in ("batch-all", "random-pairs") if loss.kind in SAMPLERS[s].kinds)
        return ("Under the cosine, batch-hard's hardest negatives point the way their anchors do, where the cosine "
                f"has no gradient to part them: try {others}, or more embedding dimensions.")  # fmt: skip
    return usual


def collapsed_loss(config: dict) -> float | None:
    """The loss a collapsed embedding (every distance 0) pays, when the recipe fixes it."""
    return RunConfig.model_validate(config).collapsed_loss()


def stuck_at_margin(losses: np.ndarray, config: dict) -> str | None:
    """The loss flat at the value a collapsed embedding pays: the model gave up separating pairs."""
    value = collapsed_loss(config)
    recent = np.asarray(losses, dtype=np.float64)[-STUCK_WINDOW:]
    if value is None or value <= 0 or len(recent) < STUCK_WINDOW or not np.isfinite(recent).all():
        return None
    mean = recent.mean()
    if abs(mean - value) < STUCK_TOLERANCE * value and recent.std() < STUCK_TOLERANCE * value:
        return (
            f"Loss stuck at {mean:.3g}, what a collapsed embedding pays in this run ({value:.3g}): "
            "pairs are not being separated. " + remedy(config, "Try a smaller learning rate or margin.")
        )
    return None


def blurred_to_the_mean(originals: np.ndarray, reconstructions: np.ndarray, model: str = "vae") -> str | None:
    """VAE / AAE reconstructions that barely differ between items: the decoder draws the data's mean.

    Compares how much the reconstructions vary across items (per pixel) with how much the
    originals do; (B, ...) arrays of the same items. What wins over the reconstruction is named by
    `model`: the KL term (beta) of a VAE, the adversarial term of an AAE.
    """
    spread = reconstruction_spread(originals, reconstructions)
    if np.isfinite(spread) and spread < MEAN_RECONSTRUCTION_SPREAD:
        cause = ("The adversarial term is winning: lower the adversarial weight or the contrastive weight, or "
                 "train longer." if model == "aae" else
                 "The KL term (beta) is winning: lower beta or the contrastive weight, or train longer.")  # fmt: skip
        return f"Reconstructions collapse to the mean image: they vary {spread:.0%} as much as the inputs do. {cause}"
    return None


def reconstruction_spread(originals: np.ndarray, reconstructions: np.ndarray) -> float:
    """Mean per-pixel standard deviation across items of the reconstructions over that of the originals."""
    flat = [np.asarray(a, dtype=np.float64).reshape(len(a), -1) for a in (originals, reconstructions)]
    base = flat[0].std(axis=0).mean()
    return float(flat[1].std(axis=0).mean() / base) if base > 0 else float("nan")


def divergence(losses: np.ndarray, error: str | None) -> str | None:
    """A non-finite loss, a run stopped for diverging, or a loss far above its best."""
    if error and "diverged" in error:
        return f"Training diverged ({error}). Lower the learning rate."
    losses = np.asarray(losses, dtype=np.float64)
    if len(losses) and not np.isfinite(losses).all():
        return "The loss is not finite: training diverged. Lower the learning rate."
    if len(losses) >= 2 * STUCK_WINDOW:
        windows = losses[: len(losses) // STUCK_WINDOW * STUCK_WINDOW].reshape(-1, STUCK_WINDOW).mean(axis=1)
        best, now = windows.min(), losses[-STUCK_WINDOW:].mean()
        if best > 0 and now > DIVERGE_FACTOR * best and now > windows[0]:  # above where it started too
            return f"The loss is rising ({now:.3g}, {now / best:.0f}x its best): training may be diverging."
    return None


def diagnose(losses: np.ndarray, arrays: dict | None, config: dict, error: str | None) -> list[str]:
    """Every warning that applies, most serious first; `arrays` is the latest snapshot's, or None."""
    found = [divergence(losses, error), stuck_at_margin(losses, config)]
    if arrays is not None and len(arrays["embeddings"]):
        found.append(collapse(arrays["embeddings"], config))
    if arrays is not None and "reconstructions" in arrays:
        found.append(blurred_to_the_mean(arrays["originals"], arrays["reconstructions"], config.get("model", "vae")))
    return [message for message in found if message]
