"""The job queue with real worker processes over a temporary store."""

import os
import signal
import subprocess
import sys
import time

import pytest

from contrast_core.config import RunConfig
from contrast_core.jobs import JobQueue

FAST = dict(eval_size=40, batch_size=32, device="cpu")


def wait_for(predicate, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def queue(store):
    q = JobQueue(store, n_workers=1).start()
    wait_for(lambda: q.status()["workers"] == 1, what="the worker")
    yield q
    q.shutdown()


def status_of(store, run_id):
    return store.get_run(run_id).status


def test_two_runs_train_in_order_with_one_worker(queue, store):
    first = queue.submit(RunConfig(steps=60, **FAST), name="first")
    second = queue.submit(RunConfig(steps=20, **FAST), name="second")
    assert store.queue_position(second) in (1, 2)
    wait_for(lambda: status_of(store, second) == "finished", what="the second run")
    a, b = store.get_run(first), store.get_run(second)
    assert a.status == "finished" and a.step == 60 and b.step == 20
    assert a.finished_at <= b.started_at  # the second waited for the first
    assert len(store.list_snapshots(first)) > 2 and (store.run_dir(first) / "model.pt").exists()
    assert "rand_index" in a.final_metrics


def test_cancel_stops_a_run_within_a_second(queue, store):
    run_id = queue.submit(RunConfig(steps=1_000_000, **FAST))
    wait_for(lambda: store.read_metrics(run_id), what="the first metric row")
    asked = time.monotonic()
    queue.cancel(run_id)
    wait_for(lambda: status_of(store, run_id) == "cancelled", timeout=5, what="cancel")
    assert time.monotonic() - asked < 1.0


def test_killed_worker_fails_its_run_and_the_next_run_trains(queue, store):
    doomed = queue.submit(RunConfig(steps=1_000_000, **FAST))
    survivor = queue.submit(RunConfig(steps=10, **FAST))
    wait_for(lambda: store.read_metrics(doomed), what="the doomed run to train")
    pid = next(w["pid"] for w in store.workers() if w["run_id"] == doomed)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: status_of(store, doomed) == "failed", what="the failure to be noticed")
    assert "SIGKILL" in store.get_run(doomed).error
    wait_for(lambda: status_of(store, survivor) == "finished", what="the next run on a new worker")


def test_diverging_run_is_failed_with_its_step(queue, store):
    run_id = queue.submit(RunConfig(steps=500, lr=1e3, **FAST))
    wait_for(lambda: status_of(store, run_id) == "failed", what="divergence")
    assert store.get_run(run_id).error.startswith("diverged at step ")


def test_restart_marks_running_interrupted_and_resume_finishes(store):
    config = RunConfig(steps=3000, checkpoint_every=40, **FAST)
    crashed = JobQueue(store, n_workers=1).start()
    run_id = crashed.submit(config)
    wait_for(lambda: (store.run_dir(run_id) / "model.pt").exists(), what="a checkpoint")
    crashed.stopping.set()  # the app process dies: no supervisor, and its worker is killed
    for proc in crashed.procs.values():
        proc.kill()
        proc.wait()
    assert status_of(store, run_id) == "running"

    restarted = JobQueue(store, n_workers=1).start()
    try:
        assert status_of(store, run_id) == "interrupted"
        checkpoint_step = store.load_checkpoint(run_id)["step"]
        restarted.resume(run_id)
        wait_for(lambda: status_of(store, run_id) == "finished", timeout=120, what="the resumed run")
        rows = store.read_metrics(run_id, since=checkpoint_step)
        assert rows[0]["step"] == checkpoint_step + 1 and store.get_run(run_id).step == config.steps
    finally:
        restarted.shutdown()


def test_terminal_train_is_recorded_in_the_store(store):
    cmd = [sys.executable, "-m", "contrast_core", "train", "--steps", "15", "--eval-size", "30", "--quiet"]
    out = subprocess.run([*cmd, "--home", str(store.home), "--name", "from-cli"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    (run,) = store.list_runs()
    assert (run.name, run.status, run.step) == ("from-cli", "finished", 15)
    assert store.read_metrics(run.id)[-1]["step"] == 15


def test_resume_refuses_a_finished_run(store):
    run_id = store.create_run(RunConfig().model_dump(mode="json"))
    store.set_status(run_id, "finished")
    with pytest.raises(Exception, match="only interrupted, cancelled or failed"):
        JobQueue(store, n_workers=1).resume(run_id)
