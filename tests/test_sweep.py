"""Sweeps: grid expansion, the cap, refusals before anything is queued, and the terminal command."""

import json
import math
import threading

import pytest

from contrast_core import sweep
from contrast_core.__main__ import main
from contrast_core.store import RunStore
from contrast_core.sweep import SweepError


def test_expand_makes_every_combination_over_the_base():
    grid = sweep.expand({"steps": 50}, {"margin": [0.5, 1, 2], "distance": ["euclidean", "cosine"]})
    assert [c for c, _ in grid] == [
        {"margin": m, "distance": d} for m in (0.5, 1, 2) for d in ("euclidean", "cosine")
    ]  # fmt: skip
    assert all(config.steps == 50 for _, config in grid)
    assert [(config.margin, config.distance) for _, config in grid][1] == (0.5, "cosine")


def test_a_swept_loss_measures_with_its_own_distance_unless_one_is_given():
    grid = sweep.expand({"sampler": "batch-all", "margin": 0.2}, {"loss": ["triplet", "supcon"]})
    assert [config.distance for _, config in grid] == ["euclidean", "cosine"]


@pytest.mark.parametrize(
    "axes, words",
    [
        ({"margin": ["0.5", "x"]}, "margin: not a number (at margin=x)"),
        ({"margin": [0.5, 3], "distance": ["cosine"]}, "(at margin=3 distance=cosine)"),
        ({"steps": [0, 10, -1], "lr": [0.1, 0.01]}, "steps: at least 1 (at steps=0 lr=0.1; 4 of the 6 combinations"),
        ({"colour": [1, 2]}, "colour: not a run setting"),
        ({}, "choose at least one knob"),
        ({"seed": list(range(5)), "lr": [0.1, 0.01, 0.001, 0.0001]}, "5 seed x 4 lr makes 20 runs, over the cap of 16"),
    ],
)
def test_bad_sweeps_are_refused_naming_the_field(axes, words):
    with pytest.raises(SweepError) as caught:
        sweep.expand({}, axes)
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_the_cap_is_a_setting(monkeypatch):
    monkeypatch.setenv("CONTRAST_MAX_SWEEP", "2")
    with pytest.raises(SweepError, match="over the cap of 2"):
        sweep.expand({}, {"margin": [0.5, 1, 2]})
    monkeypatch.setenv("CONTRAST_MAX_SWEEP", "lots")
    with pytest.raises(SweepError, match="CONTRAST_MAX_SWEEP: 'lots' is not a whole number"):
        sweep.max_runs()


def test_parse_values_splits_on_commas_and_refuses_blanks_and_repeats():
    assert sweep.parse_values("--margin", " 0.25, 0.5,1 ") == ["0.25", "0.5", "1"]
    with pytest.raises(SweepError, match="--margin: an empty value"):
        sweep.parse_values("--margin", "0.5,,1")
    with pytest.raises(SweepError, match="given twice"):
        sweep.parse_values("--margin", "1,1")


def test_queue_names_the_sweep_and_its_runs_and_refuses_a_used_name(store):
    name, ids = sweep.queue(store, {"steps": 5}, {"margin": [0.5, 1]}, name="margins")
    runs = [store.get_run(i) for i in ids]
    assert name == "margins" and [r.sweep for r in runs] == ["margins", "margins"]
    assert [r.name for r in runs] == ["margin=0.5", "margin=1"]
    assert [r.config["margin"] for r in runs] == [0.5, 1.0] and all(r.status == "queued" for r in runs)
    with pytest.raises(SweepError, match="name: a sweep named 'margins' exists"):
        sweep.queue(store, {}, {"margin": [2, 3]}, name="margins")
    assert len(store.list_runs()) == 2  # the refused sweep queued nothing


def test_a_bad_combination_queues_nothing(store):
    with pytest.raises(SweepError):
        sweep.queue(store, {}, {"margin": [0.5, 3], "distance": ["euclidean", "cosine"]})
    assert store.list_runs() == []


def test_axes_of_finds_the_swept_knobs_in_order(store):
    _, ids = sweep.queue(store, {}, {"margin": [2, 0.5], "distance": ["euclidean", "cosine"]})
    runs = [store.get_run(i) for i in ids]  # oldest first
    assert sweep.axes_of(runs) == {"distance": ["euclidean", "cosine"], "margin": [0.5, 2.0]}


def test_cli_sweep_queues_the_grid_and_prints_the_ids(tmp_path, capsys):
    assert main(["sweep", "--margin", "0.5,1", "--distance", "euclidean,cosine", "--steps", "20",
                 "--home", str(tmp_path), "--name", "grid"]) == 0  # fmt: skip
    out = capsys.readouterr()
    ids = out.out.split()
    runs = RunStore(tmp_path).list_runs(sweep="grid")
    assert sorted(ids) == sorted(r.id for r in runs) and len(ids) == 4
    assert {(r.config["margin"], r.config["distance"], r.config["steps"]) for r in runs} == {
        (m, d, 20) for m in (0.5, 1.0) for d in ("euclidean", "cosine")
    }  # fmt: skip
    assert "4 runs queued" in out.err


