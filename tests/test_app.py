"""The pages, run with streamlit.testing.v1.AppTest against a temporary store.

The job queue is the real JobQueue over that store, never started: a submitted run stays
queued and no worker is spawned. Live panels are fed by writing runs, metric rows and
snapshots into the store directly, then `at.run()` (fragments run inline in AppTest).
"""

from __future__ import annotations

import base64
import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from contrast_core import data, distances, losses, models, samplers
from contrast_core.config import RunConfig
from contrast_core.store import RunStore
from ui import backend
from ui.config_form import PRESETS
from ui.run_table import selection_key

APP = str(Path(__file__).resolve().parent.parent / "app.py")
E = 60  # snapshot points in the fake runs
CLUSTER = {"rand_index": 0.8, "adjusted_rand": 0.5, "nmi": 0.6, "davies_bouldin": 1.5, "silhouette": 0.3}


def open_app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60).run()
    if page is not None:
        at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def figures_drawn(at: AppTest) -> list[dict]:
    """The Plotly figures on the page: st.plotly_chart's and the live charts' (ui.live_chart)."""
    live = [json.loads(c.proto.bytes)["figure"] for c in at.get("bidi_component")
            if c.proto.component_name == "contrast_live_chart"]  # fmt: skip
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")] + live


def charts(at: AppTest) -> dict[str, dict]:
    """Plotly chart specs by title (Streamlit may wrap a title in <b>)."""
    specs = figures_drawn(at)
    return {spec["layout"]["title"]["text"].replace("<b>", "").replace("</b>", ""): spec for spec in specs}


def chart(at: AppTest, title_start: str) -> dict:
    found = [spec for title, spec in charts(at).items() if title.startswith(title_start)]
    assert len(found) == 1, f"{title_start!r} not in {list(charts(at))}"
    return found[0]


def values(array) -> np.ndarray:
    """A Plotly data array: a list, or the {"dtype", "bdata"} typed-array form."""
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"])
    return np.asarray(array)


def next_to(at: AppTest, key: str):
    """The first element drawn after the widget with this key: in its container, else after the
    row of columns that holds it (empty slots skipped, containers opened)."""

    def kids(node):
        return [c for c in getattr(node, "children", {}).values() if getattr(c, "type", "") != "empty"]

    def holds(node):
        return getattr(node, "key", None) == key or any(holds(c) for c in kids(node))

    def first_leaf(node):
        return first_leaf(kids(node)[0]) if kids(node) else node

    def search(node):
        children = kids(node)
        for i, child in enumerate(children):
            if holds(child):
                inner = None if getattr(child, "key", None) == key else search(child)
                beside = type(child).__name__ == "Column"  # what follows a column is beside it, not under it
                if inner or beside or i + 1 == len(children):
                    return inner
                return first_leaf(children[i + 1])
        return None

    return search(at.main)


def snapshot(step: int, dim: int = 2, spread: float = 1.0, vae: bool = False) -> dict:
    rng = np.random.default_rng(step)
    labels = np.arange(E) % 10
    centres = np.stack([np.cos(labels), np.sin(labels)], axis=1) * 3  # (E, 2): one spot per class
    embeddings = np.pad(centres, ((0, 0), (0, dim - 2))) + rng.normal(size=(E, dim)) * 0.2
    arrays = {"embeddings": embeddings * spread, "labels": labels, "index": np.arange(E)}
    if step == 0:  # a run's first snapshot carries its items (8 x 8 images, as digits)
        arrays["items"] = rng.integers(0, 256, size=(E, 1, 8, 8), dtype=np.uint8)
    if dim > 2:
        arrays["pca"] = (centres + 100).astype(np.float32)  # recognisable: the page must draw it as given
    if vae:
        arrays["originals"] = rng.uniform(size=(16, 1, 8, 8))
        arrays["reconstructions"] = rng.uniform(size=(16, 1, 8, 8))
    return arrays


