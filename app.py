"""Contrast Lab: `streamlit run app.py`. Routes to the pages and draws the shared sidebar."""

import streamlit as st

from contrast_core.store import StoreError
from ui import demo
from ui.sidebar import sidebar

st.set_page_config(page_title="Contrast Lab", page_icon=":material/scatter_plot:", layout="wide")
docs = st.Page("views/docs.py", title="Docs", icon=":material/menu_book:", visibility="hidden")
page = st.navigation(
    [
        st.Page("views/playground.py", title="Playground", icon=":material/play_circle:", default=True),
        st.Page("views/compare.py", title="Compare", icon=":material/compare_arrows:"),
        st.Page("views/explore.py", title="Explore", icon=":material/travel_explore:"),
        st.Page("views/runs.py", title="Runs", icon=":material/list:"),
        docs,
    ]
)
try:
    demo.caps()  # a hosted demo's settings, checked before any page uses them
except ValueError as exc:
    st.error(f"{exc}: fix the setting and restart the app.", icon=":material/error:")
    st.stop()
try:
    sidebar(docs)
    page.run()
except StoreError as exc:  # a damaged index, a full disk: one line, and every page says the same
    st.error(str(exc), icon=":material/database:")
