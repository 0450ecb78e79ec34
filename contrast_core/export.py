"""A run out of the store: the whole run as a zip, or one snapshot as Embedding Projector files.

The Projector files are TensorBoard's format: `tensors.tsv` holds one embedding per line, values
separated by tabs, no header; `metadata.tsv` holds a header line and one line per embedding, in the
same order (here the class name and the item's dataset row).
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from contrast_core.store import RunStore, StoreError


def projector_files(store: RunStore, run_id: str, step: int | None = None) -> dict[str, str]:
    """{"tensors.tsv": ..., "metadata.tsv": ...} of the run's snapshot at `step` (the last by default).

    Raises:
        StoreError: no such run, no snapshot at all, or none at that step (naming the steps there are).
    """
    store.get_run(run_id)  # an unknown run says so
    steps = [snap["step"] for snap in store.list_snapshots(run_id)]
    if not steps:
        raise StoreError(f"run: {run_id} has no snapshot yet")
    if step is not None and step not in steps:
        shown = ", ".join(map(str, steps[:6])) + (", ..." if len(steps) > 6 else "")
        raise StoreError(f"step: run {run_id} has no snapshot at step {step} (it has {shown})")
    arrays = store.load_snapshot(run_id, steps[-1] if step is None else step)
    embeddings = np.asarray(arrays["embeddings"], dtype=np.float64)
    tensors = "".join("\t".join(f"{v:.7g}" for v in row) + "\n" for row in embeddings)
    classes = [str(c) for c in arrays["classes"]] if "classes" in arrays else None
    meta = io.StringIO()
    writer = csv.writer(meta, delimiter="\t", lineterminator="\n")
    writer.writerow(["class", "item"])
    for label, item in zip(arrays["labels"], arrays["index"], strict=True):
        writer.writerow([classes[int(label)] if classes else int(label), int(item)])
    return {"tensors.tsv": tensors, "metadata.tsv": meta.getvalue()}


def write_projector(store: RunStore, run_id: str, out: Path, step: int | None = None) -> list[Path]:
    """Writes the Projector files into the folder `out` (made if missing); returns their paths."""
    files = projector_files(store, run_id, step)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in files.items():
        (out / name).write_text(text)
        paths.append(out / name)
    return paths


def run_zip(store: RunStore, run_id: str) -> bytes:
    """The whole run as a zip: run.json (its record), config.json, metrics.csv (one row per step),
    snapshots/<step>.npz with snapshots.json (their metrics), and model.pt when it has a checkpoint."""
    run = store.get_run(run_id)
    folder = store.run_dir(run_id)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("run.json", json.dumps(asdict(run), indent=2))
        archive.writestr("config.json", json.dumps(run.config, indent=2))
        rows = store.read_metrics(run_id)
        columns = list(dict.fromkeys(key for row in rows for key in row))
        table = io.StringIO()
        writer = csv.DictWriter(table, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        archive.writestr("metrics.csv", table.getvalue())
        snapshots = store.list_snapshots(run_id)
        archive.writestr(
            "snapshots.json", json.dumps([{"step": s["step"], "metrics": s["metrics"]} for s in snapshots])
        )
        for snap in snapshots:
            archive.write(snap["path"], f"snapshots/{snap['step']:08d}.npz")
        if (folder / "model.pt").exists():
            archive.write(folder / "model.pt", "model.pt")
    return buffer.getvalue()
