"""Forecast map: every intersection sized and coloured by its forecast, or by its change against a typical day.

Click a circle to select the site (the sidebar and the other pages follow). Offline the map draws
the road links between sites on a plain canvas; with "Basemap tiles" on (needs internet) it adds
Carto's street map underneath.
"""

from __future__ import annotations

import pydeck as pdk
import streamlit as st

from pages import _shared as sh
from trafficcore.ui import events as uev
from trafficcore.ui import forecasts as uif
from trafficcore.ui import view_state
from trafficcore.ui.safe import md

MODES = {"volume": "Forecast value", "change": "Change vs typical"}


def _pick_key() -> str:
    """The map widget's key. It changes after every click: Streamlit fades every object but the clicked
    one to 40 % while a deck selection is held, which left the other sites near-transparent; a fresh
    widget holds no selection, and the page marks the selected site itself (outline, label, ~60 % others)."""
    return f"map_pick_{sh.kept('map_pick_n', 0)}"


def _on_pick() -> None:
    """Map click: make the clicked site the selected one, and drop the deck's own selection (see _pick_key)."""
    state = st.session_state.get(_pick_key()) or {}
    objects = (state.get("selection") or {}).get("objects") or {}
    picked = objects.get("sites") or []
    if picked:
        sh.select_site(str(picked[0]["site_id"]))
    sh.keep("map_pick_n", sh.kept("map_pick_n", 0) + 1)


def _on_horizon() -> None:
    sh.keep("horizon", int(st.session_state["map_h"]))


ctx = sh.require_context()
sh.header("Forecast map", ctx, "Which intersections will be busy, and which differ from a typical day.")
sh.require_model(ctx)
panel = ctx.panel
fc = ctx.forecast()
measure = uif.main_measure(panel)
units = uif.unit(panel, measure)
hs = uif.horizons_of(fc)
st.session_state["map_h"] = min(hs, key=lambda h: abs(h - ctx.horizon))  # the shared horizon, nearest offered

c1, c2, c3 = st.columns([3, 2, 1.3], vertical_alignment="bottom")
horizon = c1.select_slider("Horizon (minutes ahead)", options=hs, key="map_h", on_change=_on_horizon,
                           help=f"The model in use forecasts {hs[0]}-{hs[-1]} min ahead, in "
                                f"{hs[1] - hs[0] if len(hs) > 1 else hs[0]}-minute steps.")
mode = c2.segmented_control("Colour by", list(MODES), format_func=MODES.get, **sh.persistent("map_mode", "volume"))
mode = mode or "volume"
basemap = c3.toggle("Basemap tiles", help="Street map underneath (needs internet).",
                    **sh.persistent("map_tiles", False))

totals = uif.site_totals(fc, panel, horizon, measure)
styled, legend = uif.style_sites(totals, mode, ctx.site)
target = fc.loc[fc["horizon_min"] == horizon, "target_ts"].min()
st.caption(f"Forecast issued {ctx.issued_at:%a %d %b %H:%M} for the 15 minutes starting {target:%H:%M} "
           f"({horizon} min ahead); {measure} in {units}, summed over each site's approaches."
           if measure == "volume" else
           f"Forecast issued {ctx.issued_at:%a %d %b %H:%M} for {target:%H:%M} ({horizon} min ahead); {units}.")

layers = []
roads = uif.road_lines(panel)
if not roads.empty:
    layers.append(pdk.Layer("LineLayer", roads, id="roads", get_source_position=["src_lon", "src_lat"],
                            get_target_position=["dst_lon", "dst_lat"], get_color=[120, 130, 140, 140],
                            get_width=2, width_units="'pixels'"))
styled["tip"] = (styled["name"].astype(str) + " (" + styled["site_id"].astype(str) + ")\nForecast: "
                 + styled["forecast_txt"].astype(str) + "\nTypical: " + styled["typical_txt"].astype(str) + "  change "
                 + styled["change_txt"].astype(str))
cols = ["site_id", "name", "lat", "lon", "color", "radius", "line", "line_width", "forecast_txt", "typical_txt",
        "change_txt", "approaches", "tip"]
layers.append(pdk.Layer("ScatterplotLayer", styled[cols], id="sites", get_position=["lon", "lat"],
                        get_fill_color="color", get_radius="radius", radius_units="'pixels'", stroked=True,
                        get_line_color="line", get_line_width="line_width", line_width_units="'pixels'",
                        pickable=True, auto_highlight=True))
