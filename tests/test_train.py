import time

import numpy as np
import pytest
import torch

from contrast_core import distances
from contrast_core.config import RunConfig
from contrast_core.losses import LOSSES
from contrast_core.samplers import SAMPLERS
from contrast_core.train import Trainer, TrainingError, train

COMBINATIONS = [
    (loss, sampler) for loss, cls in LOSSES.items() for sampler, s in SAMPLERS.items() if cls.kind in s.kinds
]


def collect(config, **kwargs):
    events = []
    result = train(config, events.append, **kwargs)
    return result, events


@pytest.mark.parametrize("loss, sampler", COMBINATIONS)
def test_every_loss_and_sampler_trains(loss, sampler):
    config = RunConfig.check(
        loss=loss, sampler=sampler, steps=6, batch_size=24, m_per_class=4, eval_size=60,
        augment=0.5 if sampler == "augmented-views" else 0.0,
        margin=0.0 if loss == "cosine-embedding" else 0.5, snapshot_every=3, device="cpu",
    )  # fmt: skip
    result, events = collect(config)
    rows = [e.data for e in events if e.kind == "step"]
    assert result["status"] == "finished" and result["step"] == 6
    assert [e.step for e in events if e.kind == "step"] == list(range(1, 7))
    assert all(np.isfinite(r["loss"]) for r in rows)


def test_vae_reports_each_term_and_reconstructions():
    config = RunConfig(model="vae", steps=4, batch_size=16, eval_size=40, snapshot_every=2, device="cpu", beta=0.5)
    result, events = collect(config)
    row = next(e.data for e in events if e.kind == "step")
    assert {"recon", "kl", "contrastive"} <= row.keys()
    assert row["loss"] == pytest.approx(row["recon"] + 0.5 * row["kl"] + row["contrastive"], rel=1e-5)
    snap = next(e.data for e in events if e.kind == "snapshot")
    assert snap["arrays"]["reconstructions"].shape == snap["arrays"]["originals"].shape == (16, 1, 8, 8)
    assert {"recon_mse", "kl"} <= result["metrics"].keys()


def test_events_cover_snapshots_checkpoints_and_final():
    config = RunConfig(steps=20, batch_size=32, eval_size=50, snapshot_every=5, checkpoint_every=10, device="cpu")
    result, events = collect(config)
    snaps = [e.step for e in events if e.kind == "snapshot"]
    assert snaps == [0, 5, 10, 15, 20]
    assert events[-1].kind == "final" and events[-1].data["step"] == 20
    assert [e.step for e in events if e.kind == "checkpoint"] == [10, 20]
    first = next(e for e in events if e.kind == "snapshot")
    assert first.data["arrays"]["embeddings"].shape == (50, 2)
    step_row = next(e.data for e in events if e.kind == "step")
    assert {"loss", "pos_distance", "neg_distance", "violation_fraction", "lr", "pairs_per_second"} <= step_row.keys()


def test_whole_set_metrics_every_few_snapshots_and_complete_at_the_first_and_the_last():
    from contrast_core.metrics import FINAL_METRICS, LIGHT_METRICS, WHOLE_SET_METRICS
    from contrast_core.train import WHOLE_SET_EVERY

    every = 5
    steps = every * (2 * WHOLE_SET_EVERY + 1)  # the last snapshot's step is not a multiple: it is the final one
    config = RunConfig(steps=steps + 2, batch_size=32, eval_size=50, snapshot_every=every, device="cpu")
    result, events = collect(config)
    measured = {e.step: set(e.data["metrics"]) for e in events if e.kind == "snapshot"}
    whole = {step for step, keys in measured.items() if set(WHOLE_SET_METRICS) <= keys}
    assert whole == {0, every * WHOLE_SET_EVERY, 2 * every * WHOLE_SET_EVERY, steps + 2}
    for step, keys in measured.items():
        assert keys == set(LIGHT_METRICS) | (set(WHOLE_SET_METRICS) if step in whole else set()) | (
            set(FINAL_METRICS) if step == steps + 2 else set()
        ), step
    assert set(result["metrics"]) == set(LIGHT_METRICS) | set(WHOLE_SET_METRICS) | set(FINAL_METRICS)


