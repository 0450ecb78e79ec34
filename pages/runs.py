"""Runs: every run in the store, with stop, resume and delete, and a way to watch one live."""

import streamlit as st

from contrast_core.store import StoreError
from ui import backend
from ui.live import LIVE
from ui.run_table import runs_frame

REFRESH_SECONDS = 2.0  # while some run is live


def runs_table() -> None:
    runs = backend.run_store().list_runs()
    if not runs:
        st.info("No runs yet: start one on the Playground.")
        return
    event = st.dataframe(runs_frame(runs), hide_index=True, on_select="rerun", selection_mode="multi-row",
                         key="runs.table", width="stretch")  # fmt: skip
    chosen = [runs[i] for i in event.selection.rows if i < len(runs)]
    watch, stop, resume, delete = st.columns(4)
    if watch.button("Watch in Playground", icon=":material/monitoring:", disabled=len(chosen) != 1, width="stretch"):
        st.session_state["playground_run"] = chosen[0].id
        st.switch_page("pages/playground.py")
    actions = {
        stop: ("Stop", ":material/stop:", lambda run: backend.job_queue().cancel(run.id)),
        resume: ("Resume", ":material/replay:", lambda run: backend.job_queue().resume(run.id)),
        delete: ("Delete", ":material/delete:", lambda run: backend.run_store().delete_run(run.id)),
    }
    for column, (label, icon, act) in actions.items():
        if column.button(label, icon=icon, disabled=not chosen, width="stretch"):
            for run in chosen:
                try:
                    act(run)
                except StoreError as exc:
                    st.error(str(exc))
            st.rerun(scope="fragment")


st.title("Runs")
st.caption("Select rows to stop, resume (from the last checkpoint) or delete runs, or to watch one live.")
busy = bool(backend.run_store().list_runs(status=LIVE))
st.fragment(run_every=REFRESH_SECONDS if busy else None)(runs_table)()
