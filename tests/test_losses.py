import math

import pytest
import torch
import torch.nn.functional as F

from contrast_core import losses
from contrast_core.distances import build as distance
from contrast_core.losses import (
    ContrastiveLoss,
    CosineEmbeddingLoss,
    NTXentLoss,
    SupConLoss,
    TripletLoss,
    vae_terms,
)


def test_contrastive_hand_values():
    # Pair 1: similar, distance 3 -> 3^2 = 9. Pair 2: dissimilar, distance 0.5 < margin 2 -> (2 - 0.5)^2 = 2.25.
    # Pair 3: dissimilar, distance 5 > margin -> 0. Mean = (9 + 2.25 + 0) / 3.
    x1 = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    x2 = torch.tensor([[3.0, 0.0], [0.0, 0.5], [3.0, 4.0]])
    same = torch.tensor([1, 0, 0])
    loss = ContrastiveLoss(distance("euclidean"), margin=2.0)(x1, x2, same)
    assert loss.item() == pytest.approx((9 + 2.25 + 0) / 3)


def test_contrastive_with_cosine_distance():
    # Unit vectors at 90 degrees: d_cos = 1. Similar -> 1; dissimilar with margin 1.5 -> 0.25.
    x1 = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    x2 = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    loss = ContrastiveLoss(distance("cosine"), margin=1.5)(x1, x2, torch.tensor([1, 0]))
    assert loss.item() == pytest.approx((1.0 + 0.25) / 2)


@pytest.mark.parametrize("margin", [-0.5, 0.0, 0.3])
def test_cosine_embedding_matches_torch(margin):
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(16, 5, generator=g), torch.randn(16, 5, generator=g)
    same = (torch.rand(16, generator=g) > 0.5).long()
    ours = CosineEmbeddingLoss(margin=margin)(x1, x2, same)
    ref = torch.nn.CosineEmbeddingLoss(margin=margin)(x1, x2, same * 2 - 1)  # torch: +1 / -1
    assert ours.item() == pytest.approx(ref.item(), abs=1e-6)


def test_triplet_matches_torch_for_euclidean():
    g = torch.Generator().manual_seed(0)
    a, p, n = (torch.randn(32, 4, generator=g) for _ in range(3))
    ours = TripletLoss(distance("euclidean"), margin=0.7)(a, p, n)
    ref = torch.nn.TripletMarginLoss(margin=0.7, p=2, eps=0)(a, p, n)
    assert ours.item() == pytest.approx(ref.item(), abs=1e-5)


def test_triplet_hand_values():
    # d(a,p) = 1, d(a,n) = 1.5, margin 1 -> 0.5; second triplet: d(a,p) = 0, d(a,n) = 2 -> 0.
    a = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    p = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    n = torch.tensor([[0.0, 1.5], [2.0, 0.0]])
    assert TripletLoss(distance("euclidean"), margin=1.0)(a, p, n).item() == pytest.approx(0.25)


def test_ntxent_hand_values():
    # N = 2 items on unit vectors: z_a = [e1, e2], z_b = [e1, -e2]. temperature 1.
    # View 0 (e1): positive e1 (cos 1); others e2 (0), -e2 (0): -log(e / (e + 1 + 1)).
    # View 1 (e2): positive -e2 (cos -1); others e1 (0), e1 (0): -log(e^-1 / (e^-1 + 2)).
    # Views 2, 3 are symmetric to 0, 1.
    z_a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z_b = torch.tensor([[1.0, 0.0], [0.0, -1.0]])
    e = math.e
    expected = (2 * -math.log(e / (e + 2)) + 2 * -math.log((1 / e) / (1 / e + 2))) / 4
    assert NTXentLoss(temperature=1.0)(z_a, z_b).item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("n, d", [(4, 3), (16, 8)])
@pytest.mark.parametrize("temperature", [0.07, 0.5, 1.0])
def test_ntxent_matches_simclr_reference(n, d, temperature):
    g = torch.Generator().manual_seed(n + d)
    z_a, z_b = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    # Reference written the SimCLR way: cosine similarities / t, self excluded, cross-entropy.
    z = F.normalize(torch.cat([z_a, z_b]), dim=1)
    sim = z @ z.T / temperature
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        others = [k for k in range(2 * n) if k != i]
        total += -(sim[i, j] - torch.logsumexp(sim[i, others], 0))
    assert NTXentLoss(temperature=temperature)(z_a, z_b).item() == pytest.approx(total.item() / (2 * n), abs=1e-5)


