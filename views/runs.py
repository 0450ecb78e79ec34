"""Runs: every run in the store, with stop, resume, rename and delete, and a way to watch one live."""

import streamlit as st

from contrast_core import export
from contrast_core.store import LIVE_STATUSES, RESUMABLE_STATUSES, Run, StoreError
from ui import backend, demo, tab
from ui.run_table import runs_frame, selection_key

REFRESH_SECONDS = 2.0  # while some run is live
CONFIRM = "runs.confirm_delete"  # session_state: the run ids a first click on Delete asks about


def runs_table(was_live: bool) -> None:
    """The table and its buttons. `was_live`: whether some run was live when the page set this
    fragment's refresh period; when a refresh finds that changed (the last live run ended), the
    page reruns once to set the period anew."""
    runs = demo.visible(backend.run_store().list_runs())  # in a hosted demo, the visitor's own
    if runs:
        _table(runs)
    else:
        st.info("No runs yet: start one on the Playground." + (" Here you see your own runs; a link from another "
                "visitor opens theirs on the Playground." if demo.enabled() else ""))  # fmt: skip
    if any(run.status in LIVE_STATUSES for run in runs) != was_live:
        st.rerun()


def _table(runs: list[Run]) -> None:
    event = st.dataframe(runs_frame(runs), hide_index=True, on_select="rerun", selection_mode="multi-row",
                         key=selection_key(runs), width="stretch")  # fmt: skip
    chosen = [runs[i] for i in event.selection.rows if i < len(runs)]
    # Each button acts on the chosen runs it can act on, and is disabled when there are none.
    stoppable = [run for run in chosen if run.status in LIVE_STATUSES and not run.cancel_requested]
    resumable = [run for run in chosen if run.status in RESUMABLE_STATUSES]
    deletable = chosen  # a running one stops at its next step; its worker writes nothing more
    watch, stop, resume, delete = st.columns(4)
    if watch.button("Watch in Playground", icon=":material/monitoring:", disabled=len(chosen) != 1, width="stretch"):
        st.session_state[tab.WATCHED] = chosen[0].id
        st.switch_page("views/playground.py", query_params={"run": chosen[0].id})
    if stop.button("Stop", icon=":material/stop:", disabled=not stoppable, width="stretch",
                   help="Queued or running runs: a queued run is cancelled at once, a running one at its next step."):  # fmt: skip
        _act(stoppable, lambda run: backend.job_queue().cancel(run.id), "Stopping")
    if resume.button("Resume", icon=":material/replay:", disabled=not resumable, width="stretch",
                     help=f"{', '.join(RESUMABLE_STATUSES).capitalize()} runs, from their last checkpoint."):  # fmt: skip
        _act(resumable, lambda run: backend.job_queue().resume(run.id), "Resumed")
    if delete.button("Delete", icon=":material/delete:", disabled=not deletable, width="stretch",
                     help="The chosen runs with their metrics and snapshots; a running one stops first."):  # fmt: skip
        st.session_state[CONFIRM] = [run.id for run in deletable]
    if st.session_state.get(CONFIRM):
        _confirm_delete(deletable)
    if len(chosen) == 1:
        _one_run(chosen[0])
        _rename(chosen[0])


def _act(runs: list[Run], act, done: str) -> None:
    """Applies `act` to each run and says, at the next run of the page, what it did."""
    acted = []
    for run in runs:
        if not demo.can_change(run):  # only a visitor's own runs are listed; a stale table may hold others
            tab.notify(f"Run {run.id} is another visitor's: only they can change it.", icon=":material/block:")
            continue
        try:
            act(run)
            acted.append(run.id)
        except StoreError as exc:
            tab.notify(str(exc), icon=":material/error:")
    if acted:
        tab.notify(f"{done} {_runs(acted)}.", icon=":material/check:")
    st.rerun()  # the whole page: this table's refresh period and the sidebar's queue follow


def _confirm_delete(runs: list[Run]) -> None:
    """The second step of Delete: what goes, and a button that does it."""
    if [run.id for run in runs] != st.session_state[CONFIRM]:  # the selection changed since the first click
        del st.session_state[CONFIRM]
        return
    st.warning(f"Delete {_runs([run.id for run in runs])}? Their metrics, snapshots and checkpoints go too; "
               "this cannot be undone.", icon=":material/delete:")  # fmt: skip
    sure, cancel, _ = st.columns([1, 1, 2])
    if sure.button("Delete for good", type="primary", icon=":material/delete_forever:", width="stretch"):
        del st.session_state[CONFIRM]
        _act(runs, lambda run: backend.run_store().delete_run(run.id), "Deleted")
    if cancel.button("Keep them", width="stretch"):
        del st.session_state[CONFIRM]
        st.rerun()


@st.cache_data(max_entries=4, show_spinner="Packing the run...")
def _zip(home: str, run_id: str, step: int, status: str) -> bytes:
    """The run's zip, made again only when the run has moved on (step and status are the cache key)."""
    return export.run_zip(backend.run_store(), run_id)


def _one_run(run: Run) -> None:
    fork, download = st.columns(2)
    if fork.button("Fork into Playground", icon=":material/call_split:", width="stretch",
                   help="A new run from this one's settings: the Playground's form is set to them."):  # fmt: skip
        st.session_state[tab.FORK] = (run.id, run.config)
        st.session_state[tab.WATCHED] = None
        st.switch_page("views/playground.py")
    running = run.status in LIVE_STATUSES  # packed once it has ended, not at every refresh
    data = b"" if running else _zip(backend.home(), run.id, run.step, run.status)
    download.download_button("Download run (zip)", data,
                             f"{run.name or run.id}.zip".replace(" ", "_").replace("/", "_"), "application/zip",
                             icon=":material/download:", width="stretch", disabled=running,
                             help="config.json, metrics.csv, every snapshot (.npz) and the weights (model.pt).")  # fmt: skip


def _rename(run: Run) -> None:
    with st.form("runs.rename", border=False):
        name, rename = st.columns([3, 1], vertical_alignment="bottom")
        new = name.text_input(f"Name of run {run.id}", value=run.name, max_chars=80, key=f"runs.name.{run.id}",
                              placeholder="e.g. margin 2, cosine: shown in the pickers")  # fmt: skip
        if rename.form_submit_button("Rename", icon=":material/edit:", width="stretch"):
            backend.run_store().rename_run(run.id, new.strip())
            tab.notify(f"Run {run.id} is now named {new.strip()!r}." if new.strip() else f"Run {run.id} has no name.")
            st.rerun()


def _runs(ids: list[str]) -> str:
    return f"run {ids[0]}" if len(ids) == 1 else f"{len(ids)} runs ({', '.join(ids)})"


st.title("Runs")
tab.show_notices()  # what the last action did
st.caption(
    "Select rows to stop, resume (from the last checkpoint), rename or delete runs, to watch one live, "
    "to fork one into the Playground or to download it."
)
tab.show_in_url(tab.watched_run())  # so that F5 here keeps the tab's run (a page switch dropped it)
busy = bool(demo.visible(backend.run_store().list_runs(status=LIVE_STATUSES)))
st.fragment(run_every=REFRESH_SECONDS if busy else None)(tab.guarded(runs_table))(busy)
