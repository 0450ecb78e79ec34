import dataclasses
import fractions
import json
import math
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from contrast_core import store as store_module
from contrast_core.store import (
    LIVE_STATUSES,
    MIGRATIONS,
    RESUMABLE_STATUSES,
    SCHEMA_VERSION,
    STATUSES,
    TERMINAL_STATUSES,
    CheckpointError,
    Run,
    RunLost,
    RunStore,
    StoreError,
)

REPO_ROOT = Path(__file__).resolve().parents[1]

# Small programs run as separate processes: the store is shared between processes.
METRICS_WRITER = """
import sys, time
from contrast_core.store import RunStore
store, run_id, n, batch = RunStore(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
for start in range(0, n, batch):
    rows = [{"step": s, "loss": 1.0 / (s + 1)} for s in range(start, min(n, start + batch))]
    store.add_metrics(run_id, rows)
    time.sleep(0.001)
"""

SNAPSHOT_WRITER = """
import sys
import numpy as np
from contrast_core.store import RunStore
store, run_id, n = RunStore(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for i in range(n):  # each step is written twice: once new, once rewritten in place
    arrays = {"embedding": np.full((512, 128), i, np.float32), "labels": np.full(512, i)}
    store.add_snapshot(run_id, i // 2, arrays, {"version": i})
"""

CLAIMER = """
import json, sys
from contrast_core.store import RunStore
store, worker = RunStore(sys.argv[1]), sys.argv[2]
print("ready", flush=True)
sys.stdin.readline()  # start together with the other claimer
claimed = []
while (run := store.claim_next(worker, "cpu")) is not None:
    claimed.append(run.id)
print(json.dumps(claimed), flush=True)
"""