def test_a_run_reports_its_wall_time_by_phase():
    config = RunConfig(steps=30, batch_size=32, eval_size=50, snapshot_every=10, checkpoint_every=15, device="cpu")
    started = time.perf_counter()
    result, _ = collect(config)
    wall = time.perf_counter() - started
    seconds = result["seconds"]
    assert set(seconds) == {"start", "steps", "logging", "snapshots", "checkpoints", "final"}
    assert all(value > 0 for value in seconds.values())
    assert sum(seconds.values()) == pytest.approx(wall, rel=0.05)  # the phases cover the run, once each
    assert result["pairs_per_second"] == pytest.approx(32 * 30 / seconds["steps"])


def test_the_step_0_snapshot_comes_before_the_first_step_row():
    """The live page draws a new run as soon as its first step is stored (ui.live), and counts
    on the step-0 embedding being stored already."""
    _, events = collect(RunConfig(steps=3, batch_size=16, eval_size=30, device="cpu"))
    order = [(e.kind, e.step) for e in events if e.kind in ("snapshot", "step")]
    assert order.index(("snapshot", 0)) < order.index(("step", 1))


def test_classic_recipe_clusters_digits():
    """A broken loss, sampler or distance cannot separate the 10 digit classes this well."""
    config = RunConfig(steps=1500, embedding_dim=2, batch_size=100, margin=1.0, device="cpu", snapshot_every=1500)
    result = train(config)
    assert result["metrics"]["rand_index"] > 0.9
    assert result["metrics"]["knn_accuracy"] > 0.85


def test_diverging_run_stops_with_its_step():
    config = RunConfig(lr=1e3, steps=200, device="cpu", snapshot_every=200)
    with pytest.raises(TrainingError, match=r"^diverged at step \d+$"):
        train(config)


def test_stop_request_cancels():
    calls = []
    result = train(RunConfig(steps=50, device="cpu"), should_stop=lambda: calls.append(1) or len(calls) > 3)
    assert result["status"] == "cancelled" and result["step"] == 3


def test_resume_from_checkpoint_matches_an_uninterrupted_run():
    config = RunConfig(steps=30, batch_size=32, eval_size=40, checkpoint_every=10, snapshot_every=30, device="cpu")
    _, full = collect(config)
    state = next(e.data["state"] for e in full if e.kind == "checkpoint" and e.step == 10)
    _, resumed = collect(config, resume=state)
    assert [e.step for e in resumed if e.kind == "step"] == list(range(11, 31))
    last = [e.data["loss"] for e in full if e.kind == "step"][-1]
    assert [e.data["loss"] for e in resumed if e.kind == "step"][-1] == pytest.approx(last, rel=1e-5)


def test_same_seed_same_run_on_cpu():
    config = RunConfig(steps=10, batch_size=16, eval_size=30, device="cpu", augment=0.3)
    losses_a = [e.data["loss"] for e in collect(config)[1] if e.kind == "step"]
    losses_b = [e.data["loss"] for e in collect(config)[1] if e.kind == "step"]
    assert losses_a == losses_b


def test_missing_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(TrainingError, match="device: cuda"):
        train(RunConfig(device="cuda", steps=1))


def test_snapshots_hold_class_names_and_the_pca_of_what_the_loss_measures():
    from contrast_core.projection import align, project

    config = RunConfig(loss="nt-xent", sampler="augmented-views", augment=0.5, distance="cosine", embedding_dim=8,
                       steps=4, batch_size=16, eval_size=40, snapshot_every=2, device="cpu")  # fmt: skip
    _, events = collect(config)
    arrays = [e.data["arrays"] for e in events if e.kind == "snapshot"][-1]
    assert arrays["classes"].tolist() == [str(d) for d in range(10)]
    unit = arrays["embeddings"] / np.linalg.norm(arrays["embeddings"], axis=1, keepdims=True)
    reference = project(unit, "pca")  # up to the alignment with the previous snapshot's layout
    assert np.allclose(align(arrays["pca"], reference), reference, atol=1e-3)


def test_checkpoint_from_a_graphed_gpu_run_resumes_on_cpu():
    """A CUDA-graphed run saves Adam with capturable=True and a 16-byte CUDA generator state;
    a CPU run must still load and continue it."""
    config = RunConfig(steps=20, batch_size=32, eval_size=40, checkpoint_every=10, snapshot_every=20, device="cpu")
    _, events = collect(config)
    state = next(e.data["state"] for e in events if e.kind == "checkpoint" and e.step == 10)
    groups = [g | {"capturable": True} for g in state["optimizer"]["param_groups"]]
    cuda_rng = torch.zeros(16, dtype=torch.uint8)  # a CUDA generator's (seed, offset)
    state = state | {
        "optimizer": state["optimizer"] | {"param_groups": groups},
        "rng": state["rng"] | {"generator": cuda_rng},
    }
    _, resumed = collect(config, resume=state)
    assert [e.step for e in resumed if e.kind == "step"] == list(range(11, 21))


