"""A continuous target: items are similar when their targets differ by at most delta."""

import json
import os

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.datasets import load_diabetes
from streamlit.testing.v1 import AppTest
from test_app import chart

from contrast_core import data, jobs, losses, metrics, pair_stats, rules, samplers, tables
from contrast_core.config import RunConfig
from contrast_core.distances import Euclidean
from contrast_core.jobs import RunRecorder
from contrast_core.train import Trainer, TrainingError, train

APP = os.path.join(os.path.dirname(__file__), "..", "app.py")
FAST = dict(eval_size=80, device="cpu")


def test_the_delta_rule_on_a_hand_built_set():
    t = torch.tensor([0.0, 1.0, 1.5, 3.0])
    assert losses.similar(t[:, None], t[None, :], 1.0).tolist() == [
        [True, True, False, False],
        [True, True, True, False],
        [False, True, True, False],
        [False, False, False, True],
    ]
    assert losses.positive_mask(t, 1.0).diagonal().sum() == 0  # an item is not its own positive
    assert losses.positive_mask(torch.tensor([2, 2, 5]), None).tolist() == [[False, True, False], [True, False, False],
                                                                            [False, False, False]]  # fmt: skip


def test_diabetes_is_a_continuous_target_split_by_its_deciles():
    found = load_diabetes()
    ds = data.load("diabetes", eval_size=60)
    assert ds.x.shape == (442, 10) and ds.kind == "table"
    assert torch.allclose(ds.target, torch.as_tensor(found.target, dtype=torch.float32))
    assert ds.num_classes == data.TARGET_BINS and ds.y.dtype == torch.int64
    counts = torch.bincount(ds.y)  # deciles: equal counts, up to ties (the target is a whole number)
    assert counts.min() >= 40 and counts.max() <= 48
    first = ds.target[ds.y == 0]
    assert first.max() <= ds.target[ds.y == 1].min()  # bins in the target's order
    held_out = torch.bincount(ds.y[ds.test_index], minlength=10)
    assert held_out.min() >= 8  # stratified: every decile is held out alike (88 of 442)
    target = rules.TARGETS["diabetes"]  # what the form shows, from the data itself
    assert (target.low, target.high) == (found.target.min(), found.target.max())
    assert target.std == pytest.approx(found.target.std(), abs=0.05)


def test_random_pairs_by_delta_are_judged_by_the_rule_and_half_similar():
    targets = torch.arange(40, dtype=torch.float32) * 0.5  # 0, 0.5, ..., 19.5
    pool = torch.arange(40)
    sampler = samplers.build("random-pairs", pool, torch.zeros(40, dtype=torch.long), 64, targets=targets, delta=1.0)
    batch = sampler.draw(torch.Generator().manual_seed(0))
    first, second = batch.labels.chunk(2)
    difference = (first - second).abs()
    assert torch.equal(batch.same.bool(), difference <= 1.0)  # each pair's label is what the rule says
    assert batch.same[:32].all() and not batch.same[32:].any()  # every item has another within delta
    first_rows, second_rows = batch.index.chunk(2)
    assert (first_rows != second_rows).all() and (difference[:32] > 0).all()  # never itself
    assert len(set(difference[:32].tolist())) > 1 and difference[32:].max() > 5  # spread over the ranges


def test_class_balanced_miners_judge_pairs_and_triplets_by_delta():
    targets = torch.tensor([0.0, 0.3, 0.9, 2.0, 2.2, 5.0, 5.1, 5.9] * 4)
    pool = torch.arange(len(targets))
    sampler = samplers.build("batch-all", pool, torch.zeros(len(targets), dtype=torch.long), 16, m_per_class=4,
                             distance=Euclidean(), targets=targets, delta=0.5)  # fmt: skip
    batch = sampler.draw(torch.Generator().manual_seed(1))
    embeddings = torch.randn(len(batch.index), 2)
    pairs = sampler.mine(embeddings, batch, "pairs")
    i, j = torch.triu_indices(len(batch.labels), len(batch.labels), 1)
    assert torch.equal(pairs.same.bool(), (batch.labels[i] - batch.labels[j]).abs() <= 0.5)
    a, p, n = sampler.triplets(embeddings, losses.positive_mask(batch.labels, 0.5),
                               ~losses.similar(batch.labels[:, None], batch.labels[None, :], 0.5))  # fmt: skip
    t = batch.labels
    assert ((t[a] - t[p]).abs() <= 0.5).all() and ((t[a] - t[n]).abs() > 0.5).all() and (a != p).all()


