"""The dataset items behind snapshot points: pixels or feature rows, and their hover text.

Loaded only when a chart needs them (never on page load), cached per data settings and rows.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from ui import hover

DATA_FIELDS = ("dataset", "seed", "noise", "n_samples", "csv_path", "csv_label")  # what decides the items


def data_key(config: dict) -> tuple:
    """The config fields that decide a dataset's items (a hashable cache key)."""
    return tuple(config.get(field) for field in DATA_FIELDS)


@st.cache_data(max_entries=8, show_spinner=False)
def items(key: tuple, index: np.ndarray) -> np.ndarray | None:
    """Rows `index` (E,) of the dataset: (E, C, H, W) images or (E, F) rows; None if it cannot load here."""
    from contrast_core import data

    name, seed, noise, n_samples, csv_path, csv_label = key
    try:
        dataset = data.load(name, seed=seed, eval_size=1, noise=noise, n_samples=n_samples,
                            csv_path=csv_path, csv_label=csv_label, download=False)  # fmt: skip
    except (ValueError, OSError, data.DatasetUnavailable):
        return None
    return dataset.x[np.asarray(index, dtype=np.int64)].numpy()


@st.cache_data(max_entries=8, show_spinner=False)
def hover_texts(key: tuple, index: np.ndarray) -> list[str] | None:
    """A hover thumbnail (images) or feature list (tables) for each row in `index`."""
    x = items(key, index)
    return None if x is None else hover.hover_texts(x)
