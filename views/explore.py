"""Explore: one frozen snapshot of a run; box- or lasso-select points to see the items behind them."""

import numpy as np
import streamlit as st

from ui import backend, figures, items, layouts, tab
from ui.run_table import run_label
from ui.run_view import class_names

SHOWN_ITEMS = 60  # images shown for a selection

st.title("Explore a snapshot")
watched = tab.watched_run()  # the tab's run, or the link's
store = backend.run_store()
runs = {run.id: run for run in store.list_runs()}
snapshotted = store.runs_with_snapshots()
with_snapshots = [i for i in runs if i in snapshotted]  # newest first
if not with_snapshots:
    tab.show_in_url(watched)  # kept for F5 and the other pages
    st.info("No snapshots yet: train a run on the Playground first.")
    st.stop()
default = with_snapshots.index(watched) if watched in with_snapshots else 0
run_id = st.selectbox("Run", with_snapshots, index=default, format_func=lambda i: run_label(runs[i]))
tab.show_in_url(run_id)  # the run shown: F5 or the link opens it again
if watched and watched not in with_snapshots:
    st.caption(f"Run {watched} " + ("has no snapshot yet." if watched in runs else "was not found."))
steps = [s["step"] for s in store.list_snapshots(run_id)]
step = st.select_slider("Snapshot at step", steps, value=steps[-1]) if len(steps) > 1 else steps[0]
arrays = store.load_snapshot(run_id, step)
config = runs[run_id].config

method = "PCA"
if arrays["embeddings"].shape[1] > 2:
    method = st.segmented_control("Projection", list(layouts.METHODS), default="PCA") or "PCA"
with st.spinner(f"{method} of {len(arrays['embeddings'])} points (UMAP compiles on first use)..."):
    xy = layouts.layout(run_id, step, method, arrays, config)
classes = class_names(arrays)
hover = items.hover_texts(items.data_key(config), arrays["index"])
dim = arrays["embeddings"].shape[1]
title = f"Step {step}: " + ("the 2-D embedding" if dim == 2 else f"{method} of the {dim}-D embedding")
fig = figures.scatter_figure(xy, arrays["labels"], classes, hover=hover, title=title, height=560)
fig.update_layout(dragmode="select")
event = st.plotly_chart(fig, key="explore.scatter", on_select="rerun", selection_mode=("box", "lasso"))

positions = np.array(sorted({int(p["customdata"]) for p in event.selection.points if "customdata" in p}), dtype=int)
if len(positions) == 0:
    st.caption("Drag a box or lasso around points to see the items behind them.")
    st.stop()
labels = arrays["labels"][positions]
counts = ", ".join(f"{classes[c]}: {n}" for c, n in zip(*np.unique(labels, return_counts=True), strict=True))
st.markdown(f"**{len(positions)} selected** ({counts})")
x = items.items(items.data_key(config), arrays["index"][positions])
if x is None:
    st.info("The dataset's items cannot be loaded here, so only their classes are shown.")
elif x.ndim == 4:
    shown = x[:SHOWN_ITEMS]
    rows = [shown[i : i + 15] for i in range(0, len(shown), 15)]
    rows[-1] = np.concatenate([rows[-1], np.ones((15 - len(rows[-1]), *shown.shape[1:]), dtype=shown.dtype)])
    scale = max(1, 48 // shown.shape[-1])  # about 48 pixels a side
    st.image(figures.mosaic(rows, scale=scale), caption=f"The first {len(shown)} selected items", clamp=True)
else:
    st.dataframe({"class": [classes[c] for c in labels], **{f"x{j}": x[:, j] for j in range(x.shape[1])}})
