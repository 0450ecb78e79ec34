"""What every choice of a run means, with nothing heavy imported: no torch, no scikit-learn.

The config, the form, the tables, the diagnosis and every page read the rules here; the engine's
modules implement them, each class as a subclass of its rules (`distances.Euclidean` is
`rules.Euclidean` with `pairwise` and `paired`, `losses.ContrastiveLoss` is `rules.Contrastive`
and an `nn.Module`, `samplers.BatchAll` is `rules.BatchAll` with `draw` and `mine`). So a rule is
written once, and the page process never loads torch (workers hold it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DATASETS = (
    "digits",
    "digits-60k",
    "moons",
    "blobs",
    "circles",
    "diabetes",
    "mnist",
    "fashion-mnist",
    "kmnist",
    "cifar10",
    "csv",
    "folder",
)


@dataclass(frozen=True)
class Target:
    """A bundled dataset's continuous target, as the form shows it beside the `delta` knob."""

    about: str
    low: float
    high: float
    std: float  # of every item's target (the run's default delta is a quarter of its training targets')


TARGETS = {"diabetes": Target("disease progression one year after baseline", 25.0, 346.0, 77.0)}
ENCODERS = ("mlp", "cnn", "resnet18")
AUTOENCODERS = ("vae", "aae")  # the VAE family: an encoder, a decoder and its reconstructions
MODELS = (*ENCODERS, *AUTOENCODERS)
REDUCTIONS = ("mean", "mean-nonzero")


# Distances: every one is a *distance* (smaller means closer); a margin reads in its units.


class Distance:
    """A distance's range, its usual margin, and how its values map to cosine distances of unit vectors."""

    name: str
    low: float = 0.0
    high: float = math.inf  # the largest value the distance can take
    default_margin: float = 1.0

    def from_cosine(self, d_cos: float) -> float:
        """The value of this distance between unit vectors whose cosine distance is `d_cos`."""
        raise NotImplementedError

    def to_cosine(self, d: float) -> float:
        """Inverse of `from_cosine`: the cosine distance of unit vectors at distance `d`."""
        raise NotImplementedError


class SquaredEuclidean(Distance):
    name = "squared-euclidean"

    def from_cosine(self, d_cos):
        return 2 * d_cos  # |a - b|^2 = 2 - 2 cos for unit vectors

    def to_cosine(self, d):
        return d / 2


class Euclidean(SquaredEuclidean):
    name = "euclidean"

    def from_cosine(self, d_cos):
        return math.sqrt(2 * d_cos)

    def to_cosine(self, d):
        return d * d / 2


class Cosine(Distance):
    """`1 - cos(x, y)`, in [0, 2]."""

    name = "cosine"
    high = 2.0
    default_margin = 0.5

    def from_cosine(self, d_cos):
        return d_cos

    def to_cosine(self, d):
        return d


DISTANCES: dict[str, type[Distance]] = {"euclidean": Euclidean, "squared-euclidean": SquaredEuclidean, "cosine": Cosine}


def distance(name: str) -> Distance:
    """The rules of the distance called `name` (a key of DISTANCES)."""
    return DISTANCES[name]()


def convert_margin(margin: float, source: str, target: str) -> float:
    """The margin in `target` units that matches `margin` in `source` units for unit vectors.

    For unit vectors `d_euclid^2 = d_sq = 2 * d_cos`, so a margin keeps its meaning between metrics.
    """
    return distance(target).from_cosine(distance(source).to_cosine(margin))


def as_measured(embeddings: np.ndarray, distance: str) -> np.ndarray:
    """(E, D) -> (E, D): embeddings as `distance` sees them. The cosine ignores length, so for it
    each row is scaled to unit length (zero rows stay zero); other distances take them as they are."""
    if distance != "cosine":
        return embeddings
    embeddings = np.asarray(embeddings)
    return embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)


# Objectives: the rules of each loss (its implementation is in losses.py).


