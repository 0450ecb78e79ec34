"""The Runs page's table refreshes while some run is live, and follows when that changes.

AppTest runs fragments inline and never fires their timers, so the refresh period is observed
where the page sets it: every `st.fragment(run_every=...)` call of the runs table is recorded.
The queue is the real JobQueue over a temporary store, never started (runs stay queued).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit
from streamlit.testing.v1 import AppTest

from contrast_core.config import RunConfig
from contrast_core.store import LIVE_STATUSES
from ui import backend
from ui.run_table import selection_key

APP = str(Path(__file__).resolve().parent.parent / "app.py")


@pytest.fixture
def periods(monkeypatch) -> list:
    """The refresh period (run_every) the page gave its runs table, once per time it set one."""
    real, seen = streamlit.fragment, []

    def fragment(func=None, *, run_every=None, **kwargs):
        if func is None:  # st.fragment(run_every=...)(func)
            return lambda func: fragment(func, run_every=run_every, **kwargs)
        if func.__name__ == "runs_table":
            seen.append(run_every)
        return real(func, run_every=run_every, **kwargs)

    monkeypatch.setattr(streamlit, "fragment", fragment)
    return seen


def runs_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("views/runs.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def table_key() -> str:
    """The table's widget key for the runs it lists now (newest first)."""
    return selection_key(backend.run_store().list_runs())


def click_on_first_row(at: AppTest, label: str) -> None:
    at.session_state[table_key()] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    at.run()
    next(b for b in at.button if b.label == label).click().run()
    assert not at.exception, [e.value for e in at.exception]


def test_resume_with_nothing_else_live_starts_the_refresh(queue, store, periods):
    run_id = store.create_run(RunConfig(steps=100).model_dump(mode="json"), status="cancelled")
    at = runs_page()
    assert periods[-1] is None  # nothing live: the table stands still
    click_on_first_row(at, "Resume")
    assert store.get_run(run_id).status == "queued"
    assert periods[-1]  # the page reran and set a period: the table follows the resumed run
    assert at.dataframe[0].value["status"].tolist() == ["queued"]


def test_stopping_the_last_live_run_stops_the_refresh(queue, store, periods):
    run_id = store.create_run(RunConfig(steps=100).model_dump(mode="json"))
    at = runs_page()
    assert periods[-1]  # a queued run: the table refreshes
    click_on_first_row(at, "Stop")
    assert store.get_run(run_id).status == "cancelled"
    assert periods[-1] is None
    assert at.dataframe[0].value["status"].tolist() == ["cancelled"]


def test_an_action_that_keeps_a_run_live_keeps_the_refresh(queue, store, periods):
    live = store.create_run(RunConfig(steps=100).model_dump(mode="json"))
    store.create_run(RunConfig(steps=100).model_dump(mode="json"), status="failed")
    at = runs_page()
    set_before = len(periods)
    click_on_first_row(at, "Resume")  # the failed run, newest first
    assert store.get_run(live).status == "queued" and periods[-1]
    assert all(periods[set_before:])  # never dropped on the way


def test_a_refresh_that_finds_nothing_live_reruns_the_page_once(queue, store, periods, monkeypatch):
    """The fragment's timer is the only thing that sees a run end on this page; here the run ends
    between the page's query (which sets the period) and the table's, which is what a refresh sees."""
    run_id = store.create_run(RunConfig(steps=100).model_dump(mode="json"), status="running")
    list_runs = store.list_runs

    def ending_after_the_page_looked(*, status=None, **kwargs):
        found = list_runs(status=status, **kwargs)
        if status == LIVE_STATUSES and store.get_run(run_id).status == "running":
            store.set_status(run_id, "finished")
        return found

    monkeypatch.setattr(store, "list_runs", ending_after_the_page_looked)
    monkeypatch.setattr(backend, "run_store", lambda: store)
    runs_page()
    assert periods[-2] and periods[-1] is None  # refreshing, then the page reran and stopped it


def choose(at: AppTest, *rows: int) -> AppTest:
    at.session_state[table_key()] = {"selection": {"rows": list(rows), "columns": [], "cells": []}}
    return at.run()


def buttons(at: AppTest) -> dict:
    return {b.label: b for b in at.button}


@pytest.mark.parametrize(
    ("status", "enabled"),
    [
        ("queued", {"Stop", "Delete"}),
        ("running", {"Stop", "Delete"}),  # its worker stops at its next step and writes nothing more
        ("finished", {"Delete"}),
        ("failed", {"Resume", "Delete"}),
        ("cancelled", {"Resume", "Delete"}),
        ("interrupted", {"Resume", "Delete"}),
    ],
)
def test_buttons_are_enabled_only_when_they_can_act(queue, store, status, enabled):
    store.create_run(RunConfig(steps=100).model_dump(mode="json"), status=status)
    at = choose(runs_page(), 0)
    actions = {label: b for label, b in buttons(at).items() if label in ("Stop", "Resume", "Delete")}
    assert {label for label, b in actions.items() if not b.disabled} == enabled


