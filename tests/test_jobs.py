"""The job queue with real worker processes over a temporary store."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from contrast_core import cgroups, jobs
from contrast_core.config import RunConfig
from contrast_core.jobs import JobQueue, RunRecorder
from contrast_core.store import RESUMABLE_STATUSES, STATUSES, StoreError
from contrast_core.train import Event

REPO_ROOT = Path(__file__).resolve().parents[1]

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
    (worker,) = store.workers()  # the device the worker reports is the one its runs trained on
    assert worker["device"] == a.device == b.device == queue.status()["device"]


def test_cancel_stops_a_running_run_and_its_worker_goes_on(queue, store):
    run_id = queue.submit(RunConfig(steps=1_000_000, **FAST))
    wait_for(lambda: store.read_metrics(run_id), what="the first metric row")
    (worker,) = store.workers()
    queue.cancel(run_id)
    wait_for(lambda: status_of(store, run_id) == "cancelled", timeout=30, what="cancel")
    run = store.get_run(run_id)
    assert run.error is None  # its trainer stopped at a step: not killed after CANCEL_GRACE_SECONDS
    assert run.step < 1_000_000 and store.read_metrics(run_id)[-1]["step"] == run.step
    after = queue.submit(RunConfig(steps=5, **FAST))
    wait_for(lambda: status_of(store, after) == "finished", what="the next run")
    assert store.get_run(after).worker == worker["id"]
    assert [w["pid"] for w in store.workers()] == [worker["pid"]]  # the same process, never restarted


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
    (worker,) = store.workers()  # the terminal's process beat like a worker, with its device
    assert (worker["id"], worker["device"]) == (run.worker, run.device)


def test_a_run_s_first_row_is_written_at_once_after_its_step_0_snapshot(store, monkeypatch):
    """The step-0 snapshot's flush has no rows to write: it must not start a batch period that
    holds the first loss point back FLUSH_SECONDS. Later rows are still written in batches."""
    clock = [100.0]
    monkeypatch.setattr(jobs.time, "monotonic", lambda: clock[0])
    run_id = store.create_run(RunConfig().model_dump(mode="json"), status="running")
    recorder = RunRecorder(store, run_id)
    arrays = {"embeddings": np.zeros((4, 2), np.float32), "labels": np.arange(4)}
    recorder(Event("snapshot", 0, {"arrays": arrays, "metrics": {}}))
    recorder(Event("step", 1, {"loss": 1.0}))
    assert [row["step"] for row in store.read_metrics(run_id)] == [1]
    clock[0] += jobs.FLUSH_SECONDS / 2
    recorder(Event("step", 2, {"loss": 0.9}))
    assert [row["step"] for row in store.read_metrics(run_id)] == [1]  # batched
    clock[0] += jobs.FLUSH_SECONDS
    recorder(Event("step", 3, {"loss": 0.8}))
    assert [row["step"] for row in store.read_metrics(run_id)] == [1, 2, 3]


def test_the_first_worker_starts_before_the_gpus_are_counted(store, monkeypatch):
    """Counting GPUs imports torch in the app (seconds on two cores): the first worker's own
    start-up must not wait for it. The others start once the count is known."""
    spawned, spawned_when_counted = [], []
    monkeypatch.delenv("CONTRAST_WORKERS", raising=False)
    monkeypatch.setattr(JobQueue, "_spawn", lambda self, worker_id: spawned.append(worker_id))
    monkeypatch.setattr(jobs, "default_workers", lambda: spawned_when_counted.append(len(spawned)) or 3)
    queue = JobQueue(store).start()
    queue.shutdown()
    assert spawned_when_counted == [1]
    assert [worker.split("-")[0] for worker in spawned] == ["w0", "w1", "w2"]


@pytest.mark.parametrize("status", [s for s in STATUSES if s not in RESUMABLE_STATUSES])
def test_resume_refuses_a_run_that_is_not_resumable(store, status):
    run_id = store.create_run(RunConfig().model_dump(mode="json"), status=status)
    with pytest.raises(StoreError, match=f"run: '{run_id}' is {status}; only interrupted, cancelled or failed runs"):
        JobQueue(store, n_workers=1).resume(run_id)
    assert status_of(store, run_id) == status


@pytest.mark.parametrize("status", RESUMABLE_STATUSES)
def test_resume_queues_a_resumable_run_again(store, status):
    run_id = store.create_run(RunConfig().model_dump(mode="json"), status=status)
    JobQueue(store, n_workers=1).resume(run_id)
    assert status_of(store, run_id) == "queued" and store.queue_position(run_id) == 1


# What the app process does with its queue: construct it and read its status. Run apart, so that
# this test's own imports cannot hide one.
APP_SIDE = """
import json, os, socket, sys
from contrast_core.jobs import JobQueue
from contrast_core.store import RunStore
store = RunStore(sys.argv[1])
queue = JobQueue(store)  # the app's default worker count
seen = {"none": queue.status()["device"]}
store.heartbeat(f"{os.getpid()}@{socket.gethostname()}", os.getpid(), device=sys.argv[2])
seen["heartbeat"] = queue.status()["device"]
store.create_run({}, status="running", worker="elsewhere", device=sys.argv[3])
seen["running"] = queue.status()["device"]
print(json.dumps({"seen": seen, "torch": "torch" in sys.modules}))
"""


def test_the_queue_status_reports_the_workers_device_without_torch(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CONTRAST_WORKERS"} | {"PYTHONPATH": str(REPO_ROOT)}
    beat, run_device = f"beat-{socket.gethostname()}", f"run-{os.getpid()}"
    cmd = [sys.executable, "-c", APP_SIDE, str(tmp_path), beat, run_device]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert found["torch"] is False  # no torch, so no CUDA context, in the app process
    assert found["seen"] == {"none": "starting workers", "heartbeat": beat, "running": run_device}


def test_a_worker_busy_in_one_long_step_keeps_beating_and_keeps_its_run(store, monkeypatch):
    """The heartbeat is its own thread: a slow data load or step (here 1 s, five stale periods) does not
    get the run marked interrupted, while a worker that stopped beating does."""
    monkeypatch.setattr(jobs, "HEARTBEAT_SECONDS", 0.02)
    monkeypatch.setattr(jobs, "HEARTBEAT_STALE_SECONDS", 0.2)
    me = f"busy-{os.getpid()}@{socket.gethostname()}"
    run_id = store.create_run(RunConfig(**FAST).model_dump(mode="json"))
    store.claim_next(me, "cpu")
    jobs.Heartbeat(jobs.RunStore(store.home), me, "cpu").start()
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:  # the training thread, busy in Python the whole time
        sum(i * i for i in range(10_000))
    JobQueue(store)._interrupt_stale()
    assert store.get_run(run_id).status == "running"
    silent = store.create_run({})
    store.claim_next("silent@elsewhere", "cpu")  # beat once, long ago
    store.heartbeat("silent@elsewhere", 1, "cpu")
    time.sleep(0.3)
    JobQueue(store)._interrupt_stale()
    assert store.get_run(silent).status == "interrupted"
    assert store.get_run(run_id).status == "running"


def _execute_in_thread(store, run_id, worker):
    import threading

    found = {}
    thread = threading.Thread(target=lambda: found.update(status=jobs.execute(store, run_id, worker)))
    thread.start()
    wait_for(lambda: store.read_metrics(run_id), what="the first metric rows")
    return thread, found


def test_a_run_deleted_while_it_trains_stops_and_leaves_nothing(store):
    run_id = store.create_run(RunConfig(steps=100_000, **FAST).model_dump(mode="json"))
    store.claim_next("w@here", "cpu")
    thread, found = _execute_in_thread(store, run_id, "w@here")
    store.delete_run(run_id)
    thread.join(timeout=60)
    assert found["status"] == "lost"
    assert not store.run_dir(run_id).exists() and store.list_runs() == []


def test_a_run_taken_over_after_a_resume_is_trained_by_one_worker_only(store):
    """The found bug: a run marked interrupted while its worker still trained it, resumed, and claimed by a
    second worker was trained by both. Now the first stops at its next step and writes nothing more."""
    run_id = store.create_run(RunConfig(steps=100_000, **FAST).model_dump(mode="json"))
    store.claim_next("A@here", "cpu")
    thread, found = _execute_in_thread(store, run_id, "A@here")
    store.mark_interrupted(worker="A@here")
    store.set_status(run_id, "queued")  # Resume
    store.claim_next("B@here", "cpu")
    thread.join(timeout=60)
    assert found["status"] == "lost"
    rows = store.read_metrics(run_id)
    time.sleep(0.5)
    assert store.read_metrics(run_id) == rows  # nobody writes: B was never started here
    run = store.get_run(run_id)
    assert (run.status, run.worker, run.final_metrics) == ("running", "B@here", None)


def test_a_worker_killed_for_memory_says_so_with_what_the_run_trains(store, monkeypatch):
    """The kernel's OOM killer sends SIGKILL; the cgroup's oom_kill count tells it from any other SIGKILL."""
    victim = []  # the kernel counts its kill before the process is gone
    monkeypatch.setattr(
        jobs.cgroups, "oom_kills", lambda cgroup: int(bool(victim) and not Path(f"/proc/{victim[0]}").exists())
    )
    q = JobQueue(store, n_workers=1).start()
    try:
        run_id = q.submit(
            RunConfig(steps=1_000_000, batch_size=64, **{k: v for k, v in FAST.items() if k != "batch_size"})
        )
        wait_for(lambda: store.read_metrics(run_id), what="the run to train")
        victim.append(next(w["pid"] for w in store.workers() if w["run_id"] == run_id))
        os.kill(victim[0], signal.SIGKILL)  # as the kernel would
        wait_for(lambda: status_of(store, run_id) == "failed", what="the kill to be noticed")
        error = store.get_run(run_id).error
        assert error.startswith("killed by the system for memory: batch 64 of mlp with random-pairs, about ")
        assert error.endswith(" a step by its estimate")
    finally:
        q.shutdown()


def test_a_worker_the_kernel_kills_for_memory_fails_its_run_with_that_cause(store, memory_limit, tmp_path):
    """A real kill: the worker is put where it has 32 MB to grow and given a run whose 100,000-row CSV
    cannot load in that (the estimate of a step's memory, batch 64, fits: the data is what does not)."""
    rng = np.random.default_rng(0)
    big = tmp_path / "big.csv"
    np.savetxt(big, np.column_stack([rng.normal(size=(100_000, 32)), rng.integers(0, 5, 100_000)]),
               delimiter=",", fmt="%.5f", header=",".join([f"x{i}" for i in range(32)] + ["label"]), comments="")  # fmt: skip
    q = JobQueue(store, n_workers=1).start()
    try:
        before = q.submit(RunConfig(steps=20, **FAST))  # the worker is warm (its imports and kernels loaded)
        wait_for(lambda: status_of(store, before) == "finished", what="the first run")
        rows = store.read_metrics(before)
        worker = store.workers()[0]["pid"]
        memory_limit(worker, 32 * 2**20)
        confined = cgroups.memory_cgroup(worker)
        # The supervisor has read the kill count where the worker now lives (a busy machine can delay its tick).
        wait_for(lambda: next(iter(q.oom_counts.values()), (None, None)) == (confined, cgroups.oom_kills(confined)),
                 what="the supervisor to see where the worker lives")  # fmt: skip
        doomed = q.submit(
            RunConfig(dataset="csv", csv_path=str(big), steps=200, eval_size=40, batch_size=64, device="cpu")
        )
        wait_for(lambda: status_of(store, doomed) == "failed", what="the kill to be noticed")
        error = store.get_run(doomed).error
        assert error.startswith("killed by the system for memory: batch 64 of mlp with random-pairs"), (
            f"{error}; the kernel's kill count in {confined}: {cgroups.oom_kills(confined)}"
        )
        after = q.submit(RunConfig(steps=20, **FAST))  # a new worker, outside the limit, goes on
        wait_for(lambda: status_of(store, after) == "finished", what="the next run")
        assert store.workers()[0]["pid"] != worker
        assert store.read_metrics(before) == rows  # what was stored stays
    finally:
        q.shutdown()


def test_an_allocation_that_fails_mid_run_is_named_out_of_memory(store, monkeypatch):
    from contrast_core import train as train_module

    def starved(self):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: can't allocate memory: you tried "
                           "to allocate 42949672960 bytes. Error code 12 (Cannot allocate memory)")  # fmt: skip

    monkeypatch.setattr(train_module.Trainer, "train_step", starved)
    run_id = store.create_run(RunConfig(steps=10, **FAST).model_dump(mode="json"))
    store.claim_next("w@here", "cpu")
    assert jobs.execute(store, run_id, "w@here") == "failed"
    error = store.get_run(run_id).error
    assert error.startswith("out of memory: batch 32 of mlp with random-pairs, about ")
    assert "can't allocate memory" in error and "\n" not in error


