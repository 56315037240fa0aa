"""Datasets in the store: a map of their sites and a summary table."""

from __future__ import annotations

import pydeck as pdk
import streamlit as st

from trafficcore import ui

store = st.session_state["store"]
st.title("Datasets")
table = ui.datasets_table(store)
if table.empty:
    st.info("No datasets yet: run `trafficcore demo` or `trafficcore import ...`.")
    st.stop()
st.dataframe(table, hide_index=True, use_container_width=True)
name = st.session_state.get("dataset", table["name"].iloc[0])
row = table.set_index("name").loc[name]
if row["synthetic"]:
    st.warning(ui.SYNTHETIC_LABEL, icon=":material/science:")
points = ui.site_points(store, name)
st.subheader(f"Sites of {name}")
layer = pdk.Layer(
    "ScatterplotLayer", points, get_position=["lon", "lat"], get_radius=120, radius_min_pixels=4,
    get_fill_color=[230, 90, 40, 200], pickable=True,
)
st.pydeck_chart(
    pdk.Deck(layers=[layer], initial_view_state=pdk.ViewState(**ui.view_state(points)), map_style=None,
             tooltip={"text": "{site_id} {name}\n{detectors} detectors, mean {mean_value}"}),
    use_container_width=True,
)