def test_supcon_hand_values():
    # Labels [0, 0, 1] on unit vectors e1, e1, e2, temperature 1.
    # Anchor 0: one positive (item 1, cos 1), other item 2 (cos 0): -log(e / (e + 1)). Anchor 1 the same.
    # Anchor 2 has no positive: left out. Mean over anchors 0 and 1.
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    expected = -math.log(math.e / (math.e + 1))
    assert SupConLoss(temperature=1.0)(z, torch.tensor([0, 0, 1])).item() == pytest.approx(expected, abs=1e-6)


def test_supcon_with_instance_labels_equals_ntxent():
    # With two views per item as the only positives, SupCon reduces to NT-Xent.
    g = torch.Generator().manual_seed(3)
    z_a, z_b = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    ids = torch.arange(6).repeat(2)
    supcon = SupConLoss(temperature=0.2)(torch.cat([z_a, z_b]), ids)
    assert supcon.item() == pytest.approx(NTXentLoss(temperature=0.2)(z_a, z_b).item(), abs=1e-5)


def test_vae_terms_match_torch_distributions():
    g = torch.Generator().manual_seed(0)
    x, recon = torch.rand(4, 1, 2, 2, generator=g), torch.rand(4, 1, 2, 2, generator=g)
    mu, logvar = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    recon_term, kl = vae_terms(x, recon, mu, logvar)
    assert recon_term.item() == pytest.approx(F.mse_loss(recon, x, reduction="sum").item() / 4, abs=1e-5)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    ref = torch.distributions.kl_divergence(q, p).sum(1).mean()
    assert kl.item() == pytest.approx(ref.item(), abs=1e-5)


def _inputs(kind, z, labels):
    n = len(z) // 2
    return {
        "pairs": (z[:n], z[n:], (labels[:n] == labels[n:]).long()),
        "triplets": (z[:4], z[4:8], z[8:12]),
        "views": (z[:n], z[n:]),
        "labels": (z, labels),
    }[kind]


@pytest.mark.parametrize("name", losses.LOSSES)
@pytest.mark.parametrize("metric", ["euclidean", "squared-euclidean", "cosine"])
def test_every_loss_is_finite_and_reaches_the_encoder(name, metric):
    torch.manual_seed(0)
    encoder = torch.nn.Linear(5, 3)
    x, labels = torch.randn(12, 5), torch.tensor([0, 1, 2] * 4)
    loss_fn = losses.build(name, metric, margin=0.5, temperature=0.5)
    loss = loss_fn(*_inputs(loss_fn.kind, encoder(x), labels))
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    assert encoder.weight.grad is not None and encoder.weight.grad.abs().sum() > 0


def test_losses_handle_nothing_mined():
    empty = torch.zeros(0, 2, requires_grad=True)
    loss = TripletLoss(distance("euclidean"), 1.0)(empty, empty, empty)
    assert loss.item() == 0.0
    loss.backward()  # the zero keeps the graph: training does not crash on an empty batch


@pytest.mark.parametrize(
    "loss, margin, expected",
    [("contrastive", 0.7, 0.7), ("triplet", 0.3, 0.3), ("cosine-embedding", 0.2, 0.8), ("nt-xent", 0.5, None)],
)
def test_margin_in_distance_units(loss, margin, expected):
    # cosine-embedding: max(0, cos - m) is zero once 1 - cos > 1 - m, so its distance margin is 1 - m.
    rules = losses.LOSSES[loss]
    assert rules.margin_as_distance(margin) == (None if expected is None else pytest.approx(expected))
    assert rules.measures_with("euclidean") == ("cosine" if loss == "cosine-embedding" else "euclidean")


@pytest.mark.parametrize(
    "loss, natural",
    [("contrastive", "euclidean"), ("triplet", "euclidean"), ("cosine-embedding", "cosine"),
     ("nt-xent", "cosine"), ("supcon", "cosine")],
)  # fmt: skip
def test_a_loss_without_a_named_distance_measures_with_its_natural_one(loss, natural):
    assert losses.LOSSES[loss].measures_with(None) == natural
    assert losses.build(loss, None, margin=0.5, temperature=0.5).distance.name == natural
    if "distance" in losses.LOSSES[loss].knobs:  # an explicit choice is kept
        assert losses.build(loss, "squared-euclidean", margin=0.5, temperature=0.5).distance.name == "squared-euclidean"


