"""Holding a run's training: pause, single step, step to the next snapshot, resume, slow motion."""

import sqlite3
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from test_jobs import wait_for

from contrast_core.config import RunConfig
from contrast_core.jobs import JobQueue
from contrast_core.store import MIGRATIONS, SCHEMA_VERSION, RunStore, StoreError
from contrast_core.train import HOLD_POLL_SECONDS, Event, Pace, train

FAST = dict(eval_size=40, batch_size=32, device="cpu")
APP = str(Path(__file__).resolve().parents[1] / "app.py")


# --- the store -------------------------------------------------------------------------------------


def test_a_hold_is_read_with_the_stop_request_and_steps_on_from_the_step_held_at(store):
    run_id = store.create_run({"steps": 100})
    assert store.control(run_id) == (False, None)
    store.hold(run_id, 0)
    assert store.control(run_id) == (False, 0)
    with pytest.raises(StoreError, match="not paused"):  # a step is taken from where the worker holds
        store.advance(run_id, 1)
    store.claim_next("w", "cpu")
    store.add_metrics(run_id, [{"step": s, "loss": 1.0} for s in range(1, 8)], worker="w")
    store.set_held(run_id, 123.0, worker="w")
    assert store.get_run(run_id).held_since == 123.0
    store.advance(run_id, 1)
    assert store.control(run_id, "w") == (False, 8)
    store.advance(run_id, 5)
    assert store.get_run(run_id).pause_at == 12  # from the step held at, not from the last target
    with pytest.raises(ValueError, match="steps"):
        store.advance(run_id, 0)
    store.hold(run_id, None)
    assert store.control(run_id, "w") == (False, None)
    store.request_cancel(run_id)
    assert store.control(run_id, "w")[0] is True


def test_an_ended_run_cannot_be_held_and_a_resumed_one_starts_free(store):
    run_id = store.create_run({"steps": 100})
    store.claim_next("w", "cpu")
    store.hold(run_id, 0)
    store.set_held(run_id, 5.0, worker="w")
    store.set_status(run_id, "cancelled", worker="w")
    ended = store.get_run(run_id)
    assert ended.held_since is None  # it no longer waits: no worker holds it
    with pytest.raises(StoreError, match="cancelled"):
        store.hold(run_id, 0)
    store.set_status(run_id, "queued")  # Resume
    assert store.get_run(run_id).pause_at is None


def test_a_version_3_store_gains_the_hold_columns_and_keeps_its_runs(tmp_path):
    db = sqlite3.connect(tmp_path / "index.sqlite")
    for version in (1, 2, 3):
        MIGRATIONS[version](db)
    db.execute("PRAGMA user_version = 3")
    db.execute("INSERT INTO runs (id, config, status, created_at) VALUES ('old-run', '{\"a\": 1}', 'running', 1.0)")
    db.commit()
    db.close()
    store = RunStore(tmp_path)
    run = store.get_run("old-run")
    assert (run.config, run.pause_at, run.held_since) == ({"a": 1}, None, None)
    store.hold("old-run", 3)
    assert store.get_run("old-run").pause_at == 3
    assert store._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    store.close()


# --- the training loop -----------------------------------------------------------------------------


class Controller:
    """What a worker's recorder does, scripted: holds at `pause_at`; at each "held" event, `steps_on`
    single steps are granted, then it resumes."""

    def __init__(self, pause_at: int, steps_on: int):
        self.pause_at, self.steps_on, self.events = pause_at, steps_on, []

    def on_event(self, event: Event) -> None:
        self.events.append(event)
        if event.kind == "held":
            self.pause_at = event.step + 1 if self.steps_on else None
            self.steps_on -= 1

    def holds(self, step: int) -> bool:
        return self.pause_at is not None and step >= self.pause_at


def test_a_held_run_steps_one_step_at_a_time_with_a_snapshot_of_each_then_trains_on():
    control = Controller(pause_at=7, steps_on=3)
    result = train(RunConfig(steps=40, snapshot_every=10, **FAST), control.on_event, holds=control.holds)
    events = control.events
    assert [e.step for e in events if e.kind == "held"] == [7, 8, 9, 10]
    assert [e.step for e in events if e.kind == "released"] == [7, 8, 9, 10]
    snapshots = [e.step for e in events if e.kind == "snapshot"]
    assert snapshots == [0, 7, 8, 9, 10, 20, 30, 40]  # one at each step held at; 10's is the regular one
    assert [e.step for e in events if e.kind == "step"] == list(range(1, 41))  # no step skipped or repeated
    for i, event in enumerate(events):  # each hold is reported once the step held at is drawn
        if event.kind == "held":
            assert next(e for e in reversed(events[:i]) if e.kind == "snapshot").step == event.step
    assert result["status"] == "finished" and result["seconds"]["held"] >= 0