def test_supcon_with_delta_is_supcon_with_the_classes_the_rule_makes():
    z = torch.randn(12, 4, requires_grad=True)
    classes = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 4, 4])
    targets = classes.float() * 10 + torch.rand(12)  # within a class at most 1 apart, across classes 9 or more
    by_class = losses.build("supcon", None, 1.0, 0.1)(z, classes)
    by_delta = losses.build("supcon", None, 1.0, 0.1, delta=1.0)(z, targets)
    assert torch.allclose(by_class, by_delta)
    (g_class,) = torch.autograd.grad(by_class, z)
    (g_delta,) = torch.autograd.grad(by_delta, z)
    assert torch.allclose(g_class, g_delta)


def test_pair_statistics_by_delta_by_hand():
    embeddings = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    targets = np.array([1.0, 1.5, 3.0])  # pairs (0,1): within 1; (0,2), (1,2): not
    found = pair_stats.pair_distance_stats(embeddings, targets, "euclidean", margin=4.5, delta=1.0)
    assert found["pos_mean"] == pytest.approx(3.0) and found["neg_mean"] == pytest.approx((4.0 + 5.0) / 2)
    assert found["violation_fraction"] == pytest.approx(0.5)  # 4 < 4.5, 5 is not
    assert found["pos_violation_fraction"] == pytest.approx(0.0)


def test_continuous_metrics_against_hand_values_and_scipy():
    train_t = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    train_emb = np.stack([train_t, np.zeros(6)], axis=1)  # the embedding is the target itself
    eval_t = np.array([0.9, 2.2, 4.1])
    eval_emb = np.stack([eval_t, np.zeros(3)], axis=1)
    found = metrics.evaluate_continuous(train_emb, train_t, eval_emb, eval_t, "euclidean", None, delta=0.5, k=1)
    predicted = np.array([1.0, 2.0, 4.0])  # each query's nearest train item
    r2 = 1 - ((eval_t - predicted) ** 2).sum() / ((eval_t - eval_t.mean()) ** 2).sum()
    assert found["knn_r2"] == pytest.approx(r2)
    assert found["spearman"] == pytest.approx(1.0)  # distances are the target differences
    scrambled = np.array([[0.0, 0.0], [5.0, 0.0], [1.0, 0.0]])
    found = metrics.evaluate_continuous(train_emb, train_t, scrambled, eval_t, "euclidean", None, delta=0.5, k=1)
    d = np.array([5.0, 1.0, 4.0])  # pairs (0,1), (0,2), (1,2)
    diff = np.array([1.3, 3.2, 1.9])
    assert found["spearman"] == pytest.approx(spearmanr(d, diff).statistic)
    assert set(found) == set(metrics.CONTINUOUS_METRICS)


def test_the_default_delta_is_a_quarter_of_the_training_targets_spread_and_a_delta_too_wide_is_refused():
    trainer = Trainer(RunConfig(dataset="diabetes", steps=1, **FAST))
    train_t = trainer.data.target[trainer.data.train_index]
    assert trainer.delta == pytest.approx(0.25 * float(train_t.std())) and trainer.sampler.delta == trainer.delta
    with pytest.raises(TrainingError, match="delta: 400 makes every pair similar"):
        Trainer(RunConfig(dataset="diabetes", delta=400, steps=1, **FAST))
    assert "delta is not used" in " ".join(RunConfig(delta=3.0).notes())