def test_ntxent_without_a_distance_is_simclr_cosine():
    # SimCLR's logits are cos / t; Euclidean logits -|x - y| / t give another loss on the same input.
    g = torch.Generator().manual_seed(5)
    z_a, z_b = torch.randn(8, 4, generator=g) * 3, torch.randn(8, 4, generator=g) * 3
    z = F.normalize(torch.cat([z_a, z_b]), dim=1)
    logits = (z @ z.T / 0.1).fill_diagonal_(float("-inf"))
    simclr = F.cross_entropy(logits, torch.arange(16).roll(8))
    loss = losses.build("nt-xent", None, margin=1.0, temperature=0.1)(z_a, z_b)
    assert loss.item() == pytest.approx(simclr.item(), rel=1e-5)
    euclidean = losses.build("nt-xent", "euclidean", margin=1.0, temperature=0.1)(z_a, z_b)
    assert abs(euclidean.item() - simclr.item()) > 0.1


def test_contrastive_mean_nonzero_hand_values():
    # Positives at d = 3 and d = 0 (terms 9, 0); negatives at d = 0.5 and 5 with margin 2 (terms 2.25, 0).
    # mean: (9 + 0 + 2.25 + 0) / 4. mean-nonzero: 9 / 1 + 2.25 / 1, each part over its non-zero terms.
    x1 = torch.zeros(4, 2)
    x2 = torch.tensor([[3.0, 0.0], [0.0, 0.0], [0.0, 0.5], [3.0, 4.0]])
    same = torch.tensor([1, 1, 0, 0])
    mean = ContrastiveLoss(distance("euclidean"), margin=2.0)(x1, x2, same)
    nonzero = ContrastiveLoss(distance("euclidean"), margin=2.0, reduction="mean-nonzero")(x1, x2, same)
    assert mean.item() == pytest.approx(11.25 / 4)
    assert nonzero.item() == pytest.approx(9 + 2.25)


def test_triplet_mean_nonzero_hand_values_and_gradient():
    # Triplet terms 0.5 and 0 (see test_triplet_hand_values): mean 0.25, mean-nonzero 0.5.
    a = torch.tensor([[0.0, 0.0], [0.0, 0.0]], requires_grad=True)
    p = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    n = torch.tensor([[0.0, 1.5], [2.0, 0.0]])
    loss = TripletLoss(distance("euclidean"), margin=1.0, reduction="mean-nonzero")(a, p, n)
    assert loss.item() == pytest.approx(0.5)
    loss.backward()
    # d/da of d(a,p) - d(a,n) for the active triplet: (a - p)/|a - p| - (a - n)/|a - n| = (-1, 0) - (0, -1)
    assert a.grad.flatten().tolist() == pytest.approx([-1.0, 1.0, 0.0, 0.0])


def test_mean_nonzero_of_all_zero_terms_is_zero_with_a_graph():
    x = torch.tensor([[0.0, 0.0]], requires_grad=True)
    loss = TripletLoss(distance("euclidean"), 1.0, reduction="mean-nonzero")(x, x, x + torch.tensor([[5.0, 0.0]]))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(x.grad).all()


def _pml_contrastive_nonzero(x1, x2, same, margin):
    """pytorch-metric-learning's reducer for its ContrastiveLoss, written out: the positive-pair and
    the negative-pair terms are each averaged over those > 0 (AvgNonZeroReducer), then added."""
    d = torch.linalg.vector_norm(x1 - x2, dim=1)
    parts = [d[same == 1].pow(2), F.relu(margin - d[same == 0]).pow(2)]
    return sum(p[p > 0].mean() if (p > 0).any() else torch.tensor(0.0, dtype=d.dtype) for p in parts)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_contrastive_mean_nonzero_matches_the_reducer_on_random_pairs(seed):
    g = torch.Generator().manual_seed(seed)
    x1, x2 = torch.randn(40, 3, generator=g, dtype=torch.float64), torch.randn(40, 3, generator=g, dtype=torch.float64)
    same = (torch.rand(40, generator=g) > 0.5).long()
    ours = ContrastiveLoss(distance("euclidean"), margin=2.0, reduction="mean-nonzero")(x1, x2, same)
    assert ours.item() == pytest.approx(_pml_contrastive_nonzero(x1, x2, same, 2.0).item(), abs=1e-11)


@pytest.mark.parametrize("name", losses.LOSSES)
def test_every_loss_declares_only_config_fields_as_knobs(name):
    from contrast_core.config import RunConfig

    assert losses.LOSSES[name].knobs <= set(RunConfig.model_fields)
