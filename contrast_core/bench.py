"""`python -m contrast_core bench`: Contrast Lab's training path against the classic recipe.

The classic recipe is written the way Siamese tutorials write it, and exists only here, as
the baseline: a Dataset that builds each pair in `__getitem__` by a random choice over a label
mask, PIL + ToTensor per image, a DataLoader, batch 100. Both sides train the same model with
the same loss on the same data; every figure is a ratio measured in the same process.

The dashboard's latency (click to first point, one live refresh) is measured by the UI package,
`python -m ui.bench`: the engine draws no figures.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from contrast_core import data, losses, metrics, models
from contrast_core.config import RunConfig
from contrast_core.train import Trainer, device_label

BATCH = 100  # pairs per step on both sides, as in the tutorials
GPU_BATCH = 8192  # pairs per step for the GPU's large-batch throughput


class TutorialPairs(torch.utils.data.Dataset):
    """The classic Siamese pair dataset: one random pair per item, 50 / 50 same / different."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):  # (N, H, W) uint8, (N,)
        from torchvision import transforms

        self.images, self.labels = images, labels
        self.to_tensor = transforms.ToTensor()

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        from PIL import Image

        label = self.labels[i]
        same = random.randint(0, 1)
        mask = self.labels == label if same else self.labels != label
        j = random.choice(np.where(mask)[0])
        first = self.to_tensor(Image.fromarray(self.images[i]))
        second = self.to_tensor(Image.fromarray(self.images[j]))
        return first, second, torch.tensor(same, dtype=torch.float32)


class ClassicRecipe:
    """DataLoader over TutorialPairs, the same encoder, ContrastiveLoss and Adam."""

    def __init__(self, dataset: data.Dataset, config: RunConfig, device: torch.device):
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        train = dataset.train_index.cpu()
        images = (dataset.x[train, 0].cpu().numpy() * 255).round().astype(np.uint8)
        self.loader = torch.utils.data.DataLoader(
            TutorialPairs(images, dataset.y[train].cpu().numpy()), batch_size=BATCH, shuffle=True, drop_last=True
        )
        self.device = device
        self.model = models.build(config.model, dataset.input_shape, config.embedding_dim).to(device)
        self.loss = losses.build("contrastive", config.distance, config.margin, config.temperature)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.batches = iter(())

    def train_step(self) -> None:
        try:
            first, second, same = next(self.batches)
        except StopIteration:
            self.batches = iter(self.loader)
            first, second, same = next(self.batches)
        first, second, same = first.to(self.device), second.to(self.device), same.to(self.device)
        loss = self.loss(self.model(first), self.model(second), same)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def throughput(step, device: torch.device, seconds: float, warmup: int = 20, batch: int = BATCH) -> float:
    """Steady-state pairs per second of `step()` (`batch` pairs each) over about `seconds`, after `warmup` steps."""
    for _ in range(warmup):
        step()
    _sync(device)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10):
            step()
        _sync(device)
        done += 10
    return batch * done / (time.perf_counter() - start)


def quality(model, dataset: data.Dataset, bar: str) -> float:
    """The bar's metric on the held-out evaluation subset (k-NN from a train subset, or Rand index)."""
    train = dataset.train_index[:5000]
    eval_emb = models.embed(model, dataset.x[dataset.eval_index]).cpu().numpy()
    eval_labels = dataset.y[dataset.eval_index].cpu().numpy()
    with threadpool_limits(limits=1):  # as in Trainer.snapshot: no spinning threads left for the next steps
        if bar == "rand_index":
            return metrics.cluster_metrics(eval_emb, eval_labels, dataset.num_classes)["rand_index"]
    train_emb = models.embed(model, dataset.x[train]).cpu().numpy()  # torch's own threads, unlimited
    with threadpool_limits(limits=1):
        found = metrics.retrieval_metrics(
            train_emb, dataset.y[train].cpu().numpy(), eval_emb, eval_labels, linear_probe=False
        )
    return found["knn_accuracy"]


def time_to_quality(trainer, dataset, bar: str, target: float, device, budget: float, check_every: int) -> float | None:
    """Training seconds (evaluation off the clock) until `bar` >= target, or None within `budget`."""
    trained = 0.0
    while trained < budget:
        start = time.perf_counter()
        for _ in range(check_every):
            trainer.train_step()
        _sync(device)
        trained += time.perf_counter() - start
        if quality(trainer.model, dataset, bar) >= target:
            return trained - getattr(trainer, "capture_seconds", 0.0)  # start-up is reported apart
    return None