def add_run(store: RunStore, upto: int, status: str = "running", **config) -> tuple[str, RunConfig]:
    """A run with metric rows 1..upto and a snapshot every 50 steps, as a worker would leave it."""
    cfg = RunConfig(steps=500, **config)
    run_id = store.create_run(cfg.model_dump(mode="json"), status=status)
    advance(store, run_id, 0, upto, dim=cfg.embedding_dim, vae=cfg.model == "vae")
    return run_id, cfg


def advance(store, run_id, start, upto, dim=2, vae=False, spread=1.0):
    rows = [{"step": s, "loss": 1.0 / s, "pos_distance": 0.5, "neg_distance": 1.5, "pairs_per_second": 1234.0}
            for s in range(start + 1, upto + 1)]  # fmt: skip
    if vae:
        rows = [row | {"recon": 2.0, "kl": 0.1, "contrastive": row["loss"]} for row in rows]
    store.add_metrics(run_id, rows)
    for step in range(start - start % 50 + 50 if start else 0, upto + 1, 50):
        knn = {"knn_accuracy": 0.5 + step / 1000}
        store.add_snapshot(run_id, step, snapshot(step, dim, spread, vae), CLUSTER | knn)


# --- Playground: controls and validation ---------------------------------------------------------------


def test_playground_is_the_default_page_with_controls_from_the_registries(queue):
    at = open_app()
    assert at.selectbox(key="cfg.dataset").options == list(data.DATASETS)
    assert at.selectbox(key="cfg.model").options == list(models.MODELS)
    assert at.selectbox(key="cfg.loss").options == list(losses.LOSSES)
    assert at.selectbox(key="cfg.distance").options == list(distances.DISTANCES)
    assert at.selectbox(key="cfg.sampler").options == list(samplers.SAMPLERS)
    assert at.selectbox(key="cfg.preset").options == list(PRESETS)
    assert (at.selectbox(key="cfg.dataset").value, at.selectbox(key="cfg.loss").value) == ("digits", "contrastive")
    assert not button(at, "Train").disabled
    assert button(at, "Stop").disabled
    assert not at.error


def test_the_loss_chart_is_on_the_page_before_the_first_run(queue):
    """Drawn before the click, the chart library is loaded by then: the first loss point shows sooner."""
    spec = chart(open_app(), "Loss")
    assert spec["layout"]["xaxis"]["range"] == [0, 2000]  # the default run's length
    assert not spec["data"] and "press Train" in spec["layout"]["annotations"][0]["text"]


def test_sidebar_shows_device_queue_and_docs_link(queue, store):
    add_run(store, 10)
    store.heartbeat(f"{os.getpid()}@{socket.gethostname()}", os.getpid(), device="test-device")
    at = open_app()
    sidebar = [m.value for m in at.sidebar.markdown] + [c.value for c in at.sidebar.caption]
    assert any("test-device" in text for text in sidebar)  # what the workers' heartbeats report
    assert any("1 running · 0 queued" in text for text in sidebar)
    assert not any("1 workers" in text for text in sidebar)  # "1 worker"
    assert [link.proto.label for link in at.sidebar.get("page_link")] == ["Docs"]
    at.switch_page("views/docs.py").run()
    assert not at.exception
    readme = (Path(APP).parent / "README.md").read_text()
    shown = "".join(m.value for m in at.main.markdown)
    assert shown.startswith("# Contrast Lab") and "What the formulas are" in shown and shown == readme.strip()


def test_a_new_loss_brings_a_sampler_that_feeds_it_and_says_so(queue):
    at = open_app()
    at.selectbox(key="cfg.loss").set_value("nt-xent").run()
    assert (at.selectbox(key="cfg.sampler").value, at.slider(key="cfg.augment").value) == ("augmented-views", 0.5)
    assert [t.value for t in at.toast] == [
        "Sampler: random-pairs cannot feed the nt-xent loss, so it is augmented-views now, with augmentation 0.5."
    ]
    assert not at.error and not button(at, "Train").disabled
    at.selectbox(key="cfg.loss").set_value("triplet").run()
    assert at.selectbox(key="cfg.sampler").value == "semi-hard" and not at.error
    at.selectbox(key="cfg.loss").set_value("contrastive").run()  # back: the sampler it had before the detour
    assert (at.selectbox(key="cfg.sampler").value, at.slider(key="cfg.augment").value) == ("random-pairs", 0.0)
    assert at.toast[-1].value == "Sampler: back to random-pairs."
    at.selectbox(key="cfg.loss").set_value("triplet").run()
    at.selectbox(key="cfg.sampler").set_value("batch-hard").run()  # chosen by hand: kept from now on
    at.selectbox(key="cfg.loss").set_value("contrastive").run()
    assert at.selectbox(key="cfg.sampler").value == "batch-hard"