def test_a_step_too_large_for_the_device_is_refused_before_it_trains(store, monkeypatch):
    from contrast_core import train as train_module

    monkeypatch.setattr(train_module, "available_memory", lambda: 8 * 2**30)  # an 8 GB machine
    config = RunConfig(loss="triplet", sampler="batch-all", batch_size=1024, steps=10, eval_size=40, device="cpu")
    run_id = store.create_run(config.model_dump(mode="json"))
    store.claim_next("w@here", "cpu")
    assert jobs.execute(store, run_id, "w@here") == "failed"
    assert store.get_run(run_id).error == (
        "batch_size: a step of batch-all triplets at batch 1,024 needs about 10.2 GB, more than this machine's "
        "8.0 GB free; use a smaller batch or batch-hard"
    )
    assert store.read_metrics(run_id) == []  # refused before the first step


def nice_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])  # field 19: nice


def test_a_worker_trains_at_a_lower_cpu_priority_than_the_app(queue, store):
    (proc,) = queue.procs.values()
    lower = min(19, nice_of(os.getpid()) + jobs.WORKER_NICE)
    wait_for(lambda: nice_of(proc.pid) == lower, 30, f"the worker at nice {lower}")
    run_id = queue.submit(RunConfig(steps=20, **FAST))
    wait_for(lambda: status_of(store, run_id) == "finished", what="the run")  # it trains at that priority
    threads = list(Path(f"/proc/{proc.pid}/task").iterdir())
    assert len(threads) > 1 and {nice_of_thread(proc.pid, t.name) for t in threads} == {nice_of(proc.pid)}


