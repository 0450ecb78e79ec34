"""The dataset items behind snapshot points: pixels or feature rows, and their hover text.

A run stores its evaluation items once, with its first snapshot (`items`: images as uint8, tables
as float32), so pages show them without loading a dataset (and without torch). Loaded only when a
chart needs them (never on page load), cached per run.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from contrast_core.store import StoreError
from ui import backend, hover


@st.cache_data(max_entries=8, show_spinner=False)
def _stored(home: str, run_id: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(index (E,), items (E, ...)) stored with the run's first snapshot; None without them (a run
    stored before items were, or a damaged snapshot)."""
    store = backend.run_store()
    try:
        first = store.list_snapshots(run_id)[:1]
        arrays = store.load_snapshot(run_id, first[0]["step"]) if first else {}
    except StoreError:
        return None
    return (arrays["index"], arrays["items"]) if "items" in arrays else None


def items(run_id: str, index: np.ndarray) -> np.ndarray | None:
    """Rows `index` (E,) of the run's dataset: (E, C, H, W) images in [0, 1] or (E, F) rows; None
    when the run did not store them or one of `index` is not among them."""
    stored = _stored(backend.home(), run_id)
    if stored is None:
        return None
    stored_index, x = stored
    index = np.asarray(index, dtype=np.int64)
    order = np.argsort(stored_index, kind="stable")
    found = order[np.searchsorted(stored_index, index, sorter=order).clip(max=len(order) - 1)]
    if len(stored_index) == 0 or not np.array_equal(stored_index[found], index):
        return None
    x = x[found]
    return x.astype(np.float32) / 255 if x.dtype == np.uint8 else x


@st.cache_data(max_entries=8, show_spinner=False)
def hover_texts(run_id: str, index: np.ndarray) -> list[str] | None:
    """A hover thumbnail (images) or feature list (tables) for each row in `index`."""
    x = items(run_id, index)
    return None if x is None else hover.hover_texts(x)
