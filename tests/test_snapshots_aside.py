"""Snapshot metrics measured on a thread of their own while training goes on (train.Snapshots)."""

import threading
import time

import numpy as np
import pytest
import torch

from contrast_core import train as train_module
from contrast_core.config import RunConfig
from contrast_core.train import Trainer, TrainingError, train

CONFIG = RunConfig(device="cpu", steps=60, snapshot_every=10, checkpoint_every=30, batch_size=32, eval_size=80)


def run(monkeypatch, aside: bool, config: RunConfig = CONFIG) -> tuple[dict, list]:
    monkeypatch.setattr(train_module, "measures_aside", lambda device: aside)
    events = []
    return train(config, events.append), events


def same_value(a, b) -> bool:
    return (np.isnan(a) and np.isnan(b)) if isinstance(a, float) and np.isnan(a) else a == b


def test_aside_or_not_a_run_hands_on_the_same_snapshots_and_metrics(monkeypatch):
    inline_result, inline = run(monkeypatch, aside=False)
    aside_result, aside = run(monkeypatch, aside=True)
    inline_snaps = [e for e in inline if e.kind == "snapshot"]
    aside_snaps = [e for e in aside if e.kind == "snapshot"]
    assert [e.step for e in aside_snaps] == [e.step for e in inline_snaps] == list(range(0, 61, 10))
    for a, b in zip(aside_snaps, inline_snaps, strict=True):
        assert a.data["final"] == b.data["final"]
        assert a.data["arrays"].keys() == b.data["arrays"].keys()
        for key, value in a.data["arrays"].items():
            assert np.array_equal(value, b.data["arrays"][key]), (a.step, key)
        assert a.data["metrics"].keys() == b.data["metrics"].keys()
        assert all(same_value(v, b.data["metrics"][k]) for k, v in a.data["metrics"].items()), a.step
    assert "pca" not in aside_snaps[0].data["arrays"]  # a 2-D run: no PCA; a wider one below
    assert aside_result["metrics"] == pytest.approx(inline_result["metrics"], nan_ok=True)
    rows = [e.data["loss"] for e in aside if e.kind == "step"]
    assert rows == [e.data["loss"] for e in inline if e.kind == "step"]


def test_aside_the_pca_of_each_snapshot_is_aligned_to_the_one_before_as_inline(monkeypatch):
    wide = CONFIG.model_copy(update={"embedding_dim": 8, "steps": 30})
    _, inline = run(monkeypatch, aside=False, config=wide)
    _, aside = run(monkeypatch, aside=True, config=wide)
    pcas = [[e.data["arrays"]["pca"] for e in events if e.kind == "snapshot"] for events in (inline, aside)]
    assert len(pcas[0]) == 4
    assert all(np.array_equal(a, b) for a, b in zip(*pcas, strict=True))


def test_aside_every_snapshot_comes_before_the_checkpoint_and_the_end_after_it(monkeypatch):
    _, events = run(monkeypatch, aside=True)
    order = [(e.kind, e.step) for e in events if e.kind in ("snapshot", "checkpoint", "final")]
    for kind, step in order:
        if kind != "snapshot":
            before = order[: order.index((kind, step))]
            assert {s for k, s in before if k == "snapshot"} >= set(range(0, step + 1, 10)), (kind, step)
    assert order[-3:] == [("snapshot", 60), ("checkpoint", 60), ("final", 60)]


def test_aside_the_metrics_are_measured_off_the_training_thread_while_it_trains(monkeypatch):
    """Each snapshot's measure waits (10 s at most) for the row 5 steps after it: only a measure on
    another thread, with the training going on, sees it come."""
    logged, seen = {"step": 0, "patience": 10}, threading.Condition()
    measure = Trainer.measure
    waits, threads = [], []

    def slow_measure(self, capture):
        threads.append(threading.current_thread().name)
        if not capture.final:
            with seen:
                waits.append(seen.wait_for(lambda: logged["step"] >= capture.step + 5, timeout=logged["patience"]))
        return measure(self, capture)

    def on_event(event):
        if event.kind == "step":
            with seen:
                logged["step"] = event.step
                seen.notify_all()

    monkeypatch.setattr(Trainer, "measure", slow_measure)
    monkeypatch.setattr(train_module, "measures_aside", lambda device: True)
    config = CONFIG.model_copy(update={"checkpoint_every": 60})  # no checkpoint to wait at mid-run
    assert train(config, on_event)["status"] == "finished"
    assert waits == [True] * 6
    assert len(threads) == 7 and all(name.startswith("snapshot-metrics") for name in threads)

    monkeypatch.setattr(train_module, "measures_aside", lambda device: False)
    waits.clear()
    logged.update(step=0, patience=1)
    train(config.model_copy(update={"steps": 10}), on_event)
    assert waits == [False]  # on the training thread the row never comes while it waits


def test_a_failing_measure_fails_the_run_and_ends_the_metrics_thread(monkeypatch):
    evaluate = train_module.metrics.evaluate

    def failing(*args, **kwargs):
        if kwargs.get("whole_set") and not kwargs.get("full") and failing.calls:
            raise ValueError("metrics broke")
        failing.calls += 1
        return evaluate(*args, **kwargs)

    failing.calls = 0
    monkeypatch.setattr(train_module.metrics, "evaluate", failing)
    monkeypatch.setattr(train_module, "measures_aside", lambda device: True)
    with pytest.raises(ValueError, match="metrics broke"):
        train(CONFIG, lambda event: None)
    deadline = time.monotonic() + 5
    while any(t.name.startswith("snapshot-metrics") for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("snapshot-metrics")]


def test_a_diverging_run_hands_on_its_snapshots_before_the_error(monkeypatch):
    config = CONFIG.model_copy(update={"lr": 1e6, "steps": 400, "snapshot_every": 1, "checkpoint_every": 400})
    monkeypatch.setattr(train_module, "measures_aside", lambda device: True)
    events = []
    with pytest.raises(TrainingError, match="diverged at step"):
        train(config, events.append)
    error = next(e for e in events if e.kind == "error")
    snapshots = [e.step for e in events if e.kind == "snapshot"]
    assert snapshots == list(range(error.step))  # every step's snapshot up to the one that diverged
    assert events[-1] is error


@pytest.mark.parametrize("cores, threads, device, aside", [
    (2, 1, "cpu", True), (2, 2, "cpu", False), (1, 1, "cpu", False), (8, 4, "cpu", True), (2, 2, "cuda", True),
])  # fmt: skip
def test_metrics_go_aside_on_a_gpu_or_where_a_core_is_free(monkeypatch, cores, threads, device, aside):
    monkeypatch.setattr(train_module.os, "cpu_count", lambda: cores)
    monkeypatch.setattr(train_module.torch, "get_num_threads", lambda: threads)
    assert train_module.measures_aside(torch.device(device)) is aside
