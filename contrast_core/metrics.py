"""Clustering, retrieval, pair-distance and VAE metrics of an embedding snapshot.

Every function takes plain arrays (NumPy or torch) and returns plain Python floats, so the
results go straight into the run store as JSON. Formulas come from scikit-learn wherever it
has them; MAP@R and the pair statistics are written here with NumPy/SciPy.

A degenerate snapshot (all points collapsed onto one, a single label, non-finite values
after a diverged step) gives ``float("nan")`` for the metrics it makes meaningless instead
of raising, so one bad snapshot never stops a run or a page.
"""

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial.distance import cdist, pdist, squareform
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    adjusted_mutual_info_score,
    adjusted_rand_score,
    davies_bouldin_score,
    normalized_mutual_info_score,
    rand_score,
    silhouette_score,
)
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

NAN = float("nan")


@dataclass(frozen=True)
class Metric:
    """How a metric is named and read: one table for the engine, the live panels and the run tables."""

    label: str  # short: a tile, a table column, a chart legend
    help: str  # one sentence: what it measures
    better: str  # "higher", "lower" or "neither" (which way a change is good)
    group: str  # "cluster", "retrieval", "pairs" (from `evaluate`) or "vae" (from `vae_metrics`)


METRICS: dict[str, Metric] = {
    "rand_index": Metric("Rand index", "Rand index of KMeans clusters vs true labels (1 = same partition)", "higher", "cluster"),
    "adjusted_rand": Metric("ARI", "Adjusted Rand index of KMeans clusters vs true labels (0 = chance)", "higher", "cluster"),
    "nmi": Metric("NMI", "Normalized mutual information of KMeans clusters vs true labels", "higher", "cluster"),
    "ami": Metric("AMI", "Adjusted mutual information of KMeans clusters vs true labels (0 = chance)", "higher", "cluster"),
    "davies_bouldin": Metric("Davies-Bouldin", "Davies-Bouldin index of the true classes (lower = tighter, better separated)", "lower", "cluster"),
    "silhouette": Metric("Silhouette", "Silhouette score of the true classes, Euclidean (-1 to 1, higher = better)", "higher", "cluster"),
    "knn_accuracy": Metric("k-NN accuracy", "k-nearest-neighbour classifier accuracy, train -> eval", "higher", "retrieval"),
    "precision_at_1": Metric("Precision@1", "Fraction of eval queries whose nearest train item has the same label", "higher", "retrieval"),
    "map_at_r": Metric("MAP@R", "Mean average precision at R (Musgrave et al. 2020), train -> eval", "higher", "retrieval"),
    "linear_probe_accuracy": Metric("Linear probe", "Logistic regression on frozen embeddings, train -> eval accuracy", "higher", "retrieval"),
    "pos_mean": Metric("Positive distance", "Mean distance of positive (same-label) pairs", "lower", "pairs"),
    "neg_mean": Metric("Negative distance", "Mean distance of negative (different-label) pairs", "higher", "pairs"),
    "violation_fraction": Metric("Negatives inside margin", "Fraction of negative pairs closer than the margin", "lower", "pairs"),
    "pos_violation_fraction": Metric("Positives outside margin", "Fraction of positive pairs farther than the margin", "lower", "pairs"),
    "recon_mse": Metric("Recon. MSE", "Mean squared error per pixel of the VAE's reconstructions of held-out items", "lower", "vae"),
    "kl": Metric("KL", "KL divergence of the VAE's posterior from N(0, I), per item", "neither", "vae"),
}  # fmt: skip

# Distance name -> scipy metric for pair distances. "cosine" is 1 - cos, in [0, 2].
PAIR_METRICS = {"euclidean": "euclidean", "squared-euclidean": "sqeuclidean", "cosine": "cosine"}

# Distance name -> sklearn metric for neighbour ranking (squared Euclidean ranks as Euclidean).
RANKING_METRICS = {"euclidean": "euclidean", "squared-euclidean": "euclidean", "cosine": "cosine"}


