"""The first step of a new run is drawn by the click's own page run, or as soon as a starting worker stores it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import streamlit
from streamlit.testing.v1 import AppTest

from contrast_core.config import RunConfig
from ui import live

APP = str(Path(__file__).resolve().parent.parent / "app.py")


@pytest.fixture
def periods(monkeypatch) -> dict[str, list]:
    real, seen = streamlit.fragment, {}

    def fragment(func=None, *, run_every=None, **kwargs):
        if func is None:
            return lambda func: fragment(func, run_every=run_every, **kwargs)
        seen.setdefault(func.__name__, []).append(run_every)
        return real(func, run_every=run_every, **kwargs)

    monkeypatch.setattr(streamlit, "fragment", fragment)
    return seen


def watch(run_id) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = run_id
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def first_step_soon(store, run_id, after: float) -> threading.Thread:
    """What a free worker does: claims the run, stores the step-0 snapshot, then the first row."""

    def work():
        store.claim_next("w", "cpu")
        time.sleep(after)
        arrays = {"embeddings": np.zeros((8, 2), np.float32), "labels": np.arange(8) % 2, "index": np.arange(8)}
        store.add_snapshot(run_id, 0, arrays, {})
        store.add_metrics(run_id, [{"step": 1, "loss": 1.0}])

    thread = threading.Thread(target=work)
    thread.start()
    return thread


def test_the_page_run_of_the_click_draws_the_first_step(queue, store, periods, monkeypatch):
    monkeypatch.setattr(live, "FIRST_STEP_WAIT_SECONDS", 10.0)  # a slow machine's worker still makes it
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()  # the app's imports, before the click
    run_id = store.create_run(RunConfig(steps=100).model_dump(mode="json"))  # queued this instant
    worker = first_step_soon(store, run_id, after=0.3)
    at.query_params["run"] = run_id
    at.run()
    worker.join()
    assert not at.exception, [e.value for e in at.exception]
    (bar,) = at.get("progress")
    assert "step 1 / 100" in bar.proto.text
    assert "_rerun_at_first_step" not in periods  # nothing left to look for


def test_a_run_no_worker_takes_is_looked_for_often_until_its_first_step(queue, store, periods):
    run_id = store.create_run(RunConfig(steps=100).model_dump(mode="json"))  # no worker: stays queued
    at = watch(run_id)
    assert "step 0 / 100" in at.get("progress")[0].proto.text
    assert periods["_rerun_at_first_step"] == [live.FIRST_STEP_POLL_SECONDS]
    assert periods["_panels"] == [None]  # queued: nothing to draw, so no polling (the progress line polls)
    assert periods["_progress"] == [live.QUEUED_REFRESH_SECONDS]


def test_a_run_queued_behind_one_training_is_not_looked_for_often(queue, store, periods):
    """It starts when the run ahead ends: its progress line sees that. A queue of visitors each polling
    ten times a second for a first step that cannot come is what slows the watched run's refresh."""
    ahead = store.create_run(RunConfig(steps=100).model_dump(mode="json"))
    store.claim_next("w", "cpu")
    run_id = store.create_run(RunConfig(steps=100).model_dump(mode="json"))
    watch(run_id)
    assert "_rerun_at_first_step" not in periods
    assert periods["_progress"] == [live.QUEUED_REFRESH_SECONDS]
    watch(ahead)  # the run training, without its first step yet, is looked for often
    assert periods["_rerun_at_first_step"] == [live.FIRST_STEP_POLL_SECONDS]


def test_an_old_queued_run_gets_the_plain_refresh_only(queue, store, periods, monkeypatch):
    run_id = store.create_run(RunConfig(steps=100).model_dump(mode="json"))
    monkeypatch.setattr(live.time, "time", lambda: store.get_run(run_id).created_at + live.FIRST_STEP_WATCH_SECONDS + 1)
    watch(run_id)
    assert "_rerun_at_first_step" not in periods


def test_a_run_that_starts_after_a_wait_in_the_queue_is_drawn_once_with_its_first_step(queue, store, periods):
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()  # the app's imports, before the run starts
    run_id = store.create_run(RunConfig(steps=100).model_dump(mode="json"))
    store._conn.execute("UPDATE runs SET created_at = created_at - 60 WHERE id = ?", (run_id,))  # a minute queued
    worker = first_step_soon(store, run_id, after=0.3)  # a worker takes it now
    while store.get_run(run_id).status == "queued":
        time.sleep(0.01)
    at.query_params["run"] = run_id
    at.run()  # the page run its progress line asks for when it sees the run start
    worker.join()
    assert not at.exception, [e.value for e in at.exception]
    assert "step 1 / 100" in at.get("progress")[0].proto.text
    assert "_rerun_at_first_step" not in periods  # no second page run to draw the first step
