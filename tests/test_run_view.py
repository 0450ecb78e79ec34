"""RunView reads a run incrementally: each update moves only what is new."""

import numpy as np
import pytest
from scipy.spatial.distance import pdist

from contrast_core.config import RunConfig
from ui.run_view import RunView, as_measured, measured_metrics, pair_distances


def test_update_reads_only_new_rows_and_the_latest_snapshot(store):
    config = RunConfig(steps=100).model_dump(mode="json")
    run_id = store.create_run(config, status="running")
    view = RunView(run_id, config)
    store.add_metrics(run_id, [{"step": s, "loss": 1.0} for s in (1, 2)])
    arrays = {"embeddings": np.zeros((4, 2)), "labels": np.array([0, 0, 1, 1]), "index": np.arange(4)}
    store.add_snapshot(run_id, 2, arrays, {"nmi": 0.1})
    assert view.update(store)
    store.add_metrics(run_id, [{"step": 3, "loss": 0.5}])
    store.add_snapshot(run_id, 3, arrays | {"embeddings": np.eye(4, 2)}, {"nmi": 0.3})
    assert view.update(store)
    assert not view.update(store)  # nothing new
    assert list(view.rows["step"]) == [1, 2, 3] and view.last_step == 3
    assert view.snapshot_step == 3 and view.arrays["embeddings"][0, 0] == 1
    assert view.latest_metrics() == ({"nmi": 0.3}, {"nmi": 0.1})
    assert list(view.history()["nmi"]) == [0.1, 0.3]


def test_a_metric_not_measured_at_the_latest_snapshot_shows_as_last_measured(store):
    config = RunConfig(steps=100).model_dump(mode="json")
    run_id = store.create_run(config, status="running")
    arrays = {"embeddings": np.zeros((4, 2)), "labels": np.array([0, 0, 1, 1]), "index": np.arange(4)}
    for step, metrics in [(0, {"knn_accuracy": 0.1, "nmi": 0.2}), (5, {"knn_accuracy": 0.3}),
                          (10, {"knn_accuracy": 0.5, "nmi": 0.6}), (15, {"knn_accuracy": 0.7})]:  # fmt: skip
        store.add_snapshot(run_id, step, arrays, metrics)
    view = RunView(run_id, config)
    view.update(store)
    assert view.latest_metrics() == ({"knn_accuracy": 0.7, "nmi": 0.6}, {"knn_accuracy": 0.5, "nmi": 0.2})
    assert measured_metrics(store.list_snapshots(run_id)[:2]) == {"knn_accuracy": 0.3, "nmi": 0.2}


def test_pair_distances_use_the_loss_distance():
    embeddings = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    arrays = {"embeddings": embeddings, "labels": np.array([0, 0, 1])}
    config = {"loss": "cosine-embedding", "distance": "euclidean", "margin": 0.2}
    pairs = pair_distances(arrays, config)  # cosine-embedding measures with 1 - cos
    assert pairs["pos_distances"] == pytest.approx([0.0])
    assert sorted(pairs["neg_distances"]) == pytest.approx(sorted(pdist(embeddings, "cosine")[1:]))
    assert pairs["violation_fraction"] == 0.0  # negatives at d_cos = 1 > margin 1 - 0.2
    assert pair_distances({"embeddings": embeddings * np.nan, "labels": arrays["labels"]}, config) is None


def test_cosine_embeddings_are_measured_at_unit_length():
    embeddings = np.array([[3.0, 4.0], [1e-6, 0.0]])
    cosine = {"loss": "nt-xent", "distance": "cosine"}
    assert np.linalg.norm(as_measured(embeddings, cosine), axis=1) == pytest.approx([1.0, 1.0])
    euclidean = {"loss": "contrastive", "distance": "euclidean"}
    assert as_measured(embeddings, euclidean) is embeddings