def cluster_metrics(embeddings: np.ndarray, labels: np.ndarray, n_clusters: int, seed: int = 0) -> dict[str, float]:
    """Agreement of a KMeans clustering with the labels, and separation of the true classes.

    ``rand_index``, ``adjusted_rand``, ``nmi`` and ``ami`` compare ``KMeans(n_clusters, n_init=3,
    random_state=seed)`` clusters with the true labels. ``davies_bouldin`` and ``silhouette``
    score the TRUE labels on the embedding (Euclidean), not the KMeans clusters, so they say
    how well the classes themselves are separated.

    Args:
        embeddings: (E, D) embeddings of the evaluation subset.
        labels: (E,) true class labels.
        n_clusters: number of KMeans clusters, usually the number of classes.
        seed: KMeans random state.

    Returns:
        Dict with the six keys above; NaN where the input makes a metric undefined (fewer
        distinct points than clusters, one class, non-finite embeddings).
    """
    embeddings, labels = _checked(embeddings, labels, "embeddings", "labels")
    result = dict.fromkeys(["rand_index", "adjusted_rand", "nmi", "ami", "davies_bouldin", "silhouette"], NAN)
    if not np.isfinite(embeddings).all():
        return result
    n_distinct = len(np.unique(embeddings, axis=0))
    if 2 <= n_clusters <= n_distinct:
        kmeans = KMeans(n_clusters=n_clusters, n_init=3, random_state=seed)
        clusters = kmeans.fit_predict(embeddings)  # (E,)
        result["rand_index"] = float(rand_score(labels, clusters))
        result["adjusted_rand"] = float(adjusted_rand_score(labels, clusters))
        result["nmi"] = float(normalized_mutual_info_score(labels, clusters))
        result["ami"] = float(adjusted_mutual_info_score(labels, clusters))
    n_classes = len(np.unique(labels))
    if n_distinct >= 2 and 2 <= n_classes <= len(labels) - 1:
        result["davies_bouldin"] = float(davies_bouldin_score(embeddings, labels))
        result["silhouette"] = float(silhouette_score(embeddings, labels))
    return result


def retrieval_metrics(
    train_emb: np.ndarray,
    train_labels: np.ndarray,
    test_emb: np.ndarray,
    test_labels: np.ndarray,
    k: int = 5,
    metric: str = "euclidean",
    linear_probe: bool = True,
) -> dict[str, float]:
    """How well the train embeddings retrieve and classify the test embeddings.

    Args:
        train_emb: (N, D) reference embeddings.
        train_labels: (N,) their labels.
        test_emb: (Q, D) query embeddings.
        test_labels: (Q,) their labels.
        k: neighbours for the k-NN classifier (capped at N).
        metric: "euclidean", "squared-euclidean" (ranks as Euclidean) or "cosine".
        linear_probe: fit the logistic-regression probe (the slowest part); NaN when False.

    Returns:
        ``knn_accuracy``, ``precision_at_1``, ``map_at_r`` (see `map_at_r`) and
        ``linear_probe_accuracy`` (standardised features + logistic regression); NaN when
        the embeddings are not finite or the train set has a single class (probe only).
    """
    train_emb, train_labels = _checked(train_emb, train_labels, "train_emb", "train_labels")
    test_emb, test_labels = _checked(test_emb, test_labels, "test_emb", "test_labels")
    if train_emb.shape[1] != test_emb.shape[1]:
        raise ValueError(f"test_emb: dimension {test_emb.shape[1]} != train_emb dimension {train_emb.shape[1]}")
    if metric not in RANKING_METRICS:
        raise ValueError(f"metric: unknown {metric!r} (choose from {', '.join(RANKING_METRICS)})")
    result = dict.fromkeys(["knn_accuracy", "precision_at_1", "map_at_r", "linear_probe_accuracy"], NAN)
    if not (np.isfinite(train_emb).all() and np.isfinite(test_emb).all()):
        return result
    ranking = RANKING_METRICS[metric]
    knn = KNeighborsClassifier(n_neighbors=min(k, len(train_emb)), metric=ranking)
    result["knn_accuracy"] = float(knn.fit(train_emb, train_labels).score(test_emb, test_labels))
    precision, mean_ap = _ranked_retrieval(train_emb, train_labels, test_emb, test_labels, ranking)
    result["precision_at_1"], result["map_at_r"] = precision, mean_ap
    if linear_probe:
        result["linear_probe_accuracy"] = _linear_probe(train_emb, train_labels, test_emb, test_labels)
    return result


def map_at_r(relevant: np.ndarray, r: np.ndarray) -> float:
    """Mean average precision at R (Musgrave, Belongie & Lim 2020, "A Metric Learning Reality Check").

    For a query with R relevant references, ``AP@R = (1/R) * sum_{i<=R} P(i) * rel(i)`` where
    ``P(i)`` is the precision of the first i retrieved items. Queries with R = 0 are left out.

    Args:
        relevant: (Q, K) bool, whether the i-th retrieved item shares the query's label; K >= max R.
        r: (Q,) number of relevant references of each query.

    Returns:
        The mean of AP@R over queries with R > 0; NaN if there are none.
    """
    keep = r > 0
    relevant, r = relevant[keep], r[keep]
    if len(r) == 0:
        return NAN
    ranks = np.arange(1, relevant.shape[1] + 1)  # (K,)
    within_r = ranks[None, :] <= r[:, None]  # (Q, K)
    hits = relevant & within_r
    precision_at_i = np.cumsum(hits, axis=1) / ranks  # (Q, K)
    average_precision = (precision_at_i * hits).sum(axis=1) / r  # (Q,)
    return float(average_precision.mean())


