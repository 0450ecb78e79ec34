"""The forces: the negative gradient of the loss on each item's embedding, against hand-computed values."""

import numpy as np
import pytest
import torch

from contrast_core import distances, forces, losses, samplers
from contrast_core.config import RunConfig
from contrast_core.projection import in_plane
from contrast_core.samplers import Batch
from contrast_core.train import Trainer


def pair_sampler(distance="euclidean"):
    labels = torch.tensor([0, 1])
    return samplers.build("random-pairs", torch.arange(2), labels, 1, distance=distances.build(distance))


def test_a_negative_inside_the_margin_is_pushed_out_by_twice_the_shortfall():
    # contrastive, one dissimilar pair at d = 0.3, margin 1: L = (1 - d)^2, dL/dx1 = -2 (1 - d) (x1 - x2) / d
    loss = losses.build("contrastive", "euclidean", 1.0, 0.1, "mean")
    e = torch.tensor([[0.0, 0.0], [0.3, 0.0]])
    force = forces.row_forces(
        loss, pair_sampler(), Batch(torch.tensor([0, 1]), torch.tensor([0, 1]), same=torch.tensor([0])), e
    )
    assert force.numpy() == pytest.approx(np.array([[-1.4, 0.0], [1.4, 0.0]]), abs=1e-6)  # apart, each 2 * 0.7


def test_a_positive_pair_is_pulled_together_and_a_far_negative_is_not_touched():
    loss = losses.build("contrastive", "euclidean", 1.0, 0.1, "mean")
    e = torch.tensor([[0.0, 0.0], [0.0, 0.5]])
    pulled = forces.row_forces(
        loss, pair_sampler(), Batch(torch.tensor([0, 1]), torch.tensor([0, 0]), same=torch.tensor([1])), e
    )
    assert pulled.numpy() == pytest.approx(np.array([[0.0, 1.0], [0.0, -1.0]]), abs=1e-6)  # L = d^2: 2d = 1
    far = forces.row_forces(
        loss, pair_sampler(), Batch(torch.tensor([0, 1]), torch.tensor([0, 1]), same=torch.tensor([0])), e * 4
    )
    assert far.abs().max() == 0  # d = 2 > margin: no term touches them


def test_cosine_forces_are_tangent_to_the_unit_circle_and_match_a_numerical_step():
    loss = losses.build("contrastive", "cosine", 0.5, 0.1, "mean")
    e = torch.tensor([[2.0, 0.0], [1.0, 1.0]])  # cosine distance 1 - cos 45 = 0.29 < 0.5: pushed apart
    batch = Batch(torch.tensor([0, 1]), torch.tensor([0, 1]), same=torch.tensor([0]))
    force = forces.row_forces(loss, pair_sampler("cosine"), batch, e)
    u = e / e.norm(dim=1, keepdim=True)
    assert (force * u).sum(1).abs().max() < 1e-6  # no radial part: the cosine ignores length
    # One small gradient step on the raw embedding moves the drawn point by about eps * force.
    e_step = e.clone().requires_grad_(True)
    value = loss(*pair_sampler("cosine").mine(e_step, batch, "pairs"))
    (grad,) = torch.autograd.grad(value, e_step)
    eps = 1e-3
    moved = (e - eps * grad) / (e - eps * grad).norm(dim=1, keepdim=True) - u
    assert (moved / eps).numpy() == pytest.approx(force.numpy(), abs=2e-3)
    assert force[0, 1] < 0 < force[1, 1]  # apart: item 0 turns clockwise, item 1 anticlockwise


def test_item_forces_add_the_rows_of_one_item_and_say_which_were_drawn():
    force = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    rows = torch.tensor([7, 5, 7])  # item 7 appears twice (both views, or two pairs)
    total, drawn = forces.item_forces(force, rows, items=torch.tensor([5, 6, 7]))
    assert total.tolist() == [[0.0, 2.0], [0.0, 0.0], [4.0, 0.0]]
    assert drawn.tolist() == [True, False, True]


def test_in_plane_maps_forces_through_a_rotated_and_shifted_pca():
    rng = np.random.default_rng(0)
    measured = rng.normal(size=(50, 3))
    rotation = np.array([[0.0, 1.0], [-1.0, 0.0], [0.0, 0.0]])  # drops the third axis, turns the plane
    layout = measured @ rotation + 5.0
    f = rng.normal(size=(50, 3))
    assert in_plane(f, measured, layout) == pytest.approx(f @ rotation, abs=1e-9)


@pytest.mark.parametrize(
    "config",
    [
        dict(),
        dict(loss="triplet", sampler="semi-hard", margin=0.5),
        dict(loss="triplet", sampler="batch-hard", margin=0.2),
        dict(loss="nt-xent", sampler="augmented-views", augment=0.5, embedding_dim=8),
        dict(loss="supcon", sampler="batch-all", embedding_dim=4),
        dict(model="vae", beta=0.1),
    ],
)
def test_every_snapshot_carries_the_forces_of_a_fixed_batch(config):
    trainer = Trainer(RunConfig(steps=5, eval_size=60, batch_size=16, **config))
    arrays, _ = trainer.snapshot()
    again, _ = trainer.snapshot()
    assert arrays["forces"].shape == arrays["embeddings"].shape and arrays["force_drawn"].dtype == bool
    assert arrays["force_drawn"].any() and np.isfinite(arrays["forces"]).all()
    assert (arrays["force_drawn"] == again["force_drawn"]).all()  # the same items every snapshot
    assert not arrays["forces"][~arrays["force_drawn"]].any()  # an item not drawn has no force
