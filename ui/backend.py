"""The process-wide objects every session shares: the run store, the job queue, the live projector.

All are `st.cache_resource`, keyed by the store folder (``CONTRAST_HOME``), and thread-safe.
Pages call these functions, never the constructors, so that tests can swap them.
"""

from __future__ import annotations

import os

import streamlit as st

from contrast_core.store import RunStore


def home() -> str:
    """The store folder this app serves."""
    return os.path.abspath(os.environ.get("CONTRAST_HOME") or "checkpoints")


@st.cache_resource(show_spinner=False)
def _store(home: str) -> RunStore:
    return RunStore(home)


BACKENDS = ("local", "ray")  # CONTRAST_BACKEND: local worker processes (the default), or a Ray cluster


def backend_name() -> str:
    """CONTRAST_BACKEND, checked: "local" or "ray".

    Raises:
        ValueError: another value, naming the setting.
    """
    name = os.environ.get("CONTRAST_BACKEND", "").strip().lower() or "local"
    if name not in BACKENDS:
        raise ValueError(f"CONTRAST_BACKEND: {name!r} is not one of {', '.join(BACKENDS)}")
    return name


@st.cache_resource(show_spinner="Starting the training workers...")
def _queue(home: str, run_seconds: float | None, pause_seconds: float | None, name: str = "local"):
    if name == "ray":  # runs scheduled on a Ray cluster (RAY_ADDRESS, or the one `ray start --head` made)
        from contrast_core.ray_backend import RayQueue

        return RayQueue(_store(home), run_seconds=run_seconds, pause_seconds=pause_seconds).start()
    from contrast_core.jobs import JobQueue

    return JobQueue(_store(home), run_seconds=run_seconds, pause_seconds=pause_seconds).start()


@st.cache_resource(show_spinner=False)
def _projector():
    from contrast_core.projection import LiveProjector

    return LiveProjector()


def run_store() -> RunStore:
    return _store(home())


def job_queue():
    """The started JobQueue over this store (workers are spawned on first use), or with CONTRAST_BACKEND=ray
    a RayQueue (the same surface: submit, cancel, resume, status); in demo mode it stops runs at the demo's
    caps on wall time and on time paused. A backend that cannot start stops the page with its one line."""
    from contrast_core.ray_backend import BackendError
    from ui import demo

    caps = demo.caps() if demo.enabled() else None
    try:
        return _queue(home(), caps and caps.run_seconds, caps and caps.pause_seconds, backend_name())
    except BackendError as exc:
        st.error(f"CONTRAST_BACKEND=ray: {exc}", icon=":material/error:")
    except ValueError as exc:
        st.error(f"{exc}: fix the setting and restart the app.", icon=":material/error:")
    st.stop()


def projector():
    """Background UMAP / t-SNE of run snapshots (a `LiveProjector`): `get(run_id, step, embeddings, method)
    -> (step, (E, 2)) or None` never blocks; `waiting` and `error` say how the newest ask is going."""
    return _projector()
