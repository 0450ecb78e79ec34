"""Command line: python -m contrast_core train|worker|bench ...

Every RunConfig field is a flag (`embedding_dim` -> `--embedding-dim`); the flags are generated
from the config, so there is no second list to keep in sync.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import traceback
from pathlib import Path

from contrast_core.config import ConfigError, RunConfig

INTERRUPTED = "what was running is marked interrupted; Resume (the Runs page) goes on from its checkpoint"
RAY_HELP = "ray: train on a Ray cluster (RAY_ADDRESS, or the one `ray start --head` made here; the ray extra)"


class CommandError(Exception):
    """A bad argument: printed as one line, exit status 2."""


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per RunConfig field; values stay strings until RunConfig validates them."""
    group = parser.add_argument_group("run configuration (see RunConfig)")
    group.add_argument("--config", type=Path, help="a JSON file of RunConfig fields; flags override it")
    for name, info in RunConfig.model_fields.items():
        switch = {"nargs": "?", "const": "true"} if info.annotation is bool else {}  # `--csv-continuous` alone: on
        group.add_argument(_flag(name), dest=name, default=argparse.SUPPRESS, metavar=name.upper(),
                           help=f"default: {info.default}", **switch)  # fmt: skip


def config_values(args: argparse.Namespace) -> dict:
    """The --config file's fields, overridden by the flags given (values as typed)."""
    values: dict = {}
    if args.config is not None:
        try:
            values = json.loads(args.config.read_text())
        except (OSError, ValueError) as exc:
            raise CommandError(f"--config: cannot read {args.config} ({exc})") from None
        except RecursionError:
            raise CommandError(f"--config: {args.config} is nested too deeply to hold a run's settings") from None
        if not isinstance(values, dict):
            raise CommandError(f"--config: {args.config} must hold a JSON object of RunConfig fields")
    return values | {name: getattr(args, name) for name in RunConfig.model_fields if hasattr(args, name)}


def config_from_args(args: argparse.Namespace) -> RunConfig:
    values = config_values(args)
    try:
        return RunConfig.check(**values)
    except ConfigError as exc:
        raise CommandError("; ".join(f"{_flag(f)}: {reason}" for f, reason in exc.errors.items())) from None


def cmd_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from contrast_core import data
    from contrast_core.store import RunLost
    from contrast_core.train import TrainingError, memory_refusal, resolve_device, train

    config = config_from_args(args)
    for note in config.notes():
        print(f"note: {note}", file=sys.stderr)
    if args.backend == "ray":
        return _train_on_ray(args, config)
    try:
        device = resolve_device(config.device)  # before the run is recorded: a missing GPU is a bad flag
    except TrainingError as exc:
        raise CommandError(f"--{exc}") from None
    if refused := memory_refusal(config, device):  # so is a batch that cannot fit
        raise CommandError(f"--{refused.replace('_', '-')}")
    record = _recorder(args, config) if not args.no_store else None
    bar = tqdm(total=config.steps, file=sys.stderr, unit="step", disable=args.quiet)

    def on_event(event):
        if event.kind == "step":
            bar.update(event.step - bar.n)
            bar.set_postfix(loss=f"{event.data['loss']:.4f}", refresh=False)
        if record is not None:
            record(event)

    try:
        result = train(config, on_event, should_stop=record.should_stop if record else lambda: False)
        if record is not None:
            record.flush()
            record.store.set_status(record.run_id, result["status"], worker=record.worker)
    except RunLost as exc:  # deleted, or stopped for it, from the dashboard while it trained
        bar.close()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (TrainingError, data.DatasetUnavailable, ValueError) as exc:
        bar.close()
        if record is not None:
            record.store.set_status(record.run_id, "failed", error=str(exc))
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # anything else still ends the run: never left "running" in the store
        bar.close()
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if record is not None:
            record.store.set_status(record.run_id, "failed", error=f"{type(exc).__name__}: {reason}")
            (record.store.run_dir(record.run_id) / "error.log").write_text(traceback.format_exc())
        print(f"error: {type(exc).__name__}: {reason}", file=sys.stderr)
        return 1
    bar.close()
    if record is not None:
        print(f"run {record.run_id} recorded in {record.store.home}", file=sys.stderr)
    if args.json:
        line = {"config": config.model_dump(mode="json")}
        line |= {k: v for k, v in result.items() if k != "metrics"} | result["metrics"]
        print(json.dumps(line, allow_nan=True))
    else:
        for name, value in result["metrics"].items():
            print(f"{name:>24}  {value:.4f}")
        print(f"{'train_seconds':>24}  {result['train_seconds']:.2f}")
        print(f"{'pairs_per_second':>24}  {result['pairs_per_second']:.0f}")
        print(f"{'seconds by phase':>24}  " + " · ".join(f"{k} {v:.2f}" for k, v in result["seconds"].items()))
    return 0


