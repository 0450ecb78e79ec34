"""The live panels' own logic: the progress line, the rate it states, the pair-distance notes.

The panels are driven with AppTest over a temporary store (see test_app.py); the text builders
are pure functions tested alone.
"""

from __future__ import annotations

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
    """The refresh period (run_every) each live fragment was given, by the function's name."""
    real, seen = streamlit.fragment, {}

    def fragment(func=None, *, run_every=None, **kwargs):
        if func is None:  # st.fragment(run_every=...)(func)
            return lambda func: fragment(func, run_every=run_every, **kwargs)
        seen.setdefault(func.__name__, []).append(run_every)
        return real(func, run_every=run_every, **kwargs)

    monkeypatch.setattr(streamlit, "fragment", fragment)
    return seen


def snapshot_arrays(e: int = 40) -> dict:
    rng = np.random.default_rng(0)
    labels = np.arange(e) % 4
    return {"embeddings": rng.normal(size=(e, 2)) + labels[:, None], "labels": labels, "index": np.arange(e)}


def watch(store, run_id) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = run_id
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_pausing_the_charts_keeps_the_progress_line_going(queue, store, periods):
    run_id = store.create_run(RunConfig(steps=100).model_dump(mode="json"), status="running")
    store.add_metrics(run_id, [{"step": 10, "loss": 1.0, "pairs_per_second": 5000.0}])
    at = watch(store, run_id)
    assert periods["_progress"][-1] == live.REFRESH_SECONDS and periods["_panels"][-1] == live.REFRESH_SECONDS
    at.toggle(key="live.paused").set_value(True).run()
    assert periods["_panels"][-1] is None  # the charts hold still
    assert periods["_progress"][-1] == live.REFRESH_SECONDS  # the progress line does not
    store.add_metrics(run_id, [{"step": 40, "loss": 0.5, "pairs_per_second": 5000.0}])
    at.run()
    (bar,) = at.get("progress")
    assert "step 40 / 100" in bar.proto.text and bar.proto.value == 40


def test_a_run_that_failed_before_its_first_snapshot_says_so(queue, store):
    run_id = store.create_run(RunConfig().model_dump(mode="json"), status="running")
    store.set_status(run_id, "failed", error="dataset: could not be read")
    at = watch(store, run_id)
    texts = [i.value for i in at.info]
    assert not any("appears at the first snapshot" in t for t in texts)
    assert any("ended (failed) before its first snapshot" in t for t in texts), texts


def test_a_queued_run_shows_its_place_the_wait_and_the_run_training_less_often(queue, store, periods):
    training = store.create_run(RunConfig(steps=1000).model_dump(mode="json"), owner="a" * 32)
    ahead = store.create_run(RunConfig(steps=2000).model_dump(mode="json"), owner="b" * 32)
    mine = store.create_run(RunConfig(steps=100).model_dump(mode="json"), owner="a" * 32)
    run = store.claim_next("w@here", "cpu")
    assert run.id == training
    store.add_metrics(training, [{"step": 500, "loss": 1.0}])
    # 500 steps in 10 s: 50 steps/s; left: 500 of the run training and 2,000 of B's, which goes before A's second
    text = live.waiting_text(store, store.get_run(mine), now=run.started_at + 10)
    assert text == "queue position 2 · about 50 s to wait (the run training is at step 500 / 1,000)"
    assert live.waiting_text(store, store.get_run(ahead), now=run.started_at + 10).startswith(
        "queue position 1 · about 10 s"
    )
    at = watch(store, mine)
    assert periods["_progress"][-1] == live.QUEUED_REFRESH_SECONDS and periods["_panels"][-1] is None
    (bar,) = at.get("progress")
    assert "queue position 2 · about " in bar.proto.text


def test_the_rate_is_over_the_runs_wall_clock_time():
    # 600 steps of 100 pairs in 144 s: 417 pairs/s, not the 9,847 its steps alone ran at.
    text = live.rate_text({"sampler": "random-pairs", "batch_size": 100}, 600, 144.0, 9847.0)
    assert text.startswith("417 pairs/s") and "9,847 while stepping" in text and "96%" in text
    assert live.rate_text({"sampler": "batch-all", "batch_size": 64}, 10, 2.0, None) == "320 items/s"


def test_the_progress_line_leaves_the_time_a_run_waited_out_of_its_rate(queue, store):
    # 1,000 steps of 100 pairs in 30 s of wall time, 20 s of it paused: 10,000 pairs/s, not 3,333 with
    # "snapshots and logging 73%".
    run_id = store.create_run(RunConfig(steps=1000).model_dump(mode="json"), status="running", worker="w")
    store.add_metrics(run_id, [{"step": 1000, "loss": 0.5, "pairs_per_second": 12_500.0, "waited_seconds": 20.0}])
    store.set_status(run_id, "finished")
    with store._write() as conn:
        conn.execute("UPDATE runs SET started_at = 100.0, finished_at = 130.0 WHERE id = ?", (run_id,))
    text = watch(store, run_id).get("progress")[0].proto.text
    assert "10,000 pairs/s (12,500 while stepping; snapshots and logging 20%)" in text, text


