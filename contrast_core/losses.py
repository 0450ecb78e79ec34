"""Contrastive losses, each with the paper it comes from and one pair-label convention.

Pair labels: `same = 1` for a similar (positive) pair, `0` for a dissimilar (negative) one.

Every loss declares the `kind` of input it takes, which decides the samplers it works with:
- "pairs":    forward(x1 (P, D), x2 (P, D), same (P,))
- "triplets": forward(anchor (T, D), positive (T, D), negative (T, D))
- "views":    forward(z_a (N, D), z_b (N, D)), row i of z_a and z_b are two views of one item
- "labels":   forward(z (B, D), labels (B,))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from contrast_core.distances import Cosine, Distance


def _mean(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Mean of `values`, or a zero that keeps the graph when a miner found nothing."""
    return values.mean() if values.numel() else like.sum() * 0.0


class ContrastiveLoss(nn.Module):
    """Contrastive loss of Hadsell, Chopra & LeCun, "Dimensionality Reduction by Learning an
    Invariant Mapping" (CVPR 2006):

        same * d^2 + (1 - same) * max(0, margin - d)^2, averaged over pairs,

    with `d` the chosen distance (the paper uses Euclidean and a factor 1/2, left out here).
    """

    kind = "pairs"

    def __init__(self, distance: Distance, margin: float = 1.0):
        super().__init__()
        self.distance, self.margin = distance, margin

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
        d = self.distance.paired(x1, x2)  # (P,)
        same = same.to(d.dtype)
        per_pair = same * d.pow(2) + (1 - same) * F.relu(self.margin - d).pow(2)
        return _mean(per_pair, x1)


class CosineEmbeddingLoss(nn.Module):
    """Cosine embedding loss, as `torch.nn.CosineEmbeddingLoss` (mean reduction):

        1 - cos(x1, x2)                  for same = 1
        max(0, cos(x1, x2) - margin)     for same = 0,

    so `margin` is a *similarity* in [-1, 1] (the cosine distance margin is `1 - margin`).
    """

    kind = "pairs"

    def __init__(self, distance: Distance | None = None, margin: float = 0.0):
        super().__init__()
        self.distance, self.margin = Cosine(), margin  # always cosine, whatever is passed

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
        cos = F.cosine_similarity(x1, x2, dim=1)  # (P,)
        same = same.to(cos.dtype)
        per_pair = same * (1 - cos) + (1 - same) * F.relu(cos - self.margin)
        return _mean(per_pair, x1)


class TripletLoss(nn.Module):
    """Triplet margin loss of Schroff, Kalenichenko & Philbin, "FaceNet" (CVPR 2015):

        max(0, d(a, p) - d(a, n) + margin), averaged over the triplets given.

    Which triplets are given (all, batch-hard, semi-hard) is the miner's choice.
    """

    kind = "triplets"

    def __init__(self, distance: Distance, margin: float = 1.0):
        super().__init__()
        self.distance, self.margin = distance, margin

    def forward(self, anchor, positive, negative) -> torch.Tensor:
        d_ap = self.distance.paired(anchor, positive)  # (T,)
        d_an = self.distance.paired(anchor, negative)  # (T,)
        return _mean(F.relu(d_ap - d_an + self.margin), anchor)


def _similarity_logits(z: torch.Tensor, distance: Distance, temperature: float) -> torch.Tensor:
    """(B, B) logits `-d(z_i, z_j) / t` with the diagonal masked out.

    For the cosine distance `-d / t = cos / t - 1 / t`: the constant cancels in the softmax,
    which gives exactly SimCLR's `cos / t`.
    """
    logits = -distance.pairwise(z, z) / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    return logits.masked_fill(self_mask, float("-inf"))


