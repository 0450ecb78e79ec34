"""The Compare page's sweeps: queued from the page, drawn as small multiples with one step slider."""

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest
from test_app import APP, add_run, button, chart, open_app, values

from contrast_core import sweep
from ui import run_table, sweep_view
from ui.config_form import DEFAULTS


def sweep_runs(store, name="grid", upto=250, **base):
    """A finished 2 x 2 sweep (margin x distance) with snapshots every 50 steps, as workers leave one."""
    ids = []
    for margin in (0.5, 1.0):
        for distance in ("euclidean", "cosine"):
            run_id, _ = add_run(store, upto, status="finished", margin=margin, distance=distance, **base)
            ids.append(run_id)
    with store._write() as conn:  # made by add_run, which knows nothing of sweeps
        conn.executemany("UPDATE runs SET sweep = ? WHERE id = ?", [(name, i) for i in ids])
    return ids


def titles(spec) -> list[str]:
    """The panels' own titles (the step and badges), not the row and column headings."""
    return [a["text"] for a in spec["layout"]["annotations"] if a["text"].startswith("step ")]


def test_a_sweep_is_queued_from_the_playground_s_settings(queue, store):
    at = open_app()
    at.number_input(key="cfg.steps").set_value(300).run()  # the Playground's current settings
    at.switch_page("views/compare.py").run()
    assert at.selectbox(key="sweep.knob2").proto.placeholder == "none"  # not "Choose an option"
    at.selectbox(key="sweep.knob1").set_value("margin").run()
    at.text_input(key="sweep.values1").set_value("0.5, 1").run()
    at.selectbox(key="sweep.knob2").set_value("distance").run()
    assert at.text_input(key="sweep.values2").value == "euclidean, cosine"  # the knob's example values
    at.text_input(key="sweep.name").set_value("margins").run()
    button(at, "Queue sweep").click().run()
    assert not at.exception and not at.error
    runs = store.list_runs(sweep="margins")
    assert {(r.config["margin"], r.config["distance"]) for r in runs} == {
        (m, d) for m in (0.5, 1.0) for d in ("euclidean", "cosine")
    }  # fmt: skip
    assert all(r.config["steps"] == 300 and r.status == "queued" for r in runs)
    assert at.query_params["sweep"] == ["margins"] if isinstance(at.query_params["sweep"], list) else "margins"
    assert any("no snapshot yet" in i.value for i in at.info)  # the panels appear with the first snapshots


@pytest.mark.parametrize(
    "values1, knob2, error",
    [
        ("0.5, 3", "distance", "margin: must be in [0, 2]"),
        ("0.5,,1", None, "margin: an empty value"),
        ("0.5, 1", "margin", "second knob: choose a different knob from the first"),
    ],
)
def test_a_bad_sweep_is_refused_in_one_line_and_queues_nothing(queue, store, values1, knob2, error):
    at = open_app("compare")
    at.text_input(key="sweep.values1").set_value(values1).run()
    at.selectbox(key="sweep.knob2").set_value(knob2).run()
    if knob2 == "distance":
        at.text_input(key="sweep.values2").set_value("cosine").run()
    button(at, "Queue sweep").click().run()
    assert [e.value for e in at.error if error in e.value], [e.value for e in at.error]
    assert store.list_runs() == []


def test_the_cap_is_named_when_a_grid_is_too_big(queue, store, monkeypatch):
    monkeypatch.setenv("CONTRAST_MAX_SWEEP", "3")
    at = open_app("compare")
    at.selectbox(key="sweep.knob2").set_value("distance").run()
    button(at, "Queue sweep").click().run()  # 4 margins x 2 distances
    assert any("makes 8 runs, over the cap of 3" in e.value for e in at.error)
    assert store.list_runs() == []


def test_small_multiples_move_together_with_one_step(queue, store):
    sweep_runs(store)
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["sweep"], at.query_params["step"] = "grid", "100"  # a permalink
    at.run().switch_page("views/compare.py").run()
    assert not at.exception, [e.value for e in at.exception]
    grid = chart(at, "Embeddings of every run")
    assert len(titles(grid)) == 4 and all(t.startswith("step 100 · k-NN accuracy 0.60") for t in titles(grid))
    assert {a["text"] for a in grid["layout"]["annotations"] if a["text"].startswith("margin=")} == {
        "margin=0.5", "margin=1"
    }  # fmt: skip
    assert {a["text"] for a in grid["layout"]["annotations"] if a["text"].startswith("<b>")} == {
        "<b>distance=euclidean</b>", "<b>distance=cosine</b>"
    }  # fmt: skip
    cosine_x = [grid["layout"][k]["range"] for k in grid["layout"] if k.startswith("xaxis")]
    assert [-1.15, 1.15] in cosine_x  # the cosine panels show the unit circle
    hist = chart(at, "Pair distances at step")
    margins = sorted(s["x0"] for s in hist["layout"]["shapes"] if s["type"] == "line")
    assert margins == [0.5, 0.5, 1.0, 1.0]  # each run against its own margin
    assert hist["layout"]["legend"]["yref"] == "container"  # at the foot, not over the bottom panels' ticks
    knob = chart(at, "k-NN accuracy against margin")
    assert {t["name"] for t in knob["data"]} == {"distance=euclidean", "distance=cosine"}
    assert [list(values(t["y"])) for t in knob["data"]] == [[0.6, 0.6], [0.6, 0.6]]  # knn 0.5 + step / 1000 at step 100

    at.select_slider(key="compare.step").set_value(250).run()
    assert [t[:8] for t in titles(chart(at, "Embeddings of every run"))] == ["step 250"] * 4
    assert at.query_params["step"] in ("250", ["250"])  # the link follows the view


