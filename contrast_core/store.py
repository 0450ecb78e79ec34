"""The run store: a SQLite index plus one folder per run.

The store is the only channel between worker processes (which train) and pages (which
read). Many processes open the same store at once, so the index runs in WAL mode: readers
never block the writer and the writer never blocks readers.

Layout under the home folder (``CONTRAST_HOME``, default ``checkpoints``)::

    index.sqlite                      runs, metrics, snapshot index, worker heartbeats
    runs/<run_id>/config.json         the run's config, written at creation
    runs/<run_id>/run.json            its row of the index (status, name, error, final metrics...)
    runs/<run_id>/metrics.jsonl       its metric rows, appended as they are written
    runs/<run_id>/snapshots/<step:08d>.npz
    runs/<run_id>/snapshots/index.jsonl   each snapshot's step and metrics, appended
    runs/<run_id>/model.pt            the latest checkpoint

Nothing is only in the index: each run folder holds what its rows say, written in the same
transaction, so `rebuild` makes a new index from the folders if the old one is lost or damaged.

Metrics are stored one row per step as ``(run_id, step, json)`` in a table clustered on
``(run_id, step)``: an incremental read (``step > since``) is one range scan and one
``json.loads`` per row, instead of regrouping ten ``(name, value)`` rows per step.

torch is imported only inside the checkpoint functions, so pages can import this module
without paying for it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import operator
import os
import re
import secrets
import shutil
import sqlite3
import threading
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import IO, Any

import numpy as np

STATUSES = ("queued", "running", "finished", "failed", "cancelled", "interrupted")
TERMINAL_STATUSES = ("finished", "failed", "cancelled", "interrupted")
LIVE_STATUSES = ("queued", "running")  # a page showing such a run refreshes itself
RESUMABLE_STATUSES = ("interrupted", "cancelled", "failed")  # queued again, from the last checkpoint
SCHEMA_VERSION = 4
CHECKPOINT_KEYS = ("model", "step", "config")  # what makes a file a Contrast Lab checkpoint

_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # also keeps ids safe as folder names


RESERVE_BYTES = 2 * 2**20  # kept free for recording a failure on a full disk (RunStore.keep_reserve)


class StoreError(Exception):
    """A store operation failed; the message is one line naming the run, field or file."""


class CheckpointError(StoreError):
    """A file is missing, corrupt or not a Contrast Lab checkpoint."""


class DiskFull(StoreError):
    """The disk under the store is full: nothing was written; what is stored is kept."""


class IndexDamaged(StoreError):
    """The index file cannot be read (truncated, overwritten): `rebuild` restores it from the run folders."""


class RunLost(StoreError):
    """A worker wrote to a run it no longer holds: the run was deleted, stopped for it (marked
    interrupted) or claimed by another worker. The worker drops the run; nothing of it is written."""


@dataclass(frozen=True)
class Run:
    """One row of the runs table, as pages and workers see it."""

    id: str
    name: str
    config: dict
    status: str
    created_at: float  # seconds since the epoch
    started_at: float | None
    finished_at: float | None
    device: str | None
    error: str | None
    owner: str | None
    parent_id: str | None
    step: int  # last metric step recorded (0 if none)
    worker: str | None  # worker id (pid@host) that claimed it; kept after it ends
    cancel_requested: bool
    final_metrics: dict | None = None
    sweep: str | None = None  # the sweep this run belongs to (contrast_core.sweep), by name
    # Training held at a step (`hold`): the worker waits once its step reaches pause_at (0: at once), and
    # says since when it waits in held_since (None while it trains). The run stays "running" meanwhile.
    pause_at: int | None = None
    held_since: float | None = None


# The runs table has one column per Run field, of the same name. Fields not stored as they are
# decode here; NULL stays None.
_DECODE: dict[str, Callable[[Any], Any]] = {"config": json.loads, "final_metrics": json.loads, "cancel_requested": bool}
_RUN_FIELDS = tuple(f.name for f in fields(Run))
_RUN_COLUMNS = ", ".join(_RUN_FIELDS)


def _run_from_row(row: tuple) -> Run:
    """A Run from a ``SELECT {_RUN_COLUMNS}`` row."""
    values = dict(zip(_RUN_FIELDS, row, strict=True))
    for name, decode in _DECODE.items():
        if values[name] is not None:
            values[name] = decode(values[name])
    return Run(**values)


def _create_v1(conn: sqlite3.Connection) -> None:
    conn.execute(
        """CREATE TABLE runs (
            id TEXT PRIMARY KEY, name TEXT NOT NULL DEFAULT '', config TEXT NOT NULL,
            status TEXT NOT NULL, created_at REAL NOT NULL, started_at REAL, finished_at REAL,
            device TEXT, error TEXT, owner TEXT, parent_id TEXT,
            step INTEGER NOT NULL DEFAULT 0, worker TEXT,
            cancel_requested INTEGER NOT NULL DEFAULT 0, final_metrics TEXT)"""
    )
    conn.execute("CREATE INDEX runs_by_status ON runs (status, created_at)")
    # WITHOUT ROWID: the rows are stored in (run_id, step) order, so `step > since` is one scan.
    conn.execute(
        """CREATE TABLE metrics (run_id TEXT NOT NULL, step INTEGER NOT NULL, row TEXT NOT NULL,
            PRIMARY KEY (run_id, step)) WITHOUT ROWID"""
    )
    conn.execute(
        """CREATE TABLE snapshots (run_id TEXT NOT NULL, step INTEGER NOT NULL,
            metrics TEXT NOT NULL, created_at REAL NOT NULL,
            PRIMARY KEY (run_id, step)) WITHOUT ROWID"""
    )
    conn.execute("CREATE TABLE workers (id TEXT PRIMARY KEY, pid INTEGER NOT NULL, last_seen REAL NOT NULL)")


def _worker_device_v2(conn: sqlite3.Connection) -> None:
    # Workers report what they train on, so the app never asks torch (a CUDA context) itself.
    conn.execute("ALTER TABLE workers ADD COLUMN device TEXT")


def _sweeps_v3(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE runs ADD COLUMN sweep TEXT")
    conn.execute("CREATE INDEX runs_by_sweep ON runs (sweep, created_at)")


def _pause_v4(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE runs ADD COLUMN pause_at INTEGER")
    conn.execute("ALTER TABLE runs ADD COLUMN held_since REAL")


# MIGRATIONS[n] takes a store at version n - 1 to version n (version 0 is an empty file).
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: _create_v1, 2: _worker_device_v2, 3: _sweeps_v3, 4: _pause_v4,
}  # fmt: skip


def _json_dumps(value: Any, what: str) -> str:
    try:
        return json.dumps(value, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}: not JSON-serialisable ({exc})") from None


def _write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Writes a file so that readers see either the old file or the whole new one."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _metric_row(row: dict, index: int) -> tuple[int, dict]:
    """Validates one metrics row: an integer "step" plus float fields."""
    if "step" not in row:
        raise ValueError(f"metrics: row {index} has no 'step'")
    try:
        step = operator.index(row["step"])
    except TypeError:
        raise ValueError(f"metrics: row {index} step {row['step']!r} is not an integer") from None
    fields = {"step": step}
    for name, value in row.items():
        if name == "step":
            continue
        try:
            fields[str(name)] = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"metrics: step {step} field {name!r} is not a number ({value!r})") from None
    return step, fields


class RunStore:
    """Runs, metrics, snapshots and checkpoints under one home folder.

    One SQLite connection per instance, guarded by a lock: a single RunStore may be shared
    by threads (Streamlit's ``st.cache_resource``). Separate processes open their own.

    Args:
        home: the store folder; default ``$CONTRAST_HOME`` or ``checkpoints``.

    Raises:
        StoreError: the index was written by a newer version of Contrast Lab.
    """

    def __init__(self, home: str | Path | None = None):
        self.home = Path(home or os.environ.get("CONTRAST_HOME") or "checkpoints").absolute()
        self._lock = threading.Lock()
        try:
            (self.home / "runs").mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                self.home / "index.sqlite", timeout=5.0, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:  # not writable, not a folder, a read-only disk
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise StoreError(f"store: cannot use {self.home} as the run store ({reason})") from None
        self._conn.execute("PRAGMA busy_timeout = 5000")
        for attempt in range(50):  # on a new file, processes starting together race to switch it to WAL
            try:
                self._conn.execute("PRAGMA journal_mode = WAL")
                break
            except sqlite3.OperationalError:  # "database is locked": the switch skips the busy handler
                if attempt == 49:
                    raise
                time.sleep(0.1)
        self._conn.execute("PRAGMA synchronous = NORMAL")  # WAL: durable at checkpoints
        self._migrate()

    def close(self) -> None:
        """Closes the index connection; the instance is unusable afterwards."""
        with self._lock:
            self._conn.close()

    # -- plumbing ---------------------------------------------------------------------

    def _schema_version(self) -> int:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"store: {self.home / 'index.sqlite'} has schema version {version}, newer than "
                f"this program's SCHEMA_VERSION {SCHEMA_VERSION}; upgrade Contrast Lab"
            )
        return version

    def _migrate(self) -> None:
        if self._schema_version() == SCHEMA_VERSION:
            return
        with self._write() as conn:  # re-read under the write lock: another process may have won
            for version in range(self._schema_version() + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[version](conn)
                conn.execute(f"PRAGMA user_version = {version}")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; BEGIN IMMEDIATE takes the write lock before any read. SQLite's and
        the file system's failures come out as StoreError (DiskFull, IndexDamaged) in one line."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            except (sqlite3.DatabaseError, OSError) as exc:
                if isinstance(exc, sqlite3.IntegrityError):
                    raise
                raise self._failure(exc) from None

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.DatabaseError as exc:
                raise self._failure(exc) from None

    def free_mb(self) -> float:
        """Megabytes free on the disk that holds the store."""
        return shutil.disk_usage(self.home).free / 1e6

    def keep_reserve(self) -> None:
        """Puts back `reserve.bin` (RESERVE_BYTES) while there is room: when the disk fills, a worker
        deletes it to record why its run failed, which a full disk would refuse."""
        path = self.home / "reserve.bin"
        if path.exists() or self.free_mb() * 1e6 < 4 * RESERVE_BYTES:
            return
        with contextlib.suppress(OSError):
            _write_atomic(path, lambda f: f.write(bytes(RESERVE_BYTES)))

    def release_reserve(self) -> None:
        (self.home / "reserve.bin").unlink(missing_ok=True)

    def _failure(self, exc: Exception) -> StoreError:
        """A StoreError saying what went wrong with the index or the disk, without a path."""
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "disk is full" in text:
            return DiskFull(f"disk full: {self.free_mb():.0f} MB free under CONTRAST_HOME; nothing stored was lost")
        if isinstance(exc, sqlite3.DatabaseError) and any(
            words in text for words in ("malformed", "not a database", "disk I/O error")
        ):
            return IndexDamaged(
                f"store: the index is damaged ({text}); `python -m contrast_core store rebuild` makes it again "
                "from the run folders"
            )
        return StoreError(f"store: {text}")

    def _mirror(self, conn: sqlite3.Connection, run_ids: list[str]) -> None:
        """Inside a write transaction: each run's row, as the index now holds it, to its folder's run.json."""
        for row in conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE id IN ({', '.join('?' * len(run_ids))})", run_ids
        ).fetchall():
            run = asdict(_run_from_row(row))
            folder = self.run_dir(run["id"])
            folder.mkdir(parents=True, exist_ok=True)
            text = json.dumps({k: v for k, v in run.items() if k != "config"}, allow_nan=True)
            try:
                _write_atomic(folder / "run.json", lambda f, text=text: f.write(text.encode()))
            except OSError as exc:  # a full disk: the index still records it (a failure, say); the file
                if exc.errno != errno.ENOSPC:  # keeps its last whole version and catches up at the next write
                    raise

    def _update_run(self, conn: sqlite3.Connection, run_id: str, sql: str, params: tuple) -> None:
        if conn.execute(sql, params).rowcount == 0:
            raise StoreError(f"run: no run {run_id!r}")

    @staticmethod
    def _fence(conn: sqlite3.Connection, run_id: str, worker: str | None) -> None:
        """Inside a write transaction: raises RunLost unless `worker` (when given) still holds the run,
        so a worker declared dead, or one whose run was deleted, cannot write over what replaced it."""
        if worker is None:
            return
        row = conn.execute("SELECT worker, status FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise RunLost(f"run: {run_id!r} was deleted")
        if row != (worker, "running"):
            holder = f"held by {row[0]}" if row[1] == "running" else row[1]
            raise RunLost(f"run: {run_id!r} is no longer this worker's ({worker}): it is {holder}")

    # -- runs -------------------------------------------------------------------------

    def run_dir(self, run_id: str) -> Path:
        """The run's folder (not created here)."""
        if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
            raise StoreError(f"run: invalid run id {run_id!r}")
        return self.home / "runs" / run_id

    def create_run(
        self,
        config: dict,
        *,
        name: str = "",
        owner: str | None = None,
        parent_id: str | None = None,
        status: str = "queued",
        worker: str | None = None,
        device: str | None = None,
        sweep: str | None = None,
    ) -> str:
        """Adds a run and writes its config.json; returns its id.

        A run created "running" (a terminal's `train`, which trains it itself) names its
        `worker` and `device` at once, as `claim_next` would.

        Ids look like ``20250101-120000-a3f9c1d2e4b5f607`` (UTC time + 64 random bits): safe in URLs
        and folder names, sortable by creation to the second, and not guessable, so that a hosted
        demo's link to a run is the only way to it.
        """
        _check_status(status)
        config_json = _json_dumps(config, "config")
        now = time.time()
        for _ in range(5):  # a collision needs the same second and the same 64 random bits
            run_id = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(8)
            try:
                with self._write() as conn:
                    folder = self.run_dir(run_id)
                    conn.execute(
                        "INSERT INTO runs (id, name, config, status, created_at, owner, parent_id,"
                        " worker, device, started_at, sweep) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            run_id,
                            name,
                            config_json,
                            status,
                            now,
                            owner,
                            parent_id,
                            worker,
                            device,
                            now if status == "running" else None,
                            sweep,
                        ),
                    )
                    (folder / "snapshots").mkdir(parents=True, exist_ok=True)
                    _write_atomic(folder / "config.json", lambda f: f.write(config_json.encode()))
                    self._mirror(conn, [run_id])
            except sqlite3.IntegrityError:
                continue
            return run_id
        raise StoreError("run: could not pick a unique run id")

    def get_run(self, run_id: str) -> Run:
        """The run with this id.

        Raises:
            StoreError: no such run.
        """
        rows = self._read(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,))
        if not rows:
            raise StoreError(f"run: no run {run_id!r}")
        return _run_from_row(rows[0])

    def list_runs(
        self,
        *,
        status: str | Iterable[str] | None = None,
        owner: str | None = None,
        sweep: str | None = None,
        limit: int | None = None,
    ) -> list[Run]:
        """Runs, newest first, optionally filtered by status (one or several), owner and sweep."""
        where, params = [], []
        if sweep is not None:
            where.append("sweep = ?")
            params.append(sweep)
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            for s in statuses:
                _check_status(s)
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            params += statuses
        if owner is not None:
            where.append("owner = ?")
            params.append(owner)
        sql = f"SELECT {_RUN_COLUMNS} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, rowid DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        return [_run_from_row(row) for row in self._read(sql, tuple(params))]

    def sweeps(self, owner: str | None = None) -> list[str]:
        """The names of the sweeps that have runs (of `owner`, if given), newest first."""
        mine = "" if owner is None else " AND owner = ?"
        rows = self._read(
            f"SELECT sweep FROM runs WHERE sweep IS NOT NULL{mine} GROUP BY sweep ORDER BY max(created_at) DESC",
            () if owner is None else (owner,),
        )
        return [row[0] for row in rows]

    def queue_position(self, run_id: str) -> int | None:
        """1-based place in the order `claim_next` takes queued runs (fewest runs training for the owner
        first, then oldest), as things stand now; None if the run is not queued."""
        ahead = self.queue_ahead(run_id)
        return None if ahead is None else len(ahead) + 1

    def queue_ahead(self, run_id: str) -> list[Run] | None:
        """The queued runs `claim_next` would take before this one, in that order; None if it is not queued."""
        status = self._read("SELECT status FROM runs WHERE id = ?", (run_id,))
        if not status:
            raise StoreError(f"run: no run {run_id!r}")
        if status[0][0] != "queued":
            return None
        training = dict(self._read("SELECT owner, count(*) FROM runs WHERE status = 'running' GROUP BY owner"))
        rows = self._read(f"SELECT {_RUN_COLUMNS} FROM runs WHERE status = 'queued' ORDER BY created_at, rowid")
        waiting, ahead = [_run_from_row(row) for row in rows], []
        while waiting:  # claim as claim_next would, one run at a time
            run = waiting.pop(min(range(len(waiting)), key=lambda i: (training.get(waiting[i].owner, 0), i)))
            if run.id == run_id:
                return ahead
            ahead.append(run)
            training[run.owner] = training.get(run.owner, 0) + 1
        return None

    def claim_next(self, worker: str, device: str, *, sweep: str | None = None) -> Run | None:
        """Atomically takes the oldest queued run (of `sweep`, if given) and marks it running on this worker.

        Two workers calling at once never get the same run. Returns None if none is queued.
        """
        only = "" if sweep is None else " AND sweep = ?"
        # Fair between owners (a hosted demo's visitors): the oldest queued run of an owner with the fewest
        # runs training goes first, so one visitor's sweep does not hold everyone else back. Runs without
        # an owner count as one owner: first come, first served.
        with self._write() as conn:
            row = conn.execute(
                f"SELECT id FROM runs q WHERE status = 'queued'{only} ORDER BY (SELECT count(*) FROM runs r"
                " WHERE r.status = 'running' AND r.owner IS q.owner), created_at, rowid LIMIT 1",
                () if sweep is None else (sweep,),
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE runs SET status = 'running', worker = ?, device = ?, started_at = ? WHERE id = ?",
                (worker, device, time.time(), row[0]),
            )
            self._mirror(conn, [row[0]])
            claimed = conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (row[0],)).fetchone()
        return _run_from_row(claimed)

    def set_status(self, run_id: str, status: str, *, error: str | None = None, worker: str | None = None) -> None:
        """Moves a run to a status.

        Terminal statuses set finished_at; "running" sets started_at once; "queued"
        (re-queueing, e.g. to resume an interrupted run) clears finished_at, worker, error,
        the cancel request and a pause. With `worker`, only while that worker holds the run (else RunLost).
        """
        _check_status(status)
        now = time.time()
        if status in TERMINAL_STATUSES:  # a reason given earlier (e.g. a time limit's cancel) is kept
            sql = (
                "UPDATE runs SET status = ?, error = coalesce(?, error), finished_at = ?, held_since = NULL"
                " WHERE id = ?"
            )
            params = (status, error, now, run_id)
        elif status == "running":
            sql = "UPDATE runs SET status = ?, error = ?, started_at = coalesce(started_at, ?) WHERE id = ?"
            params = (status, error, now, run_id)
        else:
            sql = (
                "UPDATE runs SET status = ?, error = ?, finished_at = NULL, worker = NULL,"
                " cancel_requested = 0, pause_at = NULL WHERE id = ?"
            )
            params = (status, error, run_id)
        with self._write() as conn:
            self._fence(conn, run_id, worker)
            self._update_run(conn, run_id, sql, params)
            self._mirror(conn, [run_id])

    def request_cancel(self, run_id: str, reason: str | None = None) -> None:
        """Cancels a queued run at once; asks a running run's worker to stop. `reason`, if given,
        becomes the run's error line (why it was stopped), kept when it ends.

        Finished, failed, cancelled and interrupted runs are left as they are. One UPDATE,
        so a worker claiming the run at the same moment sees either state, never a mix.
        """
        with self._write() as conn:
            self._update_run(
                conn,
                run_id,
                "UPDATE runs SET"
                " status = CASE status WHEN 'queued' THEN 'cancelled' ELSE status END,"
                " finished_at = CASE status WHEN 'queued' THEN ? ELSE finished_at END,"
                " error = CASE WHEN status IN ('queued', 'running') THEN coalesce(?, error) ELSE error END,"
                " cancel_requested = cancel_requested OR status IN ('queued', 'running')"
                " WHERE id = ?",
                (time.time(), reason, run_id),
            )
            self._mirror(conn, [run_id])

    def cancel_requested(self, run_id: str, worker: str | None = None) -> bool:
        """Whether the run should stop (see `control`)."""
        return self.control(run_id, worker)[0]

    def control(self, run_id: str, worker: str | None = None) -> tuple[bool, int | None]:
        """(whether the run should stop, the step its training is to hold at or None): one primary-key
        SELECT, which workers poll every step.

        A run that no longer exists counts as cancelled; so does, for `worker`, a run it no
        longer holds (marked interrupted, or claimed by another worker).
        """
        rows = self._read("SELECT cancel_requested, worker, status, pause_at FROM runs WHERE id = ?", (run_id,))
        if not rows:
            return True, None
        cancel, holder, status, pause_at = rows[0]
        return bool(cancel) or (worker is not None and (holder, status) != (worker, "running")), pause_at

    def hold(self, run_id: str, at: int | None) -> None:
        """Holds a queued or running run's training once its step reaches `at` (0: at once), or lets it
        go on (None). The worker keeps the run, its model and optimiser, while it waits.

        Raises:
            StoreError: no such run, or it has ended (a run ended while paused resumes with `resume`).
        """
        with self._write() as conn:
            if conn.execute("UPDATE runs SET pause_at = ? WHERE id = ? AND status IN ('queued', 'running')",
                            (at, run_id)).rowcount == 0:  # fmt: skip
                status = conn.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
                raise StoreError(f"run: no run {run_id!r}" if status is None else f"run: {run_id!r} is {status[0]}")
            self._mirror(conn, [run_id])

    def advance(self, run_id: str, steps: int) -> None:
        """Lets a held run train `steps` more steps from the step it holds at, then hold again.

        Raises:
            StoreError: no such run, or it is not held (paused) now.
        """
        if steps < 1:
            raise ValueError(f"steps: at least 1 (got {steps})")
        with self._write() as conn:
            if conn.execute("UPDATE runs SET pause_at = step + ? WHERE id = ? AND status = 'running'"
                            " AND held_since IS NOT NULL", (steps, run_id)).rowcount == 0:  # fmt: skip
                raise StoreError(f"run: {run_id!r} is not paused")
            self._mirror(conn, [run_id])

    def set_held(self, run_id: str, since: float | None, *, worker: str | None = None) -> None:
        """The worker's word that the run's training waits (since when) or trains again (None)."""
        with self._write() as conn:
            self._fence(conn, run_id, worker)
            self._update_run(conn, run_id, "UPDATE runs SET held_since = ? WHERE id = ?", (since, run_id))
            self._mirror(conn, [run_id])

    def rename_run(self, run_id: str, name: str) -> None:
        """Sets the run's display name."""
        with self._write() as conn:
            self._update_run(conn, run_id, "UPDATE runs SET name = ? WHERE id = ?", (name, run_id))
            self._mirror(conn, [run_id])

    def delete_run(self, run_id: str) -> None:
        """Deletes the run's rows (runs, metrics, snapshots) and its folder, in any state: a worker
        training it stops at its next step, and its writes are refused (RunLost), files included.

        Raises:
            StoreError: no such run.
        """
        folder = self.run_dir(run_id)
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
                raise StoreError(f"run: no run {run_id!r}")
            for table, column in (("metrics", "run_id"), ("snapshots", "run_id"), ("runs", "id")):
                conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (run_id,))
        shutil.rmtree(folder, ignore_errors=True)

    def set_final_metrics(self, run_id: str, metrics: dict, *, worker: str | None = None) -> None:
        """Stores the run's end-of-training metrics (any JSON), shown as Run.final_metrics."""
        text = _json_dumps(metrics, "final_metrics")
        with self._write() as conn:
            self._fence(conn, run_id, worker)
            self._update_run(conn, run_id, "UPDATE runs SET final_metrics = ? WHERE id = ?", (text, run_id))
            self._mirror(conn, [run_id])

    # -- workers ----------------------------------------------------------------------

    def heartbeat(self, worker: str, pid: int, device: str | None = None) -> None:
        """Records that this worker (``pid@host``) is alive now, and what it trains on
        (e.g. "cpu" or a GPU's name; None keeps the label it reported before)."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO workers (id, pid, last_seen, device) VALUES (?, ?, ?, ?) ON CONFLICT (id)"
                " DO UPDATE SET pid = excluded.pid, last_seen = excluded.last_seen,"
                " device = coalesce(excluded.device, device)",
                (worker, pid, time.time(), device),
            )

    def workers(self) -> list[dict]:
        """Known workers: ``{"id", "pid", "last_seen", "device", "run_id"}`` (run_id: the run it holds)."""
        rows = self._read(
            "SELECT w.id, w.pid, w.last_seen, w.device, (SELECT r.id FROM runs r WHERE r.status = 'running'"
            " AND r.worker = w.id ORDER BY r.started_at DESC LIMIT 1) FROM workers w ORDER BY w.id"
        )
        return [dict(zip(("id", "pid", "last_seen", "device", "run_id"), row, strict=True)) for row in rows]

    def mark_interrupted(self, *, worker: str | None = None) -> list[str]:
        """Marks runs left running by a dead worker (all running runs if None) interrupted.

        The dead worker's heartbeat row (all rows if None) is removed too; live workers
        re-appear on their next heartbeat. Returns the ids of the runs marked.
        """
        where, params = "status = 'running'", ()
        if worker is not None:
            where, params = "status = 'running' AND worker = ?", (worker,)
        with self._write() as conn:
            ids = [row[0] for row in conn.execute(f"SELECT id FROM runs WHERE {where}", params)]
            conn.execute(
                f"UPDATE runs SET status = 'interrupted', finished_at = ?, held_since = NULL,"
                f" error = coalesce(error, 'worker stopped') WHERE {where}",
                (time.time(), *params),
            )
            self._mirror(conn, ids)
            if worker is None:
                conn.execute("DELETE FROM workers")
            else:
                conn.execute("DELETE FROM workers WHERE id = ?", (worker,))
        return ids

    # -- metrics ----------------------------------------------------------------------

    def add_metrics(self, run_id: str, rows: list[dict], *, worker: str | None = None) -> None:
        """Appends metric rows in one transaction and advances Run.step.

        Each row is ``{"step": int, name: float, ...}``. A step recorded twice keeps the
        union of its fields (the later value wins). Pages polling with ``since`` only see
        rows whose step is past their last one, so add a step's fields together.

        Raises:
            ValueError: a row without an integer step or with a non-numeric field.
            StoreError: no such run; RunLost: `worker` (when given) no longer holds it.
        """
        merged: dict[int, dict] = {}
        rows_as_given = [_metric_row(row, index) for index, row in enumerate(rows)]
        for step, values in rows_as_given:
            merged.setdefault(step, {}).update(values)
        if not merged:
            return
        low, high = min(merged), max(merged)
        with self._write() as conn:
            self._fence(conn, run_id, worker)
            self._update_run(conn, run_id, "UPDATE runs SET step = max(step, ?) WHERE id = ?", (high, run_id))
            for step, text in conn.execute(  # rarely any: steps normally only grow
                "SELECT step, row FROM metrics WHERE run_id = ? AND step BETWEEN ? AND ?",
                (run_id, low, high),
            ).fetchall():
                if step in merged:
                    merged[step] = json.loads(text) | merged[step]
            conn.executemany(
                "INSERT OR REPLACE INTO metrics (run_id, step, row) VALUES (?, ?, ?)",
                ((run_id, step, json.dumps(row)) for step, row in merged.items()),
            )
            with open(self.run_dir(run_id) / "metrics.jsonl", "a") as f:  # the rows as given: rebuild merges again
                f.write("".join(json.dumps({"step": step, **values}) + "\n" for step, values in rows_as_given))

    def read_metrics(self, run_id: str, since: int = -1) -> list[dict]:
        """Metric rows with step > since, ascending by step (pages poll with their last step).

        An unknown run has no rows.
        """
        rows = self._read("SELECT row FROM metrics WHERE run_id = ? AND step > ? ORDER BY step", (run_id, since))
        return [json.loads(text) for (text,) in rows]

    # -- snapshots --------------------------------------------------------------------

    def snapshot_path(self, run_id: str, step: int) -> Path:
        """Where the snapshot of this step lives (whether or not it exists)."""
        return self.run_dir(run_id) / "snapshots" / f"{step:08d}.npz"

    def add_snapshot(
        self,
        run_id: str,
        step: int,
        arrays: dict[str, np.ndarray],
        metrics: dict[str, float] | None = None,
        *,
        worker: str | None = None,
    ) -> None:
        """Writes the arrays to ``snapshots/<step:08d>.npz`` atomically, then indexes it.

        Writing a step again replaces that snapshot. Readers of the file see the old or the
        new one whole, never a partial file. The file is written inside the index's write
        transaction, so a run deleted meanwhile gets no file (and no folder) back.

        Raises:
            ValueError: an array of Python objects (it could only be loaded with pickle).
            StoreError: no such run; RunLost: `worker` (when given) no longer holds it.
        """
        step = operator.index(step)
        arrays = {str(k): np.asarray(v) for k, v in arrays.items()}
        for key, array in arrays.items():
            if array.dtype.hasobject:
                raise ValueError(f"snapshot: array {key!r} has dtype object; use numeric arrays")
        metrics_json = _json_dumps(metrics or {}, "snapshot metrics")
        path = self.snapshot_path(run_id, step)
        with self._write() as conn:
            self._fence(conn, run_id, worker)
            if conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
                raise StoreError(f"run: no run {run_id!r}")
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomic(path, lambda f: np.savez(f, **arrays))
            now = time.time()
            conn.execute(
                "INSERT OR REPLACE INTO snapshots (run_id, step, metrics, created_at) VALUES (?, ?, ?, ?)",
                (run_id, step, metrics_json, now),
            )
            with open(path.parent / "index.jsonl", "a") as f:
                f.write(json.dumps({"step": step, "metrics": json.loads(metrics_json), "created_at": now}) + "\n")

    def runs_with_snapshots(self) -> set[str]:
        """The ids of the runs that have at least one snapshot (one query, for pickers)."""
        return {run_id for (run_id,) in self._read("SELECT DISTINCT run_id FROM snapshots")}

    def list_snapshots(self, run_id: str, since: int = -1) -> list[dict]:
        """Snapshots with step > since, ascending: ``[{"step", "metrics", "path"}]``."""
        rows = self._read(
            "SELECT step, metrics FROM snapshots WHERE run_id = ? AND step > ? ORDER BY step",
            (run_id, since),
        )
        return [
            {"step": step, "metrics": json.loads(text), "path": self.snapshot_path(run_id, step)} for step, text in rows
        ]

    def load_snapshot(self, run_id: str, step: int | None = None) -> dict[str, np.ndarray]:
        """The arrays of one snapshot (the latest if step is None), read fully into memory.

        Raises:
            StoreError: the run has no such snapshot, or its file is damaged (one line, no path).
        """
        if step is None:
            rows = self._read("SELECT max(step) FROM snapshots WHERE run_id = ?", (run_id,))
            step = rows[0][0]
            if step is None:
                raise StoreError(f"snapshot: run {run_id!r} has no snapshots")
        path = self.snapshot_path(run_id, step)
        try:
            with np.load(path, allow_pickle=False) as npz:
                return {key: npz[key] for key in npz.files}
        except FileNotFoundError:
            raise StoreError(f"snapshot: run {run_id!r} has no snapshot at step {step}") from None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # truncated, overwritten, not a .npz
            raise StoreError(
                f"snapshot: the snapshot of run {run_id} at step {step} is damaged ({type(exc).__name__}); "
                "its other snapshots are not"
            ) from None

    # -- checkpoints ------------------------------------------------------------------

    def save_checkpoint(self, run_id: str, state: dict, *, worker: str | None = None) -> Path:
        """Writes ``model.pt`` atomically with torch.save and returns its path.

        ``state`` holds "model" (a state_dict), "step", "config", and usually "optimizer"
        and RNG states, all as tensors, numbers, strings, lists and dicts, so that it loads
        with ``weights_only=True``.

        Raises:
            ValueError: state lacks one of "model", "step", "config".
            RunLost: `worker` (when given) no longer holds the run; nothing is written.
        """
        import torch  # lazily: pages import this module without torch

        missing = [key for key in CHECKPOINT_KEYS if key not in state]
        if missing:
            raise ValueError(f"checkpoint: state lacks {', '.join(missing)}")
        path = self.run_dir(run_id) / "model.pt"
        with self._write() as conn:  # held while writing: a run deleted meanwhile gets no file back
            self._fence(conn, run_id, worker)
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomic(path, lambda f: torch.save(state, f))
        return path

    def load_checkpoint(self, run_id: str | None = None, *, path: str | Path | None = None) -> dict:
        """Loads a checkpoint (a run's ``model.pt``, or any path) onto the CPU, weights only.

        Raises:
            CheckpointError: the file is missing, corrupt, or not a Contrast Lab checkpoint.
        """
        import torch  # lazily: pages import this module without torch

        if (run_id is None) == (path is None):
            raise ValueError("checkpoint: give exactly one of run_id and path")
        path = Path(path) if path is not None else self.run_dir(run_id) / "model.pt"
        try:
            state = torch.load(path, weights_only=True, map_location="cpu")
        except FileNotFoundError:
            raise _not_a_checkpoint(path, "file not found") from None
        except Exception as exc:  # torch raises many types for corrupt or unsafe files
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise _not_a_checkpoint(path, f"{type(exc).__name__}: {reason[:120]}") from None
        if not isinstance(state, dict):
            raise _not_a_checkpoint(path, f"holds a {type(state).__name__}, not a dict")
        missing = [key for key in CHECKPOINT_KEYS if key not in state]
        if missing:
            raise _not_a_checkpoint(path, f"missing keys: {', '.join(missing)}")
        return state


def _not_a_checkpoint(path: Path, reason: str) -> CheckpointError:
    return CheckpointError(f"checkpoint: {path} is not a Contrast Lab checkpoint ({reason})")


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise ValueError(f"status: {status!r} is not one of {', '.join(STATUSES)}")


# -- check and rebuild: the index from the run folders ---------------------------------


def check(home: str | Path) -> list[str]:
    """What differs between the index and the run folders, one line each (empty: they agree).

    Read-only: it opens neither a store nor a write transaction, so it runs beside the app.
    """
    home = Path(home).absolute()
    try:
        db = sqlite3.connect(f"file:{home / 'index.sqlite'}?mode=ro", uri=True)
        try:
            verdict = db.execute("PRAGMA integrity_check").fetchone()[0]
            runs = dict(db.execute("SELECT id, status FROM runs").fetchall())
            metric_rows = dict(db.execute("SELECT run_id, count(*) FROM metrics GROUP BY run_id").fetchall())
            snapshots = dict(db.execute("SELECT run_id, count(*) FROM snapshots GROUP BY run_id").fetchall())
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        return [f"index: cannot be read ({exc}); `python -m contrast_core store rebuild` makes it again"]
    problems = [] if verdict == "ok" else [f"index: integrity check says {verdict!r}"]
    folders = {p.name for p in (home / "runs").iterdir() if p.is_dir()} if (home / "runs").is_dir() else set()
    problems += [f"run {r}: a folder the index does not list" for r in sorted(folders - set(runs))]
    problems += [f"run {r}: listed by the index, but its folder is gone" for r in sorted(set(runs) - folders)]
    for run_id in sorted(folders & set(runs)):
        folder = home / "runs" / run_id
        kept = len(_metric_lines(folder))
        if kept != metric_rows.get(run_id, 0):
            problems.append(f"run {run_id}: {metric_rows.get(run_id, 0)} metric rows indexed, {kept} in metrics.jsonl")
        files = len(_snapshot_files(folder))
        if files != snapshots.get(run_id, 0):
            problems.append(f"run {run_id}: {snapshots.get(run_id, 0)} snapshots indexed, {files} files")
    return problems


def rebuild(home: str | Path) -> dict:
    """Makes a new index from the run folders; the old index files are kept beside it, renamed
    `index.sqlite*.damaged-<time>`. Stop the app and its workers first: they hold the old file open.

    A run that was running has lost its worker: it comes back interrupted (Resume continues it from
    its checkpoint). Returns {"runs", "metric_rows", "snapshots", "skipped": [reasons], "kept_aside": [names]}.
    """
    home = Path(home).absolute()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    kept_aside = []
    for suffix in ("", "-wal", "-shm"):
        old = home / f"index.sqlite{suffix}"
        if old.exists():
            old.rename(old.with_name(f"{old.name}.damaged-{stamp}"))
            kept_aside.append(f"{old.name}.damaged-{stamp}")
    store = RunStore(home)
    found = {"runs": 0, "metric_rows": 0, "snapshots": 0, "skipped": [], "kept_aside": kept_aside}
    try:
        for folder in sorted((home / "runs").iterdir()):
            if folder.is_dir() and _RUN_ID.fullmatch(folder.name):
                _restore(store, folder, found)
    finally:
        store.close()
    return found


def _restore(store: RunStore, folder: Path, found: dict) -> None:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        found["skipped"].append(f"run {folder.name}: no readable config.json")
        return
    try:
        info = json.loads((folder / "run.json").read_text())
    except (OSError, ValueError):  # an older run, or a torn file: what the folder itself says
        info = {}
    status, error = info.get("status", "interrupted"), info.get("error")
    if status not in STATUSES or status == "running":
        status, error = "interrupted", "its worker was gone when the index was rebuilt"
    merged: dict[int, dict] = {}
    for row in _metric_lines(folder):
        merged.setdefault(row["step"], {}).update(row)
    snapshots = _snapshot_files(folder)
    row = {
        "id": folder.name, "name": info.get("name") or "", "config": json.dumps(config), "status": status,
        "created_at": info.get("created_at") or folder.stat().st_mtime, "started_at": info.get("started_at"),
        "finished_at": info.get("finished_at"), "device": info.get("device"), "error": error,
        "owner": info.get("owner"), "parent_id": info.get("parent_id"), "step": max(merged, default=0),
        "worker": info.get("worker"), "cancel_requested": 0,
        "final_metrics": json.dumps(info["final_metrics"]) if info.get("final_metrics") is not None else None,
        "sweep": info.get("sweep"),
    }  # fmt: skip
    with store._write() as conn:
        conn.execute(f"INSERT INTO runs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))
        conn.executemany("INSERT INTO metrics (run_id, step, row) VALUES (?, ?, ?)",
                         [(folder.name, step, json.dumps(values)) for step, values in sorted(merged.items())])  # fmt: skip
        conn.executemany("INSERT INTO snapshots (run_id, step, metrics, created_at) VALUES (?, ?, ?, ?)",
                         [(folder.name, step, json.dumps(entry["metrics"]), entry["created_at"])
                          for step, entry in sorted(snapshots.items())])  # fmt: skip
        store._mirror(conn, [folder.name])
    found["runs"] += 1
    found["metric_rows"] += len(merged)
    found["snapshots"] += len(snapshots)


def _metric_lines(folder: Path) -> list[dict]:
    """metrics.jsonl's rows, merged per step as add_metrics merges them (a torn last line is skipped)."""
    rows: dict[int, dict] = {}
    try:
        lines = (folder / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            row = json.loads(line)
            rows.setdefault(int(row["step"]), {}).update(row)
        except (ValueError, KeyError, TypeError):
            continue
    return [rows[step] for step in sorted(rows)]


def _snapshot_files(folder: Path) -> dict[int, dict]:
    """{step: {"metrics", "created_at"}} for each snapshot file present; its metrics from index.jsonl."""
    entries: dict[int, dict] = {}
    try:
        for line in (folder / "snapshots" / "index.jsonl").read_text().splitlines():
            try:
                entry = json.loads(line)
                entries[int(entry["step"])] = entry
            except (ValueError, KeyError, TypeError):
                continue
    except OSError:
        pass
    files = {int(p.stem): p for p in (folder / "snapshots").glob("*.npz") if p.stem.isdigit()}
    return {
        step: entries.get(step, {"metrics": {}, "created_at": path.stat().st_mtime}) for step, path in files.items()
    }