def test_a_chosen_distance_comes_back_after_a_loss_that_ignores_it(queue):
    at = open_app()
    at.selectbox(key="cfg.distance").set_value("squared-euclidean").run()
    at.selectbox(key="cfg.loss").set_value("cosine-embedding").run()
    assert at.selectbox(key="cfg.distance").disabled
    at.selectbox(key="cfg.loss").set_value("contrastive").run()
    assert at.selectbox(key="cfg.distance").value == "squared-euclidean"  # was: cosine, the detour's
    assert at.slider(key="cfg.margin").value == 1.0


def test_invalid_combination_shows_its_message_under_the_control(queue):
    at = open_app()
    at.selectbox(key="cfg.sampler").set_value("semi-hard").run()
    message = next_to(at, "cfg.sampler")
    assert type(message).__name__ == "Error"
    assert "cannot feed the 'contrastive' loss" in message.value
    assert button(at, "Train").disabled
    at.selectbox(key="cfg.sampler").set_value("augmented-views").run()
    message = next_to(at, "cfg.augment")
    assert type(message).__name__ == "Error" and "augment > 0" in message.value
    at.slider(key="cfg.augment").set_value(0.5).run()
    assert not at.error
    assert not button(at, "Train").disabled


@pytest.mark.parametrize("preset", list(PRESETS))
def test_each_preset_sets_a_valid_recipe(queue, preset):
    at = open_app()
    at.selectbox(key="cfg.preset").set_value(preset).run()
    assert not at.error and not at.exception
    for field, value in PRESETS[preset].items():
        assert at.session_state[f"cfg.{field}"] == value, field
    button(at, "Train").click().run()
    run = queue.store.list_runs()[0]
    assert RunConfig(**run.config) == RunConfig(**PRESETS[preset])


def test_advanced_device_and_precision_reach_the_run(queue):
    at = open_app()
    assert at.selectbox(key="cfg.device").options == ["auto", "cpu", "cuda", "mps"]
    assert at.selectbox(key="cfg.precision").options == ["float32", "bfloat16"]
    at.selectbox(key="cfg.device").set_value("cpu").run()
    at.selectbox(key="cfg.precision").set_value("bfloat16").run()
    button(at, "Train").click().run()
    run = queue.store.list_runs()[0]
    assert (run.config["device"], run.config["precision"]) == ("cpu", "bfloat16")


def test_margin_slider_follows_the_metric(queue):
    at = open_app()
    margin = at.slider(key="cfg.margin")
    assert (margin.min, margin.max, margin.value) == (0.0, 5.0, 1.0)  # euclidean: unbounded, 5 is plenty
    assert "squared-euclidean 1, cosine 0.5" in next_to(at, "cfg.margin").value  # d_cos = d^2 / 2
    at.selectbox(key="cfg.distance").set_value("cosine").run()
    margin = at.slider(key="cfg.margin")
    assert (margin.min, margin.max, margin.value) == (0.0, 2.0, 0.5)  # same meaning on unit vectors
    assert "euclidean 1, squared-euclidean 1" in next_to(at, "cfg.margin").value
    at.selectbox(key="cfg.loss").set_value("cosine-embedding").run()
    margin = at.slider(key="cfg.margin")
    assert (margin.min, margin.max, margin.value) == (-1.0, 1.0, 0.5)  # similarity 1 - 0.5
    assert at.selectbox(key="cfg.distance").disabled


