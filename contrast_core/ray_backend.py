"""Runs and sweeps on a Ray cluster: scheduled by Ray, recorded in this machine's store, shown live.

The process that holds the store (the dashboard with ``CONTRAST_BACKEND=ray``, or a terminal's
``sweep --backend ray``) is Ray's driver. `RayQueue` has the job queue's surface (submit, cancel,
resume, status, start, shutdown), so the pages do not change. It starts one `Channel` actor on its
own node and, while runs are queued, a run slot task (`run_slot`) for each, asking Ray for one GPU,
or CONTRAST_RAY_CPUS cores. Ray starts a slot on whichever node has room; there it claims the oldest
queued run through the channel, trains it and sends its events back. The channel writes them with
the RunRecorder a local worker uses, so rows, snapshots, checkpoints and final metrics reach the
store through Ray, never through a filesystem shared between machines. Stop and pause requests go
back the same way: a slot asks the channel every SYNC_SECONDS, when it sends its rows.

A node that dies takes its slot with it; Ray runs the slot again elsewhere (MAX_RETRIES), and the
channel hands the new attempt the run and its last checkpoint: training resumes there, the steps
after the checkpoint are trained again and their rows replace the lost attempt's (a step keeps one
row), and the run's error line says which node was lost. Writes from a superseded attempt are
dropped.

Ray is an optional extra (``pip install -e '.[ray]'``); nothing here imports it until a queue starts.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from contrast_core import jobs
from contrast_core.early_stop import EarlyStop, Ladder
from contrast_core.store import DiskFull, RunLost, RunStore, StoreError

RAY_VERSION = "2.60.0"  # the version the `ray` extra pins; the cluster's nodes run the same
INSTALL_HINT = f"Ray is not installed: pip install -e '.[ray]' (or pip install 'ray=={RAY_VERSION}')"
SYNC_SECONDS = jobs.FLUSH_SECONDS  # a slot sends its rows, and learns of a stop or a pause, this often
DISPATCH_SECONDS = 0.1  # the driver looks for queued runs this often (one query): a click starts within it
MAX_RETRIES = 3  # a slot whose node or process dies is run again this many times, from the run's checkpoint


class BackendError(RuntimeError):
    """The Ray backend cannot be used as set up (one line: what to install, which setting is wrong)."""


def require_ray():
    """The ray module, or BackendError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise BackendError(INSTALL_HINT) from None
    return ray


# --- what a run slot asks of the cluster -----------------------------------------------------------


@dataclass(frozen=True)
class Share:
    """The resources one run takes: `gpus` GPUs (0 or 1 a run) and `cpus` cores (also its torch threads)."""

    cpus: float = 1.0
    gpus: float = 0.0

    @classmethod
    def from_env(cls, cluster: dict) -> Share:
        """CONTRAST_RAY_CPUS (default 1) and CONTRAST_RAY_GPUS (default 1 on a cluster with GPUs, else 0)."""
        cpus = _positive("CONTRAST_RAY_CPUS", os.environ.get("CONTRAST_RAY_CPUS", ""), 1.0)
        gpus = _positive(
            "CONTRAST_RAY_GPUS", os.environ.get("CONTRAST_RAY_GPUS", ""), 1.0 if cluster.get("GPU") else 0.0
        )
        if not cpus and not gpus:
            raise BackendError("CONTRAST_RAY_CPUS: 0 cores and no GPU leaves a run nothing to train on")
        return cls(cpus, gpus)

    def slots(self, cluster: dict) -> int:
        """How many runs the cluster's resources hold at once."""
        fits = [cluster.get("CPU", 0.0) / self.cpus if self.cpus else math.inf]
        if self.gpus:
            fits.append(cluster.get("GPU", 0.0) / self.gpus)
        return int(min(fits) + 1e-9) if min(fits) != math.inf else 0

    def threads(self) -> int:
        return max(1, int(self.cpus))


def _positive(name: str, text: str, default: float) -> float:
    if not text.strip():
        return default
    try:
        value = float(text)
    except ValueError:
        raise BackendError(f"{name}: {text!r} is not a number") from None
    if not value >= 0:
        raise BackendError(f"{name}: {text!r} must be 0 or more")
    return value


# --- the driver's node: the channel ------------------------------------------------------------------