class Objective:
    """A loss's rules, as class methods that need no instance.

    Class attributes:
        kind: the input it takes ("pairs", "triplets", "views" or "labels").
        knobs: the RunConfig fields it reads; the others are ignored (with a note).
        natural_distance: the distance of a run that names none.
    """

    kind: str
    knobs: frozenset[str] = frozenset()
    natural_distance: str = "euclidean"

    @classmethod
    def measures_with(cls, distance: str | None = None) -> str:
        """The distance it measures with: the run's choice if it reads one, else its natural one."""
        return distance if distance and "distance" in cls.knobs else cls.natural_distance

    @classmethod
    def margin_limits(cls, distance: str | None = None) -> tuple[float, float] | None:
        """(low, high) of the margin in its own units (None without a margin): a distance margin
        lies in the distance's range (cosine: [0, 2])."""
        if "margin" not in cls.knobs:
            return None
        metric = DISTANCES[cls.measures_with(distance)]
        return metric.low, metric.high

    @classmethod
    def margin_unit(cls, distance: str | None = None) -> str:
        """What the margin's number is: "euclidean distance", "cosine similarity", ..."""
        return f"{cls.measures_with(distance)} distance"

    @classmethod
    def default_margin(cls, distance: str | None = None) -> float:
        return DISTANCES[cls.measures_with(distance)].default_margin

    @classmethod
    def margin_as_distance(cls, margin: float) -> float | None:
        """The margin in the units of the distance it measures with (None without a margin)."""
        return margin if "margin" in cls.knobs else None

    @classmethod
    def margin_from_distance(cls, d: float) -> float:
        """Inverse of `margin_as_distance`."""
        return d

    @classmethod
    def collapsed_loss(cls, margin: float, reduction: str, negative_share: float | None, items: int) -> float | None:
        """The loss a collapsed embedding (every distance 0) pays; None when the batch decides it.

        Args:
            margin: the run's margin, in the loss's own units.
            reduction: "mean" or "mean-nonzero".
            negative_share: the share of negative pairs the sampler mines, if it is fixed.
            items: items embedded per batch.
        """
        return None


class Contrastive(Objective):
    kind = "pairs"
    knobs = frozenset({"margin", "distance", "reduction"})

    @classmethod
    def collapsed_loss(cls, margin, reduction, negative_share, items):
        if reduction == "mean-nonzero":
            return margin * margin  # only the negatives are non-zero, each (m - 0)^2
        return None if negative_share is None else negative_share * margin * margin


class CosineEmbedding(Objective):
    """Always measures with the cosine; its margin is a *similarity* in [-1, 1] (distance `1 - margin`)."""

    kind = "pairs"
    knobs = frozenset({"margin"})
    natural_distance = "cosine"

    @classmethod
    def margin_limits(cls, distance=None):
        return -1.0, 1.0

    @classmethod
    def margin_unit(cls, distance=None):
        return "cosine similarity"

    @classmethod
    def default_margin(cls, distance=None):
        return 0.0  # torch's default

    @classmethod
    def margin_as_distance(cls, margin):
        return 1 - margin  # max(0, cos - m) is zero once 1 - cos > 1 - m

    @classmethod
    def margin_from_distance(cls, d):
        return 1 - d

    @classmethod
    def collapsed_loss(cls, margin, reduction, negative_share, items):
        # Negatives at cos = 1 pay max(0, 1 - m); positives pay 1 - 1 = 0.
        return None if negative_share is None else negative_share * max(0.0, 1 - margin)


class Triplet(Objective):
    kind = "triplets"
    knobs = frozenset({"margin", "distance", "reduction"})

    @classmethod
    def collapsed_loss(cls, margin, reduction, negative_share, items):
        return margin  # max(0, 0 - 0 + m) for every triplet


class NTXent(Objective):
    kind = "views"
    knobs = frozenset({"temperature", "distance"})
    natural_distance = "cosine"

    @classmethod
    def collapsed_loss(cls, margin, reduction, negative_share, items):
        return math.log(2 * items - 1)  # equal logits: the positive is one of 2N - 1 others


class SupCon(Objective):
    kind = "labels"
    knobs = frozenset({"temperature", "distance"})
    natural_distance = "cosine"

    @classmethod
    def collapsed_loss(cls, margin, reduction, negative_share, items):
        return math.log(items - 1)  # equal logits: each positive is one of B - 1 others


