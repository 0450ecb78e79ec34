"""Figures for the Ray backend (README: Beyond one machine): one run through Ray against a local worker
(time from submit to its first metric row, and pairs/s), and a 16-run sweep's wall time on 1 and on 2
nodes simulated on this machine (`ray.cluster_utils.Cluster`, one CPU a node).

    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 python -m contrast_core.ray_bench

(the variable keeps Ray's addresses on 127.0.0.1). Each figure is a median over `--repeats` runs; the
first run on Ray is given apart: it starts Ray's worker process and imports torch there.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

from contrast_core import sweep
from contrast_core.config import RunConfig
from contrast_core.jobs import JobQueue
from contrast_core.store import TERMINAL_STATUSES, RunStore

ONE_RUN = {"dataset": "digits", "steps": 300}  # a few seconds on one core
SWEEP_RUNS = 16
SWEEP_RUN = {"dataset": "digits", "steps": 150}


def timed_run(queue, store: RunStore, config: RunConfig) -> dict:
    """Submits one run; seconds to its first metric row, to its end, and its pairs/s (its last row's)."""
    started = time.perf_counter()
    run_id = queue.submit(config)
    first = None
    while (run := store.get_run(run_id)).status not in TERMINAL_STATUSES:
        if first is None and run.step > 0:
            first = time.perf_counter() - started
        time.sleep(0.01)
    assert run.status == "finished", run.error
    return {"first_row_s": first, "total_s": time.perf_counter() - started,
            "pairs_per_second": store.read_metrics(run_id)[-1]["pairs_per_second"]}  # fmt: skip


def median(found: list[dict]) -> dict:
    return {key: statistics.median(row[key] for row in found) for key in found[0]}


def local_worker(repeats: int) -> dict:
    store = RunStore(tempfile.mkdtemp())
    queue = JobQueue(store, n_workers=1).start()
    try:
        timed_run(queue, store, RunConfig(**ONE_RUN | {"steps": 2}))  # the worker is up and warm
        return median([timed_run(queue, store, RunConfig(**ONE_RUN)) for _ in range(repeats)])
    finally:
        queue.shutdown()


def on_ray(repeats: int) -> dict:
    import ray

    from contrast_core.ray_backend import RayQueue, runtime_env

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=runtime_env())
    store = RunStore(tempfile.mkdtemp())
    queue = RayQueue(store).start()
    try:
        cold = timed_run(queue, store, RunConfig(**ONE_RUN))
        warm = median([timed_run(queue, store, RunConfig(**ONE_RUN)) for _ in range(repeats)])
        return {"first_run": cold, "warm": warm}
    finally:
        queue.shutdown()
        ray.shutdown()


def sweep_on_nodes(nodes: int) -> float:
    """Seconds from queueing a 16-run sweep (16 seeds) to its last run's end, on `nodes` one-CPU nodes
    (and a head node that trains nothing, as the dashboard's machine)."""
    import ray
    from ray.cluster_utils import Cluster

    from contrast_core.ray_backend import RayQueue, runtime_env

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        for _ in range(nodes):
            cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, log_to_driver=False, runtime_env=runtime_env())
        store = RunStore(tempfile.mkdtemp())
        started = time.perf_counter()
        name, ids = sweep.queue(store, SWEEP_RUN, {"seed": [str(seed) for seed in range(SWEEP_RUNS)]})
        queue = RayQueue(store, sweep=name).start()
        while any(store.get_run(run_id).status not in TERMINAL_STATUSES for run_id in ids):
            time.sleep(0.1)
        seconds = time.perf_counter() - started
        assert all(store.get_run(run_id).status == "finished" for run_id in ids)
        queue.shutdown()
        return seconds
    finally:
        ray.shutdown()
        cluster.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m contrast_core.ray_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs a figure is the median of")
    args = parser.parse_args()
    found = {"local_worker": local_worker(args.repeats), "ray": on_ray(args.repeats)}
    found["sweep_16_runs_s"] = {f"{nodes} nodes": sweep_on_nodes(nodes) for nodes in (1, 2)}
    print(json.dumps(found, indent=2))


if __name__ == "__main__":
    main()