class NTXentLoss(nn.Module):
    """NT-Xent / InfoNCE of Chen et al., "A Simple Framework for Contrastive Learning of Visual
    Representations" (SimCLR, ICML 2020).

    Over the 2N views, each view's positive is the other view of its item and the remaining
    2N - 2 views are its negatives; the loss is the cross-entropy of the positive under a softmax
    of similarities scaled by `1 / temperature`, averaged over all 2N views.
    """

    kind = "views"

    def __init__(self, distance: Distance | None = None, temperature: float = 0.1):
        super().__init__()
        self.distance, self.temperature = distance or Cosine(), temperature

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        n = len(z_a)
        logits = _similarity_logits(torch.cat([z_a, z_b]), self.distance, self.temperature)  # (2N, 2N)
        positive = torch.arange(2 * n, device=z_a.device).roll(n)  # (2N,): view i's partner is i + N mod 2N
        return F.cross_entropy(logits, positive)


class SupConLoss(nn.Module):
    """Supervised contrastive loss of Khosla et al., "Supervised Contrastive Learning"
    (NeurIPS 2020), the L_out form:

        -1/|P(i)| * sum_{p in P(i)} log( exp(s_ip / t) / sum_{a != i} exp(s_ia / t) ),

    averaged over anchors i that have at least one positive (same label, a != i).
    """

    kind = "labels"

    def __init__(self, distance: Distance | None = None, temperature: float = 0.1):
        super().__init__()
        self.distance, self.temperature = distance or Cosine(), temperature

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = _similarity_logits(z, self.distance, self.temperature)  # (B, B)
        log_prob = logits - logits.logsumexp(dim=1, keepdim=True)
        positive = (labels[:, None] == labels[None, :]).fill_diagonal_(False)  # (B, B)
        n_pos = positive.sum(1)
        has_pos = n_pos > 0
        pos_log_prob = log_prob.masked_fill(~positive, 0).sum(1)  # -inf diagonal is never a positive
        return _mean(-pos_log_prob[has_pos] / n_pos[has_pos], z)


LOSSES: dict[str, type[nn.Module]] = {
    "contrastive": ContrastiveLoss,
    "cosine-embedding": CosineEmbeddingLoss,
    "triplet": TripletLoss,
    "nt-xent": NTXentLoss,
    "supcon": SupConLoss,
}

# Which knobs each loss reads; the others are ignored (with a note) rather than rejected.
LOSS_KNOBS: dict[str, set[str]] = {
    "contrastive": {"margin", "distance"},
    "cosine-embedding": {"margin"},
    "triplet": {"margin", "distance"},
    "nt-xent": {"temperature", "distance"},
    "supcon": {"temperature", "distance"},
}


def build(name: str, distance: Distance, margin: float, temperature: float) -> nn.Module:
    """The loss called `name`, given every knob; each loss takes the ones it reads."""
    cls = LOSSES[name]
    knobs = LOSS_KNOBS[name]
    kwargs = {"margin": margin} if "margin" in knobs else {"temperature": temperature}
    return cls(distance, **kwargs)


def measured_distance(loss: str, distance: str) -> str:
    """The distance a loss measures with: cosine-embedding always uses the cosine."""
    return "cosine" if loss == "cosine-embedding" else distance


def margin_as_distance(loss: str, margin: float) -> float | None:
    """The margin in the loss's distance units (None for losses without a margin)."""
    if "margin" not in LOSS_KNOBS[loss]:
        return None
    return 1 - margin if loss == "cosine-embedding" else margin  # similarity margin -> cosine distance


def vae_terms(x, recon, mu, logvar) -> tuple[torch.Tensor, torch.Tensor]:
    """Reconstruction and KL terms of a VAE (Kingma & Welling, "Auto-Encoding Variational Bayes", 2014).

    recon: squared error summed over each item's elements, averaged over the batch.
    kl:    KL(N(mu, exp(logvar)) || N(0, I)) summed over latent dimensions, averaged over the batch.
    """
    recon_term = (recon - x).pow(2).flatten(1).sum(1).mean()
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1).mean()
    return recon_term, kl
