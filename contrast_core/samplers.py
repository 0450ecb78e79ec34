"""Samplers draw a batch of dataset indices; miners turn the batch's embeddings into what a loss takes.

Everything is tensor ops on index tensors: no Python loop over samples. Within a batch an item
is drawn at most once wherever the pool allows (as pytorch-metric-learning's MPerClassSampler):
a repeated item would be its own false negative for NT-Xent and SupCon.

With a continuous target (`targets` and `delta`), two items are similar when their targets are at
most `delta` apart: batches carry targets instead of labels, miners judge pairs by that rule, and the
class-balanced samplers balance over bins `delta` wide (a bin's items are all similar to each other).

A sampler is built with the distance and margin (in distance units) its miner uses, and has
- `draw(generator) -> Batch`: which items to embed (and whether as two augmented views);
- `mine(embeddings, batch, kind)`: the arguments of a loss of that `kind` as a named tuple
  (see losses.py): `Pairs`, `Triplets`, `Views` or `Labelled`;
and inherits its rules from `rules.py`:
- `kinds`: the loss kinds it can feed;
- `graph_kinds`: the kinds for which draw + mine have fixed shapes and never wait on the
  device, so a whole training step can be captured as a CUDA graph;
- `negative_share`: the share of negative pairs among the pairs it mines, where that is fixed;
- `peak_bytes(...)`: an upper estimate of one step's sampling and mining memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from contrast_core import rules
from contrast_core.distances import Distance
from contrast_core.losses import positive_mask, similar

# A pool this many times the draw or larger is sampled by rejection (cost O(draw)), a smaller one by
# sorting random keys (cost O(pool)). Rejection keeps the first distinct values of 4x as many draws
# with replacement: fewer than needed is then vanishingly rare (m = 2 of 32: 32^-7).
REJECTION_POOL_FACTOR = 16
REJECTION_OVERDRAW = 4


class Pairs(NamedTuple):
    x1: torch.Tensor  # (P, D)
    x2: torch.Tensor  # (P, D)
    same: torch.Tensor  # (P,) 1 = similar, 0 = dissimilar


class Triplets(NamedTuple):
    anchor: torch.Tensor  # (T, D)
    positive: torch.Tensor  # (T, D)
    negative: torch.Tensor  # (T, D)


class Views(NamedTuple):
    z_a: torch.Tensor  # (N, D) first view of each item
    z_b: torch.Tensor  # (N, D) second view, same order


class Labelled(NamedTuple):
    z: torch.Tensor  # (B, D)
    labels: torch.Tensor  # (B,)


@dataclass
class Batch:
    index: torch.Tensor  # (B,) dataset rows to embed, in order
    # (B,) class ids, targets (a continuous target), or item ids for augmented views (with a label_fraction,
    # a labelled item's is batch_size + its class)
    labels: torch.Tensor
    same: torch.Tensor | None = None  # (P,) pairs: rows i and P + i form pair i; 1 = similar, 0 = dissimilar
    views: bool = False  # True: rows [0, N) and [N, 2N) are two augmented views of the same items


def distinct_positions(counts: torch.Tensor, bounds: tuple[int, int], m: int, g: torch.Generator) -> torch.Tensor:
    """(R,) row sizes -> (R, m): m different positions in [0, counts[r]) per row, a uniformly random
    subset in random order. A row with fewer than m positions gives each once, then again.

    `bounds` are (min, max) of `counts`, known on the host: the method is chosen from them, so the
    shapes are fixed and nothing waits on the device (graph-capturable).
    """
    dev, (smallest, largest) = counts.device, bounds
    if smallest >= REJECTION_POOL_FACTOR * m:  # pool much larger than the draw: O(m) per row
        n = REJECTION_OVERDRAW * m
        draws = (torch.rand(len(counts), n, generator=g, device=dev) * counts[:, None]).long()  # (R, n)
        ordered, order = draws.sort(dim=1, stable=True)
        first = torch.ones_like(draws, dtype=torch.bool)
        first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]  # first occurrence of each value, sorted order
        first = torch.zeros_like(first).scatter_(1, order, first)  # back in draw order
        rank = torch.arange(n, device=dev) + n * (~first)  # first occurrences first, in draw order
        return draws.gather(1, rank.topk(m, dim=1, largest=False).indices)
    keys = torch.rand(len(counts), largest, generator=g, device=dev)  # (R, largest)
    padding = torch.arange(largest, device=dev) >= counts[:, None]
    order = keys.masked_fill(padding, 2.0).argsort(dim=1)  # real positions first, in random order
    return order.gather(1, torch.arange(m, device=dev) % counts[:, None])


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
        self.position = torch.empty_like(labels, dtype=torch.long)  # (N,) each row's place in its class
        self.position[order] = offset
        self.bounds = int(self.counts.min()), int(self.counts.max())

    def draw(self, class_pos: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """One random row of each class position in `class_pos` (any shape), uniform within the class."""
        u = torch.rand(class_pos.shape, generator=g, device=class_pos.device)
        within = (u * self.counts[class_pos]).long()
        return self.table[class_pos, within]

    def draw_distinct(self, class_pos: torch.Tensor, m: int, g: torch.Generator) -> torch.Tensor:
        """(k,) class positions -> (k, m) rows: m different rows of each class (repeats only in a
        class with fewer than m rows). The method is chosen from all classes' sizes, so it is fixed."""
        within = distinct_positions(self.counts, self.bounds, m, g)  # (C, m): cheap for a dataset's few classes
        return self.table[class_pos[:, None], within[class_pos]]