def start_python(code: str, *args: str, stdin=None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=env,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# -- runs ----------------------------------------------------------------------------


def test_create_get_list_round_trip(store):
    config = {"dataset": "moons", "margin": 1.0, "layers": [64, 32]}
    first = store.create_run(config, name="baseline", owner="ana")
    second = store.create_run({"dataset": "mnist"}, owner="bo", parent_id=first)
    third = store.create_run({"dataset": "mnist"}, status="finished", owner="ana")

    run = store.get_run(first)
    assert (run.id, run.name, run.config, run.status, run.owner) == (
        first,
        "baseline",
        config,
        "queued",
        "ana",
    )
    assert (run.step, run.cancel_requested, run.worker, run.final_metrics) == (0, False, None, None)
    assert run.started_at is None and run.finished_at is None
    assert store.get_run(second).parent_id == first
    assert json.loads((store.run_dir(first) / "config.json").read_text()) == config
    assert (store.run_dir(first) / "snapshots").is_dir()

    assert [r.id for r in store.list_runs()] == [third, second, first]  # newest first
    assert [r.id for r in store.list_runs(status="queued")] == [second, first]
    assert [r.id for r in store.list_runs(status=["finished", "queued"], owner="ana")] == [
        third,
        first,
    ]
    assert [r.id for r in store.list_runs(limit=1)] == [third]
    with pytest.raises(ValueError, match="status: 'done' is not one of"):
        store.list_runs(status="done")


def test_the_runs_table_is_the_run_dataclass(store):
    """One list of run fields: the columns read and the table's columns are Run's fields."""
    names = tuple(field.name for field in dataclasses.fields(Run))
    assert names == store_module._RUN_FIELDS
    db = sqlite3.connect(store.home / "index.sqlite")
    assert tuple(row[1] for row in db.execute("PRAGMA table_info(runs)")) == names
    db.close()

    run_id = store.create_run({"layers": [64, 32]}, name="n", owner="o", parent_id="p")
    store.set_status(run_id, "running")
    store.add_metrics(run_id, [{"step": 7, "loss": 0.5}])
    store.request_cancel(run_id)
    store.set_final_metrics(run_id, {"ari": 0.25})
    run = store.get_run(run_id)
    assert (run.config, run.final_metrics, run.step, run.name, run.owner, run.parent_id) == (
        {"layers": [64, 32]},
        {"ari": 0.25},
        7,
        "n",
        "o",
        "p",
    )
    assert run.cancel_requested is True  # decoded from the 0 / 1 column
    assert store.list_runs() == [run] and store.claim_next("w", "cpu") is None


def test_status_sets_partition_the_statuses():
    assert set(LIVE_STATUSES) | set(TERMINAL_STATUSES) == set(STATUSES)
    assert not set(LIVE_STATUSES) & set(TERMINAL_STATUSES)
    assert set(RESUMABLE_STATUSES) == set(TERMINAL_STATUSES) - {"finished"}


def test_get_run_missing_raises_one_line_store_error(store):
    with pytest.raises(StoreError, match=r"^run: no run 'nope'$"):
        store.get_run("nope")


def test_run_ids_are_unique_safe_and_time_ordered(store):
    ids = [store.create_run({}) for _ in range(30)]
    assert len(set(ids)) == len(ids)
    stamps = [run_id.rsplit("-", 1)[0] for run_id in ids]  # UTC time, to the second
    assert stamps == sorted(stamps)
    for run_id in ids:
        assert store.run_dir(run_id).parent == store.home / "runs"
        assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{16}", run_id)  # 64 random bits: a link is the only way in


@pytest.mark.parametrize("bad", ["../x", "", "a/b", ".."])
def test_run_dir_rejects_ids_that_escape_the_store(store, bad):
    with pytest.raises(StoreError, match="run: invalid run id"):
        store.run_dir(bad)


def test_config_must_be_json(store):
    with pytest.raises(ValueError, match="config: not JSON-serialisable"):
        store.create_run({"device": object()})


def test_home_defaults_to_contrast_home_env(tmp_path, monkeypatch):
    monkeypatch.setenv("CONTRAST_HOME", str(tmp_path / "elsewhere"))
    store = RunStore()
    assert store.home == tmp_path / "elsewhere"
    assert (store.home / "index.sqlite").is_file() and (store.home / "runs").is_dir()
    store.close()


def test_set_status_sets_timestamps_and_requeue_clears(store):
    run_id = store.create_run({})
    store.set_status(run_id, "running")
    started = store.get_run(run_id).started_at
    assert started is not None
    store.set_status(run_id, "failed", error="loss is NaN at step 12")
    run = store.get_run(run_id)
    assert (run.status, run.error, run.started_at) == ("failed", "loss is NaN at step 12", started)
    assert run.finished_at >= started
    store.set_status(run_id, "queued")
    run = store.get_run(run_id)
    assert (run.status, run.error, run.finished_at) == ("queued", None, None)
    with pytest.raises(ValueError, match="status: 'paused'"):
        store.set_status(run_id, "paused")
    with pytest.raises(StoreError, match="run: no run 'gone'"):
        store.set_status("gone", "finished")


def test_rename_and_final_metrics(store):
    run_id = store.create_run({})
    store.rename_run(run_id, "wide margin")
    store.set_final_metrics(run_id, {"ari": 0.91, "recall@1": 0.88, "per_class": [0.9, 0.8]})
    run = store.get_run(run_id)
    assert run.name == "wide margin"
    assert run.final_metrics == {"ari": 0.91, "recall@1": 0.88, "per_class": [0.9, 0.8]}


# -- queue ---------------------------------------------------------------------------


def test_claim_next_is_fifo_and_queue_position_follows(store):
    ids = [store.create_run({"i": i}) for i in range(3)]
    finished = store.create_run({}, status="finished")
    assert [store.queue_position(run_id) for run_id in ids] == [1, 2, 3]
    assert store.queue_position(finished) is None

    run = store.claim_next("101@host", "cuda:0")
    assert (run.id, run.status, run.worker, run.device) == (ids[0], "running", "101@host", "cuda:0")
    assert run.started_at is not None
    assert store.queue_position(ids[0]) is None
    assert [store.queue_position(run_id) for run_id in ids[1:]] == [1, 2]

    store.request_cancel(ids[1])
    assert store.queue_position(ids[2]) == 1
    assert store.claim_next("102@host", "cpu").id == ids[2]
    assert store.claim_next("102@host", "cpu") is None


def test_claim_next_from_two_processes_never_double_claims(store):
    ids = {store.create_run({"i": i}) for i in range(150)}
    claimers = [start_python(CLAIMER, str(store.home), f"w{i}", stdin=subprocess.PIPE) for i in range(2)]
    for proc in claimers:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    for proc in claimers:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    claims = []
    for proc in claimers:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        claims.append(json.loads(out))
    first, second = (set(c) for c in claims)
    assert len(first) + len(second) == sum(len(c) for c in claims)  # no run claimed twice
    assert not first & second
    assert first | second == ids
    for worker, claimed in zip(("w0", "w1"), (first, second), strict=True):
        assert {r.id for r in store.list_runs(status="running") if r.worker == worker} == claimed


def test_request_cancel_queued_running_and_finished(store):
    queued, running, finished = (store.create_run({}) for _ in range(3))
    store.set_status(running, "running")
    store.set_status(finished, "finished")

    store.request_cancel(queued)
    run = store.get_run(queued)
    assert run.status == "cancelled" and run.finished_at is not None

    assert store.cancel_requested(running) is False
    store.request_cancel(running)
    run = store.get_run(running)
    assert (run.status, run.cancel_requested) == ("running", True)
    assert store.cancel_requested(running) is True

    store.request_cancel(finished)
    run = store.get_run(finished)
    assert (run.status, run.cancel_requested) == ("finished", False)

    assert store.cancel_requested("deleted-run") is True  # a worker stops a run that is gone
    with pytest.raises(StoreError, match="run: no run 'x'"):
        store.request_cancel("x")


def test_heartbeat_workers_and_mark_interrupted(store):
    a, b, c = (store.create_run({}) for _ in range(3))
    store.heartbeat("1@host", 1)
    store.heartbeat("2@host", 2)
    assert store.claim_next("1@host", "cpu").id == a
    assert store.claim_next("2@host", "cpu").id == b
    workers = {w["id"]: w for w in store.workers()}
    assert {w: (workers[w]["pid"], workers[w]["run_id"]) for w in workers} == {
        "1@host": (1, a),
        "2@host": (2, b),
    }
    assert workers["1@host"]["last_seen"] > 0

    assert store.mark_interrupted(worker="1@host") == [a]
    run = store.get_run(a)
    assert run.status == "interrupted" and run.finished_at is not None
    assert store.get_run(b).status == "running"
    assert [w["id"] for w in store.workers()] == ["2@host"]

    store.set_status(c, "running")
    assert sorted(store.mark_interrupted()) == sorted([b, c])
    assert store.list_runs(status="running") == []
    assert store.workers() == []


def test_heartbeat_records_what_the_worker_trains_on(store):
    store.heartbeat("1@host", 1, device="NVIDIA H100 80GB HBM3")
    store.heartbeat("2@host", 2)
    assert {w["id"]: w["device"] for w in store.workers()} == {"1@host": "NVIDIA H100 80GB HBM3", "2@host": None}
    store.heartbeat("1@host", 1)  # a beat without a label keeps the one reported
    store.heartbeat("2@host", 2, device="cpu")
    assert {w["id"]: w["device"] for w in store.workers()} == {"1@host": "NVIDIA H100 80GB HBM3", "2@host": "cpu"}


def test_delete_run_removes_rows_and_folder(store, tmp_path):
    keep, gone = store.create_run({}), store.create_run({})
    for run_id in (keep, gone):
        store.add_metrics(run_id, [{"step": 1, "loss": 0.5}])
        store.add_snapshot(run_id, 1, {"embedding": np.zeros((3, 2))})
    store.delete_run(gone)

    assert not store.run_dir(gone).exists()
    with pytest.raises(StoreError):
        store.get_run(gone)
    db = sqlite3.connect(tmp_path / "index.sqlite")
    for table, column in (("runs", "id"), ("metrics", "run_id"), ("snapshots", "run_id")):
        counts = db.execute(f"SELECT {column}, count(*) FROM {table} GROUP BY {column}").fetchall()
        assert counts == [(keep, 1)]
    db.close()
    assert store.load_snapshot(keep)["embedding"].shape == (3, 2)


def test_delete_works_in_every_state_and_names_a_missing_run(store):
    run_id = store.create_run({})
    store.claim_next("1@host", "cpu")
    store.delete_run(run_id)  # running: deleted; its worker is fenced out (below)
    assert store.list_runs() == [] and not store.run_dir(run_id).exists()
    assert store.cancel_requested(run_id)  # the worker's next step stops
    with pytest.raises(StoreError, match="run: no run 'x'"):
        store.delete_run("x")
    other = store.create_run({}, status="cancelled")
    shutil.rmtree(store.run_dir(other))  # folder already gone: rows still deleted
    store.delete_run(other)
    assert store.list_runs() == []


def test_a_worker_that_lost_its_run_writes_nothing(store):
    """Fenced claims: after a run is marked interrupted and claimed by another worker, or deleted, the
    first worker's writes are refused (RunLost) and leave no file or row behind."""
    run_id = store.create_run({})
    assert store.claim_next("A@host", "cpu").id == run_id
    store.add_metrics(run_id, [{"step": 1, "loss": 1.0}], worker="A@host")
    assert not store.cancel_requested(run_id, "A@host")
    store.mark_interrupted(worker="A@host")  # its heartbeat went stale
    assert store.cancel_requested(run_id, "A@host")  # it stops at its next step
    store.set_status(run_id, "queued")  # Resume
    assert store.claim_next("B@host", "cpu").id == run_id
    assert store.cancel_requested(run_id, "A@host") and not store.cancel_requested(run_id, "B@host")
    writes = {
        "metrics": lambda w: store.add_metrics(run_id, [{"step": 2, "loss": 9.0}], worker=w),
        "snapshot": lambda w: store.add_snapshot(run_id, 2, {"embeddings": np.zeros((3, 2))}, worker=w),
        "checkpoint": lambda w: store.save_checkpoint(run_id, {"model": {}, "step": 2, "config": {}}, worker=w),
        "final": lambda w: store.set_final_metrics(run_id, {"knn_accuracy": 0.1}, worker=w),
        "status": lambda w: store.set_status(run_id, "finished", worker=w),
    }
    for write in writes.values():
        with pytest.raises(RunLost, match="no longer this worker's .*held by B@host"):
            write("A@host")
    run = store.get_run(run_id)
    assert (run.status, run.worker, run.final_metrics) == ("running", "B@host", None)
    assert [row["step"] for row in store.read_metrics(run_id)] == [1]
    assert store.list_snapshots(run_id) == [] and not store.snapshot_path(run_id, 2).exists()
    assert not (store.run_dir(run_id) / "model.pt").exists()
    writes["snapshot"]("B@host")  # the holder writes
    store.delete_run(run_id)
    for write in writes.values():
        with pytest.raises(RunLost, match="was deleted"):
            write("B@host")
    assert not store.run_dir(run_id).exists()  # no folder made again by a late write


# -- metrics -------------------------------------------------------------------------


def test_read_metrics_since_is_incremental(store):
    run_id = store.create_run({})
    store.add_metrics(run_id, [{"step": s, "loss": 10.0 - s, "acc": s / 10} for s in range(10)])
    assert store.get_run(run_id).step == 9
    rows = store.read_metrics(run_id)
    assert [r["step"] for r in rows] == list(range(10))
    assert rows[3] == {"step": 3, "loss": 7.0, "acc": 0.3}
    assert [r["step"] for r in store.read_metrics(run_id, since=6)] == [7, 8, 9]
    assert store.read_metrics(run_id, since=9) == []

    store.add_metrics(run_id, [{"step": 10, "loss": 0.0}, {"step": 11, "loss": -1.0}])
    assert [r["loss"] for r in store.read_metrics(run_id, since=9)] == [0.0, -1.0]
    assert store.get_run(run_id).step == 11
    assert store.read_metrics("other-run") == []


def test_add_metrics_merges_a_repeated_step_and_keeps_nan(store):
    run_id = store.create_run({})
    store.add_metrics(run_id, [{"step": 5, "loss": 1.0}, {"step": 5, "acc": 0.5}])
    store.add_metrics(run_id, [{"step": 5, "loss": 2.0, "nmi": float("nan")}, {"step": 6}])
    rows = store.read_metrics(run_id)
    assert [r["step"] for r in rows] == [5, 6]
    assert rows[0]["loss"] == 2.0 and rows[0]["acc"] == 0.5 and math.isnan(rows[0]["nmi"])
    store.add_metrics(run_id, [{"step": 2, "loss": 3.0}])  # a late, older step
    assert store.get_run(run_id).step == 6


def test_add_metrics_converts_numpy_and_rejects_bad_rows(store):
    run_id = store.create_run({})
    store.add_metrics(run_id, [{"step": np.int64(3), "loss": np.float32(0.25)}])
    assert store.read_metrics(run_id) == [{"step": 3, "loss": 0.25}]
    with pytest.raises(ValueError, match="metrics: row 1 has no 'step'"):
        store.add_metrics(run_id, [{"step": 4}, {"loss": 1.0}])
    with pytest.raises(ValueError, match="metrics: row 0 step 1.5 is not an integer"):
        store.add_metrics(run_id, [{"step": 1.5}])
    with pytest.raises(ValueError, match="metrics: step 4 field 'loss' is not a number"):
        store.add_metrics(run_id, [{"step": 4, "loss": "low"}])
    with pytest.raises(StoreError, match="run: no run 'gone'"):
        store.add_metrics("gone", [{"step": 1, "loss": 1.0}])
    assert store.read_metrics(run_id) == [{"step": 3, "loss": 0.25}]  # nothing half-written


def test_fifty_thousand_metric_rows(store):
    run_id = store.create_run({})
    fields = [f"m{i}" for i in range(10)]
    rows = [{"step": s, **{f: s + i / 10 for i, f in enumerate(fields)}} for s in range(50_000)]
    store.add_metrics(run_id, rows[:25_000])
    store.add_metrics(run_id, rows[25_000:])
    read = store.read_metrics(run_id)
    assert len(read) == 50_000
    assert read == rows
    assert [r["step"] for r in store.read_metrics(run_id, since=48_999)] == list(range(49_000, 50_000))
    assert store.get_run(run_id).step == 49_999


def test_incremental_reader_while_a_writer_process_adds(store):
    run_id = store.create_run({})
    total = 3000
    writer = start_python(METRICS_WRITER, str(store.home), run_id, str(total), "10")
    steps, last = [], -1
    while True:
        done = writer.poll() is not None  # read once more after the writer has exited
        rows = store.read_metrics(run_id, since=last)
        polled = [r["step"] for r in rows]
        assert polled == sorted(set(polled)) and all(s > last for s in polled)
        steps += polled
        last = polled[-1] if polled else last
        if done:
            break
    assert writer.returncode == 0, writer.stderr.read()
    assert steps == list(range(total))
    assert store.read_metrics(run_id, since=total - 2) == [{"step": total - 1, "loss": 1 / total}]


def test_one_store_shared_by_threads(store):
    run_ids = [store.create_run({}) for _ in range(4)]
    errors = []

    def work(run_id):
        try:
            for step in range(100):
                store.add_metrics(run_id, [{"step": step, "loss": float(step)}])
                store.read_metrics(run_id, since=step - 1)
                store.cancel_requested(run_id)
        except Exception as exc:  # collected: assertions in threads are lost
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(run_id,)) for run_id in run_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert all(len(store.read_metrics(run_id)) == 100 for run_id in run_ids)


