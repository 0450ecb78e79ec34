"""The Playground's UMAP / t-SNE: shown as soon as the background projector has them, live or not.

AppTest runs fragments inline and never fires their timers, so the panels' refresh period is
observed where the page sets it: every `st.fragment(run_every=...)` call of the live panels is
recorded. The queue is the real JobQueue over a temporary store, never started.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

import numpy as np
import pytest
import streamlit
from streamlit.testing.v1 import AppTest
from test_app import figures_drawn

from contrast_core.config import RunConfig
from contrast_core.projection import LiveProjector
from contrast_core.store import RunStore
from ui import backend, live

APP = str(Path(__file__).resolve().parent.parent / "app.py")
E = 60  # snapshot points


@pytest.fixture
def periods(monkeypatch) -> list:
    """The refresh period (run_every) the page gave the live panels, once per time it set one."""
    real, seen = streamlit.fragment, []

    def fragment(func=None, *, run_every=None, **kwargs):
        if func is None:  # st.fragment(run_every=...)(func)
            return lambda func: fragment(func, run_every=run_every, **kwargs)
        if func.__name__ == "_panels":
            seen.append(run_every)
        return real(func, run_every=run_every, **kwargs)

    monkeypatch.setattr(streamlit, "fragment", fragment)
    return seen


class FakeProjector:
    """LiveProjector's interface, scripted: `done` is the newest finished (step, layout) or None."""

    def __init__(self, done=None, error=None):
        self.done, self.failure, self.asked = done, error, []

    def get(self, run_id, step, embeddings, method="umap"):
        self.asked.append((run_id, step, method))
        return self.done

    def waiting(self, run_id, method="umap"):
        return None if self.failure or (self.done and self.done[0] == self.asked[-1][1]) else 12.3

    def compiling(self, method="umap"):
        return False

    def error(self, run_id, method="umap"):
        return self.failure


def add_run(store: RunStore, status: str, dim: int = 8, upto: int = 100) -> str:
    """A run with metric rows 1..upto and a snapshot every 50 steps of E points in 10 classes."""
    config = RunConfig(steps=200, embedding_dim=dim)
    run_id = store.create_run(config.model_dump(mode="json"), status=status)
    store.add_metrics(run_id, [{"step": s, "loss": 1.0 / s} for s in range(1, upto + 1)])
    labels = np.arange(E) % 10
    for step in range(0, upto + 1, 50):
        rng = np.random.default_rng(step)
        centres = np.pad(np.stack([np.cos(labels), np.sin(labels)], axis=1) * 3, ((0, 0), (0, dim - 2)))
        embeddings = (centres + rng.normal(size=(E, dim)) * 0.2).astype(np.float32)
        arrays = {"embeddings": embeddings, "labels": labels, "index": np.arange(E)}
        store.add_snapshot(run_id, step, arrays | {"pca": embeddings[:, :2] + 100}, {})
    return run_id