def nice_of_thread(pid: int, tid: str) -> int:
    return int(Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()[16])


@pytest.mark.parametrize("value", ["-5", "20", "high", "1.5"])
def test_a_bad_worker_priority_setting_is_one_line_naming_it(store, monkeypatch, value):
    monkeypatch.setenv("CONTRAST_WORKER_NICE", value)
    with pytest.raises(ValueError, match=r"^CONTRAST_WORKER_NICE: a whole number from 0 to 19, not "):
        JobQueue(store, n_workers=1).start()
    assert not store.workers()  # no worker was started to fail on it


def test_the_worker_priority_setting_is_read_as_given(monkeypatch):
    monkeypatch.setenv("CONTRAST_WORKER_NICE", "0")
    assert jobs.worker_nice() == 0
    monkeypatch.setenv("CONTRAST_WORKER_NICE", " 19 ")
    assert jobs.worker_nice() == 19
    monkeypatch.delenv("CONTRAST_WORKER_NICE")
    assert jobs.worker_nice() == jobs.WORKER_NICE


def test_a_worker_started_by_hand_with_a_bad_priority_setting_says_so_in_one_line(tmp_path):
    env = os.environ | {"CONTRAST_WORKER_NICE": "high", "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-m", "contrast_core", "worker", "--home", str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "error: CONTRAST_WORKER_NICE: a whole number from 0 to 19, not 'high'"
    ]
