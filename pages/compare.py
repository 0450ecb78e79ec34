"""Compare: the loss curves and final metrics of several runs side by side."""

import pandas as pd
import streamlit as st

from ui import backend, figures, tab
from ui.run_table import TABLE_METRICS, config_differences, last_metrics, short_label, summary

st.title("Compare runs")
watched = tab.watched_run()
tab.show_in_url(watched)  # the tab's run stays in the URL: F5 here, then the Playground, finds it
store = backend.run_store()
runs = {run.id: run for run in store.list_runs()}
if len(runs) < 2:
    st.info("Compare needs at least two runs: start some on the Playground.")
    st.stop()
default = ([watched] if watched in runs else []) + [i for i in runs if i != watched]  # the tab's run first
chosen = st.multiselect("Runs", list(runs), default=default[:2], format_func=lambda i: short_label(runs[i]),
                        help="Each run's settings are in the table below the chart.")  # fmt: skip
if len(chosen) < 2:
    st.warning("Pick at least two runs.")
    st.stop()
left, right = st.columns([3, 1])
with right:
    smoothing = st.slider("Smoothing", 0.0, 0.99, 0.8, 0.01)
    log_y = st.toggle("Log scale")
labels = {i: runs[i].name or i for i in chosen}
if len(set(labels.values())) < len(labels):  # two runs of the same name: the legend needs their ids
    labels = {i: f"{runs[i].name} ({i})" if runs[i].name else i for i in chosen}
curves = {labels[i]: pd.DataFrame(store.read_metrics(i)) for i in chosen}
curves = {label: rows for label, rows in curves.items() if "loss" in rows}
with left:
    st.plotly_chart(figures.compare_figure(curves, smoothing, log_y), key="compare.loss")

latest = {i: last_metrics(store, runs[i]) for i in chosen}
table = pd.DataFrame({"run": [labels[i] for i in chosen], "status": [runs[i].status for i in chosen],
                      "what it trains": [summary(runs[i].config) for i in chosen]})  # fmt: skip
for key, label in TABLE_METRICS.items():
    table[label] = [latest[i].get(key) for i in chosen]
table = table.join(config_differences([runs[i] for i in chosen]))
st.dataframe(table, hide_index=True)
st.caption("Config columns are the settings on which the runs differ; metrics are from each run's last snapshot.")