def test_a_diabetes_run_learns_to_order_items_by_their_target():
    events = []
    result = train(RunConfig(dataset="diabetes", steps=600, **FAST), events.append)
    first = next(e for e in events if e.kind == "snapshot").data
    assert "targets" in first["arrays"] and float(first["arrays"]["delta"]) > 0
    assert "rand_index" not in result["metrics"]  # no class metrics for a continuous target
    assert np.isfinite(list(result["metrics"].values())).all()
    assert result["metrics"]["knn_r2"] > max(0.1, first["metrics"]["knn_r2"] + 0.1)
    assert result["metrics"]["spearman"] > first["metrics"]["spearman"] + 0.1


def diabetes_run(store, steps: int = 60) -> str:
    """A finished diabetes run in the store, trained here as a worker would."""
    config = RunConfig(dataset="diabetes", steps=steps, **FAST)
    run_id = store.create_run(config.model_dump(mode="json"), status="running", worker="w", device="cpu")
    recorder = RunRecorder(store, run_id, "w")
    train(config, recorder)
    recorder.flush()
    store.set_status(run_id, "finished", worker="w")
    return run_id


def test_the_playground_colours_a_continuous_run_by_its_target(store):
    run_id = diabetes_run(store)
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = run_id
    at.run()
    assert not at.exception
    scatter = chart(at, "Embedding")["data"][0]["marker"]
    assert "colorscale" in scatter and scatter["showscale"] is True
    assert any("R²" in m.label for m in at.metric) and any("Spearman" in m.label for m in at.metric)
    assert any("differ by at most delta" in c.value for c in at.caption)


TARGET_TABLE = "a,b,name,y\n" + "".join(f"{i % 9},{(i * 7) % 11},n{i},{2.5 * i + (i % 3)}\n" for i in range(80))