# -- snapshots -----------------------------------------------------------------------


def test_snapshot_round_trip_and_listing(store):
    run_id = store.create_run({})
    with pytest.raises(StoreError, match=f"snapshot: run '{run_id}' has no snapshots"):
        store.load_snapshot(run_id)
    embedding = np.arange(12, dtype=np.float32).reshape(6, 2)  # (N, D)
    labels = np.array([0, 0, 1, 1, 2, 2])
    store.add_snapshot(run_id, 0, {"embedding": embedding * 0, "labels": labels})
    store.add_snapshot(run_id, 50, {"embedding": embedding, "labels": labels}, {"ari": 0.5})

    snapshots = store.list_snapshots(run_id)
    assert [(s["step"], s["metrics"]) for s in snapshots] == [(0, {}), (50, {"ari": 0.5})]
    assert snapshots[1]["path"] == store.run_dir(run_id) / "snapshots" / "00000050.npz"
    assert snapshots[1]["path"].is_file()
    assert [s["step"] for s in store.list_snapshots(run_id, since=0)] == [50]

    latest = store.load_snapshot(run_id)
    assert latest.keys() == {"embedding", "labels"}
    np.testing.assert_array_equal(latest["embedding"], embedding)
    assert latest["embedding"].dtype == np.float32
    np.testing.assert_array_equal(store.load_snapshot(run_id, 0)["embedding"], embedding * 0)
    with pytest.raises(StoreError, match="has no snapshot at step 7"):
        store.load_snapshot(run_id, 7)
    assert not [p for p in snapshots[1]["path"].parent.iterdir() if ".tmp-" in p.name]


