"""Exports: Embedding Projector files read back with pandas, and the run's zip."""

import io
import json
import zipfile

import numpy as np
import pandas as pd
import pytest

from contrast_core import export
from contrast_core.__main__ import main
from contrast_core.store import RunStore, StoreError


def finished_run(store: RunStore) -> str:
    run_id = store.create_run({"steps": 2, "loss": "contrastive"}, status="finished")
    store.add_metrics(run_id, [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.25, "mined": 10.0}])
    rng = np.random.default_rng(0)
    for step in (0, 2):
        arrays = {"embeddings": rng.normal(size=(5, 3)), "labels": np.array([0, 1, 2, 1, 0]),
                  "index": np.array([10, 11, 12, 13, 14]), "classes": np.array(["zero", "one", "two"])}  # fmt: skip
        store.add_snapshot(run_id, step, arrays, {"knn_accuracy": 0.5 + step})
    store.save_checkpoint(run_id, {"model": {}, "step": 2, "config": {"steps": 2}})
    return run_id


def test_projector_files_read_back_as_the_snapshot(store):
    run_id = finished_run(store)
    files = export.projector_files(store, run_id, step=0)
    tensors = pd.read_csv(io.StringIO(files["tensors.tsv"]), sep="\t", header=None)
    meta = pd.read_csv(io.StringIO(files["metadata.tsv"]), sep="\t")
    snapshot = store.load_snapshot(run_id, 0)
    assert tensors.to_numpy() == pytest.approx(snapshot["embeddings"], rel=1e-6)
    assert list(meta.columns) == ["class", "item"]
    assert list(meta["class"]) == ["zero", "one", "two", "one", "zero"] and list(meta["item"]) == [10, 11, 12, 13, 14]
    last = pd.read_csv(io.StringIO(export.projector_files(store, run_id)["tensors.tsv"]), sep="\t", header=None)
    assert last.to_numpy() == pytest.approx(store.load_snapshot(run_id, 2)["embeddings"], rel=1e-6)  # the last


def test_projector_files_name_a_missing_step_or_snapshot(store):
    run_id = finished_run(store)
    with pytest.raises(StoreError, match=r"step: run .* has no snapshot at step 1 \(it has 0, 2\)"):
        export.projector_files(store, run_id, step=1)
    empty = store.create_run({"steps": 1})
    with pytest.raises(StoreError, match="has no snapshot yet"):
        export.projector_files(store, empty)


def test_the_zip_holds_the_run_whole(store):
    run_id = finished_run(store)
    archive = zipfile.ZipFile(io.BytesIO(export.run_zip(store, run_id)))
    assert sorted(archive.namelist()) == ["config.json", "metrics.csv", "model.pt", "run.json", "snapshots.json",
                                          "snapshots/00000000.npz", "snapshots/00000002.npz"]  # fmt: skip
    assert json.loads(archive.read("config.json")) == {"steps": 2, "loss": "contrastive"}
    assert json.loads(archive.read("run.json"))["id"] == run_id
    metrics = pd.read_csv(io.BytesIO(archive.read("metrics.csv")))
    assert list(metrics["loss"]) == [0.5, 0.25] and np.isnan(metrics["mined"][0])
    with np.load(io.BytesIO(archive.read("snapshots/00000002.npz"))) as snap:
        assert snap["embeddings"] == pytest.approx(store.load_snapshot(run_id, 2)["embeddings"])
    assert json.loads(archive.read("snapshots.json"))[1] == {"step": 2, "metrics": {"knn_accuracy": 2.5}}


def test_cli_export_writes_projector_files_and_a_zip(tmp_path, capsys):
    store = RunStore(tmp_path / "home")
    run_id = finished_run(store)
    home = ["--home", str(tmp_path / "home")]
    assert main(["export", run_id, "--step", "2", "--out", str(tmp_path / "proj"), *home]) == 0
    assert pd.read_csv(tmp_path / "proj" / "metadata.tsv", sep="\t").shape == (5, 2)
    assert main(["export", run_id, "--format", "zip", "--out", str(tmp_path), *home]) == 0
    assert zipfile.is_zipfile(tmp_path / f"{run_id}.zip")
    assert main(["export", run_id, "--step", "7", "--out", str(tmp_path / "x"), *home]) == 2
    assert "step: run" in capsys.readouterr().err
    assert main(["export", "nope", *home]) == 2