def test_a_csv_with_a_numeric_target_is_read_as_a_continuous_target(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(TARGET_TABLE)
    features, target, classes = tables.read(path, "y", continuous=True)
    assert features.shape == (80, 2) and classes == [] and target[3] == 2.5 * 3
    ds = data.load("csv", csv_path=str(path), csv_label="y", csv_continuous=True, eval_size=20)
    assert ds.target is not None and torch.allclose(ds.target, torch.as_tensor(target, dtype=torch.float32))
    assert RunConfig(dataset="csv", csv_path=str(path), csv_label="y", csv_continuous=True).continuous
    with pytest.raises(ValueError, match="csv_label: a continuous target must be a finite number in every row; "
                                         "column 'name' is not in 80 rows"):  # fmt: skip
        tables.read(path, "name", continuous=True)
    path.write_text("a,y\n" + "".join(f"{i},7\n" for i in range(20)))
    with pytest.raises(ValueError, match="csv_label: column 'y' has a single value"):
        tables.read(path, "y", continuous=True)


def test_the_playground_trains_on_an_uploaded_csv_s_continuous_target(store, queue):
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.selectbox(key="cfg.dataset").set_value("csv").run()
    at.file_uploader(key="cfg.csv_upload").set_value(("t.csv", TARGET_TABLE.encode(), "text/csv")).run()
    at.selectbox(key="cfg.csv_label").set_value("y").run()
    assert not any("delta" in c.value for c in at.caption)  # classes until the box is ticked
    at.checkbox(key="cfg.csv_continuous").check().run()
    assert not at.error and not at.exception
    spread = next(c.value for c in at.caption if c.value.startswith("Target: column 'y'"))
    assert "from 0 to 198.5 (standard deviation 57.7)" in spread  # the file's own
    at.number_input(key="cfg.delta").set_value(12.0).run()
    at.number_input(key="cfg.steps").set_value(30).run()
    next(b for b in at.button if b.label == "Train").click().run()
    run = store.get_run(at.session_state["playground_run"])
    assert run.config["csv_continuous"] and run.config["delta"] == 12.0
    assert store.claim_next("w@test", "cpu").id == run.id
    assert jobs.execute(store, run.id, "w@test") == "finished"
    assert "knn_r2" in store.get_run(run.id).final_metrics


def test_explore_names_an_item_s_neighbours_by_their_targets_and_judges_them_by_delta(store, queue):
    run_id = diabetes_run(store)
    arrays = store.load_snapshot(run_id)
    targets, delta = arrays["targets"], float(arrays["delta"])
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = run_id
    at.run().switch_page("views/explore.py").run()
    at.number_input(key="explore.item").set_value(3).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(f"Item 3** (y {targets[3]:.4g})" in m.value for m in at.markdown)
    nearest = at.dataframe[1].value  # after the item itself
    assert list(nearest["class"]) == [f"y {targets[r]:.4g}" for r in nearest["item"]]
    negatives = at.dataframe[2].value
    assert (abs(targets[negatives["item"].to_numpy()] - targets[3]) > delta).all()
    assert any(f"more than delta = {delta:.3g} away" in c.value for c in at.caption)


def test_the_command_line_trains_on_a_csv_s_continuous_target(tmp_path, monkeypatch, capsys):
    from contrast_core.__main__ import main

    monkeypatch.setenv("CONTRAST_HOME", str(tmp_path / "home"))
    path = tmp_path / "t.csv"
    path.write_text(TARGET_TABLE)
    common = ["train", "--dataset", "csv", "--csv-path", str(path), "--csv-label", "y", "--steps", "5",
              "--eval-size", "20", "--device", "cpu", "--quiet", "--json"]  # fmt: skip
    assert main([*common, "--csv-continuous"]) == 0  # the flag alone switches it on
    found = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert found["config"]["csv_continuous"] is True and "knn_r2" in found
    assert main([*common, "--csv-continuous", "false"]) == 1  # the label's 80 values read as 80 classes: refused
    assert "has 80 classes in 80 rows" in capsys.readouterr().err
    assert main([*common, "--csv-continuous", "maybe"]) == 2
    assert capsys.readouterr().err.startswith("error: --csv-continuous:")


def test_compare_draws_continuous_runs_on_one_colour_scale_and_tables_show_their_metrics(store):
    from ui import figures, run_table

    panels = {(0, c): {"xy": np.random.default_rng(c).normal(size=(20, 2)), "labels": np.zeros(20, dtype=int),
                       "values": np.linspace(10 * c, 10 * c + 50, 20), "title": f"run {c}"} for c in range(2)}  # fmt: skip
    fig = figures.small_multiples(panels, [""], ["a", "b"], ["25 to 60", "60 to 90"])
    traces = [t for t in fig.data if t.x is not None and t.x[0] is not None]
    assert [t.marker.cmin for t in traces] == [0, 0] and [t.marker.cmax for t in traces] == [60, 60]  # one scale
    assert [t.marker.showscale for t in traces] == [True, False]  # one colour bar
    assert not [t for t in fig.data if t.showlegend is not False]  # no class legend
    classes_run = store.create_run(RunConfig().model_dump(mode="json"))
    store.set_final_metrics(classes_run, {"knn_accuracy": 0.9})
    assert "k-NN R²" not in run_table.runs_frame([store.get_run(classes_run)])
    target_run = diabetes_run(store, steps=5)
    both = run_table.runs_frame([store.get_run(classes_run), store.get_run(target_run)])
    assert both["k-NN R²"].notna().tolist() == [False, True]


def test_the_forces_of_a_continuous_run_pair_items_by_the_delta_rule(monkeypatch):
    from contrast_core import forces

    seen = []
    row_forces = forces.row_forces
    monkeypatch.setattr(forces, "row_forces", lambda loss, sampler, batch, z: (seen.append((sampler, batch)),
                                                                               row_forces(loss, sampler, batch, z))[1])  # fmt: skip
    trainer = Trainer(RunConfig(dataset="diabetes", steps=1, **FAST))
    found = trainer.forces()
    ((sampler, batch),) = seen
    assert sampler.delta == trainer.delta and np.isfinite(found["forces"]).all()
    first, second = batch.labels.chunk(2)  # the batch carries targets, its pairs judged by the rule
    assert torch.equal(batch.same.bool(), (first - second).abs() <= trainer.delta)
