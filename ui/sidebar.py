"""The sidebar every page shares: the device, the queue and a link to the docs."""

from __future__ import annotations

import streamlit as st
from streamlit.navigation.page import StreamlitPage

from contrast_core.jobs import MIN_FREE_MB
from ui import backend, tab

# While runs are queued or running; not at all when idle. Every fragment rerun costs a browser about 0.1 s
# of rendering the page again, and a page watching a run has its own progress line every second.
QUEUE_REFRESH_SECONDS = 5.0


def sidebar(docs: StreamlitPage) -> None:
    """Draws the shared sidebar below the page menu."""
    with st.sidebar:
        _queue_status()
        st.page_link(docs, label="Docs", icon=":material/menu_book:")


def _queue_status() -> None:
    busy = _busy(backend.job_queue().status())
    st.fragment(run_every=QUEUE_REFRESH_SECONDS if busy else None)(tab.guarded(_draw_status))(busy)


def _draw_status(was_busy: bool) -> None:
    status = backend.job_queue().status()  # the device as the workers report it (see JobQueue.status)
    st.markdown(f":material/memory: **{status['device']}**")
    workers = f"{status['workers']} worker{'s' * (status['workers'] != 1)}"
    st.caption(f"{status['running']} running · {status['queued']} queued · {workers}")
    free = backend.run_store().free_mb()
    if free < MIN_FREE_MB:
        st.warning(f"Disk full: {free:.0f} MB free under CONTRAST_HOME. Workers start no run until there is "
                   "room; delete runs or free space.", icon=":material/storage:")  # fmt: skip
    if _busy(status) != was_busy:
        st.rerun()  # once, when the queue empties: the refresh period follows


def _busy(status: dict) -> bool:
    return status["running"] + status["queued"] > 0