def _ray_queue(store, **options):
    """A started RayQueue over the store, or CommandError saying what to install or set."""
    from contrast_core import ray_backend

    try:
        return ray_backend.RayQueue(store, **options).start()
    except ray_backend.BackendError as exc:
        raise CommandError(f"--backend: {exc}") from None


def _train_on_ray(args: argparse.Namespace, config: RunConfig) -> int:
    """Trains the run on a node of the Ray cluster; this process holds the store and shows the progress."""
    from tqdm import tqdm

    from contrast_core.store import RunStore

    if args.no_store:
        raise CommandError("--no-store: a run on Ray reaches this machine through the store; leave it out")
    queue = _ray_queue(RunStore(args.home))
    run_id = queue.train(config, args.name)
    bar = tqdm(total=config.steps, file=sys.stderr, unit="step", disable=args.quiet)
    try:
        run = _until_ended(queue.store, [run_id], lambda run: bar.update(run.step - bar.n))[0]
    except KeyboardInterrupt:
        bar.close()
        print(f"stopped: {INTERRUPTED}", file=sys.stderr)
        return 130
    finally:
        bar.close()
        queue.shutdown()
    print(f"run {run.id} recorded in {queue.store.home} ({run.device})", file=sys.stderr)
    if run.status != "finished":
        print(f"error: the run is {run.status}" + (f": {run.error}" if run.error else ""), file=sys.stderr)
        return 1
    metrics = run.final_metrics or {}
    if args.json:
        print(json.dumps({"run": run.id, "config": run.config, "device": run.device} | metrics, allow_nan=True))
    else:
        for name, value in metrics.items():
            print(f"{name:>24}  {value:.4f}")
    return 0


def _until_ended(store, ids: list[str], each=lambda run: None, ended=lambda run: None) -> list:
    """Waits for the runs to end, calling `each` with every run at every look and `ended` once with each
    run that ended; returns the runs as they ended."""
    import time

    from contrast_core.jobs import POLL_SECONDS
    from contrast_core.store import TERMINAL_STATUSES

    done: dict = {}
    while len(done) < len(ids):
        for run_id in ids:
            run = store.get_run(run_id)
            each(run)
            if run_id not in done and run.status in TERMINAL_STATUSES:
                done[run_id] = run
                ended(run)
        time.sleep(POLL_SECONDS * 4)
    return [done[run_id] for run_id in ids]


def _recorder(args: argparse.Namespace, config: RunConfig):
    """Records this terminal run in the store, so it shows up in the dashboard."""
    import os
    import socket

    from contrast_core.jobs import Heartbeat, RunRecorder
    from contrast_core.store import RunStore
    from contrast_core.train import device_label, resolve_device

    store = RunStore(args.home)
    worker = f"cli-{os.getpid()}@{socket.gethostname()}"
    device = device_label(resolve_device(config.device))
    Heartbeat(RunStore(args.home), worker, device).start()
    run_id = store.create_run(
        config.model_dump(mode="json"), name=args.name, status="running", worker=worker, device=device
    )
    return RunRecorder(store, run_id, worker)