def test_runs_with_snapshots_is_one_query_for_all_runs(store):
    with_two, without, with_one = (store.create_run({}) for _ in range(3))
    assert store.runs_with_snapshots() == set()
    for step in (0, 50):
        store.add_snapshot(with_two, step, {"labels": np.arange(3)})
    store.add_snapshot(with_one, 10, {"labels": np.arange(3)})
    assert store.runs_with_snapshots() == {with_two, with_one}
    assert store.runs_with_snapshots() == {i for i in (with_two, without, with_one) if store.list_snapshots(i)}
    store.delete_run(with_one)
    assert store.runs_with_snapshots() == {with_two}


def test_snapshot_rejects_object_arrays_and_missing_runs(store):
    run_id = store.create_run({})
    with pytest.raises(ValueError, match="snapshot: array 'names' has dtype object"):
        store.add_snapshot(run_id, 1, {"names": np.array(["a", None], dtype=object)})
    with pytest.raises(StoreError, match="run: no run 'gone'"):
        store.add_snapshot("gone", 1, {"embedding": np.zeros(2)})
    assert store.list_snapshots(run_id) == []


def test_snapshot_rewrites_are_atomic_for_a_concurrent_reader(store):
    run_id = store.create_run({})
    writes = 80
    writer = start_python(SNAPSHOT_WRITER, str(store.home), run_id, str(writes))
    loads = 0
    while writer.poll() is None or loads == 0:
        if not store.list_snapshots(run_id):
            continue
        arrays = store.load_snapshot(run_id)  # raises on a partial or corrupt file
        embedding, labels = arrays["embedding"], arrays["labels"]
        assert embedding.shape == (512, 128) and labels.shape == (512,)
        version = labels[0]
        assert (labels == version).all() and (embedding == version).all()  # one whole write
        loads += 1
    assert writer.returncode == 0, writer.stderr.read()
    assert store.load_snapshot(run_id)["labels"][0] == writes - 1
    assert [s["metrics"]["version"] for s in store.list_snapshots(run_id)][-1] == writes - 1