def test_a_run_stopped_while_held_ends_cancelled_at_that_step():
    stops = iter([False] * 6 + [True] * 100)
    events = []
    result = train(RunConfig(steps=40, **FAST), events.append, lambda: next(stops), holds=lambda step: step >= 3)
    assert result["status"] == "cancelled" and result["step"] == 3
    assert [e.kind for e in events].count("held") == 1 and events[-1].kind == "final"


def test_slow_motion_spaces_the_steps_by_their_pace(monkeypatch):
    clock, slept = [100.0], []
    monkeypatch.setattr("contrast_core.train.time.perf_counter", lambda: clock[0])
    monkeypatch.setattr("contrast_core.train.time.sleep", lambda s: (slept.append(round(s, 9)), clock.__setitem__(0, clock[0] + s)))  # fmt: skip
    pace = Pace(4.0)  # a step every 0.25 s
    clock[0] += 0.05  # the first step took 0.05 s
    assert pace.wait() and slept == [0.2]
    clock[0] += 0.4  # the second took longer than its quarter second: no wait, and no catching up below 0
    assert not pace.wait() and slept == [0.2]
    assert not Pace(0.0).wait()  # 0: full speed


# --- through the job queue -------------------------------------------------------------------------


@pytest.fixture
def working(store):
    q = JobQueue(store, n_workers=1, pause_seconds=600).start()
    wait_for(lambda: q.status()["workers"] == 1, what="the worker")
    yield q
    q.shutdown()


def _held_again(store, run_id, after: float):
    run = store.get_run(run_id)
    return run if run.held_since is not None and run.held_since >= after else None


def test_pause_step_and_resume_through_the_job_queue(working, store):
    run_id = working.submit(RunConfig(steps=199_000, snapshot_every=1000, **FAST))
    wait_for(lambda: store.read_metrics(run_id), what="the first step")
    asked = time.time()
    store.hold(run_id, 0)
    held = wait_for(lambda: _held_again(store, run_id, asked), what="the hold")
    time.sleep(0.5)  # a held run does not train: its step stays where it held
    assert store.get_run(run_id).step == held.step == store.read_metrics(run_id)[-1]["step"]
    assert store.list_snapshots(run_id)[-1]["step"] == held.step  # the step held at is drawn

    asked = time.time()
    store.advance(run_id, 1)
    stepped = wait_for(lambda: _held_again(store, run_id, asked), what="the single step")
    assert stepped.step == held.step + 1 and store.read_metrics(run_id, since=held.step)[-1]["step"] == held.step + 1
    assert store.list_snapshots(run_id)[-1]["step"] == held.step + 1

    asked = time.time()
    store.advance(run_id, 1000 - stepped.step % 1000)  # Next snapshot
    at_snapshot = wait_for(lambda: _held_again(store, run_id, asked), what="the next snapshot")
    assert at_snapshot.step % 1000 == 0 and at_snapshot.step > stepped.step

    store.hold(run_id, None)
    wait_for(lambda: store.get_run(run_id).step > at_snapshot.step + 50, what="training after resume")
    assert store.get_run(run_id).held_since is None
    working.cancel(run_id)
    wait_for(lambda: store.get_run(run_id).status == "cancelled", what="the cancel")


def test_a_demo_stops_a_run_held_longer_than_its_cap(store):
    q = JobQueue(store, n_workers=1, pause_seconds=1.0).start()
    try:
        run_id = q.submit(RunConfig(steps=1_000_000, **FAST))
        store.hold(run_id, 0)  # paused before it starts: it holds at step 0
        wait_for(lambda: store.get_run(run_id).status == "cancelled", what="the cap")
        run = store.get_run(run_id)
        assert "paused longer than this demo's 1 s" in run.error and run.step == 0
        assert (store.run_dir(run_id) / "model.pt").exists()  # Resume goes on from here
    finally:
        q.shutdown()


# --- the Playground --------------------------------------------------------------------------------


def _playground(store, run_id) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = run_id
    return at.run()


def _button(at, label):
    return next(b for b in at.button if b.label == label)