# --- Playground: Train / Stop and the run id of the tab ------------------------------------------------


def test_train_queues_the_form_config_and_stop_cancels_it(queue, store):
    at = open_app()
    at.number_input(key="cfg.steps").set_value(300).run()
    button(at, "Train").click().run()
    run_id = at.session_state["playground_run"]
    run = store.get_run(run_id)
    assert (run.status, run.config["steps"]) == ("queued", 300)
    assert button(at, "Train").disabled and not button(at, "Stop").disabled
    assert "queued" in at.get("progress")[0].proto.text
    button(at, "Stop").click().run()
    assert store.get_run(run_id).status == "cancelled"
    assert not button(at, "Train").disabled


def test_the_tab_keeps_its_run_and_form_across_page_switches(queue, store):
    at = open_app()
    at.number_input(key="cfg.steps").set_value(700).run()
    button(at, "Train").click().run()
    run_id = at.session_state["playground_run"]
    for page in ("runs", "compare", "explore", "playground"):
        at.switch_page(f"views/{page}.py").run()
        assert not at.exception, page
    assert at.session_state["playground_run"] == run_id
    assert at.number_input(key="cfg.steps").value == 700
    assert "step 0 / 700" in at.get("progress")[0].proto.text


# --- Playground: live panels -------------------------------------------------------------------------


