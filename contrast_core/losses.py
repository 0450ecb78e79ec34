"""Contrastive losses, each with the paper it comes from and one pair-label convention.

Pair labels: `same = 1` for a similar (positive) pair, `0` for a dissimilar (negative) one.

Every loss class implements its objective's rules, which it inherits from `rules.py`: the `kind`
of input it takes (which decides the samplers that can feed it), the RunConfig `knobs` it reads,
the distance it measures with, what its margin means in distance units, and what a collapsed
embedding costs. The config, the form, the tables and the diagnosis ask the rules; none repeats one.

Kinds of input (the miners' named tuples in samplers.py):
- "pairs":    forward(x1 (P, D), x2 (P, D), same (P,))
- "triplets": forward(anchor (T, D), positive (T, D), negative (T, D))
- "views":    forward(z_a (N, D), z_b (N, D)), row i of z_a and z_b are two views of one item
- "labels":   forward(z (B, D), labels (B,))

Reductions (the `reduction` knob of the margin losses):
- "mean":         the mean over every pair / triplet given, zero-loss ones included;
- "mean-nonzero": pytorch-metric-learning's default (AvgNonZeroReducer): each part of the loss
  (positive pairs, negative pairs; triplets) is averaged over its non-zero terms only, and the
  parts are added. Late in training most terms are zero, so this keeps the gradient's size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from contrast_core import distances, rules
from contrast_core.distances import Distance

REDUCTIONS = rules.REDUCTIONS


def similar(a: torch.Tensor, b: torch.Tensor, delta: float | None = None) -> torch.Tensor:
    """Whether items are similar, elementwise (broadcast): the same class, or with `delta` (a continuous
    target) targets at most `delta` apart, |y_a - y_b| <= delta."""
    return a == b if delta is None else (a - b).abs() <= delta


def positive_mask(labels: torch.Tensor, delta: float | None = None) -> torch.Tensor:
    """(B,) labels (or targets, with `delta`) -> (B, B) bool: True where two different rows are similar."""
    same = similar(labels[:, None], labels[None, :], delta)
    return same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)


def _mean(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Mean of `values`, or a zero that keeps the graph when a miner found nothing."""
    return values.mean() if values.numel() else like.sum() * 0.0


def _mean_nonzero(values: torch.Tensor) -> torch.Tensor:
    """Sum of `values` over the number of non-zero ones (0 when all are zero). Fixed shapes, no sync."""
    return values.sum() / (values > 0).sum().clamp_min(1)


class Loss(rules.Objective, nn.Module):
    """Base of every loss: an `nn.Module` with its objective's rules (`rules.Objective`: the kind of
    input it takes, the knobs it reads, its distance, margin and collapsed loss)."""


class ContrastiveLoss(rules.Contrastive, Loss):
    """Contrastive loss of Hadsell, Chopra & LeCun, "Dimensionality Reduction by Learning an
    Invariant Mapping" (CVPR 2006):

        same * d^2 + (1 - same) * max(0, margin - d)^2, averaged over pairs ("mean"),

    with `d` the chosen distance (the paper uses Euclidean and a factor 1/2, left out here).
    "mean-nonzero" averages the positive and the negative terms each over its non-zero ones.
    """

    def __init__(self, distance: Distance, margin: float = 1.0, reduction: str = "mean"):
        super().__init__()
        self.distance, self.margin, self.reduction = distance, margin, reduction

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
        d = self.distance.paired(x1, x2)  # (P,)
        same = same.to(d.dtype)
        pulls, pushes = same * d.pow(2), (1 - same) * F.relu(self.margin - d).pow(2)  # (P,) each
        if self.reduction == "mean-nonzero":
            return _mean_nonzero(pulls) + _mean_nonzero(pushes)
        return _mean(pulls + pushes, x1)


class CosineEmbeddingLoss(rules.CosineEmbedding, Loss):
    """Cosine embedding loss, as `torch.nn.CosineEmbeddingLoss` (mean reduction):

        1 - cos(x1, x2)                  for same = 1
        max(0, cos(x1, x2) - margin)     for same = 0,

    so it always measures with the cosine and its `margin` is a *similarity* in [-1, 1]: the
    cosine distance margin is `1 - margin`.
    """

    def __init__(self, distance: Distance | None = None, margin: float = 0.0):
        super().__init__()
        self.distance, self.margin = distances.Cosine(), margin  # always cosine, whatever is passed

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
        cos = F.cosine_similarity(x1, x2, dim=1)  # (P,)
        same = same.to(cos.dtype)
        per_pair = same * (1 - cos) + (1 - same) * F.relu(cos - self.margin)
        return _mean(per_pair, x1)


class TripletLoss(rules.Triplet, Loss):
    """Triplet margin loss of Schroff, Kalenichenko & Philbin, "FaceNet" (CVPR 2015):

        max(0, d(a, p) - d(a, n) + margin), averaged over the triplets given ("mean"),
        or over the non-zero ones only ("mean-nonzero").

    Which triplets are given (all, batch-hard, semi-hard) is the miner's choice.
    """

    def __init__(self, distance: Distance, margin: float = 1.0, reduction: str = "mean"):
        super().__init__()
        self.distance, self.margin, self.reduction = distance, margin, reduction

    def forward(self, anchor, positive, negative) -> torch.Tensor:
        d_ap = self.distance.paired(anchor, positive)  # (T,)
        d_an = self.distance.paired(anchor, negative)  # (T,)
        per_triplet = F.relu(d_ap - d_an + self.margin)
        if self.reduction == "mean-nonzero":
            return _mean_nonzero(per_triplet)
        return _mean(per_triplet, anchor)