def compare(
    name: str, config: RunConfig, bar: str, target: float, seeds: int, seconds: float, budget: float,
    limits: dict | None = None,
) -> dict:  # fmt: skip
    """Throughput and time to quality of both sides on one dataset and device.

    Ours is measured as configured, in bfloat16, and on CUDA also without the graph ("eager")
    and at a batch that fills the GPU. With the device's `limits`, row["efficiency"] says how
    close each of those throughputs comes to them.
    """
    start = time.perf_counter()
    fast = Trainer(config)
    startup = time.perf_counter() - start
    device, dataset = fast.device, fast.data
    row = {"dataset": name, "device": device_label(device), "startup_seconds": startup}
    row["pairs_per_second"] = throughput(fast.train_step, device, seconds)
    classic = ClassicRecipe(dataset, config, device)
    classic_pairs = row["classic_pairs_per_second"] = throughput(classic.train_step, device, seconds)
    row["throughput_ratio"] = row["pairs_per_second"] / classic_pairs
    if device.type == "cpu":  # the product path trains on a worker's threads: its steps' ceiling against classic
        with _worker_threads():
            pairs = row["worker_threads_pairs_per_second"] = throughput(fast.train_step, device, seconds)
        row["worker_threads_throughput_ratio"] = pairs / classic_pairs
    if fast.graphed:
        row["graph_capture_seconds"] = fast.capture_seconds
        eager = Trainer(config, dataset=dataset, graphs=False)
        row["eager_pairs_per_second"] = throughput(eager.train_step, device, seconds)
    half = config.model_copy(update={"precision": "bfloat16"})
    variants = {"bfloat16_": half}
    if device.type == "cuda":
        for variant in (config, half):
            big = variant.model_copy(update={"batch_size": GPU_BATCH})
            variants[f"batch_{GPU_BATCH}_{'bfloat16_' if variant is half else ''}"] = big
    measured = [(config, row["pairs_per_second"])]
    for prefix, variant in variants.items():
        pairs = throughput(Trainer(variant, dataset=dataset).train_step, device, seconds, batch=variant.batch_size)
        row[f"{prefix}pairs_per_second"], row[f"{prefix}throughput_ratio"] = pairs, pairs / classic_pairs
        measured.append((variant, pairs))
    if limits is not None:
        row["efficiency"] = [efficiency(c, dataset, pairs, limits) for c, pairs in measured]
    makers = {
        "": lambda c: Trainer(c, dataset=dataset),
        "bfloat16_": lambda c: Trainer(c.model_copy(update={"precision": "bfloat16"}), dataset=dataset),
        "classic_": lambda c: ClassicRecipe(dataset, c, device),
    }
    times = {prefix: [] for prefix in makers}
    for seed in range(seeds):
        for prefix, make in makers.items():
            trainer = make(config.model_copy(update={"seed": seed}))
            times[prefix].append(time_to_quality(trainer, dataset, bar, target, device, budget, check_every=50))
    times["product_"] = [product_seconds_to_quality(config.model_copy(update={"seed": seed}), bar, target, budget)
                         for seed in range(seeds)]  # fmt: skip
    for prefix, found in times.items():
        row |= _summary(prefix, found)
    for prefix in ("", "bfloat16_", "product_"):
        if row[f"{prefix}seconds_to_quality"] and row["classic_seconds_to_quality"]:
            row[f"{prefix}time_to_quality_ratio"] = (
                row["classic_seconds_to_quality"] / row[f"{prefix}seconds_to_quality"]
            )
    return row | {"bar": f"{bar} >= {target}", "budget_seconds": budget}


