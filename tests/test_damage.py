"""A damaged snapshot file (truncated, overwritten) is named in one line on every page, never a traceback,
and the other snapshots go on being shown."""

import numpy as np
import pytest
from test_app import add_run, open_app
from test_compare_page import sweep_runs
from test_explore_page import open_link

from contrast_core.store import StoreError


def damage(store, run_id, step, how="truncate"):
    path = store.snapshot_path(run_id, step)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if how == "truncate" else b"not a snapshot at all")


@pytest.mark.parametrize("how", ["truncate", "garbage"])
def test_a_damaged_snapshot_is_a_one_line_store_error_without_its_path(store, how):
    run_id, _ = add_run(store, 100, status="finished")
    damage(store, run_id, 50, how)
    with pytest.raises(StoreError) as caught:
        store.load_snapshot(run_id, 50)
    message = str(caught.value)
    assert message.startswith(f"snapshot: the snapshot of run {run_id} at step 50 is damaged (")
    assert str(store.home) not in message and "\n" not in message
    assert np.asarray(store.load_snapshot(run_id, 100)["embeddings"]).shape[1] == 2  # the others are fine


def test_explore_names_a_damaged_snapshot_and_shows_the_others(queue, store):
    run_id, _ = add_run(store, 100, status="finished")
    damage(store, run_id, 50)
    at = open_link(run=run_id, step="50")
    assert [e.value for e in at.error if "is damaged" in e.value]
    at.select_slider(key="explore.step").set_value(100).run()
    assert not at.exception and not [e.value for e in at.error if "is damaged" in e.value]


def test_the_live_view_names_a_damaged_newest_snapshot(queue, store):
    run_id, _ = add_run(store, 100, status="finished")
    damage(store, run_id, 100)
    at = open_app()
    at.query_params["run"] = run_id
    at.run()
    assert not at.exception
    warned = [w.value for w in at.warning if "is damaged" in w.value]
    assert warned and warned[0].endswith("the panels show the one before."), [w.value for w in at.warning]


def test_compare_leaves_out_a_damaged_panel_and_says_why(queue, store):
    ids = sweep_runs(store)
    damage(store, ids[0], 250)
    at = open_app("compare")
    assert not at.exception
    assert [w.value for w in at.warning if "is damaged" in w.value and "panel is left out" in w.value]