def cmd_sweep(args: argparse.Namespace) -> int:
    from contrast_core import sweep
    from contrast_core.store import RunStore

    base = config_values(args)
    axes = {name: sweep.parse_values(_flag(name), text) for name, text in base.items() if "," in str(text)}
    if not axes:
        raise CommandError("sweep: give at least one flag two or more values, e.g. --margin 0.5,1,2")
    base = {name: value for name, value in base.items() if name not in axes}
    early_stop = _early_stop(args)
    store = RunStore(args.home)
    try:
        name, ids = sweep.queue(store, base, axes, args.name)
    except sweep.SweepError as exc:
        field, _, reason = str(exc).partition(": ")
        flag = _flag(field) if field in RunConfig.model_fields or field == "name" else field
        raise CommandError(f"{flag}: {reason}") from None
    print(f"sweep {name!r}: {len(ids)} runs queued in {store.home}", file=sys.stderr)
    if args.backend == "ray":
        return _sweep_on_ray(store, name, ids, args.json, early_stop)
    if not args.wait:
        for run_id in ids:
            print(run_id)
        return 0
    return _wait_for_sweep(store, name, ids, args.json)


def _early_stop(args: argparse.Namespace):
    """The --early-stop rule (with --backend ray, whose Python is checked here, before anything is queued)."""
    if args.backend != "ray":
        if args.early_stop:
            raise CommandError("--early-stop: stops runs scheduled by Ray; add --backend ray")
        return None
    from contrast_core import ray_backend
    from contrast_core.early_stop import EarlyStop

    try:
        ray_backend.require_ray()
    except ray_backend.BackendError as exc:
        raise CommandError(f"--backend: {exc}") from None
    try:
        return EarlyStop.parse(args.early_stop) if args.early_stop else None
    except ValueError as exc:
        raise CommandError(f"--early-stop: {str(exc).partition(': ')[2]}") from None


def _sweep_on_ray(store, name: str, ids: list[str], as_json: bool, early_stop) -> int:
    """Schedules the sweep's runs on the Ray cluster and waits for them, printing each as it ends. Exit
    status 1 if a run neither finished nor was stopped early."""
    from contrast_core import sweep

    queue = _ray_queue(store, sweep=name, early_stop=early_stop)
    print(f"scheduled by {queue.status()['device']}", file=sys.stderr)
    try:
        runs = _until_ended(store, ids, ended=lambda run: _print_sweep_run(run, as_json))
    except KeyboardInterrupt:
        print(f"stopped: {INTERRUPTED}", file=sys.stderr)
        return 130
    finally:
        queue.shutdown()
    return 0 if all(run.status == "finished" or sweep.stopped_early(run) for run in runs) else 1


def _wait_for_sweep(store, name: str, ids: list[str], as_json: bool) -> int:
    """Trains the sweep's runs here, one after another, unless a live worker takes them; prints
    each finished run (one JSON line with --json). Exit status 1 if any run did not finish."""
    import os
    import socket
    import time

    from contrast_core import jobs
    from contrast_core.store import TERMINAL_STATUSES, RunStore

    worker = f"sweep-{os.getpid()}@{socket.gethostname()}"
    heart = None  # this process's heartbeat, once it has to train
    reported: set[str] = set()
    while len(reported) < len(ids):
        workers = [w for w in store.workers() if w["id"] != worker and jobs.worker_alive(w)]
        alive = {w["id"] for w in workers} | {worker}
        for run in store.list_runs(sweep=name, status="running"):
            if run.worker not in alive:  # its worker died mid-run: say so rather than wait for ever
                store.mark_interrupted(worker=run.worker)
        claimed = None
        if not workers:  # nobody else trains: this process does
            heart = heart or jobs.Heartbeat(RunStore(store.home), worker, jobs.local_device()).start()
            claimed = store.claim_next(worker, heart.device, sweep=name)
            if claimed is not None:
                jobs.execute(store, claimed.id, worker)
        for run_id in ids:
            run = store.get_run(run_id)
            if run_id not in reported and run.status in TERMINAL_STATUSES:
                reported.add(run_id)
                _print_sweep_run(run, as_json)
        if claimed is None and len(reported) < len(ids):
            time.sleep(jobs.POLL_SECONDS)
    return 0 if all(store.get_run(i).status == "finished" for i in ids) else 1


def _print_sweep_run(run, as_json: bool) -> None:
    metrics = run.final_metrics or {}
    if as_json:
        line = {"run": run.id, "sweep": run.sweep, "name": run.name, "status": run.status, "error": run.error}
        print(json.dumps(line | {"config": run.config} | metrics, allow_nan=True), flush=True)
    else:
        from contrast_core.sweep import STOPPED_EARLY, stopped_early

        shown = " ".join(f"{k}={metrics[k]:.3f}" for k in ("knn_accuracy", "silhouette") if k in metrics)
        status = STOPPED_EARLY if stopped_early(run) else run.status
        print(f"{run.id}  {run.name:<40} {status:<13} {shown}", flush=True)