@contextmanager
def _worker_threads():
    """torch on as many threads as a worker trains on (`jobs.worker_threads`), restored after."""
    from contrast_core import jobs

    threads = torch.get_num_threads()
    torch.set_num_threads(jobs.worker_threads())
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def product_seconds_to_quality(config: RunConfig, bar: str, target: float, budget: float) -> float | None:
    """Wall seconds of a run on the product path until the page shows `bar` >= `target`: `train` as a
    worker runs it (at a worker's thread count, rows, snapshots and checkpoints written to a store), from
    its call (data loaded, model built, first snapshot) to the end of writing the first snapshot whose
    own metric reaches the bar; None if none does within `budget` s or the run's steps. The run snapshots
    at the default run's cadence (every 50 steps; the whole-set metrics, Rand index among them, at every
    WHOLE_SET_EVERY-th) for as many steps as MAX_SNAPSHOTS allows. Its k-NN accuracy is the snapshot's:
    PROBE_TRAIN_ITEMS references, where `quality` takes 5,000."""
    import tempfile

    from contrast_core import jobs
    from contrast_core.config import MAX_SNAPSHOTS
    from contrast_core.store import RunStore
    from contrast_core.train import train

    every = RunConfig().resolved_snapshot_every()
    config = config.model_copy(update={"steps": (MAX_SNAPSHOTS - 1) * every, "snapshot_every": every})
    reached = None
    threads = _worker_threads() if config.device == "cpu" else nullcontext()
    with threads, tempfile.TemporaryDirectory() as home:
        store = RunStore(home)
        run_id = store.create_run(config.model_dump(mode="json"))
        store.claim_next("bench", config.device)  # this run: the only one queued
        recorder = jobs.RunRecorder(store, run_id, "bench")

        def on_event(event) -> None:
            nonlocal reached
            recorder(event)
            if reached is None and event.kind == "snapshot" and event.data["metrics"].get(bar, -1.0) >= target:
                reached = time.perf_counter() - start

        start = time.perf_counter()
        try:
            train(config, on_event, lambda: reached is not None or time.perf_counter() - start > budget)
        finally:
            store.close()
    return reached if reached is not None and reached <= budget else None  # not the snapshot after the budget


