"""Pair-distance measures of a snapshot: positive and negative pair distances against the margin,
the share of triplets still paying, one item's neighbours. NumPy and SciPy only, so the pages
compute them without loading the engine; `metrics.evaluate` reports them with the rest.

Embeddings may be NumPy arrays or torch tensors (anything with `.detach()`), as `metrics` takes them.
"""

import numpy as np
from scipy.spatial.distance import cdist, pdist, squareform

NAN = float("nan")

# Distance name -> scipy metric for pair distances. "cosine" is 1 - cos, in [0, 2].
PAIR_METRICS = {"euclidean": "euclidean", "squared-euclidean": "sqeuclidean", "cosine": "cosine"}


def _numpy(values) -> np.ndarray:
    """A torch tensor (on any device) or an array-like as a NumPy array."""
    return values.detach().cpu().numpy() if hasattr(values, "detach") else np.asarray(values)


def pair_distance_stats(
    embeddings: np.ndarray,
    labels: np.ndarray,
    distance: str,
    margin: float | None,
    max_pairs: int = 5000,
    seed: int = 0,
    delta: float | None = None,
) -> dict:
    """Distances of all pairs i < j, split into positive (same label) and negative pairs.

    Args:
        embeddings: (E, D) embeddings of the evaluation subset.
        labels: (E,) labels; a pair is positive when the labels are equal (with `delta`: continuous
            targets, a pair is positive when they differ by at most delta).
        distance: "euclidean", "squared-euclidean" or "cosine" (1 - cos).
        margin: the loss margin in the same distance, or None.
        max_pairs: cap on each returned distance array (seeded random subsample).
        seed: seed of that subsample.
        delta: a continuous target's similarity width, or None for labels.

    Returns:
        ``pos_mean`` and ``neg_mean`` over all pairs (NaN without such pairs or with a NaN
        distance); ``pos_distances`` and ``neg_distances`` (float32 arrays of at most
        ``max_pairs``); ``violation_fraction`` (negative pairs with d < margin) and
        ``pos_violation_fraction`` (positive pairs with d > margin), both None when margin is
        None and NaN without such pairs.
    """
    embeddings, labels = checked(embeddings, labels, "embeddings", "labels")
    if distance not in PAIR_METRICS:
        raise ValueError(f"distance: unknown {distance!r} (choose from {', '.join(PAIR_METRICS)})")
    pair_distances = pdist(embeddings.astype(np.float64), metric=PAIR_METRICS[distance])  # (E(E-1)/2,)
    # Label codes (or targets) through pdist give the same i<j order as the distances, without index arrays.
    if delta is None:
        codes = np.unique(labels, return_inverse=True)[1].reshape(-1, 1).astype(np.float64)  # (E, 1)
        same = pdist(codes, metric="cityblock") == 0  # (E(E-1)/2,)
    else:
        same = pdist(labels.reshape(-1, 1).astype(np.float64), metric="cityblock") <= delta
    positive, negative = pair_distances[same], pair_distances[~same]
    rng = np.random.default_rng(seed)
    stats = {
        "pos_mean": _mean(positive),
        "neg_mean": _mean(negative),
        "pos_distances": _subsample(positive, max_pairs, rng),
        "neg_distances": _subsample(negative, max_pairs, rng),
        "violation_fraction": None,
        "pos_violation_fraction": None,
    }
    if margin is not None:
        stats["violation_fraction"] = _fraction(negative < margin, negative)
        stats["pos_violation_fraction"] = _fraction(positive > margin, positive)
    return stats


