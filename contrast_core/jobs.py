"""The job queue: worker processes train queued runs; the store is the only channel.

Workers are their own programs (`python -m contrast_core worker`), not `multiprocessing`
children of the Streamlit process: a spawned child would re-import the page script as its
main module. The app starts a few of them (`JobQueue.start`) and a supervisor thread that
replaces a worker which died and fails its run; more can be started by hand on any machine
that sees the same store (e.g. a GPU box), and runs from `python -m contrast_core train` are
recorded in the store too.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from contrast_core import cgroups
from contrast_core.store import RESUMABLE_STATUSES, DiskFull, RunLost, RunStore, StoreError

POLL_SECONDS = 0.05  # an idle worker looks for a queued run this often (one query, ~20 us): a click starts within it
FLUSH_SECONDS = 0.25  # metric rows are written in batches at most this old: pages see them live
HEARTBEAT_SECONDS = 1.0  # a worker's heartbeat thread beats this often, whatever training is doing
HEARTBEAT_STALE_SECONDS = 20.0  # a worker silent this long is dead; its run becomes interrupted
MIN_FREE_MB = 50.0  # a worker claims no run with less free disk under the store
CANCEL_GRACE_SECONDS = 3.0  # a run still going this long after cancel has its worker killed
SUPERVISE_SECONDS = 0.5
OOM_EXIT_SECONDS = 5.0  # a worker the kernel killed for memory has exited well within this
# A worker's CPU priority below the app's (Unix nice, 0-19; CONTRAST_WORKER_NICE): training is background
# work, so on cores it shares with the app a page's refresh comes first and the steps take what is left.
WORKER_NICE = 10


def worker_threads() -> int:
    """Torch threads for a CPU worker: all cores but one, so the pages stay responsive."""
    return max(1, (os.cpu_count() or 1) - 1)


def worker_nice() -> int:
    """The nice value a worker adds to its own (CONTRAST_WORKER_NICE, else WORKER_NICE)."""
    value = os.environ.get("CONTRAST_WORKER_NICE", "").strip()
    if not value:
        return WORKER_NICE
    if not value.isdigit() or int(value) > 19:
        raise ValueError(f"CONTRAST_WORKER_NICE: a whole number from 0 to 19, not {value!r}")
    return int(value)


def lower_priority(by: int) -> None:
    """Adds `by` to the nice value of every thread of this process. Linux keeps one per thread: the
    threads started before (a BLAS library's pool, started at its import) each need it, and those
    started after inherit their starter's."""
    target = min(19, os.getpriority(os.PRIO_PROCESS, 0) + by)
    tasks = Path("/proc/self/task")
    for tid in sorted(int(t.name) for t in tasks.iterdir()) if tasks.is_dir() else [0]:
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            os.setpriority(os.PRIO_PROCESS, tid, target)


def default_workers() -> int:
    """One worker per GPU, else one. Counted by torch in a short child process (where a GPU's device
    files exist at all): the page process that starts the workers never imports torch."""
    if not any(os.path.exists(path) for path in ("/dev/nvidia0", "/dev/nvidiactl", "/dev/kfd")):
        return 1
    count = "import torch; print(torch.cuda.device_count())"
    try:
        found = subprocess.run([sys.executable, "-c", count], capture_output=True, text=True, timeout=120)
        return max(1, int(found.stdout.strip().splitlines()[-1]))
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return 1


# --- the worker side ---------------------------------------------------------------------------


@dataclass
class RunRecorder:
    """Turns training events into store writes: step rows batched, snapshots and checkpoints at once.

    With `worker`, every write is fenced: it lands only while that worker holds the run (RunLost otherwise).
    """

    store: RunStore
    run_id: str
    worker: str | None = None
    pending: list = field(default_factory=list)
    last_flush: float = 0.0
    pause_at: int | None = None  # as of the last `should_stop`

    def should_stop(self) -> bool:
        """Whether the run was cancelled, deleted or taken from this worker: polled once per training step
        (the same read brings the step to hold at, for `holds`)."""
        stop, self.pause_at = self.store.control(self.run_id, self.worker)
        return stop

    def holds(self, step: int) -> bool:
        """Whether the training is to wait at this step (paused, or its single step done)."""
        return self.pause_at is not None and step >= self.pause_at

    def __call__(self, event) -> None:
        fence = {"worker": self.worker}
        if event.kind == "step":
            self.pending.append({"step": event.step, **event.data})
            if time.monotonic() - self.last_flush > FLUSH_SECONDS:
                self.flush()
        elif event.kind == "snapshot":
            self.flush()
            self.store.add_snapshot(self.run_id, event.step, event.data["arrays"], event.data["metrics"], **fence)
        elif event.kind == "checkpoint":
            self.flush()
            self.store.save_checkpoint(self.run_id, event.data["state"], **fence)
        elif event.kind == "final":
            self.flush()
            self.store.set_final_metrics(self.run_id, event.data["metrics"], **fence)
        elif event.kind in ("held", "released"):  # rows first: a page stepping on reads the step held at
            self.flush()
            self.store.set_held(self.run_id, time.time() if event.kind == "held" else None, **fence)

    def flush(self) -> None:
        # The batch period runs from the last rows written, so a snapshot's flush with nothing
        # pending does not hold back the rows after it: a run's first row is written at once.
        if self.pending:
            self.store.add_metrics(self.run_id, self.pending, worker=self.worker)
            self.pending = []
            self.last_flush = time.monotonic()


def execute(store: RunStore, run_id: str, worker: str | None = None) -> str:
    """Trains one claimed run to its end, writing everything to the store; returns its final status,
    or "lost" if the run was taken from `worker` meanwhile (deleted, marked interrupted, claimed by
    another): then nothing more of it is written.

    A run with a checkpoint (an interrupted or resumed run) continues from it.
    """
    from contrast_core.config import RunConfig
    from contrast_core.train import train

    run = store.get_run(run_id)
    recorder = RunRecorder(store, run_id, worker)
    try:
        config = RunConfig.model_validate(run.config)
        resume = store.load_checkpoint(run_id) if (store.run_dir(run_id) / "model.pt").exists() else None
        result = train(config, recorder, recorder.should_stop, resume=resume, holds=recorder.holds)
        recorder.flush()
        store.set_status(run_id, result["status"], worker=worker)
        return result["status"]
    except RunLost:
        return "lost"
    except Exception as exc:  # any failure ends this run only, with a one-line reason
        recorder.pending.clear()
        message = failure_message(exc, run.config)
        return record_failure(store, run_id, message, traceback.format_exc(), worker, isinstance(exc, DiskFull))


def failure_message(exc: BaseException, config: dict) -> str:
    """A failed run's one-line reason; an out-of-memory names what the run trains."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, MemoryError) or any(words in message for words in OUT_OF_MEMORY):
        message = f"out of memory: {what_it_trains(config)} did not fit ({message[:160]})"
    return message


def record_failure(
    store: RunStore, run_id: str, message: str, trace: str, worker: str | None = None, disk_full: bool = False
) -> str:
    """Marks the run failed with its reason, and its traceback in the run's error.log; returns "failed",
    or "lost" if `worker` no longer holds it."""
    if disk_full:
        store.release_reserve()  # room to say so: a full disk cannot take even the failure's row
    try:
        store.set_status(run_id, "failed", error=message, worker=worker)
    except (RunLost, StoreError):
        return "lost"
    with contextlib.suppress(OSError):  # no folder: it failed before writing anything, or was deleted
        (store.run_dir(run_id) / "error.log").write_text(trace)
    return "failed"


def run_worker(home: str | Path | None = None, worker_id: str | None = None, parent: int | None = None) -> None:
    """The worker loop: claim the oldest queued run, train it, repeat. Exits when `parent` dies."""
    lower_priority(worker_nice())
    import torch

    torch.set_num_threads(int(os.environ.get("CONTRAST_THREADS", worker_threads())))
    store = RunStore(home)
    worker_id = worker_id or f"{os.getpid()}@{socket.gethostname()}"
    label = local_device()
    beating = Heartbeat(RunStore(home), worker_id, label).start()  # the app reads the device from here
    warm_up()
    trouble = Trouble(f"contrast worker {worker_id}")
    while (parent is None or os.getppid() == parent) and beating.is_alive():
        try:
            if store.free_mb() < MIN_FREE_MB:  # a full disk: claim nothing until there is room again
                raise DiskFull(f"disk full: {store.free_mb():.0f} MB free under CONTRAST_HOME; waiting for room")
            run = store.claim_next(worker_id, label)
        except StoreError as exc:  # a damaged index, a full disk: said once, tried again less and less often
            time.sleep(trouble.seen(exc))
            continue
        trouble.clear()
        if run is not None:
            store.keep_reserve()  # before each run: what a full disk lets it record its failure with
            execute(store, run.id, worker_id)
        else:
            time.sleep(POLL_SECONDS)


class Trouble:
    """A failure that repeats: printed once (one line, not a traceback at every try), with the wait
    before the next try doubling up to a limit."""

    def __init__(self, who: str, first: float = 0.5, limit: float = 30.0):
        self.who, self.first, self.limit, self.wait, self.last = who, first, limit, first, None

    def seen(self, exc: Exception) -> float:
        """Seconds to wait before trying again."""
        if str(exc) != self.last:
            print(f"{self.who}: {exc}", file=sys.stderr, flush=True)
            self.last = str(exc)
        wait, self.wait = self.wait, min(self.wait * 2, self.limit)
        return wait

    def clear(self) -> None:
        self.wait, self.last = self.first, None


class Heartbeat(threading.Thread):
    """Beats for a worker every HEARTBEAT_SECONDS on its own store connection, whatever the training
    thread is doing (a long data load, a slow step, a snapshot): a live worker is never declared dead.
    Torch and NumPy release the GIL in their kernels, so the beat is not held back by training."""

    def __init__(self, store: RunStore, worker_id: str, device: str):
        super().__init__(name="contrast-heartbeat", daemon=True)
        self.store, self.worker_id, self.device = store, worker_id, device

    def start(self) -> Heartbeat:
        self.beat()  # the first beat before start-up work: the app sees the worker at once
        super().start()
        return self

    def beat(self) -> None:
        self.store.heartbeat(self.worker_id, os.getpid(), self.device)

    def run(self) -> None:
        failures = 0
        while True:
            time.sleep(HEARTBEAT_SECONDS)
            try:
                self.beat()
                failures = 0
            except Exception:  # a busy or damaged index: keep trying, give up after a minute
                failures += 1
                if failures * HEARTBEAT_SECONDS > 60:
                    traceback.print_exc()
                    return


def warm_up() -> None:
    """A two-step run on the default data, unrecorded: imports, data and kernels are ready
    before the first click, so a submitted run shows its first metric row within a fraction
    of a second."""
    from contrast_core.config import RunConfig
    from contrast_core.train import train

    train(RunConfig(steps=2, eval_size=20, snapshot_every=1))


def local_device() -> str:
    """What a worker on this machine trains on: the GPU's name, or "cpu"."""
    from contrast_core.train import device_label, resolve_device

    return device_label(resolve_device("auto"))


def worker_alive(worker: dict, now: float | None = None) -> bool:
    """A worker is alive if it beat recently and, when it runs on this host, its process exists."""
    if (now or time.time()) - worker["last_seen"] > HEARTBEAT_STALE_SECONDS:
        return False
    if worker["id"].rpartition("@")[2] != socket.gethostname():
        return True
    try:
        os.kill(worker["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


OUT_OF_MEMORY = ("can't allocate memory", "CUDA out of memory", "out of memory")


def what_it_trains(config: dict) -> str:
    """The settings that decide a run's memory, in a few words, with its estimate (RunConfig.peak_bytes)."""
    from contrast_core.config import RunConfig, _size

    try:
        need = f", about {_size(RunConfig.model_validate(config).peak_bytes())} a step by its estimate"
    except Exception:  # a config this version cannot read: the words without the estimate
        need = ""
    return f"batch {config.get('batch_size')} of {config.get('model')} with {config.get('sampler')}{need}"


# --- the app side ------------------------------------------------------------------------------


def interrupt_stale(store: RunStore) -> None:
    """Marks the runs of workers no longer alive interrupted (they resume from their last checkpoint)."""
    alive = {w["id"] for w in store.workers() if worker_alive(w)}
    for run in store.list_runs(status="running"):
        if run.worker is None:
            store.set_status(run.id, "interrupted", error="no worker holds it")
        elif run.worker not in alive:
            store.mark_interrupted(worker=run.worker)


class JobQueue:
    """Worker processes over one store, and a supervisor thread that keeps them alive.

    Thread-safe: the app shares one instance between all sessions (st.cache_resource).
    """

    def __init__(
        self, store: RunStore, n_workers: int | None = None, run_seconds: float | None = None,
        pause_seconds: float | None = None,
    ):  # fmt: skip
        """run_seconds: a running run's wall-time limit, pause_seconds: how long its training may be held
        (a hosted demo's caps: a held run keeps its worker from others); stopped there, it keeps its
        snapshots and checkpoint and says why."""
        self.store = store
        self.run_seconds, self.pause_seconds = run_seconds, pause_seconds
        # None: one per GPU, counted at start (by a child process, see default_workers)
        self.n_workers = n_workers or int(os.environ.get("CONTRAST_WORKERS", 0)) or None
        self.procs: dict[str, subprocess.Popen] = {}
        # Each live worker's memory cgroup and the kernel's count of processes it killed for memory there,
        # when last looked at (a worker may be moved to another cgroup while it lives).
        self.oom_counts: dict[str, tuple[Path | None, int | None]] = {}
        # When a worker's count was first seen raised while it still lived: the kernel counts a kill before
        # its victim has finished exiting, so the raised count is taken only once it lived OOM_EXIT_SECONDS on.
        self.oom_raised_at: dict[str, float] = {}
        self.cancelled_at: dict[str, float] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.supervisor: threading.Thread | None = None

    def start(self) -> JobQueue:
        """Marks runs of dead workers interrupted, starts the workers and the supervisor (idempotent)."""
        with self.lock:
            if self.supervisor is not None:
                return self
            worker_nice()  # a bad setting is said once, here, not by each worker that starts
            self._interrupt_stale()
            # The first worker starts before the GPUs are counted: on a GPU machine counting imports
            # torch in a child (1.5-2 s on 2 cores), and a worker needs every second of its start-up.
            suffix = f"-{os.getpid()}@{socket.gethostname()}"
            self._spawn(f"w0{suffix}")
            self.n_workers = self.n_workers or default_workers()
            for i in range(1, self.n_workers):
                self._spawn(f"w{i}{suffix}")
            self.supervisor = threading.Thread(target=self._supervise, name="contrast-supervisor", daemon=True)
            self.supervisor.start()
        atexit.register(self.shutdown)
        return self

    def submit(
        self,
        config,
        *,
        name: str = "",
        owner: str | None = None,
        parent_id: str | None = None,
        sweep: str | None = None,
    ) -> str:
        """Queues a run (a RunConfig); a free worker starts it within POLL_SECONDS."""
        return self.store.create_run(
            config.model_dump(mode="json"), name=name, owner=owner, parent_id=parent_id, sweep=sweep
        )

    def cancel(self, run_id: str, reason: str | None = None) -> None:
        """Stops a run within a step; a worker that does not stop in CANCEL_GRACE_SECONDS is killed."""
        self.store.request_cancel(run_id, reason)
        with self.lock:
            self.cancelled_at[run_id] = time.monotonic()

    def resume(self, run_id: str) -> None:
        """Queues an interrupted, cancelled or failed run again; it continues from its last checkpoint.

        Raises:
            StoreError: no such run, or its status is not one of RESUMABLE_STATUSES.
        """
        status = self.store.get_run(run_id).status
        if status not in RESUMABLE_STATUSES:
            allowed = f"{', '.join(RESUMABLE_STATUSES[:-1])} or {RESUMABLE_STATUSES[-1]}"
            raise StoreError(f"run: {run_id!r} is {status}; only {allowed} runs resume")
        self.store.set_status(run_id, "queued")

    def status(self) -> dict:
        """{"workers": alive, "running": n, "queued": n, "device": what runs train on}.

        The device is a running run's, else what the alive workers reported with their heartbeat
        (e.g. "cpu" or a GPU's name), else "starting workers": never torch in this process, where
        asking CUDA for a name would create a CUDA context in the app.
        """
        alive = [w for w in self.store.workers() if worker_alive(w)]
        running = self.store.list_runs(status="running")
        reported = dict.fromkeys(w["device"] for w in alive if w["device"])  # distinct, in worker order
        return {
            "workers": len(alive),
            "running": len(running),
            "queued": len(self.store.list_runs(status="queued")),
            "device": next((run.device for run in running if run.device), None)
            or ", ".join(reported)
            or "starting workers",
        }

    def shutdown(self) -> None:
        self.stopping.set()
        with self.lock:
            for proc in self.procs.values():
                if proc.poll() is None:
                    proc.terminate()
            for proc in self.procs.values():
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()

    # --- supervision ---------------------------------------------------------------------------
    def _spawn(self, worker_id: str) -> None:
        cmd = [sys.executable, "-m", "contrast_core", "worker", "--home", str(self.store.home), "--id", worker_id]
        cmd += ["--parent", str(os.getpid())]
        self.procs[worker_id] = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, start_new_session=False)

    def _interrupt_stale(self) -> None:
        interrupt_stale(self.store)

    def _supervise(self) -> None:
        trouble, wait = Trouble("contrast supervisor", SUPERVISE_SECONDS), SUPERVISE_SECONDS
        while not self.stopping.wait(wait):
            try:
                self._check_workers()
                self._enforce_time_limits()
                self._enforce_cancels()
                self._interrupt_stale()
                trouble.clear()
                wait = SUPERVISE_SECONDS
            except Exception as exc:  # the supervisor outlives any one bad check, saying it once
                wait = trouble.seen(exc)

    def _check_workers(self) -> None:
        with self.lock:
            dead = [(wid, p.returncode) for wid, p in self.procs.items() if p.poll() is not None]
            for worker_id, code in dead:
                cgroup, kills = self.oom_counts.pop(worker_id, (None, None))
                self.oom_raised_at.pop(worker_id, None)
                for_memory = code == -signal.SIGKILL and kills is not None and (cgroups.oom_kills(cgroup) or 0) > kills
                reason = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
                for run in self.store.list_runs(status="running"):
                    if run.worker != worker_id:
                        continue
                    if for_memory:
                        error = f"killed by the system for memory: {what_it_trains(run.config)}"
                    else:
                        error = f"worker died ({reason})"
                    self.store.set_status(run.id, "failed", error=error)
                if not self.stopping.is_set():
                    self._spawn(worker_id)
            for worker_id, proc in self.procs.items():
                cgroup = cgroups.memory_cgroup(proc.pid)
                kills = cgroups.oom_kills(cgroup)
                if proc.poll() is None:  # alive after the count was read: a kill since will raise it
                    self._record_oom_count(worker_id, cgroup, kills)

    def _record_oom_count(self, worker_id: str, cgroup: Path | None, kills: int | None) -> None:
        """Keeps a live worker's count, unless the count where it was last seen rose: that kill may be this
        worker's, still exiting (and on cgroup v1 an exiting process already shows the root cgroup), so it
        is judged when the worker is seen dead, or after OOM_EXIT_SECONDS alive."""
        before_cgroup, before = self.oom_counts.get(worker_id, (None, None))
        now_there = kills if cgroup == before_cgroup else cgroups.oom_kills(before_cgroup)
        raised = None not in (now_there, before) and now_there > before
        if raised and time.monotonic() - self.oom_raised_at.setdefault(worker_id, time.monotonic()) < OOM_EXIT_SECONDS:
            return
        self.oom_raised_at.pop(worker_id, None)
        self.oom_counts[worker_id] = (cgroup, kills)

    def _enforce_time_limits(self) -> None:
        if self.run_seconds is None and self.pause_seconds is None:
            return
        now = time.time()
        for run in self.store.list_runs(status="running"):
            if run.cancel_requested:
                continue
            if self.run_seconds is not None and run.started_at and now - run.started_at > self.run_seconds:
                self.cancel(run.id, f"stopped at this demo's limit of {self.run_seconds:g} s a run")
            elif self.pause_seconds is not None and run.held_since and now - run.held_since > self.pause_seconds:
                self.cancel(run.id, f"paused longer than this demo's {self.pause_seconds:g} s: stopped to free the "
                            "worker for others; Resume goes on from here")  # fmt: skip

    def _enforce_cancels(self) -> None:
        with self.lock:
            late = [r for r, t in self.cancelled_at.items() if time.monotonic() - t > CANCEL_GRACE_SECONDS]
            for run_id in late:
                del self.cancelled_at[run_id]
                run = self.store.get_run(run_id)
                proc = self.procs.get(run.worker or "")
                if run.status == "running" and proc is not None:
                    proc.kill()
                    proc.wait()
                    self.store.set_status(run_id, "cancelled", error="stopped after the grace period")
                    self._spawn(run.worker)
