"""Demo mode: one Contrast Lab shared by many visitors, as a hosted demo.

On with `CONTRAST_DEMO=1`, or a `[demo]` table with `enabled = true` in `.streamlit/secrets.toml`.
Then each visitor (a browser, known by a random token kept in a cookie) sees, stops and deletes
only their own runs; a link to someone else's run opens it read-only; no page takes a path on the
server (a CSV or a zip of an image folder is uploaded); and every cap below holds, each with a message saying why and what to do.
Each cap is a setting: `CONTRAST_DEMO_<NAME>` (e.g. `CONTRAST_DEMO_MAX_STEPS=3000`) or `<name>` in
the `[demo]` table.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from contrast_core import folders, tables
from contrast_core.config import RunConfig, available_memory
from contrast_core.store import LIVE_STATUSES, Run, RunStore

VISITOR = "demo.visitor"  # session_state: this browser's owner token
COOKIE = "contrast_visitor"
COOKIE_DAYS = 30


@dataclass(frozen=True)
class Caps:
    """What one demo allows; the defaults suit a 2-core box with 2.7 GB."""

    max_steps: int = 5_000  # per run
    runs_per_visitor: int = 4  # queued or running at once, a sweep's runs included
    queued_total: int = 24  # queued runs of all visitors together
    sweep_runs: int = 4  # runs in one sweep
    upload_mb: float = 2.0  # a CSV upload
    upload_rows: int = 20_000
    zip_mb: float = 20.0  # a zip of an image folder, as sent and as unpacked
    zip_images: int = 5_000
    run_seconds: float = 120.0  # wall time of one run; it is stopped there, keeping what it learnt
    pause_seconds: float = 60.0  # a run's training held (paused) this long is stopped, freeing its worker
    disk_mb: float = 500.0  # all runs together; the oldest ended runs go first, never a live one


def _secrets_table() -> dict:
    try:
        return dict(st.secrets.get("demo", {}))
    except Exception:  # no secrets file, or one that does not parse: settings come from the environment
        return {}


def enabled() -> bool:
    if os.environ.get("CONTRAST_DEMO"):
        return os.environ["CONTRAST_DEMO"].strip().lower() not in ("0", "false", "no", "off", "")
    return bool(_secrets_table().get("enabled", False))


def caps() -> Caps:
    """The caps: the environment's, else the secrets file's, else the defaults.

    Raises:
        ValueError: a setting that is not a positive number, named.
    """
    table, found = _secrets_table(), {}
    for cap in dataclasses.fields(Caps):
        text = os.environ.get(f"CONTRAST_DEMO_{cap.name.upper()}", table.get(cap.name))
        if text is None:
            continue
        kind = int if cap.type == "int" else float
        try:
            value = kind(text)
        except (TypeError, ValueError):
            raise ValueError(f"demo {cap.name}: {text!r} is not a {'whole ' if kind is int else ''}number") from None
        if not value > 0:
            raise ValueError(f"demo {cap.name}: must be more than 0, not {text!r}")
        found[cap.name] = value
    return Caps(**found)


def visitor() -> str | None:
    """This browser's owner token in demo mode (None outside it): the session's, else the cookie's
    (F5 or a new tab of the same browser), else a new random one, put in a cookie for next time."""
    if not enabled():
        return None
    if VISITOR not in st.session_state:
        kept = st.context.cookies.get(COOKIE, "")
        if len(kept) == 32 and all(c in "0123456789abcdef" for c in kept):
            st.session_state[VISITOR] = kept
        else:
            st.session_state[VISITOR] = token = secrets.token_hex(16)
            st.html(f"<script>document.cookie = '{COOKIE}={token}; path=/; max-age={COOKIE_DAYS * 86400}; "
                    "SameSite=Lax';</script>", unsafe_allow_javascript=True)  # fmt: skip
    return st.session_state[VISITOR]


def can_change(run: Run) -> bool:
    """Whether this visitor may stop, resume, rename or delete the run: anyone outside demo mode."""
    return not enabled() or run.owner == visitor()


def visible(runs: list[Run]) -> list[Run]:
    """The runs the pickers and tables list: every run, or in demo mode the visitor's own."""
    return runs if not enabled() else [run for run in runs if run.owner == visitor()]