def cmd_store(args: argparse.Namespace) -> int:
    import os

    from contrast_core import store

    home = Path(args.home or os.environ.get("CONTRAST_HOME") or "checkpoints")
    if not (home / "runs").is_dir():
        raise CommandError(f"--home: {home} holds no run store (no runs/ folder)")
    if args.action == "check":
        problems = store.check(home)
        for line in problems:
            print(line)
        print(f"{len(problems)} problems" if problems else "the index and the run folders agree", file=sys.stderr)
        return 1 if problems else 0
    found = store.rebuild(home)
    for line in found["skipped"]:
        print(f"skipped {line}")
    print(f"rebuilt: {found['runs']} runs, {found['metric_rows']} metric rows, {found['snapshots']} snapshots"
          + (f"; the old index is kept as {', '.join(found['kept_aside'])}" if found["kept_aside"] else ""))  # fmt: skip
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from contrast_core import export
    from contrast_core.store import RunStore, StoreError

    store = RunStore(args.home)
    try:
        if args.format == "projector":
            paths = export.write_projector(store, args.run_id, args.out, args.step)
        else:
            if args.step is not None:
                raise CommandError("--step: a zip holds every snapshot; --step goes with --format projector")
            target = args.out / f"{args.run_id}.zip" if args.out.is_dir() else args.out
            target.write_bytes(export.run_zip(store, args.run_id))
            paths = [target]
    except StoreError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"--out: cannot write {args.out} ({exc.strerror or exc})") from None
    for path in paths:
        print(path)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from contrast_core.jobs import run_worker, worker_nice

    try:
        worker_nice()
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    with contextlib.suppress(KeyboardInterrupt):
        run_worker(args.home, args.id, args.parent)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from contrast_core import bench

    sections = tuple(args.only.split(",")) if args.only else bench.SECTIONS
    if unknown := set(sections) - set(bench.SECTIONS):
        moved = "; the dashboard's latency is measured by python -m ui.bench" if "dashboard" in unknown else ""
        raise CommandError(
            f"--only: unknown section {', '.join(sorted(unknown))} (choose from {', '.join(bench.SECTIONS)}){moved}"
        )
    if args.device == "cuda" and not _cuda_available():
        raise CommandError("--device: cuda was asked for but no CUDA GPU is available")
    devices = [args.device] if args.device else None
    results = bench.run(quick=args.quick, out=args.out, devices=devices, sections=sections)
    for limits in results["limits"]:
        _print_block(f"limits of {limits['device']}", limits, skip=("device",))
    for row in results["comparisons"]:
        title = f"{row['dataset']} on {row['device']} ({results['threads']} threads), bar {row['bar']}"
        _print_block(title, row, skip=("dataset", "device", "bar", "efficiency"))
        for found in row.get("efficiency", []):
            title = f"  efficiency, {found['dataset']} at batch {found['batch_size']}, {found['precision']}"
            _print_block(title, found, skip=("dataset", "batch_size", "precision"))
    if "projection" in results:
        _print_block("projection", results["projection"])
    for row in results.get("product", []):
        title = f"the default run on {row['device']}, queued to finished ({row['worker_threads']} worker threads)"
        _print_block(title, row, skip=("device",))
    print(f"\nwritten to {args.out}")
    return 0


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _print_block(title: str, values: dict, skip: tuple[str, ...] = ()) -> None:
    print(f"\n{title}")
    for key, value in values.items():
        if key not in skip:
            print(f"  {key:>34}  {_show(value)}")


