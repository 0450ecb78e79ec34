"""What one browser tab keeps between reruns and pages: the run it watches, and messages for its next run.

The watched run lives in session state and in the URL (`?run=ID`), so that F5 and a shared link
open it again. st.navigation drops query parameters on a page switch: each page puts it back.
"""

from __future__ import annotations

import functools

import streamlit as st

from contrast_core.config import RunConfig
from contrast_core.store import Run, StoreError
from ui import backend

WATCHED = "playground_run"  # session_state: the run this tab watches (it outlives a page switch)
SEEN = "tab.seen"  # session_state: runs this tab has seen, to tell "deleted" from "not found"
NOTICES = "tab.notices"  # session_state: messages for the next full run, as (text, icon)
FORK = "tab.fork"  # session_state: (run id, config) the Playground's form takes next, for a new run


def watched_run() -> str | None:
    """The run this tab watches: the session's, else the URL's (a link, or F5: a new session)."""
    if not st.session_state.get(WATCHED) and st.query_params.get("run"):
        st.session_state[WATCHED] = st.query_params["run"]
    return st.session_state.get(WATCHED)


def watch(run_id: str | None) -> None:
    """Makes `run_id` the tab's run (None: none), in session state and in the URL."""
    st.session_state[WATCHED] = run_id
    show_in_url(run_id)


def show_in_url(run_id: str | None) -> None:
    """`?run=run_id` in the URL (none for None); sent to the browser only when it changes."""
    if run_id is None:
        if "run" in st.query_params:
            del st.query_params["run"]
    elif st.query_params.get("run") != run_id:
        st.query_params["run"] = run_id


def show_settings_in_url(settings: dict[str, str]) -> None:
    """The form's settings as query parameters: these, and no other run setting's."""
    for field in [f for f in st.query_params if f in RunConfig.model_fields and f not in settings]:
        del st.query_params[field]
    for field, value in settings.items():
        if st.query_params.get(field) != value:
            st.query_params[field] = value


def find_run(run_id: str) -> Run | None:
    """The run, or None if the store has none of this id (see `say_missing`)."""
    try:
        run = backend.run_store().get_run(run_id)
    except StoreError:
        return None
    st.session_state[SEEN] = st.session_state.get(SEEN, set()) | {run_id}
    return run


def say_missing(run_id: str) -> None:
    """Says that the run was deleted (this tab saw it) or was never found, rather than showing nothing."""
    if run_id in st.session_state.get(SEEN, ()):
        st.warning(f"Run {run_id} was deleted.", icon=":material/delete:")
    else:
        st.warning(f"Run {run_id} not found: the link is wrong or the run was deleted.", icon=":material/error:")


def notify(text: str, icon: str | None = None) -> None:
    """A message shown (as a toast) when the page runs next: the action's rerun would drop it now."""
    st.session_state[NOTICES] = [*st.session_state.get(NOTICES, []), (text, icon)]


def show_notices() -> None:
    """Shows, once, what the actions since the page last ran did (each page that acts calls it)."""
    for text, icon in st.session_state.pop(NOTICES, []):
        st.toast(text, icon=icon)


def guarded(draw):
    """`draw` (a page's fragment), with a store that fails (a damaged index, a full disk) said in one
    line where the fragment draws, instead of a traceback; the fragment tries again at its next tick."""

    @functools.wraps(draw)
    def drawn(*args, **kwargs):
        try:
            return draw(*args, **kwargs)
        except StoreError as exc:
            st.error(str(exc), icon=":material/database:")

    return drawn