sel = styled[styled["site_id"] == ctx.site]
if not sel.empty:
    layers.append(pdk.Layer("TextLayer", sel[["lon", "lat", "name"]], id="label", get_position=["lon", "lat"],
                            get_text="name", get_size=13, font_family="'Source Sans Pro, sans-serif'",
                            get_color=[20, 20, 20, 255], get_pixel_offset=[0, -22],
                            background=True, get_background_color=[255, 255, 255, 220]))
active = uev.in_effect_at(panel, ctx.issued_at, max(hs))  # the events this forecast reads (incidents, works...)
if not active.empty:
    paths = uev.map_paths(active)
    if not paths.empty:
        layers.append(pdk.Layer("PathLayer", paths, id="event_lines", get_path="path", get_color="color", get_width=6,
                                width_units="'pixels'", pickable=True))
    layers.append(pdk.Layer("IconLayer", uev.map_markers(active), id="events", get_icon="icon",
                            get_position=["lon", "lat"], get_size=26, size_units="'pixels'", pickable=True))
tooltip = {"text": "{tip}", "style": {"fontSize": "12px", "whiteSpace": "pre-line"}}
deck_kwargs = {"map_style": None} if basemap else {"map_provider": None, "map_style": None}
deck = pdk.Deck(layers=layers, initial_view_state=pdk.ViewState(**view_state(styled)), tooltip=tooltip,
                **deck_kwargs)
st.pydeck_chart(deck, on_select=_on_pick, selection_mode="single-object", key=_pick_key(), height=470,
                alt="Map of the intersections coloured by forecast")
if basemap:
    st.caption(":material/wifi_off: The street map underneath needs internet (Carto's tiles): offline it stays "
               "blank, and the circles and roads still show.")
with sh.guarded("events in effect"):
    if not active.empty:
        st.markdown(f"**Events in effect** ({len(active)}): what this forecast reads, near the sites they concern")
        for r in active.head(8).itertuples():
            st.markdown(f"{r.icon} **{md(r.kind)}**: {md(r.text)} ({md(r.when)})")
        if len(active) > 8:
            st.caption(f"and {len(active) - 8} more (the Live page lists them all)")
title = f"Forecast ({units})" if mode == "volume" else "Forecast against the same weekday and time, last 4 weeks"
st.html(uif.legend_html(title, legend) + '<div style="font-size:0.8rem;color:#5a6670">Circle size: forecast '
        "value. Click a circle to select its site.</div>")

left, right = st.columns([3, 2])
with left, sh.guarded("approach table"):
    name = panel.sites.set_index("site_id")["name"].get(ctx.site, ctx.site) if ctx.site else None
    st.subheader(f"Approaches at {md(name)}" if name else "Approaches")
    if ctx.site:
        table = uif.approach_table(fc, ctx.site, horizon)
        num = st.column_config.NumberColumn
        st.dataframe(table, hide_index=True, width="stretch", key="map_approaches", column_config={
            "approach": st.column_config.TextColumn("approach", width="small"),
            **{c: num(c, format="%.0f", width="small") for c in ("P10", "P50", "P90", "typical", "observed")},
            "change %": num("change %", format="%+.0f%%", width="small",
                            help="P50 against the typical value (same weekday and time, last 4 weeks)")})
        st.page_link(sh.PAGES["site"], label="Open the site detail", icon=":material/show_chart:")
        st.page_link(sh.PAGES["incident"], label="Incident response", icon=":material/emergency:")
with right, sh.guarded("busiest sites"):
    st.subheader("Largest changes" if mode == "change" else "Busiest sites")
    order = "change_pct" if mode == "change" else "forecast"
    top = styled.assign(abs_change=styled["change_pct"].abs())
    top = top.sort_values("abs_change" if mode == "change" else order, ascending=False).head(8)
    num = st.column_config.NumberColumn
    st.dataframe(top[["name", "forecast", "typical", "change_pct"]].rename(columns={"change_pct": "change %"}),
                 hide_index=True, width="stretch", key="map_busiest", column_config={
                     "name": st.column_config.TextColumn("site", width="medium"),
                     "forecast": num("forecast", format="%.0f", width="small", help=f"P50, {units}"),
                     "typical": num("typical", format="%.0f", width="small"),
                     "change %": num("change %", format="%+.0f%%", width="small")})