def pair_distance_stats(
    embeddings: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    distance: str,
    margin: float | None,
    max_pairs: int = 5000,
    seed: int = 0,
) -> dict:
    """Distances of all pairs i < j, split into positive (same label) and negative pairs.

    Args:
        embeddings: (E, D) embeddings of the evaluation subset.
        labels: (E,) labels; a pair is positive when the labels are equal.
        distance: "euclidean", "squared-euclidean" or "cosine" (1 - cos).
        margin: the loss margin in the same distance, or None.
        max_pairs: cap on each returned distance array (seeded random subsample).
        seed: seed of that subsample.

    Returns:
        ``pos_mean`` and ``neg_mean`` over all pairs (NaN without such pairs or with a NaN
        distance); ``pos_distances`` and ``neg_distances`` (float32 arrays of at most
        ``max_pairs``); ``violation_fraction`` (negative pairs with d < margin) and
        ``pos_violation_fraction`` (positive pairs with d > margin), both None when margin is
        None and NaN without such pairs.
    """
    embeddings, labels = _checked(embeddings, labels, "embeddings", "labels")
    if distance not in PAIR_METRICS:
        raise ValueError(f"distance: unknown {distance!r} (choose from {', '.join(PAIR_METRICS)})")
    pair_distances = pdist(embeddings.astype(np.float64), metric=PAIR_METRICS[distance])  # (E(E-1)/2,)
    # Label codes through pdist give the same i<j order as the distances, without index arrays.
    codes = np.unique(labels, return_inverse=True)[1].reshape(-1, 1).astype(np.float64)  # (E, 1)
    same = pdist(codes, metric="cityblock") == 0  # (E(E-1)/2,)
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
    embeddings: np.ndarray, labels: np.ndarray, query: int, distance: str, margin: float | None, k: int = 8
) -> dict[str, np.ndarray | int]:
    """One item's retrieval: its k nearest items, its hardest negatives and the positives beyond the margin.

    Args:
        embeddings: (E, D) embeddings as the loss measures them; `query` is a row of them.
        distance: a PAIR_METRICS name; margin: the loss's margin in that distance, or None.
    Returns:
        "nearest", "hardest_negatives", "far_positives": (rows, distances) pairs of arrays, nearest
        first (the far positives farthest first; none without a margin); "negatives_inside" and
        "positives_beyond": how many of each there are in all.
    """
    embeddings, labels = _checked(embeddings, labels, "embeddings", "labels")
    if distance not in PAIR_METRICS:
        raise ValueError(f"distance: unknown {distance!r} (choose from {', '.join(PAIR_METRICS)})")
    if not 0 <= query < len(embeddings):
        raise ValueError(f"item: {query} is not one of the {len(embeddings)} items")
    d = cdist(embeddings[query : query + 1].astype(np.float64), embeddings.astype(np.float64),
              metric=PAIR_METRICS[distance])[0]  # fmt: skip
    others = np.arange(len(d)) != query
    negative, positive = others & (labels != labels[query]), others & (labels == labels[query])
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
    embeddings: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    distance: str,
    margin: float,
    seed: int = 0,
) -> float:
    """Share of held-out triplets that a triplet loss still pays for: d(a, n) < d(a, p) + margin.

    Each item with a positive and a negative is an anchor once, with one positive and one
    negative drawn at random (seeded), so the share does not depend on how many items a class has.
    A triplet loss only sees d(a, n) - d(a, p): an embedding can spread far beyond the margin
    while this share stays high.

    Args:
        embeddings: (E, D) embeddings of the evaluation subset.
        labels: (E,) labels.
        distance: "euclidean", "squared-euclidean" or "cosine".
        margin: the loss margin in that distance.
        seed: seed of the draw.

    Returns:
        The share, or NaN without an anchor that has both a positive and a negative.
    """
    embeddings, labels = _checked(embeddings, labels, "embeddings", "labels")
    if distance not in PAIR_METRICS:
        raise ValueError(f"distance: unknown {distance!r} (choose from {', '.join(PAIR_METRICS)})")
    d = squareform(pdist(embeddings, metric=PAIR_METRICS[distance]))  # (E, E)
    same = labels[:, None] == labels[None, :]
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


