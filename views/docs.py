"""Docs: the project's README, rendered."""

from pathlib import Path

import streamlit as st

README = Path(__file__).resolve().parent.parent / "README.md"

if README.is_file():
    st.markdown(README.read_text(encoding="utf-8"))
else:
    st.info("README.md is missing from this copy of Contrast Lab.")