def _show(value) -> str:
    if isinstance(value, float):
        if 0 < abs(value) < 0.01:
            return f"{value:.3g}"
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return "not reached" if value is None else str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m contrast_core", description="Contrast Lab engine")
    commands = parser.add_subparsers(dest="command", required=True)
    train_parser = commands.add_parser("train", help="train one run in this process")
    add_config_flags(train_parser)
    train_parser.add_argument("--json", action="store_true", help="print one final JSON line on stdout")
    train_parser.add_argument("--quiet", action="store_true", help="no progress bar")
    train_parser.add_argument("--name", default="", help="the run's name in the dashboard")
    train_parser.add_argument("--home", default=None, help="run store folder (default: $CONTRAST_HOME or checkpoints)")
    train_parser.add_argument("--no-store", action="store_true", help="do not record the run in the store")
    train_parser.add_argument("--backend", choices=["local", "ray"], default="local", help=RAY_HELP)
    train_parser.set_defaults(run=cmd_train)
    sweep_parser = commands.add_parser(
        "sweep", help="queue every combination of comma-separated flag values as runs of one sweep"
    )
    add_config_flags(sweep_parser)
    sweep_parser.add_argument("--name", default="", help="the sweep's name (default: its knobs and the time)")
    sweep_parser.add_argument("--home", default=None, help="run store folder (default: $CONTRAST_HOME or checkpoints)")
    sweep_parser.add_argument(
        "--wait", action="store_true", help="train the runs here (or wait for the workers that take them)"
    )
    sweep_parser.add_argument("--json", action="store_true", help="with --wait: one JSON line per finished run")
    sweep_parser.add_argument("--backend", choices=["local", "ray"], default="local",
                              help=RAY_HELP + "; it waits for the runs, as --wait")  # fmt: skip
    sweep_parser.add_argument("--early-stop", metavar="METRIC[:min]", default=None,
                              help="with --backend ray: stop the sweep's hopeless runs by ASHA on this metric "
                              "(e.g. knn_accuracy, or loss:min)")  # fmt: skip
    sweep_parser.set_defaults(run=cmd_sweep)
    export_parser = commands.add_parser(
        "export", help="a run's snapshot as Embedding Projector files, or the whole run as a zip"
    )
    export_parser.add_argument("run_id", metavar="RUN_ID")
    export_parser.add_argument("--step", type=int, default=None, help="the snapshot's step (default: the last)")
    export_parser.add_argument("--format", choices=["projector", "zip"], default="projector",
                               help="projector: tensors.tsv + metadata.tsv in --out; zip: config, metrics, snapshots, weights")  # fmt: skip
    export_parser.add_argument("--out", type=Path, default=Path("."), help="a folder (or, for a zip, a file name)")
    export_parser.add_argument("--home", default=None, help="run store folder (default: $CONTRAST_HOME or checkpoints)")
    export_parser.set_defaults(run=cmd_export)
    store_parser = commands.add_parser("store", help="check the index against the run folders, or rebuild it from them")
    store_parser.add_argument("action", choices=["check", "rebuild"],
                              help="check: list what differs (read-only); rebuild: a new index from the folders "
                              "(stop the app and its workers first; the old index is kept aside)")  # fmt: skip
    store_parser.add_argument("--home", default=None, help="run store folder (default: $CONTRAST_HOME or checkpoints)")
    store_parser.set_defaults(run=cmd_store)
    worker_parser = commands.add_parser("worker", help="train queued runs from the store, one at a time")
    worker_parser.add_argument("--home", default=None, help="run store folder (default: $CONTRAST_HOME or checkpoints)")
    worker_parser.add_argument("--id", default=None, help="worker id (default: pid@host)")
    worker_parser.add_argument("--parent", type=int, default=None, help="exit when this process is gone")
    worker_parser.set_defaults(run=cmd_worker)
    bench_parser = commands.add_parser("bench", help="training speed against the classic recipe; projection times")
    bench_parser.add_argument("--quick", action="store_true", help="shorter measurements, fewer seeds")
    bench_parser.add_argument("--out", type=Path, default=Path("bench.json"), help="JSON file for the figures")
    bench_parser.add_argument(
        "--device", choices=["cpu", "cuda"], help="one device only (default: cpu, and cuda if present)"
    )
    bench_parser.add_argument(
        "--only", metavar="SECTIONS", help="comma-separated: training, projection, product (default: all)"
    )
    bench_parser.set_defaults(run=cmd_bench)
    args = parser.parse_args(argv)
    from contrast_core.store import StoreError

    try:
        return args.run(args)
    except (CommandError, StoreError) as exc:  # a bad argument, or a store that cannot be used
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