def watch(store: RunStore, run_id: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["playground_run"] = run_id
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_live_panels_draw_what_the_run_wrote_and_follow_it(queue, store):
    run_id, _ = add_run(store, 100)
    at = watch(store, run_id)
    loss = chart(at, "Loss")
    assert loss["layout"]["xaxis"]["range"] == [0, 500]  # fixed while the curve grows
    raw, smooth = loss["data"]
    assert values(raw["x"])[-1] == 100 and values(raw["y"])[-1] == pytest.approx(1 / 100)
    scatter = chart(at, "Embedding (2-D, step 100)")
    classes = [t for t in scatter["data"] if t["type"] == "scatter" and t["name"] != "anchor"]
    assert [t["name"] for t in classes] == [str(c) for c in range(10)]
    assert sum(len(values(t["x"])) for t in classes) == E
    circle = next(s for s in scatter["layout"]["shapes"] if s["type"] == "circle")
    assert circle["x1"] - circle["x0"] == pytest.approx(2 * 1.0)  # radius = the euclidean margin
    pairs = chart(at, "Held-out pair distances")
    assert any(s["type"] == "line" and s["x0"] == 1.0 for s in pairs["layout"]["shapes"])
    assert any("of negative held-out pairs are closer than the margin" in c.value for c in at.caption)
    knn = next(m for m in at.metric if m.label == "k-NN acc.")
    assert (knn.value, knn.delta) == ("0.600", "+0.050")  # steps 50 -> 100: 0.55 -> 0.60
    ari = next(m for m in at.metric if m.label == "ARI")  # the same at both snapshots: no "↑ +0.000"
    assert ari.delta in (None, "")
    assert knn.help.startswith("k-NN accuracy: ")  # the whole name, where the tile has room for it
    assert max(len(m.label) for m in at.metric) <= len("Precision@1")  # the longest that shows whole in a tile
    # Row by row, a tile with a change line beside one without: in two stacked columns the rows drifted apart.
    tiles_in = [[e for e in column.children.values() if e.type == "metric"] for column in at.columns]
    assert sorted(len(tiles) for tiles in tiles_in if tiles) == [1] * len(at.metric)
    assert "step 100 / 500" in at.get("progress")[0].proto.text

    advance(store, run_id, 100, 250)
    store.set_status(run_id, "finished")
    at.run()
    assert values(chart(at, "Loss")["data"][0]["x"])[-1] == 250  # only the new rows were read
    assert chart(at, "Embedding (2-D, step 250)")
    assert at.session_state["live_view"].last_step == 250
    assert not button(at, "Train").disabled and button(at, "Stop").disabled


def test_live_scatter_of_a_wide_embedding_is_the_stored_pca(queue, store):
    run_id, _ = add_run(store, 60, embedding_dim=16)
    at = watch(store, run_id)
    scatter = chart(at, "PCA of the 16-D embedding, step 50")
    xs = np.concatenate([values(t["x"]) for t in scatter["data"]])
    assert xs.min() > 90  # the snapshot's "pca" array (offset by 100), not a new projection
    assert not any(s["type"] == "circle" for s in scatter["layout"].get("shapes", []))


def test_vae_run_shows_each_loss_term_and_reconstructions(queue, store):
    run_id, _ = add_run(store, 60, model="vae")
    at = watch(store, run_id)
    names = [t["name"] for t in chart(at, "Loss")["data"] if not t["name"].endswith("(raw)")]
    assert names == ["loss", "recon", "kl", "contrastive"]
    (grid,) = at.image
    assert "reconstructions (bottom), step 50" in grid.captions[0]


def test_warnings_for_collapse_and_divergence(queue, store):
    run_id, _ = add_run(store, 60)
    store.add_snapshot(run_id, 60, snapshot(60, spread=0.0), CLUSTER)
    store.set_status(run_id, "failed", error="diverged at step 61")
    at = watch(store, run_id)
    warnings = " ".join(w.value for w in at.warning)
    assert "Embedding collapse" in warnings and "diverged" in warnings
    assert "Run failed: diverged at step 61" in at.error[0].value


def test_paused_view_shows_thumbnails_on_hover(queue, store):
    run_id, _ = add_run(store, 60)
    at = watch(store, run_id)
    assert "text" not in chart(at, "Embedding")["data"][0]  # refreshing: no thumbnails
    at.toggle(key="live.paused").set_value(True).run()
    text = chart(at, "Embedding")["data"][0]["text"]
    assert len(text) == 6 and "█" in text[0]  # class 0 holds 6 of the 60 points; digits drawn in blocks


# --- the other pages -------------------------------------------------------------------------------


def test_runs_page_lists_runs_and_deletes_and_resumes(queue, store):
    finished, _ = add_run(store, 50, status="finished")
    cancelled, _ = add_run(store, 50, status="cancelled")
    at = open_app("runs")
    table = at.dataframe[0].value
    assert set(table["id"]) == {finished, cancelled}
    assert set(table["status"]) == {"finished", "cancelled"}
    at.session_state[selection_key(store.list_runs())] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    at.run()
    button(at, "Resume").click().run()
    assert store.get_run(cancelled).status == "queued"
    at.session_state[selection_key(store.list_runs())] = {"selection": {"rows": [1], "columns": [], "cells": []}}
    at.run()
    button(at, "Delete").click().run()
    button(at, "Delete for good").click().run()  # Delete asks first
    assert [run.id for run in store.list_runs()] == [cancelled]


def test_compare_overlays_losses_and_tabulates_differences(queue, store):
    add_run(store, 80, status="finished", margin=0.5)
    add_run(store, 80, status="finished", margin=2.0)
    at = open_app("compare")
    assert len(chart(at, "Loss")["data"]) == 2
    table = at.dataframe[0].value
    assert list(table["margin"]) == [2.0, 0.5]  # only the differing setting, newest run first
    assert "loss" not in table


def test_explore_shows_a_frozen_snapshot_with_selection(queue, store):
    run_id, _ = add_run(store, 100, status="finished")
    at = open_app("explore")
    assert at.select_slider[0].options == ["0", "50", "100"]
    at.select_slider[0].set_value(50).run()
    spec = chart(at, "Step 50: the 2-D embedding")
    # No dragmode forced to "select": Streamlit then turns a click into nothing; its own default lets a
    # click pick one point, and the chart's box and lasso tools pick many.
    assert "dragmode" not in spec["layout"]
    (proto,) = [c.proto for c in at.get("plotly_chart") if json.loads(c.proto.spec) == spec]
    assert set(proto.selection_mode) == {0, 1, 2}  # points, box, lasso
    assert not at.exception


def test_pages_without_runs_say_what_to_do(queue):
    expected = {"compare": "Compare needs at least two runs", "explore": "No snapshots yet", "runs": "No runs yet"}
    for page, words in expected.items():
        at = open_app(page)
        assert [i.value for i in at.main.info if words in i.value], (page, [i.value for i in at.info])
        assert "Playground" in next(i.value for i in at.main.info if words in i.value), page


class FakeProjector:
    """LiveProjector's interface: the newest finished layout, or None while the first is computing."""

    def __init__(self, done):
        self.done, self.asked = done, []

    def get(self, run_id, step, embeddings, method="umap"):
        self.asked.append((run_id, step, method))
        return self.done

    def waiting(self, run_id, method="umap"):
        return 1.0

    def compiling(self, method="umap"):
        return False

    def error(self, run_id, method="umap"):
        return None


def test_live_umap_comes_from_the_background_projector(queue, store, monkeypatch):
    run_id, _ = add_run(store, 120, embedding_dim=8)
    projector = FakeProjector(None)
    monkeypatch.setattr(backend, "projector", lambda: projector)
    at = watch(store, run_id)
    at.segmented_control(key="live.projection").set_value("UMAP").run()
    assert chart(at, "PCA of the 8-D embedding, step 100")  # never waits for it
    projector.done = (50, np.full((E, 2), 7.0))
    at.run()
    scatter = chart(at, "UMAP of the 8-D embedding, step 50")
    assert np.concatenate([values(t["x"]) for t in scatter["data"]]) == pytest.approx(7.0)
    assert projector.asked[-1] == (run_id, 100, "umap")


def test_explore_uses_the_stored_pca_of_a_wide_embedding(queue, store):
    add_run(store, 100, status="finished", embedding_dim=8)
    at = open_app("explore")
    xs = np.concatenate([values(t["x"]) for t in chart(at, "Step 100: PCA of the 8-D embedding")["data"]])
    assert xs.min() > 90  # the snapshot's "pca" array: aligned with the run's other snapshots
    assert at.segmented_control[0].options == ["PCA", "t-SNE", "UMAP"]


def test_cosine_runs_are_drawn_on_the_unit_circle(queue, store):
    run_id, _ = add_run(store, 60, loss="nt-xent", sampler="augmented-views", augment=0.5, distance="cosine")
    at = watch(store, run_id)
    scatter = chart(at, "Embedding (2-D, normalised, step 50)")
    xy = np.stack([np.concatenate([values(t[axis]) for t in scatter["data"]]) for axis in "xy"], axis=1)
    assert np.allclose(np.linalg.norm(xy, axis=1), 1, atol=1e-3)  # unit vectors, not the raw lengths (about 3)


def test_a_wide_cosine_run_s_title_fits_and_its_caption_says_the_points_are_on_the_unit_sphere(queue, store):
    run_id, _ = add_run(store, 60, loss="nt-xent", sampler="augmented-views", augment=0.5, embedding_dim=16)
    at = watch(store, run_id)
    assert chart(at, "PCA of the 16-D embedding, step 50")  # "... on the unit sphere, step 50" was cut off
    assert any("on the unit sphere (scaled to length 1)" in c.value for c in at.caption)


def test_a_link_with_a_run_id_opens_that_run(queue, store):
    run_id, _ = add_run(store, 60, status="finished")
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = run_id
    at.run()
    assert "**finished** · step 60 / 500" in at.get("progress")[0].proto.text
    assert chart(at, "Embedding (2-D, step 50)")


# --- the tab's run: in the URL, in the form, and what each button says ------------------------------------


def switch_as_the_sidebar_does(at: AppTest, page: str) -> AppTest:
    """A click in the page menu: st.navigation drops the URL's query parameters on a page switch."""
    at.query_params.clear()
    at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_the_url_names_the_tab_s_run_from_train_on_and_on_every_page(queue, store):
    at = open_app()
    assert "run" not in at.query_params
    button(at, "Train").click().run()
    run_id = at.session_state["playground_run"]
    assert at.query_params["run"] == run_id  # in the same run as the click
    for page in ("runs", "compare", "explore", "playground"):
        switch_as_the_sidebar_does(at, page)
        assert at.query_params.get("run") == run_id, page  # F5 on any page finds it again


def test_after_a_delete_no_run_is_left_chosen_in_the_rows_the_deleted_ones_held(queue, store):
    ids = [add_run(store, 50, status="finished")[0] for _ in range(3)]
    at = open_app("runs")
    at.session_state[selection_key(store.list_runs())] = {"selection": {"rows": [0, 1], "columns": [], "cells": []}}
    at.run()
    button(at, "Delete").click().run()
    button(at, "Delete for good").click().run()
    assert [run.id for run in store.list_runs()] == [ids[0]]  # the two newest went
    assert button(at, "Delete").disabled and button(at, "Watch in Playground").disabled  # nothing chosen now


def test_watch_in_playground_puts_the_run_in_the_url_and_its_config_in_the_form(queue, store):
    run_id, _ = add_run(store, 60, status="finished", margin=2.0, embedding_dim=8)
    at = open_app("runs")
    at.session_state[selection_key(store.list_runs())] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    at.run()
    button(at, "Watch in Playground").click().run()
    assert at.query_params["run"] == run_id
    assert at.number_input(key="cfg.steps").value == 500  # not the default 2000
    assert at.slider(key="cfg.margin").value == 2.0
    assert at.select_slider(key="cfg.embedding_dim").value == 8
    assert at.selectbox(key="cfg.preset").value is None  # "Custom": no recipe has these values


def test_a_link_shows_the_run_s_config_and_new_run_goes_back_to_the_recipe(queue, store):
    run_id, _ = add_run(store, 60, status="finished", loss="triplet", sampler="semi-hard", margin=0.5, m_per_class=8)
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = run_id
    at.run()
    assert (at.selectbox(key="cfg.loss").value, at.number_input(key="cfg.steps").value) == ("triplet", 500)
    button(at, "New run").click().run()
    assert "run" not in at.query_params and at.session_state["playground_run"] is None
    assert (at.selectbox(key="cfg.loss").value, at.number_input(key="cfg.steps").value) == ("contrastive", 2000)
    assert at.selectbox(key="cfg.preset").value == next(iter(PRESETS))
    assert "Press **Train**" in at.main.markdown[-1].value
    assert not button(at, "Train").disabled and button(at, "New run").disabled


def test_recipe_reads_custom_once_a_control_differs(queue):
    at = open_app()
    assert at.selectbox(key="cfg.preset").value == next(iter(PRESETS))
    at.slider(key="cfg.margin").set_value(2.0).run()
    recipe = at.selectbox(key="cfg.preset")
    assert recipe.value is None and "Custom" in recipe.proto.placeholder
    at.slider(key="cfg.margin").set_value(1.0).run()
    assert at.selectbox(key="cfg.preset").value == next(iter(PRESETS))


@pytest.mark.parametrize("field, limit", [("steps", "1,000,000"), ("seed", "2,147,483,647"), ("eval_size", "20,000")])
def test_whole_numbers_over_the_limit_are_refused_with_the_limit(queue, field, limit):
    at = open_app()
    at.number_input(key=f"cfg.{field}").set_value(1e10).run()  # what the browser sends for "1e10" (a float input)
    assert at.number_input(key=f"cfg.{field}").value == 1e10  # kept as typed, not clamped or reset in silence
    assert [e.value for e in at.error] == [f"{field}: at most {limit}"]  # under its control
    assert button(at, "Train").disabled
    at.number_input(key=f"cfg.{field}").set_value(12.5).run()
    assert [e.value for e in at.error] == [f"{field}: a whole number"]


def test_a_named_run_is_told_apart_in_the_pickers(queue, store):
    add_run(store, 60, status="finished")
    at = open_app()
    at.text_input(key="playground.name").input("wide margin").run()
    button(at, "Train").click().run()
    run = store.get_run(at.session_state["playground_run"])
    assert run.name == "wide margin"
    switch_as_the_sidebar_does(at, "compare")
    labels = at.multiselect[0].options
    assert labels[0].startswith("wide margin · contrastive") and all(len(label) < 50 for label in labels)
    assert list(at.dataframe[0].value["run"]) == ["wide margin", labels[1].split(" · ")[0]]


def test_stop_says_stopping_until_the_run_has_stopped(queue, store):
    run_id, _ = add_run(store, 100)
    at = watch(store, run_id)
    button(at, "Stop").click().run()
    assert store.get_run(run_id).cancel_requested
    stopping = button(at, "Stopping…")
    assert stopping.disabled and "Stopping" in at.info[0].value
    store.set_status(run_id, "cancelled")  # the worker stops at its next step
    at.run()
    assert [t.value for t in at.toast] == [f"Run {run_id} cancelled at step 100."]
    assert button(at, "Stop").disabled and not button(at, "Train").disabled


def test_a_run_that_is_gone_or_never_was_is_named(queue, store):
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = "20990101-000000-abcdef"
    at.run()
    assert "Run 20990101-000000-abcdef not found" in at.warning[0].value
    run_id, _ = add_run(store, 60, status="finished")
    at = watch(store, run_id)
    store.delete_run(run_id)  # from another tab
    at.run()
    assert at.warning[0].value == f"Run {run_id} was deleted."


def test_a_link_with_settings_fills_the_form_and_the_form_keeps_its_link(queue, store):
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params.update({"loss": "triplet", "sampler": "semi-hard", "margin": "0.3", "steps": "500"})
    at.run()
    assert not at.exception and not at.warning
    assert (at.selectbox(key="cfg.loss").value, at.selectbox(key="cfg.sampler").value) == ("triplet", "semi-hard")
    assert at.slider(key="cfg.margin").value == pytest.approx(0.3) and at.number_input(key="cfg.steps").value == 500
    button(at, "Train").click().run()
    config = store.list_runs()[0].config
    assert (config["loss"], config["sampler"], config["margin"], config["steps"]) == ("triplet", "semi-hard", 0.3, 500)


def test_a_link_to_nt_xent_on_augmented_views_opens_the_recipe_that_takes_them(queue):
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params.update({"loss": "nt-xent", "sampler": "augmented-views"})
    at.run()
    assert not at.exception and not at.warning  # was: "link: its settings do not go together"
    assert at.selectbox(key="cfg.preset").value == "SimCLR-style NT-Xent"
    assert (at.selectbox(key="cfg.loss").value, at.selectbox(key="cfg.sampler").value) == ("nt-xent", "augmented-views")


def test_a_link_s_bad_setting_is_named_and_the_rest_kept(queue):
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params.update({"margin": "abc", "steps": "300", "colour": "red"})
    at.run()
    assert [w.value for w in at.warning] == ["margin: not a number (from the link; the recipe's value is used)"]
    assert at.number_input(key="cfg.steps").value == 300 and at.slider(key="cfg.margin").value == 1.0


def test_the_form_s_settings_are_in_the_address_while_no_run_is_watched(queue):
    at = open_app()
    at.slider(key="cfg.margin").set_value(2.0).run()
    at.number_input(key="cfg.steps").set_value(700).run()
    params = {k: (v[0] if isinstance(v, list) else v) for k, v in at.query_params.items()}
    assert params == {"margin": "2", "steps": "700"}  # what differs from the recipe, nothing else
    at.slider(key="cfg.margin").set_value(1.0).run()
    assert "margin" not in at.query_params


def test_the_app_as_make_run_starts_it_watches_no_files():
    """With the virtual environment inside the project, Streamlit's file watcher kept a core busy for as
    long as a tab was open (10 CPU-s in 10 s, measured with a tab idle on the Playground)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    ask = "from streamlit import config; print(config.get_option('server.fileWatcherType'))"
    found = subprocess.run([sys.executable, "-c", ask], cwd=root, capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "none"
    assert "fileWatcherType" not in (root / "Makefile").read_text() + (root / "Dockerfile").read_text()