@dataclass
class Held:
    """A run a slot trains: which attempt may write, on which node, through which recorder."""

    run: object  # the store's Run as claimed
    recorder: jobs.RunRecorder
    node: str
    attempt: int = 0  # the attempt that may write: 1 for the first, one more each time its node is lost
    lost: bool = False  # taken from this driver (deleted, interrupted): nothing more is written


class Channel:
    """Runs on the driver's node (a Ray actor): claims runs for slots, writes their events to the store,
    answers whether to stop or hold. Threaded: one run's snapshot write does not hold back another's rows.
    """

    def __init__(self, home: str, worker: str, sweep: str | None = None, early_stop: EarlyStop | None = None):
        import torch  # checkpoints are written with torch.save

        torch.set_num_threads(1)  # it writes; the node's cores train
        self.store, self.worker, self.sweep = RunStore(home), worker, sweep
        self.ladder = Ladder(early_stop) if early_stop else None
        self.held: dict[str, Held] = {}  # slot -> its run
        self.lock = threading.Lock()

    def begin(self, slot: str, node: str) -> dict | None:
        """A slot starts on `node`: its run (claimed now, or the one it held before its node was lost),
        the run's last checkpoint if it has one, and the attempt number its writes carry. None: nothing
        to train (no run queued, or its run ended while its node was lost)."""
        with self.lock:
            held = self.held.get(slot)
            if held is None:
                run = self.store.claim_next(self.worker, node, sweep=self.sweep)
                if run is None:
                    return None
                held = self.held[slot] = Held(run, jobs.RunRecorder(self.store, run.id, self.worker), node)
            held.attempt += 1
        run_id = held.run.id
        resume = self.store.load_checkpoint(run_id) if (self.store.run_dir(run_id) / "model.pt").exists() else None
        if held.attempt > 1:
            try:
                step = self.store.get_run(run_id).step
                note = (f"{held.node} was lost at step {step}; resumed from its checkpoint at step "
                        f"{resume['step'] if resume else 0} on {node}")  # fmt: skip
                self.store.set_status(run_id, "running", error=note, worker=self.worker)
            except StoreError:  # ended meanwhile (stopped, deleted): the slot ends
                self._drop(slot)
                return None
            held.node = node
        return {"run_id": run_id, "config": held.run.config, "attempt": held.attempt, "resume": resume}

    def adopt(self, slot: str, run_id: str) -> None:
        """Gives `slot` a run this driver created running (a terminal's `train --backend ray`)."""
        with self.lock:
            run = self.store.get_run(run_id)
            self.held[slot] = Held(run, jobs.RunRecorder(self.store, run_id, self.worker), "this machine")

    def record(self, slot: str, attempt: int, events: list) -> tuple[bool, int | None]:
        """Writes a slot's events in order; returns (whether to stop, the step to hold at)."""
        held = self._current(slot, attempt)
        if held is None or held.lost:
            return True, None
        try:
            for event in events:
                held.recorder(event)
                if self.ladder and event.kind in ("step", "snapshot"):
                    self._judge(held, event)
            held.recorder.flush()
            return held.recorder.should_stop(), held.recorder.pause_at
        except RunLost:
            held.lost = True
            return True, None

    def finish(self, slot: str, attempt: int, status: str) -> str:
        """The slot's training ended with `status`; returns the run's final status, or "lost"."""
        held = self._current(slot, attempt)
        if held is None or held.lost:
            return "lost"
        try:
            held.recorder.flush()
            self.store.set_status(held.run.id, status, worker=self.worker)
            return status
        except RunLost:
            return "lost"
        finally:
            self._drop(slot)

    def fail(self, slot: str, attempt: int, message: str, trace: str, disk_full: bool = False) -> str:
        """The slot's training raised: the run fails with the one-line reason."""
        held = self._current(slot, attempt)
        if held is None or held.lost:
            return "lost"
        self._drop(slot)
        return jobs.record_failure(self.store, held.run.id, message, trace, self.worker, disk_full)

    def abandon(self, slot: str, message: str) -> None:
        """The slot is gone for good (retries spent, or cancelled): its run, if still running, fails."""
        held = self._drop(slot)
        if held is not None and not held.lost:
            jobs.record_failure(self.store, held.run.id, message, message, self.worker)

    def runs(self) -> dict[str, str]:
        """{slot: run id} for the slots that hold a run."""
        with self.lock:
            return {slot: held.run.id for slot, held in self.held.items()}

    def _current(self, slot: str, attempt: int) -> Held | None:
        with self.lock:
            held = self.held.get(slot)
        return held if held is not None and held.attempt == attempt else None  # an older attempt: dropped

    def _drop(self, slot: str) -> Held | None:
        with self.lock:
            return self.held.pop(slot, None)

    def _judge(self, held: Held, event) -> None:
        values = event.data.get("metrics", {}) if event.kind == "snapshot" else event.data
        with self.lock:  # the sweep's runs report from their own threads
            reason = self.ladder.judge(held.run.id, held.run.sweep, held.run.config["steps"], event.step, values)
        if reason:
            self.store.request_cancel(held.run.id, reason)


