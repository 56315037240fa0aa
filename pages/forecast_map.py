"""Forecast map: every intersection sized and coloured by its forecast, or by its change against a typical day.

Click a circle to select the site (the sidebar and the other pages follow). Offline the map draws
the road links between sites on a plain canvas; with "Basemap tiles" on (needs internet) it adds
Carto's street map underneath. A region of more than `mapview.DIRECT_LIMIT` sites opens on areas (each
circle sums its sites); a click on one, or choosing a site, zooms to that area's sites.
"""

from __future__ import annotations

import pydeck as pdk
import streamlit as st

from pages import _shared as sh
from trafficcore.ui import events as uev
from trafficcore.ui import forecasts as uif
from trafficcore.ui import mapview, view_state
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
    area = objects.get("areas") or []
    if area:
        sh.keep("map_area", (sh.kept("dataset"), str(area[0]["site_id"])))
    sh.keep("map_pick_n", sh.kept("map_pick_n", 0) + 1)


def _whole_city() -> None:
    sh.keep("map_area", None)


def _area(site: str | None, styled, grid) -> str | None:
    """The area the map is zoomed into (None: the whole city). Choosing another site (the sidebar's search,
    a click) zooms to its area; the first view shows the whole city."""
    dataset = sh.kept("dataset")
    if sh.kept("map_area_for") is None:
        sh.keep("map_area_for", (dataset, site))
    elif sh.kept("map_area_for") != (dataset, site):
        sh.keep("map_area_for", (dataset, site))
        row = styled[styled["site_id"] == site]
        if not row.empty:
            sh.keep("map_area", (dataset, str(mapview.area_of(row["lat"], row["lon"], grid)[0])))
    kept = sh.kept("map_area")
    return kept[1] if kept and kept[0] == dataset else None


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


def _with_tip(df):
    """The hover text of a circle (site or area): name, forecast, typical and change."""
    return df.assign(tip=df["name"].astype(str) + " (" + df["site_id"].astype(str) + ")\nForecast: "
                     + df["forecast_txt"].astype(str) + "\nTypical: " + df["typical_txt"].astype(str) + "  change "
                     + df["change_txt"].astype(str))


styled = _with_tip(styled)
target = fc.loc[fc["horizon_min"] == horizon, "target_ts"].min()
st.caption(f"Forecast issued {ctx.issued_at:%a %d %b %H:%M} for the 15 minutes starting {target:%H:%M} "
           f"({horizon} min ahead); {measure} in {units}, summed over each site's approaches."
           if measure == "volume" else
           f"Forecast issued {ctx.issued_at:%a %d %b %H:%M} for {target:%H:%M} ({horizon} min ahead); {units}.")

grid = mapview.area_grid(styled) if mapview.aggregated(len(styled)) and not styled.empty else None
area = _area(ctx.site, styled, grid) if grid is not None else None
shown, roads, areas = styled, uif.road_lines(panel), None
if area is not None:
    bounds = mapview.area_bounds(area, grid)
    shown, roads = styled[mapview.inside(styled, bounds)], mapview.roads_inside(roads, bounds)
elif grid is not None:  # the whole region: one circle per area, no road links
    sel_area = styled.loc[styled["site_id"] == ctx.site, ["lat", "lon"]]
    sel_key = mapview.area_of(sel_area["lat"], sel_area["lon"], grid)[0] if not sel_area.empty else None
    areas = _with_tip(uif.style_sites(mapview.area_totals(totals, grid, measure), mode, sel_key)[0])
    shown, roads = styled.iloc[:0], roads.iloc[:0]

layers = []
if not roads.empty:
    layers.append(pdk.Layer("LineLayer", roads, id="roads", get_source_position=["src_lon", "src_lat"],
                            get_target_position=["dst_lon", "dst_lat"], get_color=[120, 130, 140, 140],
                            get_width=2, width_units="'pixels'"))
cols = ["site_id", "name", "lat", "lon", "color", "radius", "line", "line_width", "forecast_txt", "typical_txt",
        "change_txt", "tip", "approaches"]
if areas is not None:
    layers.append(pdk.Layer("ScatterplotLayer", areas[cols[:-1] + ["sites"]], id="areas", get_position=["lon", "lat"],
                            get_fill_color="color", get_radius="radius", radius_units="'pixels'", stroked=True,
                            get_line_color="line", get_line_width="line_width", line_width_units="'pixels'",
                            pickable=True, auto_highlight=True))
layers.append(pdk.Layer("ScatterplotLayer", shown[cols], id="sites", get_position=["lon", "lat"],
                        get_fill_color="color", get_radius="radius", radius_units="'pixels'", stroked=True,
                        get_line_color="line", get_line_width="line_width", line_width_units="'pixels'",
                        pickable=True, auto_highlight=True))
sel = shown[shown["site_id"] == ctx.site]
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
deck = pdk.Deck(layers=layers, initial_view_state=pdk.ViewState(**view_state(areas if areas is not None else shown)),
                tooltip=tooltip, **deck_kwargs)
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
how = ("Each circle is an area of the region and sums its sites: click one to zoom in, or choose a site."
       if areas is not None else "Click a circle to select its site.")
st.html(uif.legend_html(title, legend) + '<div style="font-size:0.8rem;color:#5a6670">Circle size: forecast '
        f"value. {how}</div>")
if area is not None:
    st.button(f"Back to the whole region ({len(styled):,} sites)", on_click=_whole_city, icon=":material/zoom_out_map:",
              key="map_whole")

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