def _similarity_logits(z: torch.Tensor, distance: Distance, temperature: float) -> torch.Tensor:
    """(B, B) logits `-d(z_i, z_j) / t` with the diagonal masked out.

    For the cosine distance `-d / t = cos / t - 1 / t`: the constant cancels in the softmax,
    which gives exactly SimCLR's `cos / t`.
    """
    logits = -distance.pairwise(z, z) / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    return logits.masked_fill(self_mask, float("-inf"))


class NTXentLoss(rules.NTXent, Loss):
    """NT-Xent / InfoNCE of Chen et al., "A Simple Framework for Contrastive Learning of Visual
    Representations" (SimCLR, ICML 2020).

    Over the 2N views, each view's positive is the other view of its item and the remaining
    2N - 2 views are its negatives; the loss is the cross-entropy of the positive under a softmax
    of similarities scaled by `1 / temperature`, averaged over all 2N views. Its natural
    distance is SimCLR's cosine.
    """

    def __init__(self, distance: Distance | None = None, temperature: float = 0.1):
        super().__init__()
        self.distance, self.temperature = distance or distances.Cosine(), temperature

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        n = len(z_a)
        logits = _similarity_logits(torch.cat([z_a, z_b]), self.distance, self.temperature)  # (2N, 2N)
        positive = torch.arange(2 * n, device=z_a.device).roll(n)  # (2N,): view i's partner is i + N mod 2N
        return F.cross_entropy(logits, positive)


class SupConLoss(rules.SupCon, Loss):
    """Supervised contrastive loss of Khosla et al., "Supervised Contrastive Learning"
    (NeurIPS 2020), the L_out form:

        -1/|P(i)| * sum_{p in P(i)} log( exp(s_ip / t) / sum_{a != i} exp(s_ia / t) ),

    averaged over anchors i that have at least one positive (same label, a != i; with `delta`, targets
    at most delta apart). Its natural distance is the cosine.
    """

    def __init__(self, distance: Distance | None = None, temperature: float = 0.1, delta: float | None = None):
        super().__init__()
        self.distance, self.temperature, self.delta = distance or distances.Cosine(), temperature, delta

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = _similarity_logits(z, self.distance, self.temperature)  # (B, B)
        log_prob = logits - logits.logsumexp(dim=1, keepdim=True)
        positive = positive_mask(labels, self.delta)  # (B, B)
        n_pos = positive.sum(1)
        has_pos = n_pos > 0
        pos_log_prob = log_prob.masked_fill(~positive, 0).sum(1)  # -inf diagonal is never a positive
        return _mean(-pos_log_prob[has_pos] / n_pos[has_pos], z)


LOSSES: dict[str, type[Loss]] = {
    "contrastive": ContrastiveLoss,
    "cosine-embedding": CosineEmbeddingLoss,
    "triplet": TripletLoss,
    "nt-xent": NTXentLoss,
    "supcon": SupConLoss,
}


def build(
    name: str, distance: str | None, margin: float, temperature: float, reduction: str = "mean",
    delta: float | None = None,
) -> Loss:  # fmt: skip
    """The loss called `name`, measuring with its distance for the run's choice `distance`;
    given every knob, each loss takes the ones it reads. `delta`: a continuous target's similarity
    rule, for a loss that takes labels (the others get pairs or triplets already judged)."""
    cls = LOSSES[name]
    knobs = {"margin": margin, "temperature": temperature, "reduction": reduction}
    taken = {k: v for k, v in knobs.items() if k in cls.knobs} | ({"delta": delta} if cls.kind == "labels" else {})
    return cls(distances.build(cls.measures_with(distance)), **taken)


def reconstruction_error(x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """Squared error summed over each item's elements, averaged over the batch: (B, ...) twice -> 0-d."""
    return (recon - x).pow(2).flatten(1).sum(1).mean()


def vae_terms(x, recon, mu, logvar) -> tuple[torch.Tensor, torch.Tensor]:
    """Reconstruction and KL terms of a VAE (Kingma & Welling, "Auto-Encoding Variational Bayes", 2014).

    recon: squared error summed over each item's elements, averaged over the batch.
    kl:    KL(N(mu, exp(logvar)) || N(0, I)) summed over latent dimensions, averaged over the batch.
    """
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1).mean()
    return reconstruction_error(x, recon), kl


def discriminator_loss(prior_logits: torch.Tensor, code_logits: torch.Tensor) -> torch.Tensor:
    """The adversarial autoencoder's discriminator term (Makhzani et al., "Adversarial Autoencoders", 2015):
    the binary cross-entropy of telling the prior's samples (label 1) from the encoder's codes (label 0),

        -mean log D(z_prior) - mean log(1 - D(z_code)) = mean softplus(-l_prior) + mean softplus(l_code),

    with D = sigmoid(l), `l` the discriminator's logits, (B,) each (so log sigmoid(l) = -softplus(-l)).
    """
    return F.softplus(-prior_logits).mean() + F.softplus(code_logits).mean()


def generator_loss(code_logits: torch.Tensor) -> torch.Tensor:
    """The adversarial autoencoder's generator term: the encoder, as the generator, is paid for codes the
    discriminator takes for the prior's samples, -mean log D(z_code) = mean softplus(-l_code) (the
    non-saturating form of Goodfellow et al. 2014, which the paper trains with). (B,) logits -> 0-d."""
    return F.softplus(-code_logits).mean()