# --- the node that trains: the run slot --------------------------------------------------------------


class Link:
    """A slot's end of the channel, given to `train` as on_event, should_stop and holds: step rows are
    sent in batches every SYNC_SECONDS, other events at once (in order); each send brings back whether
    to stop and where to hold."""

    def __init__(self, channel, slot: str, attempt: int):
        self.channel, self.slot, self.attempt = channel, slot, attempt
        self.pending: list = []
        self.last_sync, self.stop, self.pause_at = 0.0, False, None

    def __call__(self, event) -> None:
        if event.kind in ("start", "error"):  # the loop raises after an "error"; its message says it all
            return
        if event.kind == "checkpoint":  # the store's machine may have no GPU: tensors travel on the CPU
            event.data = {"state": _on_cpu(event.data["state"])}
        self.pending.append(event)
        if event.kind != "step":
            self.sync()

    def should_stop(self) -> bool:
        if time.monotonic() - self.last_sync >= SYNC_SECONDS:
            self.sync()
        return self.stop

    def holds(self, step: int) -> bool:
        return self.pause_at is not None and step >= self.pause_at

    def sync(self) -> None:
        import ray

        events, self.pending = self.pending, []
        self.stop, self.pause_at = ray.get(self.channel.record.remote(self.slot, self.attempt, events))
        self.last_sync = time.monotonic()