LOSSES: dict[str, type[Objective]] = {
    "contrastive": Contrastive,
    "cosine-embedding": CosineEmbedding,
    "triplet": Triplet,
    "nt-xent": NTXent,
    "supcon": SupCon,
}


# Samplers: which loss kinds each can feed, and what one step's mining holds in memory.


class Sampler:
    """A sampler's rules.

    Class attributes:
        kinds: the loss kinds it can feed.
        graph_kinds: the kinds for which draw + mine have fixed shapes and never wait on the device,
            so a whole training step can be captured as a CUDA graph.
        negative_share: the share of negative pairs among the pairs it mines, where that is fixed.
        finds_on_collapse: whether it still mines pairs / triplets when every distance is 0.
        labelled_kinds: the kinds it feeds only with a RunConfig `label_fraction` (semi-supervised:
            that share of each class labelled, the other items each a class of its own).
    """

    kinds: frozenset[str] = frozenset()
    graph_kinds: frozenset[str] = frozenset()
    labelled_kinds: frozenset[str] = frozenset()
    negative_share: float | None = None
    finds_on_collapse = True

    @classmethod
    def peak_bytes(cls, batch_size: int, m_per_class: int, embedding_dim: int, kind: str) -> int:
        """An upper estimate of the memory one step's sampling and mining holds at once, in bytes:
        what decides whether a large batch fits (the model and the data are small beside it)."""
        b, d = batch_size, embedding_dim
        return 4 * 4 * b * b + 2 * 8 * 4 * b * d  # a few (B, B) distances, (B, D) copies and their gradients


class RandomPairs(Sampler):
    kinds = graph_kinds = frozenset({"pairs"})
    negative_share = 0.5


class AugmentedViews(Sampler):
    kinds = graph_kinds = frozenset({"views", "pairs"})
    labelled_kinds = frozenset({"labels"})  # SupCon over both views: NT-Xent at label_fraction 0, supervised at 1
    negative_share = 0.5

    @classmethod
    def peak_bytes(cls, batch_size, m_per_class, embedding_dim, kind):
        rows = 2 * batch_size if kind == "labels" else batch_size  # SupCon's (2N, 2N) over both views
        return super().peak_bytes(rows, m_per_class, embedding_dim, kind)


class ClassBalanced(Sampler):
    # Per (B, B, B) entry while triplets are mined: the bool masks and what torch's nonzero takes over them.
    # Measured on a CPU: batch-all triplets at batch 512 / 1024 grew the process by 1.3 / 10.7 GB (10 bytes),
    # semi-hard at 512 by 1.0 GB.
    mask_bytes = 10

    @classmethod
    def peak_bytes(cls, batch_size, m_per_class, embedding_dim, kind):
        b, d, m = batch_size, embedding_dim, min(m_per_class, batch_size)
        base = super().peak_bytes(batch_size, m_per_class, embedding_dim, kind)
        if kind == "triplets":  # anchors x positives x negatives, indexed (int64) and gathered with gradients
            t = b * (m - 1) * (b - m)
            return base + cls.mask_bytes * b**3 + 3 * 8 * t + 2 * 3 * 4 * t * d
        if kind == "pairs":  # every pair of the batch
            p = b * (b - 1) // 2
            return base + 2 * 8 * p + 2 * 2 * 4 * p * d
        return base


class BatchAll(ClassBalanced):
    kinds = frozenset({"pairs", "triplets", "labels"})
    graph_kinds = frozenset({"pairs"})


class BatchHard(ClassBalanced):
    kinds = frozenset({"pairs", "triplets"})
    negative_share = 0.5  # as pairs: (anchor, hardest positive) and (anchor, hardest negative)

    @classmethod
    def peak_bytes(cls, batch_size, m_per_class, embedding_dim, kind):
        return Sampler.peak_bytes(batch_size, m_per_class, embedding_dim, kind)  # (B, B) only: one per anchor


class SemiHard(ClassBalanced):
    kinds = frozenset({"triplets"})
    finds_on_collapse = False  # a collapsed embedding has no negative farther than its positive


