"""Samplers draw a batch of dataset indices; miners turn the batch's embeddings into what a loss takes.

Everything is tensor ops on index tensors: no Python loop over samples.

A sampler has
- `draw(generator) -> Batch`: which items to embed (and whether as two augmented views);
- `mine(embeddings, batch, kind) -> tuple`: the arguments of a loss of that `kind`
  (see losses.py): pairs `(x1, x2, same)`, triplets `(anchor, positive, negative)`,
  views `(z_a, z_b)` or labels `(z, labels)`.
- `kinds`: the loss kinds it can feed.
- `graph_kinds`: the kinds for which draw + mine have fixed shapes and never wait on the
  device, so a whole training step can be captured as a CUDA graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from contrast_core.distances import Distance


@dataclass
class Batch:
    index: torch.Tensor  # (B,) dataset rows to embed, in order
    labels: torch.Tensor  # (B,) class ids, or item ids for augmented views
    same: torch.Tensor | None = None  # (P,) pairs: rows i and P + i form pair i; 1 = similar, 0 = dissimilar
    views: bool = False  # True: rows [0, N) and [N, 2N) are two augmented views of the same items


class ClassIndex:
    """Rows of each class as one padded (C, max_count) tensor, for vectorised draws by class."""

    def __init__(self, labels: torch.Tensor):  # (N,) labels of the rows that may be drawn
        classes, self.counts = labels.unique(return_counts=True)  # (C,), (C,)
        self.classes = classes
        order = torch.argsort(labels, stable=True)
        starts = torch.cumsum(self.counts, 0) - self.counts
        offset = torch.arange(len(labels), device=labels.device) - starts.repeat_interleave(self.counts)
        self.table = torch.zeros(len(classes), int(self.counts.max()), dtype=torch.long, device=labels.device)
        self.table[torch.searchsorted(classes, labels[order]), offset] = order

    def draw(self, class_pos: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """One random row of each class position in `class_pos` (any shape), uniform within the class."""
        u = torch.rand(class_pos.shape, generator=g, device=class_pos.device)
        within = (u * self.counts[class_pos]).long()
        return self.table[class_pos, within]


class Sampler:
    """Base sampler over the rows `pool` (dataset indices) with labels `labels` (N,)."""

    kinds: frozenset[str] = frozenset()
    graph_kinds: frozenset[str] = frozenset()

    def __init__(self, pool: torch.Tensor, labels: torch.Tensor, batch_size: int, m_per_class: int = 4):
        self.pool, self.pool_labels = pool, labels[pool]  # (N_train,), (N_train,)
        self.by_class = ClassIndex(self.pool_labels)
        self.batch_size, self.m_per_class = batch_size, m_per_class
        self.margin = 0.0  # set by the trainer for margin-aware miners (semi-hard)
        self.distance: Distance | None = None

    def draw(self, g: torch.Generator) -> Batch:
        raise NotImplementedError

    def mine(self, embeddings: torch.Tensor, batch: Batch, kind: str) -> tuple:
        raise NotImplementedError


class RandomPairs(Sampler):
    """`batch_size` pairs, half similar and half dissimilar (the classic Siamese recipe)."""

    kinds = graph_kinds = frozenset({"pairs"})

    def draw(self, g):
        n_pairs, n_classes = self.batch_size, len(self.by_class.classes)
        dev = self.pool.device
        first = torch.randint(len(self.pool), (n_pairs,), generator=g, device=dev)
        first_class = torch.searchsorted(self.by_class.classes, self.pool_labels[first])
        same = (torch.arange(n_pairs, device=dev) < n_pairs // 2).long()  # exactly 50 / 50
        # A dissimilar partner's class is uniform over the other classes.
        shift = torch.randint(1, n_classes, (n_pairs,), generator=g, device=dev) * (1 - same)
        second = self.by_class.draw((first_class + shift) % n_classes, g)
        rows = torch.cat([first, second])
        return Batch(self.pool[rows], self.pool_labels[rows], same=same)

    def mine(self, embeddings, batch, kind):
        first, second = embeddings.chunk(2)  # views, not gathers: no scatter in the backward pass
        return first, second, batch.same


class AugmentedViews(Sampler):
    """`batch_size` items, each embedded as two random augmentations; no labels used.

    Views of one item are positives; for pair losses, each item's first view is also paired
    with another item's second view as a negative (so pairs are 50 / 50).
    """

    kinds = graph_kinds = frozenset({"views", "pairs"})

    def draw(self, g):
        dev = self.pool.device
        items = torch.randint(len(self.pool), (self.batch_size,), generator=g, device=dev)
        ids = torch.arange(self.batch_size, device=dev)
        return Batch(self.pool[items].repeat(2), ids.repeat(2), views=True)

    def mine(self, embeddings, batch, kind):
        z_a, z_b = embeddings.chunk(2)  # (N, D) each
        if kind == "views":
            return z_a, z_b
        n = len(z_a)
        other = torch.roll(torch.arange(n, device=z_a.device), 1)
        same = (torch.arange(2 * n, device=z_a.device) < n).float()
        return torch.cat([z_a, z_a]), torch.cat([z_b, z_b[other]]), same


class ClassBalanced(Sampler):
    """`batch_size` items: `m_per_class` from each of `batch_size // m_per_class` random classes.

    With fewer classes than that, every class is drawn and gives more items, so the batch
    still holds `batch_size` items (rounded down to a multiple of the class count).
    """

    def draw(self, g):
        n_classes = len(self.by_class.classes)
        k = min(n_classes, max(2, self.batch_size // self.m_per_class))
        m = max(self.m_per_class, self.batch_size // k)
        dev = self.pool.device
        chosen = torch.randperm(n_classes, generator=g, device=dev)[:k]  # (k,)
        rows = self.by_class.draw(chosen[:, None].expand(k, m), g).flatten()  # (k * m,)
        return Batch(self.pool[rows], self.pool_labels[rows])

    def _masks(self, labels):
        same = labels[:, None] == labels[None, :]  # (B, B)
        positive = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        return positive, ~same

    def mine(self, embeddings, batch, kind):
        if kind == "labels":
            return embeddings, batch.labels
        positive, negative = self._masks(batch.labels)
        if kind == "pairs":
            i, j = torch.triu_indices(len(embeddings), len(embeddings), 1, device=embeddings.device)
            return embeddings[i], embeddings[j], positive[i, j].long()
        a, p, n = self.triplets(embeddings.detach(), positive, negative)
        return embeddings[a], embeddings[p], embeddings[n]

    def triplets(self, embeddings, positive, negative):
        """All valid triplets (a, p, n): label(a) = label(p), a != p, label(n) != label(a)."""
        valid = positive[:, :, None] & negative[:, None, :]  # (B, B, B)
        return valid.nonzero(as_tuple=True)


class BatchAll(ClassBalanced):
    """Every valid pair / triplet of a class-balanced batch (Hermans et al. 2017, "batch all")."""

    kinds = frozenset({"pairs", "triplets", "labels"})
    graph_kinds = frozenset({"pairs"})


class BatchHard(ClassBalanced):
    """For each anchor, its farthest positive and closest negative in the batch
    (Hermans, Beyer & Leibe, "In Defense of the Triplet Loss for Person Re-Identification", 2017)."""

    kinds = frozenset({"pairs", "triplets"})

    def _hardest(self, embeddings, batch):
        positive, negative = self._masks(batch.labels)
        d = self.distance.pairwise(embeddings.detach(), embeddings.detach())  # (B, B)
        hardest_pos = d.masked_fill(~positive, float("-inf")).argmax(1)
        hardest_neg = d.masked_fill(~negative, float("inf")).argmin(1)
        has_both = positive.any(1) & negative.any(1)
        anchors = torch.arange(len(d), device=d.device)[has_both]
        return anchors, hardest_pos[has_both], hardest_neg[has_both]

    def mine(self, embeddings, batch, kind):
        a, p, n = self._hardest(embeddings, batch)
        if kind == "triplets":
            return embeddings[a], embeddings[p], embeddings[n]
        same = (torch.arange(2 * len(a), device=embeddings.device) < len(a)).float()
        return embeddings[torch.cat([a, a])], embeddings[torch.cat([p, n])], same


class SemiHard(ClassBalanced):
    """Triplets whose negative is farther than the positive but inside the margin:
    d(a, p) < d(a, n) < d(a, p) + margin (Schroff et al., "FaceNet", 2015)."""

    kinds = frozenset({"triplets"})

    def triplets(self, embeddings, positive, negative):
        d = self.distance.pairwise(embeddings, embeddings)  # (B, B)
        d_ap, d_an = d[:, :, None], d[:, None, :]  # (B, B, 1), (B, 1, B)
        semi_hard = (d_an > d_ap) & (d_an < d_ap + self.margin)
        valid = positive[:, :, None] & negative[:, None, :] & semi_hard
        return valid.nonzero(as_tuple=True)


SAMPLERS: dict[str, type[Sampler]] = {
    "random-pairs": RandomPairs,
    "augmented-views": AugmentedViews,
    "batch-all": BatchAll,
    "batch-hard": BatchHard,
    "semi-hard": SemiHard,
}


def build(name: str, pool: torch.Tensor, labels: torch.Tensor, batch_size: int, m_per_class: int = 4) -> Sampler:
    """The sampler called `name` over dataset rows `pool`; `labels` are all rows' labels."""
    return SAMPLERS[name](pool, labels, batch_size, m_per_class)
