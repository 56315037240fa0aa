"""Time-of-day plans: split the forecast day profile of the selected site into k plans and time each one.

The day profile is stitched from forecasts issued through the day (each value forecast at most
the model's longest horizon ahead). The plan geometry and phase sequence are the ones last made
on the Signal what-if page for this site, else the site's default plan.
"""

from __future__ import annotations

import json
import time

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from pages import _shared as sh
from trafficcore.errors import TrafficCoreError
from trafficcore.signal.optimise import time_of_day
from trafficcore.signal.plan import Plan
from trafficcore.ui import signals as us
from trafficcore.ui.safe import md, plot_text

PALETTE = ["#e65a28", "#2b7bb9", "#3a9d5d", "#8e44ad"]


def day_profile(ctx: sh.Context, detectors: tuple[str, ...], day: pd.Timestamp) -> pd.DataFrame:
    """The day's forecast profile (kept per model, data version and site), with steps shown the first time."""
    key = (ctx.db, ctx.dataset, ctx.stamp, ctx.choice.key, detectors, str(day))
    fc = sh.memo_get("day_profile", key)
    if fc is not None:
        return fc
    t0 = time.perf_counter()
    with st.status(f"Forecasting {day:%A %d %b} for this site (first visit only)...", expanded=True) as box:
        if ctx.model is None:
            box.write("Loading the forecasting model (once per server)...")
        model = sh.loaded_model(ctx)
        nb = sh.neighbours_for(ctx.db, ctx.dataset, ctx.stamp, model)
        box.write(f"Issuing a forecast every {max(model.spec.horizons_min)} min through the day...")
        bar = st.progress(0.0)
        fc = us.day_forecast(model, ctx.panel, list(detectors), day, nb,
                             progress=lambda d, n: bar.progress(d / n, text=f"{d} of {n} issue times"))
        box.update(label=f"Forecast the day in {time.perf_counter() - t0:.1f} s", state="complete", expanded=False)
    sh.memo_put("day_profile", key, fc)
    return fc


@st.cache_data(show_spinner="Choosing breakpoints and optimising each plan...", max_entries=16)
def plans_for(plan_json: str, demand: pd.DataFrame, k: int, quantiles: tuple[str, ...], min_intervals: int):
    res = time_of_day(Plan.from_dict(json.loads(plan_json)), demand, k, quantiles=quantiles,
                      min_intervals=min_intervals)
    return res.segments, [p.to_dict() for p in res.plans], res.delay_veh_h, res.current_delay_veh_h, res.saving_pct


ctx = sh.require_context()
sh.header("Time-of-day plans", ctx, "Where a day's demand changes enough to deserve another timing plan.")
sh.require_model(ctx)
panel = ctx.panel
site = ctx.site
approaches, notes = us.site_approaches(panel, site) if site else (pd.DataFrame(), [])
if approaches.empty:
    st.info("This site has no vehicle-count detectors with a compass approach; pick another site in the sidebar.")
    st.stop()
saved = st.session_state.get(f"whatif_{ctx.dataset}_{site}")
if saved:
    plan = Plan.from_dict(saved["plan"])
    approaches = saved["approaches"]
    st.caption(f"Current plan: the one made on the Signal what-if page ({md(us.greens_text(plan))}).")
else:
    plan = us.build_plan(approaches, us.default_phases(approaches), name="default")
    st.caption(f"Current plan: the site's default ({md(us.greens_text(plan))}); edit it on the Signal what-if page.")

day = ctx.issued_at.normalize()
c1, c2, c3 = st.columns(3)
k = c1.slider("Number of plans", 2, 5, **sh.persistent("tod_k", 3))
min_hours = c2.select_slider("Shortest plan", [0.5, 1.0, 1.5, 2.0, 3.0], format_func=lambda h: f"{h:g} h",
                             **sh.persistent("tod_min", 1.0))
robust = c3.toggle("Robust (P10/P50/P90)", **sh.persistent("tod_robust", False))
quantiles = ("p10", "p50", "p90") if robust else ("p50",)

