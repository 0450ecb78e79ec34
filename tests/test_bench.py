import numpy as np
import torch

from contrast_core import bench, data
from contrast_core.config import RunConfig


def test_tutorial_pairs_are_labelled_right_and_half_similar():
    labels = np.arange(200) % 4
    images = (np.arange(200)[:, None, None] * np.ones((1, 8, 8))).astype(np.uint8)  # pixel value = row index
    pairs = bench.TutorialPairs(images, labels)
    same_count = 0
    for i in range(200):
        first, second, same = pairs[i]
        assert first.shape == (1, 8, 8) and first.max() <= 1  # ToTensor scaled to [0, 1]
        j = round(second[0, 0, 0].item() * 255)
        assert same.item() == float(labels[j] == labels[i])
        same_count += int(same.item())
    assert 60 < same_count < 140


def test_compare_measures_both_sides_on_the_same_data():
    config = RunConfig(device="cpu", eval_size=100)
    row = bench.compare("digits", config, "rand_index", 0.5, seeds=1, seconds=0.3, budget=5.0)
    assert row["pairs_per_second"] > 0 and row["classic_pairs_per_second"] > 0
    assert row["throughput_ratio"] == row["pairs_per_second"] / row["classic_pairs_per_second"]
    assert 0 <= row["reached_share"] <= 1 and row["bar"] == "rand_index >= 0.5"


def test_classic_recipe_learns():
    dataset = data.load("digits", eval_size=100)
    recipe = bench.ClassicRecipe(dataset, RunConfig(device="cpu"), torch.device("cpu"))
    before = bench.quality(recipe.model, dataset, "knn_accuracy")
    for _ in range(150):
        recipe.train_step()
    assert bench.quality(recipe.model, dataset, "knn_accuracy") > max(before, 0.5)


def test_step_costs_count_the_mlp_by_hand():
    """Digits (64 inputs), batch 100 pairs = 200 items through 64-256-128-32-2."""
    costs = bench.step_costs(RunConfig(device="cpu"), data.load("digits"))
    items, widths = 200, [64, 256, 128, 32, 2]
    macs = sum(a * b for a, b in zip(widths, widths[1:], strict=False))  # per item, per pass
    # forward, weight gradients and input gradients, minus the input gradient of the first layer
    assert costs["flops"] == items * 2 * (3 * macs - 64 * 256)
    params = sum(a * b + b for a, b in zip(widths, widths[1:], strict=False))
    outputs = items * (64 + 2 * (256 + 128 + 32) + 2)  # flatten, 4 linears, 3 ReLUs
    assert costs["bytes"] == 4 * (items * 64 + 10 * params + 2 * outputs)


def test_efficiency_sets_epoch_time_against_the_floors():
    digits = data.load("digits")
    config = RunConfig(device="cpu")
    limits = {"matmul_flops_per_second": 1e9, "copy_bytes_per_second": 1e12}
    found = bench.efficiency(config, digits, pairs_per_second=50_000.0, limits=limits)
    costs = bench.step_costs(config, digits)
    steps = len(digits.train_index) / 100
    assert found["epoch_seconds"] == len(digits.train_index) / 50_000.0
    assert found["epoch_compute_floor_seconds"] == steps * costs["flops"] / 1e9
    assert found["bound"] == "compute"
    assert found["epoch_over_floor"] == found["epoch_seconds"] / found["epoch_compute_floor_seconds"]
    assert found["share_of_matmul_peak"] == costs["flops"] * 500 / 1e9
    half = config.model_copy(update={"precision": "bfloat16"})
    found = bench.efficiency(half, digits, 50_000.0, limits | {"bfloat16_matmul_flops_per_second": 4e9})
    assert found["epoch_compute_floor_seconds"] == steps * costs["flops"] / 4e9  # the bfloat16 peak


def test_device_limits_are_measured():
    limits = bench.device_limits(torch.device("cpu"))
    assert limits["matmul_flops_per_second"] > 1e8 and limits["copy_bytes_per_second"] > 1e8
    assert "graph_seconds_per_kernel" not in limits  # CUDA only


def test_refresh_cost_reads_the_run_and_builds_its_figures(store):
    from contrast_core.jobs import execute

    config = RunConfig(device="cpu", steps=20, eval_size=50, snapshot_every=10)
    run_id = store.create_run(config.model_dump(mode="json"))
    store.set_status(run_id, "running")
    assert execute(store, run_id) == "finished"
    cost = bench._refresh_cost(store, run_id, polls=3, wait_finish=True)
    assert cost > 0
