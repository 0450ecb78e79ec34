"""The Ray backend: sweeps on a local Ray, a node lost mid-run, stop from the store, early stopping, and the
one line that says how to install Ray. Ray listens on 127.0.0.1 only, without its dashboard, and is shut
down after each group of tests."""

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from contrast_core import jobs, ray_backend, sweep
from contrast_core.__main__ import main
from contrast_core.config import RunConfig
from contrast_core.early_stop import EarlyStop, Ladder
from contrast_core.ray_backend import BackendError, RayQueue, Share
from contrast_core.store import TERMINAL_STATUSES

APP = str(Path(__file__).resolve().parent.parent / "app.py")
WAIT_SECONDS = 180  # a bound on any wait below: a test that hangs fails instead
SHORT = {"dataset": "digits", "steps": 40, "eval_size": 100}  # a few seconds a run on one core


@pytest.fixture(scope="module")
def ray():
    """Ray's module, its addresses kept on the loopback (read when Ray is first imported)."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # Linux's default would announce the host's address
    return pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray(ray):
    """A local Ray of 2 CPUs for this module's local tests."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=ray_backend.runtime_env())
    yield ray
    ray.shutdown()


@pytest.fixture
def ray_queue(store, local_ray):
    queues = []

    def start(**options) -> RayQueue:
        queues.append(RayQueue(store, **options).start())
        return queues[-1]

    yield start
    for queue in queues:
        queue.shutdown()


def wait_until_ended(store, ids: list[str]) -> list:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        runs = [store.get_run(run_id) for run_id in ids]
        if all(run.status in TERMINAL_STATUSES for run in runs):
            return runs
        time.sleep(0.1)
    raise AssertionError(f"runs still going after {WAIT_SECONDS} s: {[(r.id, r.status, r.step) for r in runs]}")


def wait_for(condition, what: str):
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(0.05)
    raise AssertionError(f"not seen within {WAIT_SECONDS} s: {what}")


def test_a_sweep_on_ray_records_its_runs_as_a_local_worker_does(store, ray_queue):
    queue = ray_queue()
    name, ids = sweep.queue(store, SHORT, {"margin": ["0.5", "1"], "lr": ["0.001", "0.01"]})
    runs = wait_until_ended(store, ids)
    local = store.create_run(RunConfig(**SHORT).model_dump(mode="json"))
    assert jobs.execute(store, store.claim_next("here", "cpu").id, "here") == "finished"
    kind = store.get_run(local)
    local_rows, local_snapshot = store.read_metrics(local), store.load_snapshot(local)
    for run in runs:
        assert (run.status, run.error, run.sweep, run.worker) == ("finished", None, name, queue.worker)
        assert run.device.startswith("cpu on ")  # the node it trained on
        rows = store.read_metrics(run.id)
        assert [row["step"] for row in rows] == list(range(1, SHORT["steps"] + 1))
        assert set(rows[-1]) == set(local_rows[-1])
        snapshots = store.list_snapshots(run.id)
        assert [s["step"] for s in snapshots] == [s["step"] for s in store.list_snapshots(local)]
        assert set(store.load_snapshot(run.id)) == set(local_snapshot)
        assert set(run.final_metrics) == set(kind.final_metrics)
        assert store.load_checkpoint(run.id)["step"] == SHORT["steps"]
    status = queue.status()
    assert (status["workers"], status["running"], status["queued"]) == (2, 0, 0)
    assert status["device"].startswith("Ray: 1 nodes, 2 CPUs")


def test_stop_from_the_store_ends_a_ray_run_as_cancelled(store, ray_queue):
    ray_queue()
    run_id = store.create_run(RunConfig(**SHORT | {"steps": 50_000}).model_dump(mode="json"))
    wait_for(lambda: store.read_metrics(run_id), "the run's first metric rows")
    store.request_cancel(run_id)  # what the pages' Stop writes; no grace period here: the run stops itself
    run = wait_until_ended(store, [run_id])[0]
    assert run.status == "cancelled" and run.error is None
    assert 0 < run.step < 50_000


def test_a_paused_ray_run_holds_and_steps_on(store, ray_queue):
    ray_queue()
    run_id = store.create_run(RunConfig(**SHORT | {"steps": 50_000}).model_dump(mode="json"))
    store.hold(run_id, 0)  # paused before it starts
    wait_for(lambda: store.get_run(run_id).held_since, "the run held")
    held_at = store.get_run(run_id).step
    store.advance(run_id, 3)
    wait_for(lambda: store.get_run(run_id).step == held_at + 3 and store.get_run(run_id).held_since, "3 steps on")
    store.request_cancel(run_id)
    assert wait_until_ended(store, [run_id])[0].status == "cancelled"


def test_early_stopping_stops_a_sweeps_worse_run_and_says_so(store, ray_queue, monkeypatch):
    monkeypatch.setenv("CONTRAST_RAY_CPUS", "2")  # one run at a time: the first reaches each rung first
    name, ids = sweep.queue(store, SHORT | {"steps": 90}, {"margin": ["0.1", "5"]})
    ray_queue(sweep=name, early_stop=EarlyStop("loss", "min"))
    first, second = wait_until_ended(store, ids)
    assert first.status == "finished"
    assert sweep.stopped_early(second) and second.error.startswith("stopped early: loss ")
    assert second.step < 90