@pytest.mark.parametrize(
    "params, words",
    [({"sweep": "nope"}, "sweep: no sweep named 'nope'"), ({"sweep": "grid", "step": "abc"}, "step: 'abc' is not")],
)
def test_bad_links_get_a_one_line_reason(queue, store, params, words):
    sweep_runs(store)
    at = AppTest.from_file(APP, default_timeout=60)
    for key, value in params.items():
        at.query_params[key] = value
    at.run().switch_page("views/compare.py").run()
    assert not at.exception
    assert any(words in w.value for w in at.warning), [w.value for w in at.warning]


def test_chosen_runs_keep_the_overlay_and_offer_the_table_as_csv(queue, store):
    add_run(store, 80, status="finished", margin=0.5)
    add_run(store, 80, status="finished", margin=2.0)
    at = open_app("compare")
    assert at.radio(key="compare.mode").value == "Chosen runs"  # no sweep yet
    assert len(chart(at, "Loss")["data"]) == 2
    assert at.get("download_button")


def test_grid_of_puts_a_numeric_knob_on_the_rows(store):
    _, ids = sweep.queue(store, {}, {"distance": ["euclidean", "cosine"], "margin": [0.5, 1, 2]})
    from ui.sweep_view import grid_of

    grid = grid_of([store.get_run(i) for i in ids])
    assert grid.rows == ["margin=0.5", "margin=1", "margin=2"]  # as typed, not "margin=1.0"
    assert grid.cols == ["distance=euclidean", "distance=cosine"]
    run = next(r for r in grid.runs if r.config["margin"] == 2.0 and r.config["distance"] == "cosine")
    assert grid.cells[run.id] == (2, 1)


def test_step_at_or_before():
    from ui.sweep_view import step_at_or_before

    assert [step_at_or_before([0, 50, 100], s) for s in (-1, 0, 49, 50, 1000)] == [None, 0, 0, 50, 100]


def test_runs_are_coloured_by_a_knob_with_their_metric_over_time_and_parallel_axes(queue, store):
    for margin in (0.5, 2.0, 1.0):
        add_run(store, 100, status="finished", margin=margin)
    at = open_app("compare")
    at.multiselect[0].set_value([r.id for r in store.list_runs()]).run()
    at.selectbox(key="compare.colour").set_value("margin").run()
    loss = chart(at, "Loss")
    by_margin = {t["name"].split(" · ")[0]: t["line"]["color"] for t in loss["data"]}
    assert set(by_margin) == {"margin=0.5", "margin=1", "margin=2"}
    assert len(set(by_margin.values())) == 3  # a colour per value, the same in every chart
    history = chart(at, "k-NN accuracy")
    assert [values(t["y"]).tolist() for t in history["data"]][0] == [0.5, 0.55, 0.6]  # snapshots at 0, 50, 100
    assert {t["line"]["color"] for t in history["data"]} == set(by_margin.values())
    parallel = chart(at, "Settings to k-NN accuracy")["data"][0]
    assert [d["label"] for d in parallel["dimensions"]] == ["margin", "k-NN accuracy"]


def test_knob_colours_ramp_numbers_and_name_categories():
    from ui.figures import OFF_RAMP, PALETTE, knob_colours

    ramp = knob_colours([2.0, 0.5, 1.0, 0.5])
    assert ramp[1] == ramp[3] and len(set(ramp)) == 3  # equal values, equal colours
    assert ramp[1].startswith("rgb(40,") and ramp[0].startswith("rgb(240,")  # lowest blue, highest red
    assert knob_colours(["cosine", "euclidean", "cosine"]) == [PALETTE[0], PALETTE[1], PALETTE[0]]
    mixed = knob_colours([2.0, "not used", 0.5])  # a run that does not read the knob: grey, off the ramp
    assert mixed[2].startswith("rgb(40,") and mixed[0].startswith("rgb(240,") and mixed[1] == OFF_RAMP


