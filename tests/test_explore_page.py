"""The Explore page: the timeline over a run's snapshots, its link, and the forces drawn on the embedding."""

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest
from test_app import APP, E, add_run, chart, open_app, values

from contrast_core.projection import in_plane
from ui import backend, figures


def open_link(**params) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    for key, value in params.items():
        at.query_params[key] = value
    at.run().switch_page("views/explore.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def vae_run_with_a_decoder(store) -> tuple[str, dict]:
    """A finished 2-D VAE run whose step-100 snapshot holds a (random) decoder; (run id, its arrays before)."""
    from contrast_core.models import VAE

    run_id, _ = add_run(store, 100, status="finished", model="vae")
    arrays = dict(store.load_snapshot(run_id, 100))
    decoder = VAE((1, 8, 8), 2).decoder
    store.add_snapshot(run_id, 100, arrays | {f"decoder.{k}": v.numpy() for k, v in decoder.state_dict().items()})
    return run_id, arrays


def with_forces(store, run_id, step):
    """Rewrites a snapshot with forces: item 0 pushed along +x by 2, item 1 in the batch but untouched."""
    arrays = dict(store.load_snapshot(run_id, step))
    force = np.zeros_like(arrays["embeddings"])
    force[0] = [2.0, 0.0]
    force[2] = [0.0, -1.0]
    drawn = np.zeros(len(force), dtype=bool)
    drawn[:3] = True
    store.add_snapshot(run_id, step, arrays | {"forces": force, "force_drawn": drawn}, {})
    return arrays["embeddings"]


def test_a_link_opens_the_run_at_its_step_and_a_bad_step_is_named(queue, store):
    run_id, _ = add_run(store, 100, status="finished")
    assert chart(open_link(run=run_id, step="50"), "Step 50: the 2-D embedding")
    at = open_link(run=run_id, step="70")
    assert any("step: run" in w.value and "no snapshot at step '70'" in w.value for w in at.warning)
    assert chart(at, "Step 100")  # the last one instead
    assert at.query_params["step"] in ("100", ["100"])  # the link follows the view


def test_play_steps_through_the_snapshots(queue, store):
    add_run(store, 100, status="finished")
    at = open_app("explore")
    assert chart(at, "Step 100")
    at.toggle(key="explore.play").set_value(True).run()  # from the last snapshot it starts over
    assert chart(at, "Step 0")
    at.run()  # a tick
    assert chart(at, "Step 50")
    at.run()
    assert chart(at, "Step 100")
    at.toggle(key="explore.play").set_value(False).run()  # stopped: the step stays
    at.run()
    assert chart(at, "Step 100")


def test_forces_are_arrows_from_each_point_scaled_together(queue, store):
    run_id, _ = add_run(store, 100, status="finished")
    embeddings = with_forces(store, run_id, 100)
    at = open_app("explore")
    assert at.toggle(key="explore.forces").value is False
    at.toggle(key="explore.forces").set_value(True).run()
    spec = chart(at, "Step 100")
    arrows = next(t for t in spec["data"] if t["name"] == "force" and t["mode"] == "lines")
    x, y = values(arrows["x"]).astype(float), values(arrows["y"]).astype(float)
    segments = np.stack([x, y], 1).reshape(-1, 3, 2)[:, :2]  # (start, end) per arrow; then a gap
    assert len(segments) == 2  # items 0 and 2 move; item 1 is a ring
    span = np.ptp(embeddings, axis=0).max()
    start, end = segments[0]
    assert start == pytest.approx(embeddings[0], abs=1e-5)
    assert end - start == pytest.approx([figures.ARROW_SHARE * span, 0.0], abs=1e-5)  # the longest: +x
    assert segments[1][1] - segments[1][0] == pytest.approx([0.0, -figures.ARROW_SHARE * span / 2], abs=1e-5)
    ring = next(t for t in spec["data"] if t["name"] == "in the batch, no force")
    assert values(ring["x"]) == pytest.approx([embeddings[1, 0]])
    assert any("3 items in the batch, 1 of them untouched" in c.value for c in at.caption)


def test_snapshots_without_forces_say_so_and_draw_none(queue, store):
    add_run(store, 100, status="finished")
    at = open_app("explore")
    assert at.toggle(key="explore.forces").disabled
    assert not [t for t in chart(at, "Step 100")["data"] if t.get("name") == "force"]


def test_in_plane_keeps_a_2d_embedding_s_forces():
    xy = np.random.default_rng(0).normal(size=(E, 2))
    f = np.ones((E, 2))
    assert in_plane(f, xy, xy) is f


def mined_run(store):
    from test_app import snapshot

    from contrast_core.config import RunConfig

    run_id = store.create_run(RunConfig(steps=100).model_dump(mode="json"), status="finished")
    store.add_metrics(
        run_id, [{"step": s, "loss": 1 / s, "mined": 100.0, "active_share": 1 - s / 100} for s in range(1, 101)]
    )
    for step in (0, 50, 100):
        store.add_snapshot(run_id, step, snapshot(step), {"knn_accuracy": 0.5})
    return run_id


def test_the_miner_s_findings_are_drawn_on_explore_at_the_step_shown(queue, store):
    run_id = mined_run(store)
    at = open_link(run=run_id, step="50")
    spec = chart(at, "What the miner found")
    names = [t["name"] for t in spec["data"]]
    assert names == ["terms that cost loss", "mined (right axis)"]
    assert values(spec["data"][1]["y"]).tolist() == [100.0] * 100
    assert [s["x0"] for s in spec["layout"]["shapes"]] == [50]  # the snapshot shown


def test_the_miner_s_findings_are_drawn_live_on_the_playground(queue, store):
    from test_app import watch

    spec = chart(watch(store, mined_run(store)), "What the miner found")
    active = values(spec["data"][0]["y"])
    assert active[0] == pytest.approx(0.99) and active[-1] < active[0]  # smoothed, falling as the rows do


def test_an_item_s_neighbours_hardest_negatives_and_far_positives(queue, store):
    run_id, _ = add_run(store, 100, status="finished")
    at = open_app("explore")
    at.number_input(key="explore.item").set_value(3).run()
    assert not at.exception
    captions = [c.value for c in at.caption]
    assert "Nearest items" in captions and "Hardest negatives: the closest items of another class" in captions
    assert any(c.startswith("Positives beyond the margin (") for c in captions)
    assert any("items of other classes lie inside the margin (1)" in c for c in captions)
    assert "Positives beyond the margin (0 in all), farthest first" in captions  # tight spots of radius ~0.3
    images = at.get("image")
    assert len(images) == 3  # the item, the nearest, the hardest negatives (digits: images)
    nearest = [img.caption for img in images[1].proto.imgs]
    assert [c.startswith("3 · ") for c in nearest] == [True] * 5 + [False] * 3  # its 5 classmates, then others
    assert all("(other)" in c for c in nearest[5:])
    negatives = [img.caption for img in images[2].proto.imgs]
    assert len(negatives) == 8 and all("(other)" in c for c in negatives)


def test_the_chosen_item_and_its_neighbours_are_marked_on_the_scatter(queue, store):
    run_id, _ = add_run(store, 100, status="finished")
    xy = store.load_snapshot(run_id, 100)["embeddings"]  # 2-D, euclidean: drawn as it is
    labels = store.load_snapshot(run_id, 100)["labels"]
    at = open_app("explore")
    assert not {"item 3", "nearest items"} & {t.get("name") for t in chart(at, "Step 100")["data"]}
    at.number_input(key="explore.item").set_value(3).run()
    marks = {t["name"]: t for t in chart(at, "Step 100")["data"] if t.get("name") in
             ("item 3", "nearest items", "hardest negatives")}  # fmt: skip
    assert list(values(marks["item 3"]["x"])) == [xy[3, 0]]
    d = np.sqrt(((xy - xy[3]) ** 2).sum(axis=1))  # by hand: euclidean distance to item 3
    d[3] = np.inf
    nearest = np.argsort(d, kind="stable")[:8]
    assert np.allclose(values(marks["nearest items"]["x"]), xy[nearest, 0])
    assert np.allclose(values(marks["nearest items"]["y"]), xy[nearest, 1])
    others = np.flatnonzero(labels != labels[3])
    hardest = others[np.argsort(d[others], kind="stable")[:8]]
    assert np.allclose(values(marks["hardest negatives"]["x"]), xy[hardest, 0])
    at.run()  # the choice outlives the chart's redraw (it is kept in the session, not in the chart)
    assert "item 3" in {t.get("name") for t in chart(at, "Step 100")["data"]}
    at.select_slider(key="explore.step").set_value(50).run()  # and follows the timeline: the same item at step 50
    xy50 = store.load_snapshot(run_id, 50)["embeddings"]
    assert list(values([t for t in chart(at, "Step 50")["data"] if t.get("name") == "item 3"][0]["x"])) == [xy50[3, 0]]


def test_a_click_a_box_and_a_click_on_empty_latent_space_are_told_apart():
    grid = figures.LATENT_POINT
    assert figures.picked([{"customdata": 7, "x": 0.1, "y": 0.2}]) == ([7], None)
    box = [
        {"customdata": 9},
        {"customdata": 2},
        {"customdata": 9},
        {"x": 1.0, "y": 1.0},
        {"customdata": grid, "x": 0, "y": 0},
    ]
    assert figures.picked(box) == ([2, 9], None)  # items once each; marks and the grid are not items
    assert figures.picked([{"customdata": grid, "x": -0.5, "y": 2.0}]) == ([], (-0.5, 2.0))
    assert figures.picked([{"customdata": grid, "x": 0, "y": 0}, {"customdata": grid, "x": 1, "y": 1}]) == ([], None)
    assert figures.picked([]) == ([], None)  # a double click: nothing chosen


def test_a_2d_vae_latent_can_be_clicked_anywhere_to_decode(queue, store):
    run_id, arrays = vae_run_with_a_decoder(store)
    at = open_link(run=run_id, step="100")
    data = chart(at, "Step 100")["data"]
    grid = data[0]  # beneath the items
    assert set(values(grid["customdata"])) == {figures.LATENT_POINT} and len(values(grid["x"])) == 40 * 40
    mu = arrays["embeddings"]
    span = mu.max(axis=0) - mu.min(axis=0)
    assert values(grid["x"]).min() == pytest.approx(mu[:, 0].min() - 0.1 * span[0])  # the means, a tenth spare
    assert values(grid["y"]).max() == pytest.approx(mu[:, 1].max() + 0.1 * span[1])
    (decoded,) = [t for t in data if t.get("name") == "decoded"]
    assert decoded["x"] == [at.slider(key="explore.z1").value] and decoded["y"] == [at.slider(key="explore.z2").value]
    at.slider(key="explore.z1").set_value(float(mu[:, 0].min())).run()
    (decoded,) = [t for t in chart(at, "Step 100")["data"] if t.get("name") == "decoded"]
    assert decoded["x"] == [pytest.approx(float(mu[:, 0].min()))]  # the cross follows the sliders
    at = open_link(run=run_id, step="50")  # no decoder in that snapshot: nothing to click for
    assert "latent space" not in {t.get("name") for t in chart(at, "Step 50")["data"]}


def test_the_snapshot_shown_downloads_as_projector_files(queue, store):
    run_id, _ = add_run(store, 100, status="finished")
    at = open_link(run=run_id, step="50")
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == ["tensors.tsv", "metadata.tsv"]  # their contents: tests/test_export.py


def test_a_vae_run_shows_its_reconstructions_and_latent_map_at_the_step_shown(queue, store):
    run_id, _ = add_run(store, 100, status="finished", model="vae")
    arrays = dict(store.load_snapshot(run_id, 50))
    grid = np.random.default_rng(0).uniform(size=(9, 1, 8, 8))
    store.add_snapshot(run_id, 50, arrays | {"latent_grid": grid, "latent_axes": np.array([[-1, 0, 1], [-2, 0, 2]])})
    at = open_link(run=run_id, step="50")
    captions = [img.caption for element in at.get("image") for img in element.proto.imgs]
    assert "Held-out items (top) and their reconstructions (bottom) at step 50" in captions
    assert any(c.startswith("The 2-D latent space decoded at step 50: z1 from -1 to 1") for c in captions)
    at = open_link(run=run_id, step="100")  # that snapshot has no map: reconstructions only
    captions = [img.caption for element in at.get("image") for img in element.proto.imgs]
    assert captions == ["Held-out items (top) and their reconstructions (bottom) at step 100"]


def test_density_contours_are_drawn_per_class(queue, store):
    add_run(store, 100, status="finished")
    at = open_app("explore")
    at.toggle(key="explore.density").set_value(True).run()
    contours = [t for t in chart(at, "Step 100")["data"] if t["type"] == "histogram2dcontour"]
    assert [t["name"] for t in contours] == [f"{c} density" for c in range(10)]  # 6 points a class: each drawn
    assert all(t["contours"]["coloring"] == "none" for t in contours)


def test_a_vae_snapshot_offers_latent_decoding_and_interpolation(queue, store):
    """The decoding itself (the snapshot's decoder, rebuilt): tests/test_train.py."""
    run_id, _ = vae_run_with_a_decoder(store)
    at = open_link(run=run_id, step="100")
    at.number_input(key="explore.from").set_value(2).run()
    at.number_input(key="explore.to").set_value(5).run()
    captions = [img.caption for element in at.get("image") for img in element.proto.imgs]
    assert "Decoded along the straight line from item 2's mean to item 5's, at step 100" in captions
    assert any(c.startswith("The decoder at step 100, at (z1, z2)") for c in captions)
    at = open_link(run=run_id, step="50")  # a snapshot without a decoder: nothing to decode with
    assert not [n for n in at.number_input if n.key == "explore.from"]


def test_umap_and_tsne_settings_reach_the_projection(queue, store, monkeypatch):
    from ui import layouts

    asked = []

    class Projector:  # the background projector's `now`, recorded
        def now(self, x, method, **options):
            return asked.append((method, options)) or x[:, :2]

    monkeypatch.setattr(backend, "projector", Projector)
    layouts.layout.clear()
    add_run(store, 100, status="finished", embedding_dim=8)
    at = open_app("explore")
    at.segmented_control(key="explore.method").set_value("UMAP").run()
    at.slider(key="explore.n_neighbors").set_value(40).run()
    assert asked[-1] == ("umap", {"n_neighbors": 40, "min_dist": 0.1})
    at.segmented_control(key="explore.method").set_value("t-SNE").run()
    at.slider(key="explore.perplexity").set_value(12).run()
    assert asked[-1] == ("tsne", {"perplexity": 12})
    assert chart(at, "Step 100: t-SNE of the 8-D embedding")


def test_the_projection_is_in_the_link(queue, store, monkeypatch):
    from ui import layouts

    monkeypatch.setattr(layouts, "project", lambda x, method, **options: x[:, :2])
    layouts.layout.clear()
    run_id, _ = add_run(store, 100, status="finished", embedding_dim=8)
    at = open_link(run=run_id, step="50", projection="t-SNE")
    assert chart(at, "Step 50: t-SNE of the 8-D embedding")
    at.segmented_control(key="explore.method").set_value("PCA").run()
    assert "projection" not in at.query_params
    bad = open_link(run=run_id, projection="MDS")
    assert any("projection: unknown 'MDS'" in w.value for w in bad.warning) and chart(bad, "Step 100: PCA")


def test_a_projection_that_fails_in_its_process_is_one_line_and_pca_is_drawn(queue, store, monkeypatch):
    from ui import layouts

    class Projector:  # the projection process, killed for memory while it worked
        def now(self, x, method, **options):
            raise RuntimeError("the t-SNE process stopped (out of memory?); the next ask starts it again")

    monkeypatch.setattr(backend, "projector", Projector)
    layouts.layout.clear()
    add_run(store, 100, status="finished", embedding_dim=8)
    at = open_app("explore")
    at.segmented_control(key="explore.method").set_value("t-SNE").run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        "t-SNE: the t-SNE process stopped (out of memory?); the next ask starts it again; showing PCA"
    ]
    assert chart(at, "Step 100: PCA of the 8-D embedding")