def refusal(store: RunStore, configs: list[RunConfig]) -> str | None:
    """Why these runs may not be queued now (None: they may): a step too large for this machine's memory
    (the workers check again against their own device), or in demo mode a cap or a path on the server."""
    free = available_memory()
    for config in configs:
        if too_large := config.memory_refusal(free, "this machine"):
            return too_large
    if not enabled():
        return None
    limits, uploads = caps(), upload_dir(store).resolve()
    for config in configs:
        if config.steps > limits.max_steps:
            return f"steps: at most {limits.max_steps:,} in this demo"
        if config.weights:
            return "weights: this demo does not load files from the server"
        if config.csv_path and Path(config.csv_path).resolve().parent != uploads:
            return "csv_path: this demo reads only uploaded files: upload a CSV instead"
        if config.data_path and Path(config.data_path).resolve().parent != uploads:
            return "data_path: this demo reads only uploaded folders: upload a zip of the images instead"
    if len(configs) > limits.sweep_runs:
        return f"This demo runs at most {limits.sweep_runs} runs in one sweep; this one has {len(configs)}."
    mine = [run for run in store.list_runs(status=LIVE_STATUSES) if run.owner == visitor()]
    if len(mine) + len(configs) > limits.runs_per_visitor:
        return (f"You have {len(mine)} runs queued or running; a visitor may have {limits.runs_per_visitor} at "
                "once here. Stop one, or wait for one to end.")  # fmt: skip
    queued = len(store.list_runs(status="queued"))
    if queued + len(configs) > limits.queued_total:
        return f"The demo's queue is full ({queued} runs waiting): try again in a minute."
    return None


def make_room(store: RunStore) -> list[str]:
    """Deletes the oldest ended runs until all runs fit in the disk cap (never a live run); their ids."""
    limit, runs = caps().disk_mb * 1e6, store.list_runs()
    used = {run.id: _bytes(store.run_dir(run.id)) for run in runs}
    deleted = []
    for run in reversed(runs):  # oldest first
        if sum(used.values()) <= limit:
            break
        if run.status not in LIVE_STATUSES:
            store.delete_run(run.id)
            deleted.append(run.id)
            used.pop(run.id)
    return deleted


def _bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.exists() else 0


def upload_dir(store: RunStore) -> Path:
    return store.home / "uploads"


def save_upload(store: RunStore, data: bytes, label: str, continuous: bool = False) -> Path:
    """Keeps an uploaded CSV where the workers read it, named by its content (one copy however often sent),
    once it passes the checks a run's data would (`tables.read`, with `label` as its label column, a continuous
    target with `continuous`), under
    the demo's caps in demo mode, the command line's limit (tables.MAX_ROWS) outside it.

    Raises:
        ValueError: over the demo's size or row cap, or not a table a run can train on: one line, naming
            the field; nothing is written then.
    """
    max_rows = tables.MAX_ROWS
    if enabled():
        limits = caps()
        if len(data) > limits.upload_mb * 1e6:
            raise ValueError(f"csv upload: {len(data) / 1e6:.1f} MB, over this demo's {limits.upload_mb:g} MB")
        rows = data.count(b"\n") + (not data.endswith(b"\n")) - 1  # lines after the header
        if rows > limits.upload_rows:
            raise ValueError(f"csv upload: {rows:,} rows, over this demo's {limits.upload_rows:,}")
        max_rows = limits.upload_rows
    tables.read(io.BytesIO(data), label, max_rows=max_rows, continuous=continuous)
    folder = upload_dir(store)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(data).hexdigest()[:32]}.csv"
    if not path.exists():
        path.write_bytes(data)
    return path


def save_images(store: RunStore, data: bytes) -> Path:
    """Unpacks an uploaded zip of an image folder (one sub-folder per class) where the workers read it,
    named by its content, under the demo's caps; the folder, for `data_path` (see `folders.unpack`).

    Raises:
        ValueError: over a cap, a name outside the folder, or not a folder a run can train on: one line;
            nothing is written then.
    """
    limits = caps()
    if len(data) > limits.zip_mb * 1e6:
        raise ValueError(f"zip upload: {len(data) / 1e6:.1f} MB, over this demo's {limits.zip_mb:g} MB")
    return folders.unpack(data, upload_dir(store), max_images=limits.zip_images, max_mb=limits.zip_mb)