# -- schema --------------------------------------------------------------------------


def test_fresh_store_is_wal_with_current_schema(tmp_path):
    RunStore(tmp_path).close()
    db = sqlite3.connect(tmp_path / "index.sqlite")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    indexed = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "runs_by_status" in indexed
    db.close()
    assert sorted(MIGRATIONS) == list(range(1, SCHEMA_VERSION + 1))
    assert STATUSES == ("queued", "running", "finished", "failed", "cancelled", "interrupted")


def test_reopening_keeps_data_and_parallel_opens_agree(tmp_path):
    errors = []

    def open_store():
        try:
            RunStore(tmp_path).close()
        except Exception as exc:  # collected: assertions in threads are lost
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    store = RunStore(tmp_path)
    run_id = store.create_run({"a": 1})
    store.close()
    assert RunStore(tmp_path).get_run(run_id).config == {"a": 1}


def test_a_version_1_store_migrates_and_keeps_its_rows(tmp_path):
    db = sqlite3.connect(tmp_path / "index.sqlite")
    MIGRATIONS[1](db)
    db.execute("PRAGMA user_version = 1")
    db.execute("INSERT INTO runs (id, config, status, created_at) VALUES ('old-run', '{\"a\": 1}', 'finished', 1.0)")
    db.execute("INSERT INTO workers (id, pid, last_seen) VALUES ('7@old', 7, 2.0)")
    db.commit()
    db.close()

    store = RunStore(tmp_path)
    db = sqlite3.connect(tmp_path / "index.sqlite")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()
    assert store.get_run("old-run").config == {"a": 1}
    assert store.workers() == [{"id": "7@old", "pid": 7, "last_seen": 2.0, "device": None, "run_id": None}]
    store.heartbeat("7@old", 7, device="cpu")
    assert store.workers()[0]["device"] == "cpu"
    assert store.get_run("old-run").sweep is None  # version 3: runs belong to a sweep or to none
    store.close()


