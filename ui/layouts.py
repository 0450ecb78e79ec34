"""2-D layouts of frozen snapshots for the Explore page, computed once per (run, step, method)."""

from __future__ import annotations

import numpy as np
import streamlit as st

from contrast_core.projection import project
from ui import backend
from ui.run_view import as_measured

METHODS = {"PCA": "pca", "t-SNE": "tsne", "UMAP": "umap"}


@st.cache_data(max_entries=32, show_spinner=False)
def layout(
    run_id: str, step: int, method: str, arrays: dict[str, np.ndarray], config: dict, options: tuple = ()
) -> np.ndarray:
    """(E, 2) points of a snapshot: the embedding itself when 2-D (normalised for the cosine);
    else its stored PCA (aligned with the run's other snapshots, so scrubbing through steps does
    not flip the axes) or a projection by `method` (a METHODS key) with `options`, (name, value)
    pairs such as (("n_neighbors", 15), ("min_dist", 0.1))."""
    embeddings = as_measured(arrays["embeddings"], config)  # (E, D)
    if embeddings.shape[1] == 2:
        return embeddings
    if method == "PCA" and "pca" in arrays:
        return arrays["pca"]
    if not np.isfinite(embeddings).all():
        return np.nan_to_num(embeddings[:, :2])
    if method == "PCA":
        return project(embeddings, "pca")
    return backend.projector().now(embeddings, METHODS[method], **dict(options))  # in its own process