SAMPLERS: dict[str, type[Sampler]] = {
    "random-pairs": RandomPairs,
    "augmented-views": AugmentedViews,
    "batch-all": BatchAll,
    "batch-hard": BatchHard,
    "semi-hard": SemiHard,
}


# Metrics: how each is named and read (computed in metrics.py).


@dataclass(frozen=True)
class Metric:
    """How a metric is named and read: one table for the engine, the live panels and the run tables."""

    label: str  # short: a tile, a table column, a chart legend
    help: str  # one sentence: what it measures
    better: str  # "higher", "lower" or "neither" (which way a change is good)
    group: str  # "cluster", "retrieval", "pairs" (from `evaluate`), "regression" (`evaluate_continuous`), "vae"


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
    "knn_r2": Metric("k-NN R²", "R² of a 5-nearest-neighbour regression of the continuous target, train -> eval (1 = exact, 0 = no better than its mean)", "higher", "regression"),
    "spearman": Metric("Spearman", "Spearman rank correlation of held-out pairs' embedding distance with their target difference |y1 - y2| (1 = in the same order)", "higher", "regression"),
    "pos_mean": Metric("Positive distance", "Mean distance of positive (same-label) pairs", "lower", "pairs"),
    "neg_mean": Metric("Negative distance", "Mean distance of negative (different-label) pairs", "higher", "pairs"),
    "violation_fraction": Metric("Negatives inside margin", "Fraction of negative pairs closer than the margin", "lower", "pairs"),
    "pos_violation_fraction": Metric("Positives outside margin", "Fraction of positive pairs farther than the margin", "lower", "pairs"),
    "recon_mse": Metric("Recon. MSE", "Mean squared error per pixel of the autoencoder's (VAE, AAE) reconstructions of held-out items", "lower", "vae"),
    "kl": Metric("KL", "KL divergence of the VAE's posterior from N(0, I), per item", "neither", "vae"),
}  # fmt: skip


# Margins across losses and distances (the Playground's slider, links and sweeps carry a margin over).


def margin_scale(loss: str, metric: str | None) -> tuple[float, float, float]:
    """(low, high, default) of a margin for `loss` measuring with `metric`: the loss's margin limits, an
    unbounded distance shown up to 2.5x the distance of opposite unit vectors (5 Euclidean, 10 squared)."""
    objective = LOSSES[loss]
    low, high = objective.margin_limits(metric) or (0.0, 1.0)
    if not math.isfinite(high):
        high = 2.5 * distance(objective.measures_with(metric)).from_cosine(2.0)
    return low, float(high), objective.default_margin(metric)


def margin_to_cosine(margin: float, loss: str, metric: str | None) -> float:
    """The cosine distance between unit vectors that this margin stands for."""
    objective = LOSSES[loss]
    return distance(objective.measures_with(metric)).to_cosine(objective.margin_as_distance(margin))


def translate_margin(margin: float, old: tuple[str, str | None], new: tuple[str, str | None]) -> float:
    """Carries a margin over a change of (loss, distance), keeping its meaning on unit vectors (a loss
    without a margin hands over the new one's default); rounded to 0.01, within the new limits."""
    if "margin" not in LOSSES[old[0]].knobs:
        return margin_scale(*new)[2]
    d_cos = min(max(margin_to_cosine(margin, *old), 0.0), 2.0)
    objective = LOSSES[new[0]]
    value = objective.margin_from_distance(distance(objective.measures_with(new[1])).from_cosine(d_cos))
    low, high, _ = margin_scale(*new)
    return round(min(max(value, low), high), 2)


def carried_margin(margin: float, old: tuple[str, str | None], new: tuple[str, str | None]) -> float:
    """`margin`, set for the `old` (loss, distance), carried to the `new` one as a link or a sweep that changes
    the loss or distance carries it: with its meaning on unit vectors (`translate_margin`); as it is where
    either loss reads no margin or it has no unit-vector equivalent (RunConfig then judges it).

    Raises:
        KeyError: an unknown loss or distance.
    """
    if "margin" not in LOSSES[old[0]].knobs or "margin" not in LOSSES[new[0]].knobs:
        return margin
    if not 0 <= margin_to_cosine(margin, *old) <= 2:
        return margin
    return translate_margin(margin, old, new)
