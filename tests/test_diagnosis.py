"""Warnings: the collapsed-loss values are checked against the engine's own losses."""

import numpy as np
import pytest
import torch

from contrast_core import distances, losses
from ui import diagnosis

CONFIG = {"loss": "contrastive", "distance": "euclidean", "margin": 1.5, "sampler": "random-pairs"}


def test_collapse_is_all_points_within_a_tiny_radius():
    rng = np.random.default_rng(0)
    assert diagnosis.collapse(np.ones((50, 2)) + rng.normal(size=(50, 2)) * 1e-4, CONFIG)
    assert diagnosis.collapse(rng.normal(size=(50, 2)), CONFIG) is None
    cosine = CONFIG | {"distance": "cosine"}  # one direction, any length: collapsed for the cosine
    assert diagnosis.collapse(np.outer(rng.uniform(1, 5, 50), [1.0, 2.0]), cosine)


@pytest.mark.parametrize("loss", ["contrastive", "triplet", "cosine-embedding"])
def test_collapsed_loss_matches_the_loss_on_a_collapsed_embedding(loss):
    config = CONFIG | {"loss": loss, "margin": 0.4}
    z = torch.ones(4, 2)  # every embedding the same point
    fn = losses.build(loss, distances.build("euclidean"), 0.4, 0.1)
    same = torch.tensor([1, 1, 0, 0])  # random pairs: half similar, half dissimilar
    expected = fn(z, z, z) if loss == "triplet" else fn(z, z, same)
    # rel: the engine's Euclidean distance of identical points is sqrt(1e-12), not 0
    assert diagnosis.collapsed_loss(config) == pytest.approx(expected.item(), rel=1e-4)


def test_stuck_at_margin_needs_a_flat_loss_at_the_collapsed_value():
    stuck = np.full(200, 1.5**2 / 2)
    assert diagnosis.stuck_at_margin(stuck, CONFIG)
    assert diagnosis.stuck_at_margin(np.linspace(1.0, 0.1, 200), CONFIG) is None
    assert diagnosis.stuck_at_margin(stuck, CONFIG | {"loss": "nt-xent"}) is None


def test_divergence():
    assert diagnosis.divergence(np.array([1.0, 0.5]), "diverged at step 3")
    assert diagnosis.divergence(np.array([1.0, np.inf]), None)
    rising = np.concatenate([np.full(100, 1.0), np.full(100, 0.05), np.full(100, 2.0)])
    assert "rising" in diagnosis.divergence(rising, None)
    noisy_but_low = np.concatenate([np.full(100, 1.0), np.full(100, 0.001), np.full(100, 0.02)])
    assert diagnosis.divergence(noisy_but_low, None) is None  # 20x its best, but far below the start
