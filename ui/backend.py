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


@st.cache_resource(show_spinner="Starting the training workers...")
def _queue(home: str, run_seconds: float | None, pause_seconds: float | None):
    from contrast_core.jobs import JobQueue

    return JobQueue(_store(home), run_seconds=run_seconds, pause_seconds=pause_seconds).start()


@st.cache_resource(show_spinner=False)
def _projector():
    from contrast_core.projection import LiveProjector

    return LiveProjector()


def run_store() -> RunStore:
    return _store(home())


def job_queue():
    """The started JobQueue over this store (workers are spawned on first use); in demo mode it stops
    runs at the demo's caps on wall time and on time paused."""
    from ui import demo

    caps = demo.caps() if demo.enabled() else None
    return _queue(home(), caps and caps.run_seconds, caps and caps.pause_seconds)


def projector():
    """Background UMAP / t-SNE of run snapshots (a `LiveProjector`): `get(run_id, step, embeddings, method)
    -> (step, (E, 2)) or None` never blocks; `waiting` and `error` say how the newest ask is going."""
    return _projector()