def _on_cpu(value):
    import torch

    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {key: _on_cpu(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_on_cpu(item) for item in value)
    return value


def node_label() -> str:
    """What this slot trains on, and where: "cpu on gpu-box-2 (node 3fa2c1)"."""
    import ray

    return f"{jobs.local_device()} on {socket.gethostname()} (node {ray.get_runtime_context().get_node_id()[:6]})"


def warm_slot(threads: int) -> None:
    """A Ray task: a two-step run, unrecorded, so that the process that takes the next slot is ready."""
    import torch

    torch.set_num_threads(threads)
    jobs.warm_up()


def run_slot(channel, slot: str, threads: int) -> str:
    """A Ray task: trains the run the channel gives it (resuming from its checkpoint), to its end."""
    import ray
    import torch

    from contrast_core.config import RunConfig
    from contrast_core.train import train

    torch.set_num_threads(threads)  # the cores Ray gave this slot, not the node's: slots share a node
    job = ray.get(channel.begin.remote(slot, node_label()))
    if job is None:
        return "idle"
    link = Link(channel, slot, job["attempt"])
    try:
        config = RunConfig.model_validate(job["config"])
        result = train(config, link, link.should_stop, resume=job["resume"], holds=link.holds)
        link.sync()
        return ray.get(channel.finish.remote(slot, job["attempt"], result["status"]))
    except Exception as exc:  # any failure ends this run only, with a one-line reason
        message = jobs.failure_message(exc, job["config"])
        trace = traceback.format_exc()
        return ray.get(channel.fail.remote(slot, job["attempt"], message, trace, isinstance(exc, DiskFull)))


# --- the driver ------------------------------------------------------------------------------------


class RayQueue(jobs.JobQueue):
    """The job queue over a Ray cluster: runs queued in the store are trained by Ray tasks.

    Args:
        store: the run store, on this machine (the cluster's other nodes never see it).
        address: the cluster (RAY_ADDRESS, or "auto" for one started here by `ray start --head`);
            None: the one Ray finds, else a new local one. Ignored when Ray is already initialised.
        sweep: take only this sweep's runs (a terminal's `sweep --backend ray`).
        early_stop: stop a sweep's hopeless runs (EarlyStop); default CONTRAST_EARLY_STOP, if set.
        run_seconds, pause_seconds: a hosted demo's caps, as for JobQueue.
    """

    def __init__(
        self, store: RunStore, *, address: str | None = None, sweep: str | None = None,
        early_stop: EarlyStop | None = None, run_seconds: float | None = None, pause_seconds: float | None = None,
    ):  # fmt: skip
        super().__init__(store, n_workers=1, run_seconds=run_seconds, pause_seconds=pause_seconds)
        self.address = address if address is not None else os.environ.get("RAY_ADDRESS") or None
        self.sweep = sweep
        rule = os.environ.get("CONTRAST_EARLY_STOP", "")
        try:
            self.early_stop = early_stop or (EarlyStop.parse(rule) if rule.strip() else None)
        except ValueError as exc:
            raise BackendError(f"CONTRAST_EARLY_STOP: {str(exc).partition(': ')[2]}") from None
        self.worker = f"ray-{os.getpid()}@{socket.gethostname()}"
        self.slots: dict = {}  # slot id -> its task's ObjectRef
        self.count = 0
        self.channel = None
        self.share = Share()
        self.cluster: dict = {}  # the alive nodes' resources, as of the last look
        self.nodes = 0
        self.started_ray = False
        self.warming: list = []

    def start(self) -> RayQueue:
        """Connects to the cluster, starts the channel on this node and the dispatcher thread (idempotent)."""
        ray = require_ray()
        with self.lock:
            if self.supervisor is not None:
                return self
            if not ray.is_initialized():
                try:
                    ray.init(self.address, runtime_env=runtime_env(), include_dashboard=False, log_to_driver=False)
                except (ConnectionError, ValueError, RuntimeError) as exc:
                    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                    raise BackendError(
                        f"RAY_ADDRESS: cannot use the Ray cluster at {self.address} ({reason})"
                    ) from None
                self.started_ray = True
            self._look_at_cluster()
            self.share = Share.from_env(self.cluster)
            self._beat()
            jobs.interrupt_stale(self.store)
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
            channel = ray.remote(Channel).options(num_cpus=0, max_concurrency=64, scheduling_strategy=here)
            self.channel = channel.remote(str(self.store.home), self.worker, self.sweep, self.early_stop)
            self.slot_task = ray.remote(run_slot)
            # Warm slots: Ray's worker processes import torch and load the data before the first run,
            # as a local worker does at start (Ray reuses the processes for the run slots after them).
            warm = ray.remote(warm_slot).options(num_cpus=self.share.cpus, num_gpus=self.share.gpus)
            self.warming = [warm.remote(self.share.threads()) for _ in range(min(self.share.slots(self.cluster), 8))]
            self.supervisor = threading.Thread(target=self._supervise, name="contrast-ray-dispatcher", daemon=True)
            self.supervisor.start()
        import atexit

        atexit.register(self.shutdown)
        return self

    def train(self, config, name: str = "") -> str:
        """Trains one run now on whichever node has room, not waiting behind the queue (a terminal's
        `train --backend ray`); returns its id. The run is recorded as running at once."""
        import ray

        run_id = self.store.create_run(config.model_dump(mode="json"), name=name, status="running",
                                       worker=self.worker, device="Ray: waiting for a node")  # fmt: skip
        with self.lock:
            self.count += 1
            slot = f"s{self.count}"
            ray.get(self.channel.adopt.remote(slot, run_id))
            self.slots[slot] = self._slot_task().remote(self.channel, slot, self.share.threads())
        return run_id

    def status(self) -> dict:
        """As JobQueue.status; "workers" is how many runs the cluster trains at once, "device" the cluster."""
        return {
            "workers": self.share.slots(self.cluster),
            "running": len(self.store.list_runs(status="running")),
            "queued": len(self.store.list_runs(status="queued")),
            "device": self._cluster_text(),
        }

    def shutdown(self) -> None:
        """Stops dispatching, ends the slots (their runs are marked interrupted: Resume goes on), and
        disconnects from Ray if this queue connected."""
        if self.stopping.is_set() or self.supervisor is None:
            return
        self.stopping.set()
        self.supervisor.join(timeout=5)
        import ray

        if not ray.is_initialized():
            return
        for ref in [*self.slots.values(), *self.warming]:
            ray.cancel(ref, force=True)
        self.store.mark_interrupted(worker=self.worker)
        ray.kill(self.channel)
        if self.started_ray:
            ray.shutdown()

    # --- dispatching ------------------------------------------------------------------------------
    def _supervise(self) -> None:
        trouble, wait, beaten = jobs.Trouble("contrast ray dispatcher", DISPATCH_SECONDS), DISPATCH_SECONDS, 0.0
        while not self.stopping.wait(wait):
            try:
                if time.monotonic() - beaten > jobs.HEARTBEAT_SECONDS:
                    self._look_at_cluster()
                    self.share = Share.from_env(self.cluster)  # a GPU node that joined gives runs a GPU
                    self._beat()
                    beaten = time.monotonic()
                self._reap()
                self._launch()
                self._enforce_time_limits()
                self._enforce_cancels()
                trouble.clear()
                wait = DISPATCH_SECONDS
            except Exception as exc:  # the dispatcher outlives any one bad check, saying it once
                wait = trouble.seen(exc)

    def _launch(self) -> None:
        """One slot per queued run (of this queue's sweep) not yet waited for, up to what the cluster holds."""
        import ray

        queued = len(self.store.list_runs(status="queued", sweep=self.sweep))
        if not queued and not self.slots:
            return
        holding = ray.get(self.channel.runs.remote())
        waiting = len(self.slots) - sum(slot in self.slots for slot in holding)
        room = self.share.slots(self.cluster) - len(self.slots)
        with self.lock:
            for _ in range(max(0, min(queued - waiting, room))):
                self.count += 1
                slot = f"s{self.count}"
                self.slots[slot] = self._slot_task().remote(self.channel, slot, self.share.threads())

    def _reap(self) -> None:
        import ray

        if not self.slots:
            return
        with self.lock:
            refs = {ref: slot for slot, ref in self.slots.items()}
        done, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0)
        for ref in done:
            slot = refs[ref]
            with self.lock:
                del self.slots[slot]
            try:
                ray.get(ref)
            except Exception as exc:  # retries spent, or cancelled: its run (if still running) says why
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:200]
                ray.get(self.channel.abandon.remote(slot, f"lost on the Ray cluster ({type(exc).__name__}): {reason}"))

    def _enforce_cancels(self) -> None:
        """A run still going CANCEL_GRACE_SECONDS after its stop request has its slot killed."""
        import ray

        with self.lock:
            late = [r for r, t in self.cancelled_at.items() if time.monotonic() - t > jobs.CANCEL_GRACE_SECONDS]
            for run_id in late:
                del self.cancelled_at[run_id]
        if not late:
            return
        holders = {run_id: slot for slot, run_id in ray.get(self.channel.runs.remote()).items()}
        for run_id in late:
            slot = holders.get(run_id)
            if slot in self.slots and self.store.get_run(run_id).status == "running":
                ray.cancel(self.slots[slot], force=True)
                self.store.set_status(run_id, "cancelled", error="stopped after the grace period")

    def _slot_task(self):
        return self.slot_task.options(num_cpus=self.share.cpus, num_gpus=self.share.gpus, max_retries=MAX_RETRIES)

    def _look_at_cluster(self) -> None:
        import ray

        alive = [node for node in ray.nodes() if node.get("Alive")]
        self.nodes = len(alive)
        self.cluster = {}
        for node in alive:
            for name, amount in node.get("Resources", {}).items():
                if name in ("CPU", "GPU"):
                    self.cluster[name] = self.cluster.get(name, 0.0) + amount

    def _beat(self) -> None:
        """The store's heartbeat for this driver, which holds the runs its slots train: other processes on
        the store (a local worker, a terminal's sweep) see them held, not orphaned."""
        self.store.heartbeat(self.worker, os.getpid(), self._cluster_text())

    def _cluster_text(self) -> str:
        gpus = int(self.cluster.get("GPU", 0))
        what = f"{gpus} GPUs" if gpus else f"{self.cluster.get('CPU', 0):g} CPUs"
        share = "a GPU" if self.share.gpus else f"{self.share.cpus:g} CPU"
        return f"Ray: {self.nodes} nodes, {what}, {share} a run"


def runtime_env() -> dict:
    """The runtime environment of a driver's Ray job (`ray.init(runtime_env=...)`): this package, shipped by
    Ray to each node (the nodes need the requirements installed, not this checkout), and the settings a
    run reads there."""
    env = {
        name: value for name, value in os.environ.items() if name.startswith("CONTRAST_") and name != "CONTRAST_HOME"
    }
    return {"py_modules": [str(Path(__file__).parent)], "env_vars": env}