def test_bfloat16_runs_matrix_products_in_bfloat16_and_the_rest_in_float32():
    trainer = Trainer(RunConfig(precision="bfloat16", device="cpu", batch_size=32, eval_size=40))
    seen = []
    trainer.model.net[1].register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    terms = trainer.train_step()
    assert seen == [torch.bfloat16]
    assert terms["loss"].dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())


@pytest.mark.parametrize("model", ["mlp", "vae"])
def test_bfloat16_runs_learn_digits(model):
    result = train(RunConfig(precision="bfloat16", model=model, device="cpu", steps=1500, seed=0))
    assert result["metrics"]["rand_index"] > 0.85


def test_batch_distance_stats_hand_case():
    """Points 0, 1 (class 0) and 3, 6 (class 1) on a line, Euclidean, margin 2.5."""
    trainer = Trainer(RunConfig(device="cpu", margin=2.5, batch_size=4, eval_size=40))
    trainer.train_step()  # sets what the miner found, too
    trainer.last_batch = torch.tensor([[0.0, 0], [1, 0], [3, 0], [6, 0]]), torch.tensor([0, 0, 1, 1])
    stats = trainer.batch_distance_stats()
    assert stats["pos_distance"] == pytest.approx((1 + 3) / 2)  # |0-1|, |3-6|
    negatives = [3, 6, 2, 5]  # 0-3, 0-6, 1-3, 1-6
    assert stats["neg_distance"] == pytest.approx(sum(negatives) / 4)
    assert stats["violation_fraction"] == pytest.approx(1 / 4)  # only d = 2 < 2.5
    trainer.last_batch = torch.tensor([[0.0, 0], [1, 0]]), torch.tensor([0, 1])  # no positive pair
    stats = trainer.batch_distance_stats()
    assert np.isnan(stats["pos_distance"]) and stats["neg_distance"] == pytest.approx(1.0)


def test_snapshot_metrics_run_on_one_thread_and_training_gets_its_threads_back(monkeypatch):
    """Idle scikit-learn / BLAS threads left spinning after the metrics slowed the next steps 1.5x."""
    from threadpoolctl import threadpool_info

    from contrast_core import train as train_module

    seen = []
    evaluate = train_module.metrics.evaluate

    def watched(*args, **kwargs):
        seen.append({pool["num_threads"] for pool in threadpool_info()})
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(train_module.metrics, "evaluate", watched)
    threads = torch.get_num_threads()
    trainer = Trainer(RunConfig(device="cpu", batch_size=32, eval_size=50))
    trainer.snapshot()
    assert seen == [{1}]
    assert torch.get_num_threads() == threads


def test_mining_counts_pairs_that_cost_loss():
    from contrast_core.samplers import Pairs
    from contrast_core.train import mining_counts, mining_shares

    x1 = torch.zeros(4, 2)
    x2 = torch.tensor([[0.0, 0.0], [0.5, 0.0], [0.5, 0.0], [2.0, 0.0]])
    same = torch.tensor([1, 1, 0, 0])  # a positive at 0 (free), one apart (costs), negatives at 0.5 (costs), 2 (free)
    counts = mining_counts(Pairs(x1, x2, same), distances.build("euclidean"), margin=1.0)
    row = mining_shares({k: v.item() for k, v in counts.items()})
    assert row == {"mined": 4, "active_share": 0.5}


def test_mining_sorts_triplets_into_hard_semi_hard_and_easy():
    from contrast_core.samplers import Triplets
    from contrast_core.train import mining_counts, mining_shares

    a = torch.zeros(4, 1)
    p = torch.tensor([[1.0], [1.0], [1.0], [1.0]])
    n = torch.tensor([[0.5], [1.0], [1.2], [3.0]])  # d_an 0.5, 1 (hard: <= d_ap), 1.2 (semi-hard, margin 0.5), 3 (easy)
    counts = mining_counts(Triplets(a, p, n), distances.build("euclidean"), margin=0.5)
    row = mining_shares({k: v.item() for k, v in counts.items()})
    assert row == pytest.approx(
        {"mined": 4, "active_share": 0.75, "hard_share": 0.5, "semi_hard_share": 0.25, "easy_share": 0.25}
    )