def test_delete_asks_first_and_says_what_it_did(queue, store):
    run_id = store.create_run(RunConfig(steps=100).model_dump(mode="json"), status="finished")
    at = choose(runs_page(), 0)
    buttons(at)["Delete"].click().run()
    assert store.get_run(run_id) and f"Delete run {run_id}?" in at.warning[0].value
    buttons(at)["Keep them"].click().run()
    assert store.get_run(run_id) and not at.warning
    buttons(at)["Delete"].click().run()
    buttons(at)["Delete for good"].click().run()
    assert not store.list_runs()
    assert [t.value for t in at.toast] == [f"Deleted run {run_id}."]


def test_stop_says_so_and_the_table_shows_stopping(queue, store):
    run_id = store.create_run(RunConfig(steps=100).model_dump(mode="json"), status="running")
    at = choose(runs_page(), 0)
    buttons(at)["Stop"].click().run()
    assert [t.value for t in at.toast] == [f"Stopping run {run_id}."]
    assert at.dataframe[0].value["status"].tolist() == ["stopping…"]  # until the worker stops it
    assert buttons(choose(at, 0))["Stop"].disabled


def test_a_run_is_renamed_and_its_name_shown(queue, store):
    run_id = store.create_run(RunConfig(steps=100).model_dump(mode="json"), status="finished")
    at = choose(runs_page(), 0)
    at.text_input(key=f"runs.name.{run_id}").input("margin 2")
    buttons(at)["Rename"].click().run()  # a form: the name goes with the click
    assert store.get_run(run_id).name == "margin 2"
    assert at.dataframe[0].value["name"].tolist() == ["margin 2"]
    assert [t.value for t in at.toast] == [f"Run {run_id} is now named 'margin 2'."]


def test_fork_sets_the_playground_s_form_to_the_run_for_a_new_run(queue, store):
    config = RunConfig(steps=700, margin=2.0, loss="triplet", sampler="batch-hard")
    run_id = store.create_run(config.model_dump(mode="json"), status="finished")
    at = choose(runs_page(), 0)
    buttons(at)["Fork into Playground"].click().run()
    assert not at.exception
    assert at.number_input(key="cfg.steps").value == 700 and at.slider(key="cfg.margin").value == 2.0
    assert at.selectbox(key="cfg.loss").value == "triplet"
    assert at.text_input(key="playground.name").value == f"fork of {run_id}"
    assert "run" not in at.query_params  # a new run, not the old one watched
    assert not next(b for b in at.button if b.label == "Train").disabled


def test_a_finished_run_downloads_as_a_zip(queue, store):
    import io
    import zipfile

    run_id = store.create_run(RunConfig(steps=5).model_dump(mode="json"), status="finished")
    store.add_metrics(run_id, [{"step": 1, "loss": 1.0}])
    at = choose(runs_page(), 0)
    download = at.get("download_button")[0]
    assert download.proto.label == "Download run (zip)" and not download.proto.disabled
    store.create_run(RunConfig(steps=5).model_dump(mode="json"), status="running")
    at = choose(runs_page(), 0)  # the newest: running
    assert at.get("download_button")[0].proto.disabled  # packed once it has ended
    from contrast_core.export import run_zip

    assert "metrics.csv" in zipfile.ZipFile(io.BytesIO(run_zip(store, run_id))).namelist()


def test_a_chip_names_an_unnamed_run_by_a_short_id_that_tells_it_apart():
    from ui.run_table import short_id

    assert short_id("20261124-054338-15b8f9196ad79d6c") == "1124-054338-15b8f9"
    assert short_id("20261124-054338-15b8f0000000000f") != short_id("20261124-054338-15b8f9196ad79d6c")
    assert short_id("old-run") == "old-run" and short_id("20250101-120000-a3f9c1") == "20250101-120000-a3f9c1"


def test_a_run_its_sweep_stopped_early_says_so_in_the_tables(store):
    from contrast_core.sweep import STOPPED_EARLY
    from ui import run_table

    run_id = store.create_run({"steps": 100, "loss": "contrastive", "sampler": "random-pairs", "model": "mlp",
                               "dataset": "digits", "batch_size": 100, "embedding_dim": 2})  # fmt: skip
    store.request_cancel(run_id, f"{STOPPED_EARLY}: knn_accuracy below the rung's best at step 50")
    assert run_table.status(store.get_run(run_id)) == "stopped early"
    other = store.create_run({"steps": 100})
    store.request_cancel(other, "stopped by hand")
    assert run_table.status(store.get_run(other)) == "cancelled"
