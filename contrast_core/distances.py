"""Distances between embeddings, and how a margin reads for each.

Every distance here is a *distance*: smaller means closer. A loss holds a distance object,
so one contrastive or triplet loss serves all of them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from contrast_core import rules


class Distance(rules.Distance):
    """Base class: `pairwise(x, y) -> (N, M)` and `paired(x, y) -> (N,)`; its range and margin rules
    are in `rules.Distance`."""

    def pairwise(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def paired(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class SquaredEuclidean(rules.SquaredEuclidean, Distance):
    def pairwise(self, x, y):  # (N, D), (M, D) -> (N, M)
        sq = (x * x).sum(1, keepdim=True) - 2 * x @ y.T + (y * y).sum(1)
        return sq.clamp_min(0)

    def paired(self, x, y):  # (N, D), (N, D) -> (N,)
        return (x - y).pow(2).sum(1)


class Euclidean(rules.Euclidean, SquaredEuclidean):
    """`|x - y|`. Its gradient is the unit vector `(x - y) / |x - y|` at every d > 0, however small,
    and 0 at d = 0 (torch's subgradient of the norm), never infinite or NaN.

    `paired` works on the differences, so it is exact at any distance. `pairwise` is `torch.cdist`,
    which for more than 25 rows computes distances through a matrix product (as fast as the
    squared form): in float32 that resolves distances down to about 1e-3 of the vectors' length.
    """

    def pairwise(self, x, y):  # (N, D), (M, D) -> (N, M)
        return torch.cdist(x, y)

    def paired(self, x, y):  # (N, D), (N, D) -> (N,)
        return torch.linalg.vector_norm(x - y, dim=1)


class Cosine(rules.Cosine, Distance):
    """`1 - cos(x, y)`, in [0, 2]."""

    def pairwise(self, x, y):
        return 1 - F.normalize(x, dim=1) @ F.normalize(y, dim=1).T

    def paired(self, x, y):
        return 1 - F.cosine_similarity(x, y, dim=1)


DISTANCES: dict[str, type[Distance]] = {
    "euclidean": Euclidean,
    "squared-euclidean": SquaredEuclidean,
    "cosine": Cosine,
}


def as_measured(embeddings, distance: str):
    """(E, D) -> (E, D): embeddings as `distance` sees them (`rules.as_measured`), for a torch
    tensor or a NumPy array, returned as the same type."""
    if distance == "cosine" and isinstance(embeddings, torch.Tensor):
        return F.normalize(embeddings, dim=1)
    return rules.as_measured(embeddings, distance)


def build(name: str) -> Distance:
    """The distance called `name` (a key of DISTANCES)."""
    return DISTANCES[name]()