def test_the_playground_pauses_steps_and_resumes_a_run(store, queue):
    run_id = store.create_run(RunConfig(steps=1000, **FAST).model_dump(mode="json"))
    store.claim_next("w", "cpu")  # a worker that holds it (none trains here: the store is what the page sets)
    store.add_metrics(run_id, [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.9}], worker="w")
    at = _playground(store, run_id)
    assert _button(at, "Step").disabled and not _button(at, "Pause").disabled  # stepping needs a held run
    _button(at, "Pause").click().run()
    assert store.get_run(run_id).pause_at == 0
    store.set_held(run_id, time.time(), worker="w")  # the worker holds
    at.run()
    assert "paused" in at.get("progress")[0].proto.text or any("paused" in c.value for c in at.caption)
    _button(at, "Step").click().run()
    assert store.get_run(run_id).pause_at == 3
    assert _button(at, "Resume").help == "Go on training at full speed."
    _button(at, "Resume").click().run()
    assert store.get_run(run_id).pause_at is None


def test_slow_motion_sets_the_pace_and_a_snapshot_every_few_steps(store, queue):
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.toggle(key="cfg.slow_motion").set_value(True).run()
    assert at.number_input(key="cfg.steps_per_second").value == 10.0
    assert at.number_input(key="cfg.snapshot_every").value == 11  # 2,000 steps: at most 200 snapshots
    at.toggle(key="cfg.slow_motion").set_value(False).run()
    assert at.number_input(key="cfg.steps_per_second").value == 0.0
    assert at.number_input(key="cfg.snapshot_every").value == 0
    at.toggle(key="cfg.slow_motion").set_value(True).run()
    next(b for b in at.button if b.label == "Train").click().run()
    assert "slow motion, 10 steps a second" in at.get("progress")[0].proto.text  # the rate leaves its waits out


def test_pause_and_step_are_there_when_a_worker_takes_the_run_as_the_page_draws_it(store, queue, monkeypatch):
    """The page drew its buttons for a queued run; a worker took it while the panels waited for its first
    step: the page runs again, with Pause and Step (they used to come only with a reload)."""
    from ui import live

    run_id = store.create_run(RunConfig(steps=1000, **FAST).model_dump(mode="json"))
    first_step = live._first_step

    def taken_meanwhile(run):
        if store.get_run(run_id).status == "queued":
            store.claim_next("w", "cpu")
            store.add_metrics(run_id, [{"step": 1, "loss": 1.0}], worker="w")
        return first_step(store.get_run(run_id))

    monkeypatch.setattr(live, "_first_step", taken_meanwhile)
    at = _playground(store, run_id)
    assert not at.exception
    assert not _button(at, "Pause").disabled and _button(at, "Step").disabled


@pytest.mark.parametrize("status, why", [
    ("cancelled", "paused longer than this demo's 60 s; Resume goes on from here"),
    ("interrupted", "killed by the system for memory (batch 4,096 of batch-all triplets)"),
])  # fmt: skip
def test_the_playground_says_why_a_run_ended_where_no_one_pressed_stop(store, queue, status, why):
    run_id = store.create_run(RunConfig(steps=1000, **FAST).model_dump(mode="json"))
    store.claim_next("w", "cpu")
    store.add_metrics(run_id, [{"step": 1, "loss": 1.0}], worker="w")
    store.set_status(run_id, status, error=why, worker="w")
    at = _playground(store, run_id)
    assert not at.exception
    assert [w.value for w in at.warning if why in w.value] == [f"Run {status}: {why}"]


def test_a_step_row_says_how_long_the_run_has_waited(monkeypatch):
    """The pages' rate leaves a pause out: it had counted it as "snapshots and logging"."""
    clock = [0.0]  # time moves only while the run sleeps: a held run's polls
    monkeypatch.setattr("contrast_core.train.time.perf_counter", lambda: clock[0])
    monkeypatch.setattr("contrast_core.train.time.sleep", lambda s: clock.__setitem__(0, clock[0] + s))
    asks = iter([True] * 4 + [False] * 1000)  # held at step 5: asked once, then polled three times
    events = []
    train(RunConfig(steps=10, **FAST), events.append, holds=lambda step: step == 5 and next(asks))
    waited = {e.step: e.data["waited_seconds"] for e in events if e.kind == "step"}
    assert waited == {step: 0.0 if step <= 5 else pytest.approx(3 * HOLD_POLL_SECONDS) for step in range(1, 11)}


def test_resume_says_a_slow_motion_run_goes_on_in_slow_motion(store, queue):
    run_id = store.create_run(
        RunConfig(steps=1000, steps_per_second=10, snapshot_every=25, **FAST).model_dump(mode="json")
    )
    store.claim_next("w", "cpu")
    store.add_metrics(run_id, [{"step": 1, "loss": 1.0}], worker="w")
    store.hold(run_id, 0)
    store.set_held(run_id, time.time(), worker="w")
    at = _playground(store, run_id)
    assert _button(at, "Resume").help == "Go on training in slow motion."  # was: "at full speed", which it is not