def watch(run_id: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["playground_run"] = run_id
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def choose(at: AppTest, method: str) -> AppTest:
    at.segmented_control(key="live.projection").set_value(method).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def scatter(at: AppTest) -> tuple[str, np.ndarray]:
    """The embedding chart's title and its (E, 2) points."""
    (spec,) = [s for s in figures_drawn(at) if "embedding" in s["layout"]["title"]["text"]]
    xy = [np.concatenate([_values(t[axis]) for t in spec["data"]]) for axis in "xy"]
    return spec["layout"]["title"]["text"], np.stack(xy, axis=1)


def _values(array) -> np.ndarray:
    if isinstance(array, dict):  # Plotly's typed-array form
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"])
    return np.asarray(array)


def status(at: AppTest) -> str:
    """The projection's status line (the caption right under the Projection control)."""
    lines = [c.value for c in at.caption if "computing" in c.value or "snapshot" in c.value or "failed" in c.value]
    assert len(lines) <= 1, lines
    return lines[0] if lines else ""


def test_an_ended_runs_projection_polls_until_it_arrives_then_stops(queue, store, periods, monkeypatch):
    projector = FakeProjector()
    monkeypatch.setattr(backend, "projector", lambda: projector)
    run_id = add_run(store, "finished")
    at = watch(run_id)
    assert periods[-1] is None  # an ended run stands still
    choose(at, "t-SNE")
    assert periods[-1] == live.POLL_SECONDS  # the page reran and set the panels polling
    title, xy = scatter(at)
    assert title == "PCA of the 8-D embedding, step 100" and xy.min() > 90  # the stored PCA meanwhile
    assert "t-SNE of 60 points computing… 12 s; PCA meanwhile" in status(at)
    assert projector.asked[-1] == (run_id, 100, "tsne")
    projector.done = (100, np.full((E, 2), 7.0))
    at.run()  # what the panels' next poll finds
    title, xy = scatter(at)
    assert title == "t-SNE of the 8-D embedding, step 100" and xy == pytest.approx(7.0)
    assert "newest snapshot" in status(at)
    assert periods[-1] is None  # arrived: polling stopped
    at.run()
    assert periods[-1] is None


def test_a_failed_projection_says_why_and_does_not_poll(queue, store, periods, monkeypatch):
    monkeypatch.setattr(backend, "projector", lambda: FakeProjector(error="tsne: perplexity too large"))
    at = choose(watch(add_run(store, "cancelled")), "t-SNE")
    assert periods[-1] is None
    assert scatter(at)[0] == "PCA of the 8-D embedding, step 100"
    assert "t-SNE of step 100 failed (tsne: perplexity too large)" in status(at)


def test_a_live_run_shows_the_newest_layout_and_says_which_step_is_computing(queue, store, periods, monkeypatch):
    projector = FakeProjector(done=(50, np.full((E, 2), 7.0)))
    monkeypatch.setattr(backend, "projector", lambda: projector)
    at = choose(watch(add_run(store, "running")), "UMAP")
    assert periods[-1] == live.REFRESH_SECONDS  # a live run refreshes anyway
    title, xy = scatter(at)
    assert title == "UMAP of the 8-D embedding, step 50" and xy == pytest.approx(7.0)  # the title says no more
    assert "UMAP of 60 points computing… 12 s" in status(at) and "step 50 meanwhile" in status(at)
    at.toggle(key="live.paused").set_value(True).run()
    assert periods[-1] is None  # paused means still, projection or not
    assert "Unfreeze the charts to see it" in status(at)


def test_a_real_projector_brings_tsne_to_an_ended_run(queue, store, periods, monkeypatch):
    """The background thread for real: AppTest's reruns stand in for the browser's polls."""
    projector = LiveProjector()
    monkeypatch.setattr(backend, "projector", lambda: projector)
    at = choose(watch(add_run(store, "finished")), "t-SNE")
    deadline = time.monotonic() + 60
    while scatter(at)[0].startswith("PCA"):
        assert periods[-1] == live.POLL_SECONDS
        assert time.monotonic() < deadline, status(at)
        time.sleep(live.POLL_SECONDS)
        at.run()
    title, xy = scatter(at)
    assert title == "t-SNE of the 8-D embedding, step 100" and np.isfinite(xy).all() and xy.max() < 90
    assert periods[-1] is None


def test_a_run_that_ends_while_its_projection_lags_polls_until_the_last_snapshot_is_shown(
    queue, store, periods, monkeypatch
):
    projector = FakeProjector(done=(50, np.full((E, 2), 7.0)))
    monkeypatch.setattr(backend, "projector", lambda: projector)
    run_id = add_run(store, "running")
    at = choose(watch(run_id), "UMAP")
    store.set_status(run_id, "finished")
    at.run()  # what the page's rerun at the end of the run draws
    assert periods[-1] == live.POLL_SECONDS and scatter(at)[0] == "UMAP of the 8-D embedding, step 50"
    projector.done = (100, np.full((E, 2), 8.0))
    at.run()
    assert scatter(at)[0] == "UMAP of the 8-D embedding, step 100" and periods[-1] is None