def test_each_panel_can_fill_its_own_frame(store):
    from ui.sweep_view import UNIT, grid_of, shared_ranges

    _, ids = sweep.queue(store, {}, {"margin": [0.5, 1.0], "distance": ["euclidean", "cosine"]})
    grid = grid_of([store.get_run(i) for i in ids])
    small, large = np.array([[0.0, 0.0], [1.0, 1.0]]), np.array([[0.0, 0.0], [10.0, 10.0]])
    scatter = {(0, 0): {"xy": small}, (1, 0): {"xy": large}, (0, 1): {"xy": small}, (1, 1): {"xy": large}}
    same = shared_ranges(grid, scatter)
    assert same[(0, 0)] == same[(1, 0)] and same[(0, 1)] == UNIT  # euclidean panels share, cosine: unit circle
    own = shared_ranges(grid, scatter, shared=False)
    assert own[(0, 0)][0] == pytest.approx((0.5 - 0.54, 0.5 + 0.54)) and own[(1, 0)][0] == pytest.approx((-0.4, 10.4))
    assert own[(1, 1)] == UNIT


def test_a_link_to_chosen_runs_opens_them_beside_a_sweep(queue, store):
    sweep_runs(store)
    a, _ = add_run(store, 80, status="finished", margin=0.5)
    b, _ = add_run(store, 80, status="finished", margin=2.0)
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["runs"] = f"{a},{b}"  # as the page writes it for chosen runs
    at.run().switch_page("views/compare.py").run()
    assert not at.exception
    assert at.radio(key="compare.mode").value == "Chosen runs"
    assert next(m for m in at.multiselect if m.label == "Runs").value == [a, b]
    assert len(chart(at, "Loss")["data"]) == 2


def test_the_sweep_form_says_the_playground_s_steps_as_a_whole_number(queue, store):
    at = open_app()
    at.number_input(key="cfg.steps").set_value(500).run()
    at.switch_page("views/compare.py").run()
    assert any("500 steps." in c.value for c in at.caption), [c.value for c in at.caption]


@pytest.mark.parametrize("knob", ["sampler", "loss"])
@pytest.mark.parametrize("base", [DEFAULTS | {"distance": None}, DEFAULTS | {"loss": "triplet", "sampler": "batch-all",
                                                                              "distance": None, "margin": 0.5}])  # fmt: skip
def test_a_knob_s_example_values_go_with_the_playground_s_settings(knob, base):
    values = sweep.parse_values(knob, sweep_view.example(knob, base))
    assert len(sweep.expand(base, {knob: values})) == len(values) >= 2  # "semi-hard" under contrastive was refused


def test_a_setting_a_run_does_not_read_says_so_in_the_table_the_colours_and_the_parallel_axes(queue, store):
    contrastive, _ = add_run(store, 100, status="finished", margin=2.0)
    supcon, _ = add_run(store, 100, status="finished", loss="supcon", sampler="batch-all", temperature=0.2)
    differences = run_table.config_differences([store.get_run(contrastive), store.get_run(supcon)])
    assert differences["margin"].tolist() == [2.0, run_table.NOT_USED]  # SupCon's stored margin, 1, read by nothing
    assert differences["temperature"].tolist() == [run_table.NOT_USED, 0.2]
    at = open_app("compare")
    at.multiselect[0].set_value([contrastive, supcon]).run()
    at.selectbox(key="compare.colour").set_value("margin").run()
    assert not at.exception
    assert sorted(t["name"].split(" · ")[0] for t in chart(at, "Loss")["data"]) == ["margin=2", "margin=not used"]
    axes = {d["label"]: d for d in chart(at, "Settings to k-NN accuracy")["data"][0]["dimensions"]}
    assert axes["margin"]["ticktext"] == ["2", run_table.NOT_USED]
    assert axes["temperature"]["ticktext"] == ["0.2", run_table.NOT_USED]  # numbers first, in order
    shown = at.dataframe[0].value  # numbers, sorting as numbers, with None where the run does not read it
    assert shown["margin"].dtype.kind == "f" and shown["margin"].iloc[0] == 2.0 and np.isnan(shown["margin"].iloc[1])


def test_parallel_axes_order_numbers_before_names():
    import pandas as pd

    from ui import figures

    table = pd.DataFrame({"margin": [1.0, "not used", 0.25, 1.0], "k-NN": [0.8, 0.9, 0.7, 0.6]})
    margin = figures.parallel_figure(table, ["margin"], "k-NN", "k-NN").data[0].dimensions[0]
    assert list(margin.ticktext) == ["0.25", "1", "not used"]
    assert list(margin.values) == [1, 2, 0, 1]