class Sampler(rules.Sampler):
    """Base sampler over the rows `pool` (dataset indices) with labels `labels` (N,), or with a continuous
    target `targets` (N,) whose items are similar within `delta`."""

    def __init__(
        self,
        pool: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        m_per_class: int = 4,
        distance: Distance | None = None,
        margin: float = 0.0,  # in the distance's units (semi-hard mining)
        targets: torch.Tensor | None = None,
        delta: float | None = None,
    ):
        self.delta = None if targets is None else delta  # the similarity rule of what batches carry
        self.pool = pool  # (N_train,)
        self.pool_labels = labels[pool] if targets is None else targets[pool]  # (N_train,) what batches carry
        # Classes to draw from: the labels, or bins `delta` wide of the target
        bins = self.pool_labels if targets is None else ((self.pool_labels - self.pool_labels.min()) / delta).long()
        self.by_class = ClassIndex(bins)
        self.pool_size = torch.tensor([len(pool)], device=pool.device)
        self.batch_size, self.m_per_class = batch_size, m_per_class
        self.distance, self.margin = distance, margin

    def draw(self, g: torch.Generator) -> Batch:
        raise NotImplementedError

    def _distinct_items(self, n: int, g: torch.Generator) -> torch.Tensor:
        """(n,) different places in the pool (repeats only when n exceeds the pool)."""
        size = len(self.pool)
        return distinct_positions(self.pool_size, (size, size), n, g)[0]

    def mine(self, embeddings: torch.Tensor, batch: Batch, kind: str) -> Pairs | Triplets | Views | Labelled:
        raise NotImplementedError