dets = tuple(us.detector_map(approaches))
fc = day_profile(ctx, dets, day)
if fc.empty:
    st.info(f"No forecasts can be issued on {day:%A %d %b %Y} (too early in the data, or after the newest reading).")
    st.stop()
step_min = int(panel.interval / pd.Timedelta(minutes=1))
demand = us.site_demand(fc, approaches, step_min)
first, last = demand["interval_start"].min(), demand["interval_start"].max()
every = max(sh.loaded_model(ctx).spec.horizons_min)
st.caption(f"Forecast profile of {day:%A %d %b %Y}, {us.period_text(first, last + panel.interval)}, "
           f"stitched from forecasts issued every {every} min (each value forecast at most {every} min ahead).")
min_intervals = max(1, int(min_hours * 60 / int(demand["interval_min"].iloc[0])))
try:
    segments, plans, new, cur, saving = plans_for(json.dumps(plan.to_dict(), sort_keys=True), demand, k, quantiles,
                                                  min_intervals)
except TrafficCoreError as exc:
    st.warning(f"No time-of-day plans for this profile: {md(exc)}")
    st.stop()

m = st.columns(3)
m[0].metric("Delay with the current plan all day", f"{cur:.1f} veh-h")
m[1].metric(f"Delay with {k} time-of-day plans", f"{new:.1f} veh-h", f"{new - cur:+.1f} veh-h", delta_color="inverse")
m[2].metric("Saving", f"{saving:.0f}%")

with sh.guarded("profile chart"):
    fig = go.Figure()
    for i, (a, g) in enumerate(demand.groupby("approach", sort=False)):
        fig.add_trace(go.Scatter(x=g["interval_start"], y=g["p50"], name=f"{plot_text(a)} P50", stackgroup="demand",
                                 line={"width": 0.5, "color": PALETTE[i % len(PALETTE)]}))
    for r in segments.itertuples(index=False):
        fig.add_vline(x=r.start, line_dash="dash", line_color="#1f2a30")
        fig.add_annotation(x=r.start, y=1.0, yref="paper", xanchor="left", showarrow=False, font={"size": 11},
                           text=f"Plan {r.plan_no} · {r.cycle:g} s cycle")
    fig.update_layout(height=360, margin={"l": 10, "r": 10, "t": 30, "b": 10}, yaxis_title="forecast demand (veh/h)",
                      legend={"orientation": "h", "y": -0.15})
    st.plotly_chart(fig, width="stretch", key="tod_chart", config={"displayModeBar": "hover"})
st.caption("Each dashed line starts a plan, which runs until the next line. \"Plan 1 · 90 s cycle\" means "
           "timing plan 1 applies from that time: every phase gets green once in each 90-second cycle, with the "
           "greens in the table below. The same plan can return later in the day; the controller switches "
           "plans at these times.")

table = pd.DataFrame({
    "plan": segments["plan_no"],
    "from": segments["start"].dt.strftime("%H:%M"),
    "to": [us.clock_end(a, b) for a, b in zip(segments["start"], segments["end"], strict=True)],
    "cycle (s)": segments["cycle"],
    "greens (s)": [", ".join(f"{p['name']} {g:g}" for p, g in zip(pl["phases"], gr, strict=True))
                   for pl, gr in zip(plans, segments["greens"], strict=True)],
    "delay (veh-h)": segments["delay_veh_h"].round(2),
    "current plan (veh-h)": segments["current_delay_veh_h"].round(2),
    "saving %": segments["saving_pct"].round(0),
})
st.dataframe(table, hide_index=True, width="stretch", key="tod_table")
st.download_button("Plans as JSON", json.dumps({"site": site, "day": str(day.date()), "plans": [
    {"from": f, "to": t, "plan": p} for f, t, p in zip(table["from"], table["to"], plans, strict=True)]}, indent=2),
    f"tod_plans_{site}.json", "application/json", key="tod_dl", icon=":material/download:")
