"""Clustering, retrieval, pair-distance and VAE metrics of an embedding snapshot.

Every function takes plain arrays (NumPy or torch) and returns plain Python floats, so the
results go straight into the run store as JSON. Formulas come from scikit-learn wherever it
has them; MAP@R and the pair statistics are written here with NumPy/SciPy.

A degenerate snapshot (all points collapsed onto one, a single label, non-finite values
after a diverged step) gives ``float("nan")`` for the metrics it makes meaningless instead
of raising, so one bad snapshot never stops a run or a page.
"""

import warnings

import numpy as np
import torch
from scipy.spatial.distance import pdist
from scipy.stats import spearmanr
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    adjusted_mutual_info_score,
    adjusted_rand_score,
    davies_bouldin_score,
    normalized_mutual_info_score,
    r2_score,
    rand_score,
    silhouette_score,
)
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor, NearestNeighbors
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from contrast_core.pair_stats import NAN, PAIR_METRICS, checked, pair_distance_stats

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
    embeddings, labels = checked(embeddings, labels, "embeddings", "labels")
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
    ranked: bool = True,
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
        ranked: rank every train item for MAP@R (R neighbours per query); NaN when False, and
            precision@1 comes from each query's single nearest neighbour.

    Returns:
        ``knn_accuracy``, ``precision_at_1``, ``map_at_r`` (see `map_at_r`) and
        ``linear_probe_accuracy`` (standardised features + logistic regression); NaN when
        the embeddings are not finite or the train set has a single class (probe only).
    """
    train_emb, train_labels = checked(train_emb, train_labels, "train_emb", "train_labels")
    test_emb, test_labels = checked(test_emb, test_labels, "test_emb", "test_labels")
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
    if ranked:
        precision, mean_ap = _ranked_retrieval(train_emb, train_labels, test_emb, test_labels, ranking)
        result["precision_at_1"], result["map_at_r"] = precision, mean_ap
    else:
        nearest = knn.kneighbors(test_emb, n_neighbors=1, return_distance=False)[:, 0]  # (Q,)
        result["precision_at_1"] = float((train_labels[nearest] == test_labels).mean())
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


# What a snapshot measures, from cheapest to complete (see `evaluate`).
LIGHT_METRICS = ("knn_accuracy", "precision_at_1", "pos_mean", "neg_mean", "violation_fraction",
                 "pos_violation_fraction")  # fmt: skip
WHOLE_SET_METRICS = ("rand_index", "adjusted_rand", "nmi", "ami", "davies_bouldin", "silhouette", "map_at_r")
FINAL_METRICS = ("linear_probe_accuracy",)


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
    whole_set: bool = True,
) -> dict[str, float]:
    """A snapshot's metrics in one flat dict of floats, keyed as the non-VAE entries of `METRICS`.

    Three levels, each a superset of the one before, so a run can measure the cheap ones at every
    snapshot and the rest every few: LIGHT_METRICS always (k-NN accuracy and precision@1 from each
    query's nearest train items, the pair statistics); WHOLE_SET_METRICS with `whole_set` (KMeans
    agreement, the classes' separation, MAP@R: each needs the whole evaluation set, or R neighbours
    per query); FINAL_METRICS with `full` (the linear probe, the slowest; `full` implies `whole_set`).
    A metric not measured is left out of the dict; one measured but undefined is NaN (the violation
    fractions when margin is None, see `cluster_metrics` and `retrieval_metrics` for the others).

    Clustering and pair statistics are computed on the eval subset; retrieval and the linear probe
    use the train embeddings as references and the eval embeddings as queries.

    Args:
        train_emb: (N, D) train embeddings; a subset of a few thousand keeps retrieval cheap.
        train_labels: (N,) their labels.
        eval_emb: (E, D) evaluation-subset embeddings.
        eval_labels: (E,) their labels.
        n_clusters: KMeans clusters, usually the number of classes.
        distance: "euclidean", "squared-euclidean" or "cosine".
        margin: the loss margin, or None.
        seed: KMeans and subsampling seed.
        full: every metric, the linear probe included (for final snapshots).
        whole_set: the whole-set metrics too.
    """
    whole_set = whole_set or full
    pairs = pair_distance_stats(eval_emb, eval_labels, distance, margin, seed=seed)
    result = retrieval_metrics(train_emb, train_labels, eval_emb, eval_labels, metric=distance, linear_probe=full,
                               ranked=whole_set)  # fmt: skip
    if whole_set:
        result |= cluster_metrics(eval_emb, eval_labels, n_clusters, seed=seed)
    for key in ("pos_mean", "neg_mean", "violation_fraction", "pos_violation_fraction"):
        result[key] = NAN if pairs[key] is None else float(pairs[key])
    measured = LIGHT_METRICS + (WHOLE_SET_METRICS if whole_set else ()) + (FINAL_METRICS if full else ())
    return {key: value for key, value in result.items() if key in measured}


CONTINUOUS_METRICS = ("knn_r2", "spearman", "pos_mean", "neg_mean", "violation_fraction", "pos_violation_fraction")


def evaluate_continuous(
    train_emb: np.ndarray,
    train_targets: np.ndarray,
    eval_emb: np.ndarray,
    eval_targets: np.ndarray,
    distance: str,
    margin: float | None,
    delta: float,
    k: int = 5,
    seed: int = 0,
) -> dict[str, float]:
    """A snapshot's metrics for a continuous target (CONTINUOUS_METRICS), all cheap: measured at every snapshot.

    ``knn_r2``: R^2 of a k-nearest-neighbour regression (`distance`'s ranking, uniform weights) from the
    train embeddings to the eval targets. ``spearman``: Spearman's rank correlation, over every eval pair
    i < j, between the pair's embedding distance and its target difference |y_i - y_j| (1: the embedding
    orders pairs as the target does). The pair statistics as `evaluate` gives them, a pair being positive
    when its targets differ by at most `delta`. NaN where undefined (non-finite embeddings, constant inputs).
    """
    train_emb, train_targets = checked(train_emb, train_targets, "train_emb", "train_targets")
    eval_emb, eval_targets = checked(eval_emb, eval_targets, "eval_emb", "eval_targets")
    result = dict.fromkeys(("knn_r2", "spearman"), NAN)
    pairs = pair_distance_stats(eval_emb, eval_targets, distance, margin, seed=seed, delta=delta)
    for key in ("pos_mean", "neg_mean", "violation_fraction", "pos_violation_fraction"):
        result[key] = NAN if pairs[key] is None else float(pairs[key])
    if not (np.isfinite(train_emb).all() and np.isfinite(eval_emb).all()):
        return result
    knn = KNeighborsRegressor(n_neighbors=min(k, len(train_emb)), metric=RANKING_METRICS[distance])
    predicted = knn.fit(train_emb, train_targets).predict(eval_emb)
    if len(eval_targets) >= 2 and np.ptp(eval_targets) > 0:
        result["knn_r2"] = float(r2_score(eval_targets, predicted))
    distances = pdist(eval_emb, metric=PAIR_METRICS[distance])  # (E(E-1)/2,) in the same order as
    differences = pdist(eval_targets.reshape(-1, 1), metric="cityblock")  # the target differences
    if len(distances) >= 2 and np.ptp(distances) > 0 and np.ptp(differences) > 0:
        result["spearman"] = float(spearmanr(distances, differences).statistic)
    return result


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
