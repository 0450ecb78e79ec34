import time
from itertools import combinations
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from contrast_core import bench, data, jobs
from contrast_core.config import RunConfig
from ui import bench as ui_bench
from ui.run_view import RunView


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


def test_compare_measures_both_sides_on_the_same_data(monkeypatch):
    trained_on = []  # (side, dataset) of every trainer compare builds

    class Ours(bench.Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            trained_on.append(("ours", self.data))

    class Classic(bench.ClassicRecipe):
        def __init__(self, dataset, *args):
            super().__init__(dataset, *args)
            trained_on.append(("classic", dataset))

    monkeypatch.setattr(bench, "Trainer", Ours)
    monkeypatch.setattr(bench, "ClassicRecipe", Classic)
    config = RunConfig(device="cpu", eval_size=100)
    row = bench.compare("digits", config, "rand_index", 0.5, seeds=1, seconds=0.3, budget=5.0)
    assert {side for side, _ in trained_on} == {"ours", "classic"}
    first = trained_on[0][1]
    for _, dataset in trained_on:  # the same items, labels and split on every side
        assert all(torch.equal(getattr(dataset, k), getattr(first, k)) for k in ("x", "y", "train_index"))
    assert row["pairs_per_second"] > 0 and row["classic_pairs_per_second"] > 0
    assert row["throughput_ratio"] == row["pairs_per_second"] / row["classic_pairs_per_second"]
    ceiling = row["worker_threads_pairs_per_second"] / row["classic_pairs_per_second"]  # the product path's
    assert row["worker_threads_throughput_ratio"] == ceiling > 0
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


def test_device_limits_divide_each_operations_work_by_its_median_time(monkeypatch):
    results = []  # what each timed operation returned: the product, or the copy's destination

    def median_seconds(fn, device, repeats=20, warmup=3):
        results.append(fn())
        return 0.25

    monkeypatch.setattr(bench, "_median_seconds", median_seconds)
    limits = bench.device_limits(torch.device("cpu"))
    product, half_product, copied = results
    n = product.shape[0]
    assert product.shape == (n, n) and half_product.dtype == torch.bfloat16
    assert limits["matmul_flops_per_second"] == 2 * n**3 / 0.25  # n^3 multiply-adds
    assert limits["bfloat16_matmul_flops_per_second"] == 2 * half_product.shape[0] ** 3 / 0.25
    assert limits["copy_bytes_per_second"] == 2 * copied.numel() * copied.element_size() / 0.25  # read + write
    assert limits["device"] == "cpu" and "graph_seconds_per_kernel" not in limits  # CUDA only


# -- the dashboard's latency (ui.bench: it builds the dashboard's figures, so it is not the engine's) --


def write_tiny_run(store):
    """A run with metric rows 1..5 and one snapshot of five 2-D points in two classes."""
    run_id = store.create_run(RunConfig(steps=10).model_dump(mode="json"), status="running")
    store.add_metrics(run_id, [{"step": s, "loss": 1.0 / s} for s in range(1, 6)])
    embeddings = np.array([[0.0, 0.0], [0.0, 1.0], [0.0, 2.0], [2.0, 0.0], [2.0, 1.5]], dtype=np.float32)  # (5, 2)
    labels = np.array([0, 0, 0, 1, 1])
    store.add_snapshot(run_id, 5, {"embeddings": embeddings, "labels": labels, "index": np.arange(5)})
    return run_id, embeddings, labels


def test_live_refresh_draws_what_the_run_wrote(store):
    run_id, embeddings, labels = write_tiny_run(store)
    view = RunView(run_id, store.get_run(run_id).config)
    loss, scatter, pairs = ui_bench.refresh(view, store)

    raw = loss.data[0]
    assert list(raw.x) == [1, 2, 3, 4, 5] and list(raw.y) == pytest.approx([1.0 / s for s in range(1, 6)])
    drawn = {(x, y) for trace in scatter.data for x, y in zip(trace.x, trace.y, strict=True)}
    assert drawn == {tuple(point) for point in embeddings.tolist()}
    positive = [
        np.linalg.norm(embeddings[i] - embeddings[j]) for i, j in combinations(range(5), 2) if labels[i] == labels[j]
    ]
    edges = np.linspace(0.0, 3.0, 61)
    density = np.histogram(positive, bins=edges)[0] / len(positive) / (edges[1] - edges[0])
    assert pairs.data[0].name == "positive pairs" and list(pairs.data[0].y) == pytest.approx(density)

    store.add_metrics(run_id, [{"step": 6, "loss": 0.1}])
    loss, *_ = ui_bench.refresh(view, store)  # the next refresh adds the new row to what it read
    assert list(loss.data[0].x) == [1, 2, 3, 4, 5, 6]


def test_refresh_seconds_is_the_median_refresh_with_its_figures_serialised(store, monkeypatch):
    run_id, *_ = write_tiny_run(store)
    serialised = []

    class Figure:
        def to_json(self):
            serialised.append(self)

    clock = iter([0.0, 0.3, 1.0, 1.1, 2.0, 2.2])  # three refreshes: 0.3, 0.1 and 0.2 seconds
    monkeypatch.setattr(ui_bench, "refresh", lambda view, store: [Figure(), Figure()])
    monkeypatch.setattr(ui_bench, "time", SimpleNamespace(perf_counter=lambda: next(clock), sleep=lambda s: None))
    assert ui_bench.refresh_seconds(store, run_id, polls=3) == pytest.approx(0.2)
    assert len(serialised) == 6  # every figure of every refresh, as the browser gets them


def test_sweep_redraw_trains_a_4x4_sweep_and_times_each_move(tmp_path, monkeypatch):
    from ui import sweep_view

    drawn = []
    real = sweep_view.panels_at
    monkeypatch.setattr(
        sweep_view, "panels_at", lambda store, grid, step: drawn.append(step) or real(store, grid, step)
    )
    found = ui_bench.sweep_redraw(tmp_path, moves=2, steps=40)
    assert (found["sweep_runs"], found["sweep_snapshots_per_run"]) == (16, 41)  # a snapshot every step, and step 0
    assert len(drawn) == 4  # a cold and a warm redraw per move
    assert found["sweep_redraw_seconds_cold_max"] >= found["sweep_redraw_seconds_cold_median"] > 0
    runs = ui_bench.RunStore(tmp_path).list_runs(sweep="bench 4x4")
    assert {(r.config["margin"], r.config["lr"]) for r in runs} == {
        (m, lr) for m in (0.25, 0.5, 1.0, 2.0) for lr in (0.0003, 0.001, 0.003, 0.01)
    } and all(r.status == "finished" for r in runs)  # fmt: skip


def test_product_path_times_the_run_through_a_worker_and_splits_it_by_phase():
    config = RunConfig(device="cpu", steps=40, eval_size=60)
    found = bench.product_path(config, runs=1)
    assert found["snapshots"] == 41 and found["worker_threads"] >= 1  # 40 steps: a snapshot at each, and step 0
    shares = {key: value for key, value in found.items() if key.startswith("share_")}
    assert set(shares) == {f"share_{p}" for p in ("start", "steps", "logging", "snapshots", "checkpoints", "final")}
    assert sum(shares.values()) == pytest.approx(1.0)
    assert found["over_steps_only"] == pytest.approx(found["queued_to_finished_seconds"] / found["steps_only_seconds"])
    assert found["queued_to_finished_seconds"] > 0 and found["steps_only_seconds"] > 0


@pytest.fixture
def written(monkeypatch) -> list:
    """The events a run's recorder wrote to its store, in order."""
    events, record = [], jobs.RunRecorder.__call__
    monkeypatch.setattr(jobs.RunRecorder, "__call__", lambda self, event: (events.append(event), record(self, event)))
    return events


def test_time_to_quality_on_the_product_path_ends_at_the_first_snapshot_that_shows_the_bar(written):
    start = time.perf_counter()
    seconds = bench.product_seconds_to_quality(RunConfig(device="cpu", eval_size=100), "knn_accuracy", 0.6, 120)
    assert 0 < seconds < time.perf_counter() - start
    snapshots = [e for e in written if e.kind == "snapshot"]
    first = next(e for e in snapshots if e.data["metrics"]["knn_accuracy"] >= 0.6)
    assert first.step > 0 and [e.step for e in snapshots[:-1]] == list(range(0, first.step + 1, 50))
    assert max(e.step for e in written if e.kind == "step") == first.step  # it stopped there (a final snapshot after)


def test_time_to_quality_on_the_product_path_is_none_past_its_budget(written):
    assert bench.product_seconds_to_quality(RunConfig(device="cpu", eval_size=100), "knn_accuracy", 1.01, 1.0) is None
    assert 0 < max(e.step for e in written if e.kind == "step") < 9_950  # the budget stopped the run, not its steps


def test_a_new_process_s_first_umap_is_timed_twice_imports_and_fit_apart():
    found = bench.first_umap_in_a_new_process()
    assert set(found) == {
        f"umap_{run}_process_{part}_seconds" for run in ("first", "next") for part in ("imports", "fit")
    }
    assert all(value > 0 for value in found.values())