def neighbours(
    embeddings: np.ndarray, labels: np.ndarray, query: int, distance: str, margin: float | None, k: int = 8,
    delta: float | None = None,
) -> dict[str, np.ndarray | int]:  # fmt: skip
    """One item's retrieval: its k nearest items, its hardest negatives and the positives beyond the margin.

    Args:
        embeddings: (E, D) embeddings as the loss measures them; `query` is a row of them.
        distance: a PAIR_METRICS name; margin: the loss's margin in that distance, or None.
        delta: `labels` are continuous targets, an item's positives those within delta of it; None: classes.
    Returns:
        "nearest", "hardest_negatives", "far_positives": (rows, distances) pairs of arrays, nearest
        first (the far positives farthest first; none without a margin); "negatives_inside" and
        "positives_beyond": how many of each there are in all.
    """
    embeddings, labels = checked(embeddings, labels, "embeddings", "labels")
    if distance not in PAIR_METRICS:
        raise ValueError(f"distance: unknown {distance!r} (choose from {', '.join(PAIR_METRICS)})")
    if not 0 <= query < len(embeddings):
        raise ValueError(f"item: {query} is not one of the {len(embeddings)} items")
    d = cdist(embeddings[query : query + 1].astype(np.float64), embeddings.astype(np.float64),
              metric=PAIR_METRICS[distance])[0]  # fmt: skip
    others = np.arange(len(d)) != query
    same = labels == labels[query] if delta is None else np.abs(labels - labels[query]) <= delta
    negative, positive = others & ~same, others & same
    order = np.argsort(d, kind="stable")
    order = order[others[order]]

    def take(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return rows[:k], d[rows[:k]]

    far = order[::-1][positive[order[::-1]]]
    beyond = far[d[far] > margin] if margin is not None else far[:0]
    return {
        "nearest": take(order),
        "hardest_negatives": take(order[negative[order]]),
        "far_positives": take(beyond),
        "negatives_inside": int((d[negative] < margin).sum()) if margin is not None else 0,
        "positives_beyond": len(beyond),
    }


def triplet_violation_fraction(
    embeddings: np.ndarray,
    labels: np.ndarray,
    distance: str,
    margin: float,
    seed: int = 0,
    delta: float | None = None,
) -> float:
    """Share of held-out triplets that a triplet loss still pays for: d(a, n) < d(a, p) + margin.

    Each item with a positive and a negative is an anchor once, with one positive and one
    negative drawn at random (seeded), so the share does not depend on how many items a class has.
    A triplet loss only sees d(a, n) - d(a, p): an embedding can spread far beyond the margin
    while this share stays high.

    Args:
        embeddings: (E, D) embeddings of the evaluation subset.
        labels: (E,) labels (continuous targets with `delta`: similar within delta of each other).
        distance: "euclidean", "squared-euclidean" or "cosine".
        margin: the loss margin in that distance.
        seed: seed of the draw.
        delta: a continuous target's similarity width, or None for labels.

    Returns:
        The share, or NaN without an anchor that has both a positive and a negative.
    """
    embeddings, labels = checked(embeddings, labels, "embeddings", "labels")
    if distance not in PAIR_METRICS:
        raise ValueError(f"distance: unknown {distance!r} (choose from {', '.join(PAIR_METRICS)})")
    d = squareform(pdist(embeddings, metric=PAIR_METRICS[distance]))  # (E, E)
    same = labels[:, None] == labels[None, :] if delta is None else np.abs(labels[:, None] - labels[None, :]) <= delta
    positive, negative = same & ~np.eye(len(labels), dtype=bool), ~same
    anchors = positive.any(axis=1) & negative.any(axis=1)
    if not anchors.any():
        return NAN
    rng = np.random.default_rng(seed)
    # a random member of each row's mask: the largest of uniform keys restricted to it
    p = np.where(positive, rng.random(d.shape), -1.0).argmax(axis=1)  # (E,)
    n = np.where(negative, rng.random(d.shape), -1.0).argmax(axis=1)  # (E,)
    rows = np.arange(len(d))
    return float((d[rows, n] < d[rows, p] + margin)[anchors].mean())


def checked(embeddings, labels, emb_name: str, labels_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (E, D) float and (E,) label NumPy arrays, or raise naming the bad field."""
    embeddings, labels = _numpy(embeddings), _numpy(labels)
    embeddings, labels = np.asarray(embeddings, dtype=np.float64), np.asarray(labels)
    if embeddings.ndim != 2 or len(embeddings) == 0:
        raise ValueError(f"{emb_name}: expected a non-empty (E, D) array, got shape {embeddings.shape}")
    if labels.shape != (len(embeddings),):
        raise ValueError(f"{labels_name}: expected shape ({len(embeddings)},), got {labels.shape}")
    return embeddings, labels


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else NAN


def _fraction(condition: np.ndarray, distances: np.ndarray) -> float:
    """Share of pairs meeting condition; NaN without pairs or with a NaN distance (cosine of a zero vector)."""
    if len(distances) == 0 or np.isnan(distances).any():
        return NAN
    return float(condition.mean())


def _subsample(values: np.ndarray, max_pairs: int, rng: np.random.Generator) -> np.ndarray:
    if len(values) > max_pairs:
        values = values[np.sort(rng.choice(len(values), size=max_pairs, replace=False))]
    return values.astype(np.float32)
