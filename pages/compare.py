"""Compare: the loss curves and final metrics of several runs side by side."""

import pandas as pd
import streamlit as st

from ui import backend, figures
from ui.run_table import TABLE_METRICS, config_differences, last_metrics, run_label

st.title("Compare runs")
store = backend.run_store()
runs = {run.id: run for run in store.list_runs()}
if len(runs) < 2:
    st.info("Compare needs at least two runs: start some on the Playground.")
    st.stop()
chosen = st.multiselect("Runs", list(runs), default=list(runs)[:2], format_func=lambda i: run_label(runs[i]))
if len(chosen) < 2:
    st.warning("Pick at least two runs.")
    st.stop()
left, right = st.columns([3, 1])
with right:
    smoothing = st.slider("Smoothing", 0.0, 0.99, 0.8, 0.01)
    log_y = st.toggle("Log scale")
curves = {run_label(runs[i]): pd.DataFrame(store.read_metrics(i)) for i in chosen}
curves = {label: rows for label, rows in curves.items() if "loss" in rows}
with left:
    st.plotly_chart(figures.compare_figure(curves, smoothing, log_y), key="compare.loss")

latest = {i: last_metrics(store, runs[i]) for i in chosen}
table = pd.DataFrame({"run": [runs[i].name or i for i in chosen]})
for key, label in TABLE_METRICS.items():
    table[label] = [latest[i].get(key) for i in chosen]
table = table.join(config_differences([runs[i] for i in chosen]))
st.dataframe(table, hide_index=True)
st.caption("Config columns are the settings on which the runs differ; metrics are from each run's last snapshot.")