class RandomPairs(rules.RandomPairs, Sampler):
    """`batch_size` pairs, half similar and half dissimilar (the classic Siamese recipe).

    First items are all different; a similar pair's partner is another row of its class.
    """

    def draw(self, g):
        if self.delta is not None:
            return self._draw_by_delta(g)
        n_pairs, n_classes, by_class = self.batch_size, len(self.by_class.classes), self.by_class
        dev = self.pool.device
        first = self._distinct_items(n_pairs, g)  # (P,) places in the pool
        first_class = torch.searchsorted(by_class.classes, self.pool_labels[first])
        same = (torch.arange(n_pairs, device=dev) < n_pairs // 2).long()  # exactly 50 / 50
        # A dissimilar partner's class is uniform over the other classes, its row uniform in it;
        # a similar partner is uniform over the class's other rows.
        shift = torch.randint(1, n_classes, (n_pairs,), generator=g, device=dev) * (1 - same)
        second_class = (first_class + shift) % n_classes
        count = by_class.counts[second_class]
        u = torch.rand(n_pairs, generator=g, device=dev)
        other_row = (by_class.position[first] + 1 + (u * (count - 1)).long()) % count
        within = torch.where(same.bool(), other_row, (u * count).long())
        rows = torch.cat([first, by_class.table[second_class, within]])
        return Batch(self.pool[rows], self.pool_labels[rows], same=same)

    def _draw_by_delta(self, g) -> Batch:
        """Half the partners uniform among the first item's others within delta of its target, half uniform
        among the items farther away; `same` says what each pair is by the rule (a partner within delta is
        wanted but absent when no other item is that close: the nearest one stands in, judged as it is)."""
        n_pairs, dev = self.batch_size, self.pool.device
        order = self.pool_labels.argsort()
        sorted_t = self.pool_labels[order]  # (N,)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(len(order), device=dev)  # each pool place's position in sorted_t
        first = self._distinct_items(n_pairs, g)  # (P,) places in the pool
        t = self.pool_labels[first]
        lo = torch.searchsorted(sorted_t, t - self.delta)  # (P,) the first position within delta
        hi = torch.searchsorted(sorted_t, t + self.delta, right=True)  # (P,) one past the last
        near, size = hi - lo, len(sorted_t)
        u = torch.rand(n_pairs, generator=g, device=dev)
        similar_pos = lo + (u * (near - 1)).long()
        similar_pos = similar_pos + (similar_pos >= rank[first]).long()  # skip the item itself
        alone = near == 1  # nothing else within delta: the nearest other item
        similar_pos = torch.where(
            alone, torch.where(rank[first] + 1 < size, rank[first] + 1, rank[first] - 1), similar_pos
        )
        k = (u * (size - near)).long()  # among the items farther than delta: below lo, or from hi on
        other_pos = torch.where(k < lo, k, k + near)
        wanted_same = torch.arange(n_pairs, device=dev) < n_pairs // 2
        second = order[torch.where(wanted_same, similar_pos, other_pos)]
        rows = torch.cat([first, second])
        same = similar(self.pool_labels[first], self.pool_labels[second], self.delta).long()
        return Batch(self.pool[rows], self.pool_labels[rows], same=same)

    def mine(self, embeddings, batch, kind):
        first, second = embeddings.chunk(2)  # views, not gathers: no scatter in the backward pass
        return Pairs(first, second, batch.same)


class AugmentedViews(rules.AugmentedViews, Sampler):
    """`batch_size` different items, each embedded as two random augmentations; no labels used.

    Views of one item are positives; for pair losses, each item's first view is also paired
    with another item's second view as a negative (so pairs are 50 / 50).

    Semi-supervised, with a `label_fraction`: that share of each class's items in the pool is labelled
    (a subset drawn once, from `seed`, see `labelled_items`). In a batch a labelled item carries its class
    and an unlabelled one a class of its own, and the miner hands both views with these labels to a loss
    that takes labels (SupCon): a labelled view's positives are its other view and every view of its
    class, an unlabelled view's only positive is its other view, and every other view is a negative.
    At 0 every item is its own class and SupCon is NT-Xent (one positive among the 2N - 1 other views,
    SimCLR); at 1 it is SupCon over two views of every item, as Khosla et al. (2020) train it. The
    subset comes from a generator of its own, so the batches are the same at every fraction.

    Only losses that take labels accept a fraction (`rules.AugmentedViews.labelled_kinds`): NT-Xent's
    positive is an item's other view by definition, and the 50 / 50 pairs would not become any
    supervised recipe at 1 (pair and triplet losses learn from labels with the class-balanced samplers).
    """

    def __init__(self, *args, label_fraction: float | None = None, seed: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        if label_fraction is not None and self.delta is not None:
            raise ValueError("label_fraction: needs classes, not a continuous target")
        if label_fraction is not None and not 0 <= label_fraction <= 1:
            raise ValueError(f"label_fraction: must be in [0, 1], not {label_fraction:g}")
        self.delta = None  # batches carry item ids: views of one item are the only positives
        self.label_fraction = label_fraction
        self.item_class = None  # (N_train,) a labelled item's class (0..C-1), -1 for an unlabelled one
        if label_fraction is not None:
            chosen = labelled_items(self.pool_labels, label_fraction, seed)
            classes = torch.searchsorted(self.by_class.classes, self.pool_labels)
            self.item_class = torch.where(chosen, classes, -1)

    def draw(self, g):
        dev = self.pool.device
        items = self._distinct_items(self.batch_size, g)  # (N,) places in the pool
        ids = torch.arange(self.batch_size, device=dev)  # each item its own class
        if self.item_class is not None:  # a labelled item's class, numbered past every item id
            known = self.item_class[items]
            ids = torch.where(known >= 0, self.batch_size + known, ids)
        return Batch(self.pool[items].repeat(2), ids.repeat(2), views=True)

    def mine(self, embeddings, batch, kind):
        if kind == "labels":
            return Labelled(embeddings, batch.labels)  # (2N, D): both views, labelled as drawn
        z_a, z_b = embeddings.chunk(2)  # (N, D) each
        if kind == "views":
            return Views(z_a, z_b)
        n = len(z_a)
        other = torch.roll(torch.arange(n, device=z_a.device), 1)
        same = (torch.arange(2 * n, device=z_a.device) < n).float()
        return Pairs(torch.cat([z_a, z_a]), torch.cat([z_b, z_b[other]]), same)


def labelled_items(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """(N,) class labels -> (N,) bool: `round(fraction * n_c)` items of each class c, a uniformly random
    subset, so each class keeps its share. Drawn on the host from a generator seeded with `seed`: the same
    items on every device, and the batch generator's stream untouched."""
    shuffle = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed)).to(labels.device)
    by_class = ClassIndex(labels[shuffle])  # each shuffled row's place in its class is a random rank
    quota = torch.round(fraction * by_class.counts.double()).long()  # (C,) labelled items per class
    chosen = by_class.position < quota[torch.searchsorted(by_class.classes, labels[shuffle])]
    return torch.zeros_like(chosen).scatter_(0, shuffle, chosen)


class ClassBalanced(rules.ClassBalanced, Sampler):
    """`batch_size` items: `m_per_class` different rows from each of `batch_size // m_per_class`
    random classes.

    With fewer classes than that, every class is drawn and gives more items, so the batch
    still holds `batch_size` items (rounded down to a multiple of the class count).
    """

    def draw(self, g):
        n_classes = len(self.by_class.classes)
        k = min(n_classes, max(2, self.batch_size // self.m_per_class))
        m = max(self.m_per_class, self.batch_size // k)
        chosen = torch.randperm(n_classes, generator=g, device=self.pool.device)[:k]  # (k,)
        rows = self.by_class.draw_distinct(chosen, m, g).flatten()  # (k * m,)
        return Batch(self.pool[rows], self.pool_labels[rows])

    def mine(self, embeddings, batch, kind):
        if kind == "labels":
            return Labelled(embeddings, batch.labels)
        positive = positive_mask(batch.labels, self.delta)
        if kind == "pairs":
            i, j = torch.triu_indices(len(embeddings), len(embeddings), 1, device=embeddings.device)
            return Pairs(embeddings[i], embeddings[j], positive[i, j].long())
        negative = ~similar(batch.labels[:, None], batch.labels[None, :], self.delta)
        a, p, n = self.triplets(embeddings.detach(), positive, negative)
        return Triplets(embeddings[a], embeddings[p], embeddings[n])

    def triplets(self, embeddings, positive, negative):
        """All valid triplets (a, p, n): label(a) = label(p), a != p, label(n) != label(a)."""
        valid = positive[:, :, None] & negative[:, None, :]  # (B, B, B)
        return valid.nonzero(as_tuple=True)


class BatchAll(rules.BatchAll, ClassBalanced):
    """Every valid pair / triplet of a class-balanced batch (Hermans et al. 2017, "batch all")."""


class BatchHard(rules.BatchHard, ClassBalanced):
    """For each anchor, its farthest positive and closest negative in the batch
    (Hermans, Beyer & Leibe, "In Defense of the Triplet Loss for Person Re-Identification", 2017)."""

    def _hardest(self, embeddings, batch):
        positive = positive_mask(batch.labels, self.delta)
        negative = ~similar(batch.labels[:, None], batch.labels[None, :], self.delta)
        d = self.distance.pairwise(embeddings.detach(), embeddings.detach())  # (B, B)
        hardest_pos = d.masked_fill(~positive, float("-inf")).argmax(1)
        hardest_neg = d.masked_fill(~negative, float("inf")).argmin(1)
        has_both = positive.any(1) & negative.any(1)
        anchors = torch.arange(len(d), device=d.device)[has_both]
        return anchors, hardest_pos[has_both], hardest_neg[has_both]

    def mine(self, embeddings, batch, kind):
        a, p, n = self._hardest(embeddings, batch)
        if kind == "triplets":
            return Triplets(embeddings[a], embeddings[p], embeddings[n])
        same = (torch.arange(2 * len(a), device=embeddings.device) < len(a)).float()
        return Pairs(embeddings[torch.cat([a, a])], embeddings[torch.cat([p, n])], same)


class SemiHard(rules.SemiHard, ClassBalanced):
    """Triplets whose negative is farther than the positive but inside the margin:
    d(a, p) < d(a, n) < d(a, p) + margin, both strict (Schroff et al., "FaceNet", 2015).

    A collapsed embedding has no such triplet (every distance is 0), so it pays no loss.
    """

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


def build(
    name: str,
    pool: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    m_per_class: int = 4,
    distance: Distance | None = None,
    margin: float = 0.0,
    targets: torch.Tensor | None = None,
    delta: float | None = None,
    label_fraction: float | None = None,
    seed: int = 0,
) -> Sampler:
    """The sampler called `name` over dataset rows `pool`; `labels` are all rows' labels, or `targets` all
    rows' continuous targets, similar within `delta`. Miners measure with `distance` and `margin` (in its
    units): the loss's own. `label_fraction`: the share of each class labelled, drawn from `seed`, for a
    sampler with `labelled_kinds` (see AugmentedViews); None: its usual behaviour."""
    cls = SAMPLERS[name]
    if label_fraction is None:
        return cls(pool, labels, batch_size, m_per_class, distance, margin, targets, delta)
    if not cls.labelled_kinds:
        raise ValueError(f"label_fraction: the {name} sampler labels every item or none")
    return cls(pool, labels, batch_size, m_per_class, distance, margin, targets, delta,
               label_fraction=label_fraction, seed=seed)  # fmt: skip