@pytest.mark.parametrize(
    "args, words",
    [
        (["--margin", "0.5,3", "--distance", "cosine"], "--margin: must be in [0, 2]"),
        (["--margin", "0.5"], "give at least one flag two or more values"),
        (["--lr", "0.1,-1"], "--lr: must be a finite number > 0 (at lr=-1)"),
    ],
)
def test_cli_sweep_refuses_bad_values_before_queueing(tmp_path, capsys, args, words):
    assert main(["sweep", *args, "--home", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1
    assert RunStore(tmp_path).list_runs() == []


def test_cli_sweep_wait_trains_the_runs_and_prints_a_json_line_each(tmp_path, capsys):
    code = main(["sweep", "--margin", "0.5,1", "--steps", "4", "--eval-size", "20", "--snapshot-every", "2",
                 "--home", str(tmp_path), "--name", "tiny", "--wait", "--json"])  # fmt: skip
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0
    assert sorted(line["config"]["margin"] for line in lines) == [0.5, 1.0]
    assert all(line["status"] == "finished" and line["sweep"] == "tiny" and "knn_accuracy" in line for line in lines)
    assert all(r.status == "finished" and r.step == 4 for r in RunStore(tmp_path).list_runs(sweep="tiny"))


def test_cli_sweep_wait_reports_a_run_whose_worker_died_instead_of_waiting(tmp_path, capsys):
    store = RunStore(tmp_path)
    name, ids = sweep.queue(store, {"steps": 3, "eval_size": 20}, {"margin": [0.5, 1]}, name="orphan")
    store.heartbeat("99999999@elsewhere", 99999999, "cpu")
    claimed = store.claim_next("99999999@elsewhere", "cpu", sweep=name)  # then it died: no more heartbeats
    with store._write() as conn:
        conn.execute("UPDATE workers SET last_seen = 0")
    from contrast_core.__main__ import _wait_for_sweep

    result = []
    waiting = threading.Thread(
        target=lambda: result.append(_wait_for_sweep(store, name, ids, as_json=True)), daemon=True
    )
    waiting.start()
    waiting.join(timeout=120)
    assert not waiting.is_alive(), "sweep --wait still waiting on a run whose worker is gone"
    assert result == [1]  # not every run finished
    lines = {line["run"]: line for line in map(json.loads, capsys.readouterr().out.splitlines())}
    assert lines[claimed.id]["status"] == "interrupted" and lines[claimed.id]["error"] == "worker stopped"
    assert [line["status"] for run_id, line in lines.items() if run_id != claimed.id] == ["finished"]


def test_every_knob_offered_is_a_run_setting_and_the_new_ones_expand_to_valid_runs():
    from contrast_core.config import RunConfig

    assert set(sweep.KNOBS) <= set(RunConfig.model_fields)
    cases = [
        ({"dataset": "diabetes"}, {"delta": sweep.parse_values("delta", "5, 20, 50")}),
        ({"loss": "supcon", "sampler": "augmented-views", "augment": 0.5},
         {"label_fraction": sweep.parse_values("label_fraction", "0, 0.1, 0.5, 1")}),
        ({"model": "aae"}, {"prior": sweep.parse_values("prior", "gaussian, mixture"),
                            "adversarial_weight": sweep.parse_values("adversarial_weight", "0, 1")}),
    ]  # fmt: skip
    for base, axes in cases:
        grid = sweep.expand(base, axes)
        swept = [{knob: getattr(config, knob) for knob in axes} for _, config in grid]
        assert len(grid) == len(set(map(str, swept))) == math.prod(len(v) for v in axes.values())


def test_a_swept_loss_carries_the_base_margin_over_with_its_meaning(store):
    """A Euclidean margin of 1 is a cosine-embedding similarity of 0.5 on unit vectors; carried over as 1, a
    similarity, it pushed no negative apart and the run collapsed."""
    base = {"loss": "contrastive", "distance": None, "margin": 1.0, "steps": 5}
    _, ids = sweep.queue(store, base, {"loss": ["contrastive", "cosine-embedding"]})
    runs = [store.get_run(i) for i in ids]
    assert [(r.config["loss"], r.config["distance"], r.config["margin"]) for r in runs] == [
        ("contrastive", "euclidean", 1.0), ("cosine-embedding", "cosine", 0.5)
    ]  # fmt: skip
    assert sweep.axes_of(runs) == {"loss": ["contrastive", "cosine-embedding"]}  # not distance, not margin
    grid = sweep.expand({"margin": 2.0}, {"distance": ["euclidean", "cosine", "squared-euclidean"]})
    assert [config.margin for _, config in grid] == [2.0, 2.0, 4.0]  # opposite unit vectors in each
    grid = sweep.expand({"margin": 2.0}, {"distance": ["euclidean", "cosine"], "margin": [0.5, 1]})
    assert {config.margin for _, config in grid} == {0.5, 1.0}  # a swept margin is taken as given


def test_a_sweep_of_a_knob_no_run_reads_is_refused():
    with pytest.raises(SweepError) as caught:  # three identical runs
        sweep.expand({}, {"temperature": [0.05, 0.1, 0.5]})
    assert str(caught.value) == ("temperature: not used by the contrastive loss, mlp model, digits data; every run "
                                 "of the sweep would be the same")  # fmt: skip
    with pytest.raises(SweepError, match="^prior: not used"):
        sweep.expand({}, {"prior": ["gaussian", "mixture"], "margin": [0.5, 1]})
    grid = sweep.expand({}, {"temperature": [0.1, 0.5], "loss": ["contrastive", "nt-xent"], "sampler": ["augmented-views"],
                             "augment": [0.5]})  # fmt: skip
    assert len(grid) == 4  # nt-xent reads it: the sweep stands