def test_a_sweep_s_runs_are_listed_and_claimed_by_its_name(store):
    loose = store.create_run({"a": 0})
    first = store.create_run({"a": 1}, sweep="margins")
    second = store.create_run({"a": 2}, sweep="margins")
    store.create_run({"a": 3}, sweep="seeds")
    assert store.sweeps() == ["seeds", "margins"]  # newest first
    assert [r.id for r in store.list_runs(sweep="margins")] == [second, first]
    assert store.get_run(first).sweep == "margins" and store.get_run(loose).sweep is None
    assert store.claim_next("w", "cpu", sweep="margins").id == first  # not the older loose run
    assert store.claim_next("w", "cpu").id == loose


def test_newer_schema_raises_store_error(tmp_path):
    db = sqlite3.connect(tmp_path / "index.sqlite")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreError) as info:
        RunStore(tmp_path)
    message = str(info.value)
    assert f"has schema version {SCHEMA_VERSION + 1}, newer than" in message
    assert message.endswith("upgrade Contrast Lab") and "\n" not in message


def test_importing_the_store_does_not_import_torch():
    code = "import sys, contrast_core.store; print('torch' in sys.modules)"
    proc = start_python(code)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.strip() == "False"


# -- checkpoints ---------------------------------------------------------------------


def test_checkpoint_round_trip_with_weights_only(store):
    torch = pytest.importorskip("torch")
    run_id = store.create_run({})
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.randn(8, 4)).pow(2).mean().backward()
    optimizer.step()
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": 7,
        "config": {"margin": 1.0, "distance": "cosine"},
        "rng": {"torch": torch.get_rng_state()},
    }
    path = store.save_checkpoint(run_id, state)
    assert path == store.run_dir(run_id) / "model.pt"

    loaded = store.load_checkpoint(run_id)
    assert (loaded["step"], loaded["config"]) == (7, state["config"])
    assert torch.equal(loaded["rng"]["torch"], state["rng"]["torch"])
    restored = torch.nn.Linear(4, 2)
    restored.load_state_dict(loaded["model"])
    assert torch.equal(restored.weight, model.weight)
    assert torch.equal(loaded["optimizer"]["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])
    assert store.load_checkpoint(path=path)["step"] == 7
    with pytest.raises(ValueError, match="checkpoint: state lacks step, config"):
        store.save_checkpoint(run_id, {"model": {}})


def _foreign_dict(torch, path):
    torch.save({"foo": 1}, path)


def _not_a_dict(torch, path):
    torch.save([1, 2, 3], path)


def _random_bytes(torch, path):
    path.write_bytes(np.random.default_rng(0).bytes(2048))


def _unsafe_pickle(torch, path):
    torch.save({"model": {}, "step": 1, "config": fractions.Fraction(1, 3)}, path)


@pytest.mark.parametrize(
    "write, reason",
    [
        (_foreign_dict, r"\(missing keys: model, step, config\)$"),
        (_not_a_dict, r"\(holds a list, not a dict\)$"),
        (_random_bytes, r"\(\w+: .+\)$"),
        (_unsafe_pickle, r"\(\w+: .+\)$"),
        (None, r"\(file not found\)$"),
    ],
)
def test_bad_checkpoints_raise_one_line_checkpoint_error(tmp_path, write, reason):
    torch = pytest.importorskip("torch")
    store = RunStore(tmp_path)
    path = tmp_path / "model.pt"
    if write is not None:
        write(torch, path)
    with pytest.raises(CheckpointError, match=reason) as info:
        store.load_checkpoint(path=path)
    message = str(info.value)
    assert message.startswith(f"checkpoint: {path} is not a Contrast Lab checkpoint (")
    assert "\n" not in message
    store.close()
