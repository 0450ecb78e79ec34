"""Warnings: the collapsed-loss values are checked against the engine's own losses."""

import numpy as np
import pytest
import torch

from contrast_core import distances, losses, samplers
from contrast_core.config import RunConfig
from ui import diagnosis

CONFIG = {"loss": "contrastive", "distance": "euclidean", "margin": 1.5, "sampler": "random-pairs"}


def test_collapse_is_all_points_within_a_tiny_radius():
    rng = np.random.default_rng(0)
    assert diagnosis.collapse(np.ones((50, 2)) + rng.normal(size=(50, 2)) * 1e-4, CONFIG)
    assert diagnosis.collapse(rng.normal(size=(50, 2)), CONFIG) is None
    cosine = CONFIG | {"distance": "cosine"}  # one direction, any length: collapsed for the cosine
    assert diagnosis.collapse(np.outer(rng.uniform(1, 5, 50), [1.0, 2.0]), cosine)


COMBINATIONS = [
    (loss, sampler, reduction)
    for loss, rules in losses.LOSSES.items()
    for sampler, s in samplers.SAMPLERS.items()
    if rules.kind in s.kinds
    for reduction in (losses.REDUCTIONS if "reduction" in rules.knobs else ("mean",))
]


@pytest.mark.parametrize("loss, sampler, reduction", COMBINATIONS)
def test_collapsed_loss_is_what_the_engine_pays_on_a_collapsed_embedding(loss, sampler, reduction):
    config = RunConfig(loss=loss, sampler=sampler, reduction=reduction, margin=0.4, augment=0.5, batch_size=24)
    expected = diagnosis.collapsed_loss(config.model_dump(mode="json"))
    if expected is None:  # the batch decides it (e.g. the share of negatives among all pairs)
        assert sampler == "batch-all" or config.loss_kind == "labels"
        return
    labels = torch.arange(120) % 6
    s = samplers.build(sampler, torch.arange(120), labels, 24, 4, distances.build(config.measured_distance), 0.4)
    fn = losses.build(loss, config.distance, config.margin, config.temperature, reduction)
    batch = s.draw(torch.Generator().manual_seed(0))
    z = torch.ones(len(batch.index), 3, dtype=torch.float64)  # every embedding the same point
    assert diagnosis.collapsed_loss(config.model_dump(mode="json")) == pytest.approx(
        fn(*s.mine(z, batch, fn.kind)).item()
    )


def test_collapse_is_measured_in_the_distance_the_loss_uses():
    # cosine-embedding always measures with the cosine, whatever its (unused) distance field says:
    # points along one direction, at any length, are collapsed for it.
    rng = np.random.default_rng(0)
    one_direction = np.outer(rng.uniform(1, 5, 50), [1.0, 2.0])
    config = {"loss": "cosine-embedding", "distance": "euclidean", "margin": 0.0, "sampler": "random-pairs"}
    assert diagnosis.collapse(one_direction, config)
    assert diagnosis.collapse(rng.normal(size=(50, 2)), config) is None


def test_collapse_states_a_margin_of_zero():
    config = CONFIG | {"margin": 0.0}
    message = diagnosis.collapse(np.zeros((50, 2)), config)
    assert "margin 0 " in message and "margin 1" not in message


def test_stuck_at_margin_needs_a_flat_loss_at_the_collapsed_value():
    stuck = np.full(200, 1.5**2 / 2)
    assert diagnosis.stuck_at_margin(stuck, CONFIG)
    assert diagnosis.stuck_at_margin(np.linspace(1.0, 0.1, 200), CONFIG) is None
    ntxent = CONFIG | {"loss": "nt-xent", "sampler": "augmented-views", "augment": 0.5, "batch_size": 100}
    assert diagnosis.stuck_at_margin(stuck, ntxent) is None
    assert diagnosis.stuck_at_margin(np.full(200, np.log(2 * 100 - 1)), ntxent)  # equal logits over 199 others


def test_divergence():
    assert diagnosis.divergence(np.array([1.0, 0.5]), "diverged at step 3")
    assert diagnosis.divergence(np.array([1.0, np.inf]), None)
    rising = np.concatenate([np.full(100, 1.0), np.full(100, 0.05), np.full(100, 2.0)])
    assert "rising" in diagnosis.divergence(rising, None)
    noisy_but_low = np.concatenate([np.full(100, 1.0), np.full(100, 0.001), np.full(100, 0.02)])
    assert diagnosis.divergence(noisy_but_low, None) is None  # 20x its best, but far below the start


def test_reconstructions_blurred_to_the_mean_image_are_flagged():
    rng = np.random.default_rng(0)
    originals = rng.uniform(0, 1, size=(16, 1, 8, 8))
    mean_image = np.broadcast_to(originals.mean(axis=0), originals.shape) + rng.normal(0, 0.01, originals.shape)
    message = diagnosis.blurred_to_the_mean(originals, mean_image)
    assert message and "mean image" in message and "beta" in message
    assert "adversarial weight" in diagnosis.blurred_to_the_mean(originals, mean_image, "aae")
    faithful = originals + rng.normal(0, 0.05, originals.shape)
    assert diagnosis.blurred_to_the_mean(originals, faithful) is None
    assert diagnosis.reconstruction_spread(originals, originals) == pytest.approx(1.0)
    arrays = {"embeddings": rng.normal(size=(16, 2)), "originals": originals, "reconstructions": mean_image}
    warnings = diagnosis.diagnose(np.ones(10), arrays, CONFIG | {"model": "vae"}, None)
    assert any("mean image" in w for w in warnings)


def test_the_vae_recipe_reconstructs_digits_rather_than_their_mean():
    from contrast_core.train import train
    from ui.config_form import PRESETS

    config = RunConfig(**PRESETS["VAE + contrastive"], steps=800, device="cpu", eval_size=200)
    arrays = {}
    train(config, lambda event: arrays.update(event.data["arrays"]) if event.kind == "snapshot" else None)
    assert diagnosis.reconstruction_spread(arrays["originals"], arrays["reconstructions"]) > 0.5
    assert diagnosis.blurred_to_the_mean(arrays["originals"], arrays["reconstructions"]) is None


def test_a_collapse_under_the_cosine_with_batch_hard_names_its_cause_and_a_cosine_embedding_margin_its_direction():
    rng = np.random.default_rng(0)
    one_direction = np.outer(rng.uniform(1, 5, 50), [1.0, 2.0])
    hard = {"loss": "cosine-embedding", "distance": "cosine", "margin": 0.0, "sampler": "batch-hard"}
    for config, others in (
        (hard, "batch-all or random-pairs"),
        (hard | {"loss": "triplet", "margin": 0.5}, "batch-all,"),
    ):
        assert "batch-hard's hardest negatives point the way their anchors do" in diagnosis.collapse(
            one_direction, config
        )
        stuck = np.full(200, diagnosis.collapsed_loss(config))  # what the collapsed embedding pays
        assert f"try {others}" in diagnosis.stuck_at_margin(stuck, config)  # samplers that feed the loss only
    pairs = hard | {"sampler": "random-pairs", "margin": 0.2}  # a similarity: negatives above it are pushed apart
    message = diagnosis.collapse(one_direction, pairs)
    assert "(margin 0.2, a cosine similarity)" in message and "a lower margin" in message
    euclidean = CONFIG | {"sampler": "batch-hard"}  # the usual advice where the cosine is not measured
    assert "a larger margin" in diagnosis.collapse(np.zeros((50, 2)), euclidean)