def test_the_app_on_the_ray_backend_trains_and_stops_a_playground_run(store, local_ray, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from ui import backend

    monkeypatch.setenv("CONTRAST_BACKEND", "ray")
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception and not at.error
    assert at.sidebar.markdown[0].value.startswith(":material/memory: **Ray: 1 nodes, 2 CPUs")
    try:
        next(b for b in at.button if b.label == "Train").click().run()
        run_id = store.list_runs()[0].id
        wait_for(lambda: store.read_metrics(run_id), "the Playground run's first rows")
        assert "cpu on " in store.get_run(run_id).device
        next(b for b in at.button if b.label == "Stop").click().run()
        assert wait_until_ended(store, [run_id])[0].status == "cancelled"
    finally:
        backend.job_queue().shutdown()


def test_an_unknown_backend_is_named_on_the_page(store, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("CONTRAST_BACKEND", "spark")
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert "CONTRAST_BACKEND: 'spark' is not one of local, ray" in at.error[0].value


def test_ladder_keeps_the_best_third_at_each_rung():
    ladder = Ladder(EarlyStop("knn_accuracy"))  # eta 3: rungs at 10 and 30 of 90 steps
    assert ladder.rule.rungs(90) == [10, 30]
    assert ladder.judge("a", "s", 90, 10, {"knn_accuracy": 0.5}) is None  # the first at a rung goes on
    assert "0.4 at step 10, below the sweep's best 1/3 there (0.5" in ladder.judge(
        "b", "s", 90, 10, {"knn_accuracy": 0.4}
    )
    # cutoff over [0.5, 0.4]: their 66.7th percentile, 0.4 + 2/3 * 0.1
    assert ladder.judge("c", "s", 90, 12, {"knn_accuracy": 0.47}) is None
    assert ladder.judge("c", "s", 90, 14, {"knn_accuracy": 0.1}) is None  # judged once a rung
    assert ladder.judge("d", None, 90, 10, {"knn_accuracy": 0.0}) is None  # not in a sweep
    assert ladder.judge("e", "s", 90, 10, {"loss": 0.0}) is None  # does not report the metric
    assert np.isclose(ladder.rule.cutoff([0.5, 0.4]), 0.4 + 0.1 * 2 / 3)
    low = Ladder(EarlyStop.parse("loss:min"))
    assert low.judge("a", "s", 90, 10, {"loss": 1.0}) is None
    assert "above" in low.judge("b", "s", 90, 10, {"loss": 2.0})


@pytest.mark.parametrize(
    "text, words",
    [(":max", "early_stop: ':max' names no metric"), ("loss:lower", "early_stop: 'lower' is not max or min")],
)
def test_bad_early_stop_rules_name_the_field(text, words):
    with pytest.raises(ValueError, match=words):
        EarlyStop.parse(text)


def test_the_sweep_command_names_a_bad_early_stop_flag_and_queues_nothing(tmp_path, ray, capsys):
    argv = ["sweep", "--backend", "ray", "--early-stop", "loss:lower", "--margin", "0.5,1", "--home", str(tmp_path)]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == "error: --early-stop: 'lower' is not max or min (e.g. loss:min)"
    assert main(["sweep", "--early-stop", "loss", "--margin", "0.5,1", "--home", str(tmp_path)]) == 2
    assert "--early-stop: stops runs scheduled by Ray; add --backend ray" in capsys.readouterr().err
    assert not list(tmp_path.rglob("config.json"))


def test_run_shares_come_from_the_settings_and_bad_ones_are_named(monkeypatch):
    assert Share.from_env({"CPU": 8.0}) == Share(1.0, 0.0)
    assert Share.from_env({"CPU": 8.0, "GPU": 2.0}) == Share(1.0, 1.0)
    assert Share(1.0, 1.0).slots({"CPU": 8.0, "GPU": 2.0}) == 2
    assert Share(0.5, 0.0).slots({"CPU": 2.0}) == 4 and Share(0.5, 0.0).threads() == 1
    monkeypatch.setenv("CONTRAST_RAY_CPUS", "0")
    with pytest.raises(BackendError, match="CONTRAST_RAY_CPUS: 0 cores and no GPU"):
        Share.from_env({"CPU": 8.0})
    monkeypatch.setenv("CONTRAST_RAY_CPUS", "many")
    with pytest.raises(BackendError, match="CONTRAST_RAY_CPUS: 'many' is not a number"):
        Share.from_env({})


def test_without_ray_the_backend_flag_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed: `import ray` raises ImportError
    assert main(["sweep", "--backend", "ray", "--dataset", "digits", "--margin", "0.5,1", "--home", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Ray is not installed: pip install -e '.[ray]'" in err
    assert not list(tmp_path.rglob("config.json"))  # nothing queued
    assert main(["train", "--backend", "ray", "--dataset", "digits", "--home", str(tmp_path)]) == 2
    assert "pip install" in capsys.readouterr().err


def test_a_run_whose_node_dies_resumes_from_its_checkpoint_on_another(store, ray):
    """Three nodes on this machine: a head that trains nothing (the store's machine) and two of one CPU."""
    from ray.cluster_utils import Cluster

    ray.shutdown()  # the module's local Ray, if a test above started it
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
        ray.init(address=cluster.address, log_to_driver=False, runtime_env=ray_backend.runtime_env())
        queue = RayQueue(store).start()
        config = RunConfig(**SHORT | {"steps": 300, "checkpoint_every": 30, "steps_per_second": 60})
        run_id = queue.submit(config)
        run = wait_for(lambda: (r := store.get_run(run_id)).step >= 100 and r, "the run past its third checkpoint")
        cluster.remove_node(next(node for node in nodes if node.node_id[:6] in run.device), allow_graceful=False)
        run = wait_until_ended(store, [run_id])[0]
        assert run.status == "finished", run.error
        assert "was lost at step" in run.error and "resumed from its checkpoint at step" in run.error
        assert [row["step"] for row in store.read_metrics(run_id)] == list(range(1, 301))  # no gap, no twice
        assert store.list_snapshots(run_id)[-1]["step"] == 300 and run.final_metrics
        queue.shutdown()
    finally:
        ray.shutdown()
        cluster.shutdown()
