"""Distances between embeddings, and how a margin reads for each.

Every distance here is a *distance*: smaller means closer. A loss holds a distance object,
so one contrastive or triplet loss serves all of them.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


class Distance:
    """Base class: `pairwise(x, y) -> (N, M)` and `paired(x, y) -> (N,)`."""

    name: str
    low: float = 0.0
    high: float = math.inf  # the largest value the distance can take
    default_margin: float = 1.0

    def pairwise(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def paired(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def from_cosine(self, d_cos: float) -> float:
        """The value of this distance between unit vectors whose cosine distance is `d_cos`."""
        raise NotImplementedError

    def to_cosine(self, d: float) -> float:
        """Inverse of `from_cosine`: the cosine distance of unit vectors at distance `d`."""
        raise NotImplementedError


class SquaredEuclidean(Distance):
    name = "squared-euclidean"
    default_margin = 1.0

    def pairwise(self, x, y):  # (N, D), (M, D) -> (N, M)
        sq = (x * x).sum(1, keepdim=True) - 2 * x @ y.T + (y * y).sum(1)
        return sq.clamp_min(0)

    def paired(self, x, y):  # (N, D), (N, D) -> (N,)
        return (x - y).pow(2).sum(1)

    def from_cosine(self, d_cos):
        return 2 * d_cos  # |a - b|^2 = 2 - 2 cos for unit vectors

    def to_cosine(self, d):
        return d / 2


class Euclidean(SquaredEuclidean):
    """`|x - y|`. Its gradient is the unit vector `(x - y) / |x - y|` at every d > 0, however small,
    and 0 at d = 0 (torch's subgradient of the norm), never infinite or NaN.

    `paired` works on the differences, so it is exact at any distance. `pairwise` is `torch.cdist`,
    which for more than 25 rows computes distances through a matrix product (as fast as the
    squared form): in float32 that resolves distances down to about 1e-3 of the vectors' length.
    """

    name = "euclidean"

    def pairwise(self, x, y):  # (N, D), (M, D) -> (N, M)
        return torch.cdist(x, y)

    def paired(self, x, y):  # (N, D), (N, D) -> (N,)
        return torch.linalg.vector_norm(x - y, dim=1)

    def from_cosine(self, d_cos):
        return math.sqrt(2 * d_cos)

    def to_cosine(self, d):
        return d * d / 2


class Cosine(Distance):
    """`1 - cos(x, y)`, in [0, 2]."""

    name = "cosine"
    high = 2.0
    default_margin = 0.5

    def pairwise(self, x, y):
        return 1 - F.normalize(x, dim=1) @ F.normalize(y, dim=1).T

    def paired(self, x, y):
        return 1 - F.cosine_similarity(x, y, dim=1)

    def from_cosine(self, d_cos):
        return d_cos

    def to_cosine(self, d):
        return d


DISTANCES: dict[str, type[Distance]] = {
    "euclidean": Euclidean,
    "squared-euclidean": SquaredEuclidean,
    "cosine": Cosine,
}


def as_measured(embeddings, distance: str):
    """(E, D) -> (E, D): embeddings as `distance` sees them. The cosine ignores length, so for it
    each row is scaled to unit length (zero rows stay zero); other distances take them as they are.
    A torch tensor or a NumPy array, returned as the same type.
    """
    if distance != "cosine":
        return embeddings
    if isinstance(embeddings, torch.Tensor):
        return F.normalize(embeddings, dim=1)
    embeddings = np.asarray(embeddings)
    return embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)


def build(name: str) -> Distance:
    """The distance called `name` (a key of DISTANCES)."""
    return DISTANCES[name]()


def convert_margin(margin: float, source: str, target: str) -> float:
    """The margin in `target` units that matches `margin` in `source` units for unit vectors.

    For unit vectors `d_euclid^2 = d_sq = 2 * d_cos`, so a margin keeps its meaning between metrics.
    """
    d_cos = build(source).to_cosine(margin)
    return build(target).from_cosine(d_cos)