def _median_seconds(fn, device: torch.device, repeats: int = 20, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def device_limits(device: torch.device) -> dict:
    """The device's measured ceilings: float32 and bfloat16 matrix-product FLOP/s, memory copy
    bytes/s (bytes read + written) and, on CUDA, the time per tiny kernel replayed from a graph."""
    n = 4096 if device.type == "cuda" else 1024
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    limits = {
        "device": device_label(device),
        "matmul_flops_per_second": 2 * n**3 / _median_seconds(lambda: a @ b, device),
    }
    a, b = a.bfloat16(), b.bfloat16()
    limits["bfloat16_matmul_flops_per_second"] = 2 * n**3 / _median_seconds(lambda: a @ b, device)
    floats = (1 << 26) if device.type == "cuda" else (1 << 24)  # 256 MiB / 64 MiB: far past the caches
    src, dst = torch.rand(floats, device=device), torch.empty(floats, device=device)
    limits["copy_bytes_per_second"] = 2 * 4 * floats / _median_seconds(lambda: dst.copy_(src), device)
    if device.type == "cuda":
        x, kernels, graph = torch.zeros(1, device=device), 200, torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(kernels):
                x.add_(1)
        limits["graph_seconds_per_kernel"] = _median_seconds(graph.replay, device) / kernels
    return limits


def step_costs(config: RunConfig, dataset: data.Dataset) -> dict:
    """One training step's FLOPs (as torch counts them), fewest bytes, and CUDA kernels.

    Fewest bytes, in float32: the batch's inputs read once; each parameter read in the forward
    and backward passes, its gradient written, and Adam reading parameter, gradient and both
    moments and writing three back (10 touches); each layer's output written once and read
    once by the backward pass.
    """
    from torch.utils.flop_counter import FlopCounterMode

    trainer = Trainer(config, dataset=dataset, graphs=False)
    trainer.train_step()  # lazy initialisation stays out of the counts
    outputs: list[int] = []
    leaves = [m for m in trainer.model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(lambda m, i, out: outputs.append(out.numel())) for m in leaves]
    with FlopCounterMode(display=False) as counter:
        trainer.train_step()
    for hook in hooks:
        hook.remove()
    items = len(trainer.last_batch[0])  # (B, D) embeddings of the step just counted
    params = sum(p.numel() for p in trainer.model.parameters())
    inputs = items * int(np.prod(dataset.input_shape))
    costs = {"flops": counter.get_total_flops(), "bytes": 4 * (inputs + 10 * params + 2 * sum(outputs))}
    if trainer.device.type == "cuda":
        from torch.autograd import DeviceType
        from torch.profiler import ProfilerActivity, profile

        steps = 5
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(steps):
                trainer.train_step()
            _sync(trainer.device)
        costs["kernels"] = sum(e.device_type == DeviceType.CUDA for e in prof.events()) / steps
    return costs


def efficiency(config: RunConfig, dataset: data.Dataset, pairs_per_second: float, limits: dict) -> dict:
    """Achieved FLOP/s and bytes/s against the device's limits, and epoch time against its floors.

    An epoch is one pass of pairs over the training rows (as the classic DataLoader counts it).
    Floors: compute = FLOPs / matmul peak (in the run's precision), memory = bytes / copy bandwidth, launch = kernels x
    the graph replay time per kernel (CUDA only); the largest is the epoch's floor.
    """
    costs = step_costs(config, dataset)
    peak = limits[f"{'bfloat16_' if config.precision == 'bfloat16' else ''}matmul_flops_per_second"]
    steps_per_second = pairs_per_second / config.batch_size
    epoch_steps = len(dataset.train_index) / config.batch_size
    floors = {
        "compute": costs["flops"] / peak,
        "memory": costs["bytes"] / limits["copy_bytes_per_second"],
    }
    if "kernels" in costs:
        floors["launch"] = costs["kernels"] * limits["graph_seconds_per_kernel"]
    bound = max(floors, key=floors.get)
    epoch_seconds = epoch_steps / steps_per_second
    return {
        "dataset": config.dataset,
        "batch_size": config.batch_size,
        "precision": config.precision,
        "flops_per_step": costs["flops"],
        "bytes_per_step": costs["bytes"],
        **({"kernels_per_step": costs["kernels"]} if "kernels" in costs else {}),
        "achieved_flops_per_second": costs["flops"] * steps_per_second,
        "share_of_matmul_peak": costs["flops"] * steps_per_second / peak,
        "achieved_bytes_per_second": costs["bytes"] * steps_per_second,
        "share_of_copy_bandwidth": costs["bytes"] * steps_per_second / limits["copy_bytes_per_second"],
        "epoch_seconds": epoch_seconds,
        **{f"epoch_{name}_floor_seconds": epoch_steps * floor for name, floor in floors.items()},
        "bound": bound,
        "epoch_over_floor": epoch_seconds / (epoch_steps * floors[bound]),
    }


def _summary(prefix: str, times: list[float | None]) -> dict:
    reached = [t for t in times if t is not None]
    return {
        f"{prefix}seconds_to_quality": statistics.median(reached) if reached else None,
        f"{prefix}reached_share": len(reached) / len(times),
    }


def projection_times(eval_embeddings: np.ndarray) -> dict:
    """PCA and UMAP seconds for the evaluation subset and for 10k points; UMAP cold includes its import."""
    from contrast_core.projection import project

    rng = np.random.default_rng(0)
    big = np.concatenate([eval_embeddings + 0.05 * rng.normal(size=eval_embeddings.shape)] * 20)[:10_000]
    timings = {}
    for label, points in (("eval", eval_embeddings), ("10k", big)):
        for method, runs in (("pca", ("first", "warm")), ("umap", ("cold", "warm"))):
            layout = None
            for run in runs:
                if label == "10k" and run == "cold":
                    run = "first"  # numba is compiled by now; the first fit at this size
                start = time.perf_counter()
                layout = project(points, method, layout)
                timings[f"{method}_{label}_{run}_seconds"] = time.perf_counter() - start
    return timings


def steps_only_seconds(config: RunConfig, dataset: data.Dataset) -> float:
    """Seconds of the run's optimiser steps alone: no snapshot, no row, no store (the device synced once)."""
    trainer = Trainer(config, dataset=dataset)
    trainer.train_step()  # lazy initialisation stays out, as a warm worker's would
    _sync(trainer.device)
    start = time.perf_counter()
    for _ in range(config.steps - 1):
        trainer.train_step()
    _sync(trainer.device)
    return (time.perf_counter() - start) * config.steps / (config.steps - 1)


def product_path(config: RunConfig, runs: int = 3) -> dict:
    """The default run as a click on Train runs it, without the browser (`python -m ui.bench --browser`
    times that): queued in a store, trained by a warm worker process of the job queue (at its own
    thread count), snapshots, rows and checkpoints written, until the store says "finished". Medians of
    `runs` runs, against the same run's steps alone at the worker's thread count; and the wall time by
    phase of the same path in this process (`train` with the worker's recorder on a store)."""
    import tempfile

    from contrast_core import jobs
    from contrast_core.store import TERMINAL_STATUSES, RunStore
    from contrast_core.train import train

    with _worker_threads():
        dataset = data.load(config.dataset, seed=config.seed, eval_size=config.eval_size, device=config.device)
        steps_only = statistics.median(steps_only_seconds(config, dataset) for _ in range(runs))
        with tempfile.TemporaryDirectory() as home:
            store = RunStore(home)
            phases = []
            for _ in range(runs + 1):  # the first warms this process up
                run_id = store.create_run(config.model_dump(mode="json"))
                store.claim_next("bench", config.device)  # this run: the only one queued
                recorder = jobs.RunRecorder(store, run_id, "bench")
                phases.append(train(config, recorder, recorder.should_stop)["seconds"])
                store.set_status(run_id, "finished", worker="bench")
            phases = {name: statistics.median(p[name] for p in phases[1:]) for name in phases[-1]}
            queue = jobs.JobQueue(store, n_workers=1).start()
            try:
                wait_for(lambda: queue.status()["workers"], 120)
                warm_up = queue.submit(config.model_copy(update={"steps": 20}))
                wait_for(lambda: store.get_run(warm_up).status in TERMINAL_STATUSES, 120)
                walls = []
                for _ in range(runs):
                    start = time.perf_counter()
                    run_id = queue.submit(config)
                    wait_for(lambda run_id=run_id: store.get_run(run_id).status in TERMINAL_STATUSES, 600)
                    walls.append(time.perf_counter() - start)
            finally:
                queue.shutdown()
            store.close()
    wall = statistics.median(walls)
    in_process = sum(phases.values())
    return {
        "device": config.device,
        "steps": config.steps,
        "snapshots": -(-config.steps // config.resolved_snapshot_every()) + 1,
        "worker_threads": jobs.worker_threads(),
        "queued_to_finished_seconds": wall,
        "steps_only_seconds": steps_only,
        "over_steps_only": wall / steps_only,
        "in_process_seconds": in_process,
        **{f"share_{name}": seconds / in_process for name, seconds in phases.items()},
    }


def first_umap_in_a_new_process() -> dict:
    """Seconds of a new process's first UMAP of the default run's evaluation subset (360 points), twice:
    the first fills numba's on-disk cache if it is empty, the second is what every later process pays.
    Imports of the UMAP stack (numba, pynndescent, umap-learn) and the fit are reported apart."""
    import subprocess
    import sys

    code = (
        "import time, numpy as np, sklearn.neighbors, scipy.sparse\n"
        "from contrast_core import projection\n"
        "x = np.random.default_rng(0).normal(size=(360, 8)).astype(np.float32)\n"
        "start = time.perf_counter(); projection._umap_module(); imported = time.perf_counter()\n"
        "projection.project(x, 'umap')\n"
        "print(imported - start, time.perf_counter() - imported)\n"
    )
    found = {}
    for run in ("first", "next"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parent.parent).stdout  # fmt: skip
        imports, fit = (float(v) for v in out.split()[-2:])
        found |= {f"umap_{run}_process_imports_seconds": imports, f"umap_{run}_process_fit_seconds": fit}
    return found


def wait_for(predicate, timeout: float):
    """`predicate()`'s first true value, polled every 5 ms; TimeoutError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError("the job queue did not answer in time")
        time.sleep(0.005)
    return found


SECTIONS = ("training", "projection", "product")  # the dashboard's latency: python -m ui.bench


def run(
    quick: bool = False,
    out: Path = Path("bench.json"),
    devices: list[str] | None = None,
    sections: tuple[str, ...] = SECTIONS,
) -> dict:
    """Every measurement (on the CPU and, where there is one, the GPU); writes them to `out` as JSON."""
    seconds, seeds, budget = (3.0, 2, 60.0) if quick else (10.0, 3, 300.0)
    devices = devices or ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
    sets = [("digits", "rand_index", 0.99), ("digits-60k", "knn_accuracy", 0.97)]
    results: dict = {"threads": torch.get_num_threads(), "comparisons": [], "limits": []}
    if "training" in sections:
        for device in devices:
            limits = device_limits(torch.device(device))
            results["limits"].append(limits)
            for name, bar, target in sets:
                config = RunConfig(dataset=name, device=device)
                results["comparisons"].append(compare(name, config, bar, target, seeds, seconds, budget, limits))
    if "projection" in sections:
        digits = data.load("digits")
        trained = Trainer(RunConfig(steps=1, embedding_dim=32, device="cpu"), dataset=digits)
        eval_embeddings = models.embed(trained.model, digits.x[digits.eval_index]).numpy()
        results["projection"] = projection_times(eval_embeddings) | first_umap_in_a_new_process()
    if "product" in sections:
        results["product"] = [product_path(RunConfig(device=device), runs=2 if quick else 3) for device in devices]
    out.write_text(json.dumps(results, indent=2))
    return results
