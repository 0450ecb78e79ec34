"""Runs: every run in the store, with stop, resume and delete, and a way to watch one live."""

import streamlit as st

from contrast_core.store import LIVE_STATUSES, Run, StoreError
from ui import backend
from ui.run_table import runs_frame

REFRESH_SECONDS = 2.0  # while some run is live


def runs_table(was_live: bool) -> None:
    """The table and its buttons. `was_live`: whether some run was live when the page set this
    fragment's refresh period; when a refresh finds that changed (the last live run ended), the
    page reruns once to set the period anew."""
    runs = backend.run_store().list_runs()
    if runs:
        _table(runs)
    else:
        st.info("No runs yet: start one on the Playground.")
    if any(run.status in LIVE_STATUSES for run in runs) != was_live:
        st.rerun()


def _table(runs: list[Run]) -> None:
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
            st.rerun()  # the whole page: this table's refresh period and the sidebar's queue follow


st.title("Runs")
st.caption("Select rows to stop, resume (from the last checkpoint) or delete runs, or to watch one live.")
busy = bool(backend.run_store().list_runs(status=LIVE_STATUSES, limit=1))
st.fragment(run_every=REFRESH_SECONDS if busy else None)(runs_table)(busy)