def test_the_progress_line_waits_for_the_end_only_when_the_steps_left_end_within_half_a_refresh(store):
    run_id = store.create_run(RunConfig(steps=1000).model_dump(mode="json"))
    store.claim_next("w", "cpu")
    store.add_metrics(run_id, [{"step": 970, "loss": 0.1}])
    run = store.get_run(run_id)
    # 970 steps in 9.7 s: the 30 left take 0.3 s; in 19.4 s, 0.6 s, which the tick does not wait for (it would
    # come that much late if the run then took its final snapshot); at a step a refresh, 30 refreshes.
    assert live.END_WAIT_SECONDS == 0.5
    assert live._ends_soon(run, now=run.started_at + 9.7)
    assert not live._ends_soon(run, now=run.started_at + 19.4)
    assert not live._ends_soon(run, now=run.started_at + 970 * live.REFRESH_SECONDS)
    store.set_status(run_id, "finished")
    assert live._until_ended(store, run).status == "finished"  # seen as soon as it is stored
    assert not live._ends_soon(store.get_run(run_id), now=run.started_at + 9.7)  # an ended run waits for nothing


def test_pairs_caption_names_which_pairs_a_share_is_of():
    pairs = {"violation_fraction": 0.125, "pos_violation_fraction": 0.25, "neg_distances": np.array([1.0, 2.0])}
    config = {"loss": "contrastive", "distance": "euclidean", "margin": 1.5}
    text = live.pairs_caption(pairs, config)
    assert "12.5% of negative held-out pairs are closer than the margin" in text and "25.0% of positive" in text
    assert "margin (1.5)" in text


def test_pairs_caption_speaks_of_no_margin_for_a_loss_without_one():
    config = {"loss": "nt-xent", "distance": "cosine", "margin": 1.0}
    text = live.pairs_caption({"violation_fraction": None, "neg_distances": np.array([0.5])}, config)
    assert "has no margin" in text and "dashed" not in text


def test_pairs_caption_explains_a_triplet_embedding_grown_past_its_margin():
    config = {"loss": "triplet", "distance": "euclidean", "margin": 0.5}
    grown = {"violation_fraction": 0.0, "pos_violation_fraction": 1.0, "neg_distances": np.full(10, 40.0),
             "triplet_violation_fraction": 0.2}  # fmt: skip
    text = live.pairs_caption(grown, config)
    assert "about 80x the margin" in text and "only sees" in text and "20.0% of held-out triplets" in text
    near = grown | {"neg_distances": np.full(10, 1.0)}
    assert "only sees" not in live.pairs_caption(near, config)


def test_the_charts_step_down_a_rung_when_the_progress_line_s_ticks_come_late_and_back_up_when_calm():
    pace, t = live.Pace(), 0.0
    for _ in range(10):  # on time: every second
        t += 1.0
        assert not pace.tick(1.0, timed=True, now=t)
    assert pace.chart_seconds == live.REFRESH_SECONDS
    need, window = live.Pace.LATE_OF_RECENT
    for late in [True] * (need - 1) + [False] * (window - need):  # one late tick short of a step: not yet
        t += 1.7 if late else 1.0
        assert not pace.tick(1.0, timed=True, now=t)
    t += 2.0  # one more late tick within the window: one rung down, once
    assert pace.tick(1.0, timed=True, now=t) and pace.chart_seconds == 2.0
    for _ in range(need - 1):  # the count starts again at the new rung
        t += 2.0
        assert not pace.tick(1.0, timed=True, now=t)
    t += 2.0
    assert pace.tick(1.0, timed=True, now=t) and pace.chart_seconds == 3.0
    for _ in range(6):  # the last rung holds
        t += 3.0
        assert not pace.tick(1.0, timed=True, now=t)
    assert pace.chart_seconds == 3.0
    pace.settle(now=t + 1)  # a page run soon after: still busy
    assert pace.chart_seconds == 3.0
    pace.settle(now=t + live.Pace.CALM_SECONDS)  # calm for long enough: one rung back up per page run
    assert pace.chart_seconds == 2.0
    pace.settle(now=t + live.Pace.CALM_SECONDS + 1)
    assert pace.chart_seconds == 2.0


def test_only_timer_ticks_count_and_a_queued_line_is_late_against_its_own_period():
    pace = live.Pace()
    for t in (0.0, 5.0, 10.0, 15.0, 20.0):  # runs of the whole page: not its timer, however far apart
        assert not pace.tick(1.0, timed=False, now=t)
    for t in (22.0, 24.0, 26.0, 28.0, 30.0):  # a queued run's line every 2 s: on time
        assert not pace.tick(live.QUEUED_REFRESH_SECONDS, timed=True, now=t)
    assert pace.chart_seconds == live.REFRESH_SECONDS and not any(pace.late)


def test_a_page_whose_charts_stepped_down_draws_them_less_often_and_says_why(queue, store, periods):
    run_id = store.create_run(RunConfig(steps=100).model_dump(mode="json"), status="running")
    store.add_metrics(run_id, [{"step": 10, "loss": 1.0, "pairs_per_second": 5000.0}])
    at = watch(store, run_id)
    assert periods["_panels"][-1] == live.REFRESH_SECONDS
    assert not any("Busy server" in c.value for c in at.caption)
    at.session_state[live.PACE].rung = 1
    at.run()
    assert periods["_panels"][-1] == 2.0 and periods["_progress"][-1] == live.REFRESH_SECONDS
    assert any("charts redraw every 2 s, the progress line every second" in c.value for c in at.caption)
    at.toggle(key="live.paused").set_value(True).run()  # frozen charts redraw at no pace: nothing to say
    assert periods["_panels"][-1] is None and not any("Busy server" in c.value for c in at.caption)