@pytest.mark.parametrize(
    "config, columns",
    [
        (dict(), {"mined", "active_share"}),
        (dict(loss="triplet", sampler="semi-hard", margin=0.5), {"hard_share", "semi_hard_share", "easy_share"}),
        (dict(loss="nt-xent", sampler="augmented-views", augment=0.5), {"mined", "active_share"}),
    ],
)
def test_every_step_row_says_what_the_miner_found(config, columns):
    rows = []
    train(RunConfig(steps=3, eval_size=30, batch_size=32, **config),
          lambda e: rows.append(e.data) if e.kind == "step" else None)  # fmt: skip
    assert all(columns <= set(row) for row in rows)
    assert all(0 <= row["active_share"] <= 1 and row["mined"] > 0 for row in rows)


def test_a_2d_vae_snapshot_decodes_its_latent_plane_on_a_grid():
    from contrast_core.train import LATENT_GRID

    trainer = Trainer(RunConfig(model="vae", beta=0.1, steps=5, eval_size=60, batch_size=16))
    arrays, _ = trainer.snapshot()
    grid, axes = arrays["latent_grid"], arrays["latent_axes"]
    assert grid.shape == (LATENT_GRID**2, *arrays["originals"].shape[1:]) and axes.shape == (2, LATENT_GRID)
    mu = arrays["embeddings"]
    assert axes[0][0] == pytest.approx(np.quantile(mu[:, 0], 0.02), rel=1e-4)  # spans the held-out means
    assert axes[1][-1] == pytest.approx(np.quantile(mu[:, 1], 0.98), rel=1e-4)
    trainer.model.eval()
    with torch.no_grad():  # the top-left image is the decoder at (lowest z1, highest z2)
        corner = trainer.model.decoder(torch.tensor([[axes[0][0], axes[1][-1]]], dtype=torch.float32))
        last = trainer.model.decoder(torch.tensor([[axes[0][-1], axes[1][0]]], dtype=torch.float32))
    assert grid[0] == pytest.approx(corner[0].numpy(), abs=1e-5)
    assert grid[-1] == pytest.approx(last[0].numpy(), abs=1e-5)  # bottom-right: (highest z1, lowest z2)
    wide, _ = Trainer(RunConfig(model="vae", embedding_dim=4, steps=5, eval_size=60, batch_size=16)).snapshot()
    assert "latent_grid" not in wide  # no plane to map


@pytest.mark.parametrize("dataset", ["digits", "moons"])  # the transposed-conv decoder, the MLP one
def test_a_vae_snapshot_carries_its_decoder_which_decodes_as_the_run_s_did(dataset):
    """The pages decode with NumPy (contrast_core.decoding); torch's decoder is the reference."""
    from contrast_core import decoding

    trainer = Trainer(RunConfig(dataset=dataset, model="vae", beta=0.1, steps=5, eval_size=60, batch_size=16,
                                embedding_dim=3))  # fmt: skip
    trainer.train_step()
    arrays, _ = trainer.snapshot()
    z = torch.randn(4, 3)
    trainer.model.eval()
    with torch.no_grad():
        assert decoding.decode(arrays, z.numpy()) == pytest.approx(trainer.model.decoder(z).numpy(), abs=1e-5)
    mu = arrays["embeddings"][:16]  # the means decode to the stored reconstructions
    assert decoding.decode(arrays, mu) == pytest.approx(arrays["reconstructions"], abs=1e-5)


@pytest.mark.parametrize("size, stride, padding", [(3, 2, 1), (4, 1, 0), (2, 3, 2)])
def test_numpy_transposed_convolution_is_torch_s(size, stride, padding):
    from contrast_core.decoding import conv_transpose

    g = torch.Generator().manual_seed(size)
    x, weight = torch.randn(2, 3, size, size + 1, generator=g), torch.randn(3, 5, 4, 4, generator=g)
    bias = torch.randn(5, generator=g)
    expected = torch.nn.functional.conv_transpose2d(x, weight, bias, stride=stride, padding=padding)
    found = conv_transpose(x.double().numpy(), weight.double().numpy(), bias.double().numpy(), stride, padding)
    assert found.shape == expected.shape and found == pytest.approx(expected.numpy(), abs=1e-5)
