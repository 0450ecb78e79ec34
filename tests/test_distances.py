import math

import pytest
import torch

from contrast_core.distances import DISTANCES, as_measured, build
from contrast_core.rules import convert_margin

# Two 2-D points at known positions: a = (0, 0)... use unit vectors at 90 degrees and one scaled.
A = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
B = torch.tensor([[0.0, 1.0], [0.0, 3.0]])


@pytest.mark.parametrize(
    "name, expected",
    [
        ("euclidean", [math.sqrt(2), 1.0]),  # |(1,-1)|, |(0,-1)|
        ("squared-euclidean", [2.0, 1.0]),
        ("cosine", [1.0, 0.0]),  # 90 degrees -> 1 - 0; same direction -> 1 - 1
    ],
)
def test_paired_hand_values(name, expected):
    assert build(name).paired(A, B).tolist() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("name", DISTANCES)
def test_pairwise_matches_paired(name):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 3, generator=g), torch.randn(7, 3, generator=g)
    d = build(name).pairwise(x, y)
    assert d.shape == (5, 7)
    for i in range(5):
        assert d[i].tolist() == pytest.approx(build(name).paired(x[i].expand(7, 3), y).tolist(), abs=1e-5)


def test_euclidean_matches_torch_cdist():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 4, generator=g), torch.randn(3, 4, generator=g)
    assert torch.allclose(build("euclidean").pairwise(x, y), torch.cdist(x, y), atol=1e-5)


def test_cosine_range_opposite_vectors():
    x = torch.tensor([[1.0, 0.0]])
    assert build("cosine").paired(x, -x).item() == pytest.approx(2.0)


@pytest.mark.parametrize("name", DISTANCES)
def test_gradient_finite_at_zero_distance(name):
    x = torch.tensor([[0.3, 0.4]], requires_grad=True)
    build(name).pairwise(x, x).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_margin_conversion_for_unit_vectors():
    # Unit vectors at 60 degrees: cos = 0.5, d_cos = 0.5, d_euclid = 1, d_sq = 1.
    assert convert_margin(0.5, "cosine", "euclidean") == pytest.approx(1.0)
    assert convert_margin(0.5, "cosine", "squared-euclidean") == pytest.approx(1.0)
    assert convert_margin(1.0, "euclidean", "cosine") == pytest.approx(0.5)
    assert convert_margin(math.sqrt(2), "euclidean", "squared-euclidean") == pytest.approx(2.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_euclidean_gradient_is_the_unit_vector_at_tiny_distances(dtype):
    # d = 1e-7: the gradient of |x - y| in x is (x - y) / |x - y| = (-1, 0), as torch.cdist gives.
    x = torch.tensor([[0.3, -0.2]], dtype=dtype, requires_grad=True)
    y = x.detach() + torch.tensor([[1e-7, 0.0]], dtype=dtype)
    (grad,) = torch.autograd.grad(build("euclidean").paired(x, y).sum(), x)
    assert grad.flatten().tolist() == pytest.approx([-1.0, 0.0], abs=1e-6)
    (grad,) = torch.autograd.grad(build("euclidean").pairwise(x, y).sum(), x)
    assert grad.flatten().tolist() == pytest.approx([-1.0, 0.0], abs=1e-6)


@pytest.mark.parametrize("name", DISTANCES)
def test_paired_value_and_gradient_finite_at_zero_distance(name):
    x = torch.tensor([[0.3, 0.4]], requires_grad=True)
    d = build(name).paired(x, x.detach())
    d.sum().backward()
    assert torch.isfinite(d).all() and torch.isfinite(x.grad).all()


def test_contrastive_pushes_a_very_close_negative_apart():
    # A dissimilar pair at d = 1e-7 with margin 1: loss (m - d)^2 / P, so d loss / d x1 = -2 (m - d) / P times
    # the unit vector (x1 - x2) / d = (-1, 0): a gradient step moves x1 away from x2.
    from contrast_core.losses import ContrastiveLoss

    x1 = torch.tensor([[0.3, -0.2]], dtype=torch.float64, requires_grad=True)
    x2 = x1.detach() + torch.tensor([[1e-7, 0.0]], dtype=torch.float64)
    ContrastiveLoss(build("euclidean"), margin=1.0)(x1, x2, torch.tensor([0])).backward()
    push = 2 * (1.0 - 1e-7)  # P = 1
    assert x1.grad.flatten().tolist() == pytest.approx([push, 0.0], rel=1e-6)


def test_as_measured_normalises_for_the_cosine_only():
    rows = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    assert as_measured(rows, "cosine").flatten().tolist() == pytest.approx([0.6, 0.8, 0.0, 0.0])
    assert as_measured(rows.numpy(), "cosine").flatten().tolist() == pytest.approx([0.6, 0.8, 0.0, 0.0])
    assert as_measured(rows, "euclidean") is rows