def vae_metrics(
    x: torch.Tensor | np.ndarray,
    recon: torch.Tensor | np.ndarray,
    mu: torch.Tensor | np.ndarray,
    logvar: torch.Tensor | np.ndarray,
) -> dict[str, float]:
    """Reconstruction error and KL term of a VAE (Kingma & Welling 2014).

    ``kl = mean_b sum_d -0.5 * (1 + logvar - mu^2 - exp(logvar))``, the closed form of
    KL(N(mu, exp(logvar)) || N(0, I)).

    Args:
        x: (B, ...) inputs.
        recon: (B, ...) reconstructions, same shape as x.
        mu: (B, Z) posterior means.
        logvar: (B, Z) posterior log-variances.

    Returns:
        ``recon_mse`` (mean squared error per element) and ``kl`` (mean over samples).
    """
    x, recon, mu, logvar = (torch.as_tensor(t).detach().double() for t in (x, recon, mu, logvar))
    if x.shape != recon.shape:
        raise ValueError(f"recon: shape {tuple(recon.shape)} does not match x shape {tuple(x.shape)}")
    if mu.shape != logvar.shape:
        raise ValueError(f"logvar: shape {tuple(logvar.shape)} does not match mu shape {tuple(mu.shape)}")
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=-1)  # (B,)
    return {"recon_mse": float((recon - x).pow(2).mean()), "kl": float(kl.mean())}


def evaluate(
    train_emb: np.ndarray,
    train_labels: np.ndarray,
    eval_emb: np.ndarray,
    eval_labels: np.ndarray,
    n_clusters: int,
    distance: str,
    margin: float | None,
    seed: int = 0,
    full: bool = True,
) -> dict[str, float]:
    """All snapshot metrics in one flat dict of floats, keyed as the non-VAE entries of `METRICS`.

    Clustering and pair statistics are computed on the eval subset; retrieval and the
    linear probe use the train embeddings as references and the eval embeddings as queries.
    The violation fractions are NaN when margin is None; the linear probe is NaN unless full.

    Args:
        train_emb: (N, D) train embeddings; a subset of a few thousand keeps retrieval cheap.
        train_labels: (N,) their labels.
        eval_emb: (E, D) evaluation-subset embeddings.
        eval_labels: (E,) their labels.
        n_clusters: KMeans clusters, usually the number of classes.
        distance: "euclidean", "squared-euclidean" or "cosine".
        margin: the loss margin, or None.
        seed: KMeans and subsampling seed.
        full: also fit the linear probe (slowest; for final snapshots).
    """
    pairs = pair_distance_stats(eval_emb, eval_labels, distance, margin, seed=seed)
    result = {
        **cluster_metrics(eval_emb, eval_labels, n_clusters, seed=seed),
        **retrieval_metrics(train_emb, train_labels, eval_emb, eval_labels, metric=distance, linear_probe=full),
    }
    for key in ("pos_mean", "neg_mean", "violation_fraction", "pos_violation_fraction"):
        result[key] = NAN if pairs[key] is None else float(pairs[key])
    return result


def _checked(embeddings, labels, emb_name: str, labels_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (E, D) float and (E,) label NumPy arrays, or raise naming the bad field."""
    if isinstance(embeddings, torch.Tensor):
        embeddings = embeddings.detach().cpu().numpy()
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    embeddings, labels = np.asarray(embeddings, dtype=np.float64), np.asarray(labels)
    if embeddings.ndim != 2 or len(embeddings) == 0:
        raise ValueError(f"{emb_name}: expected a non-empty (E, D) array, got shape {embeddings.shape}")
    if labels.shape != (len(embeddings),):
        raise ValueError(f"{labels_name}: expected shape ({len(embeddings)},), got {labels.shape}")
    return embeddings, labels


def _ranked_retrieval(train_emb, train_labels, test_emb, test_labels, metric: str) -> tuple[float, float]:
    """Precision@1 over all queries and MAP@R over queries whose label occurs in train."""
    classes, counts = np.unique(train_labels, return_counts=True)
    index = np.searchsorted(classes, test_labels).clip(max=len(classes) - 1)  # (Q,)
    r = np.where(classes[index] == test_labels, counts[index], 0)  # (Q,) relevant train items
    n_retrieved = int(np.clip(r.max(), 1, len(train_emb)))
    neighbours = NearestNeighbors(n_neighbors=n_retrieved, metric=metric).fit(train_emb)
    order = neighbours.kneighbors(test_emb, return_distance=False)  # (Q, K)
    relevant = train_labels[order] == test_labels[:, None]  # (Q, K)
    return float(relevant[:, 0].mean()), map_at_r(relevant, r)


def _linear_probe(train_emb, train_labels, test_emb, test_labels) -> float:
    """Test accuracy of a logistic regression fit on the train embeddings; NaN for one class."""
    if len(np.unique(train_labels)) < 2:
        return NAN
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # an unconverged probe is still a fair score
        probe.fit(train_emb, train_labels)
    return float(probe.score(test_emb, test_labels))


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
