"""Playground: configure a run, press Train, watch it learn."""

import streamlit as st

from contrast_core.config import RunConfig
from contrast_core.store import LIVE_STATUSES, StoreError
from ui import backend, live
from ui.config_form import config_form

RUN = "playground_run"  # session_state: the run this tab started (it outlives a page switch)

controls, panels = st.columns([1, 2.6], gap="large")
with controls:
    st.subheader("Contrast Lab")
    buttons = st.container()
    config = config_form()

run_id = st.session_state.get(RUN) or st.query_params.get("run")
try:
    status = backend.run_store().get_run(run_id).status if run_id else None
except StoreError:
    run_id = status = None
running = status in LIVE_STATUSES

with buttons:
    train, stop = st.columns(2)
    valid = isinstance(config, RunConfig)
    if train.button(
        "Train", type="primary", icon=":material/play_arrow:", disabled=running or not valid, width="stretch"
    ):
        st.session_state[RUN] = st.query_params["run"] = backend.job_queue().submit(config)
        st.rerun()
    if stop.button("Stop", icon=":material/stop:", disabled=not running, width="stretch"):
        backend.job_queue().cancel(run_id)
        st.rerun()  # a queued run is cancelled at once: Train comes back now

with panels:
    if run_id:
        live.live_panels(run_id)
    else:
        st.markdown(
            "#### Press **Train** to watch a Siamese network learn\n"
            "Pairs of the same digit are pulled together, pairs of different digits pushed at least a "
            "*margin* apart. The charts here follow the run live: the loss, the embedding itself, the "
            "distances of positive and negative pairs against the margin, and cluster metrics."
        )
