"""trafficcore dashboard: router and shared sidebar. Every computation lives in trafficcore."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from trafficcore import config
from trafficcore.data.store import Store

HERE = Path(__file__).resolve().parent
LOGO = str(HERE / "assets" / "logo.svg")
st.set_page_config(page_title="trafficcore", page_icon=LOGO, layout="wide")


@st.cache_resource
def get_store(path: str) -> Store:
    return Store(path)


store = get_store(str(config.db_path()))
st.session_state["store"] = store

with st.sidebar:
    st.image(LOGO, width=160)
    names = store.dataset_names()
    if not names:
        st.warning("The store is empty. Run `trafficcore demo` to generate the demo city, or import data.")
    else:
        default = names.index("demo") if "demo" in names else 0
        st.selectbox("Dataset", names, index=default, key="dataset")

pages = st.navigation({"Data": [st.Page(HERE / "pages" / "datasets.py", title="Datasets", icon=":material/map:")]})
pages.run()
