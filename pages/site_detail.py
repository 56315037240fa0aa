"""Site detail: one intersection's last 24 hours, its forecast with the P10-P90 band, and its typical day.

In replay (an "as of" time in the past) the readings after the issue time are known too, and the
page sets them against the forecast: error, bias and how often they fell inside the band.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from pages import _shared as sh
from trafficcore.ui import events as uev
from trafficcore.ui import forecasts as uif
from trafficcore.ui import series
from trafficcore.ui.safe import md, plot_text

PALETTE = ["#e65a28", "#2b7bb9", "#3a9d5d", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d", "#d35400"]

ctx = sh.require_context()
panel = ctx.panel
site = ctx.site
names = panel.sites.set_index("site_id")["name"]
sh.header(f"Site detail: {md(names.get(site, site))}", ctx,
          "History, forecast and the typical day of one intersection.")
if not site:
    st.info("Choose a site in the sidebar, or click one on the Forecast map.")
    st.stop()
measure = uif.main_measure(panel)
dets = series.site_detectors(panel, site, measure)
if dets.empty:
    st.info(f"Site {md(site)} has no {measure} detectors.")
    st.stop()
units = uif.unit(panel, measure)
labels = list(dets["label"])
if st.session_state.get("sd_approach") not in labels:
    st.session_state["sd_approach"] = labels[0]
approach = st.segmented_control("Approach", labels, format_func=md, key="sd_approach")
approach = approach or labels[0]
one = dets[dets["label"] == approach]

sh.require_model(ctx)
with st.spinner("Forecasting every detector at this issue time...", show_time=True):
    fc = ctx.forecast()
table = series.forecast_table(fc, dets)
mine = table[table["approach"] == approach]
hist = series.history(panel, one, ctx.issued_at, hours=24)
horizon_end = mine["target_ts"].max() + panel.interval if not mine.empty else ctx.issued_at
after = series.window(panel, one, ctx.issued_at, horizon_end)

with sh.guarded("history chart"):
    fig = go.Figure()
    t0 = ctx.issued_at - pd.Timedelta(hours=24)
    typ = pd.concat([series.typical_day(panel, one, ctx.issued_at + pd.Timedelta(days=k)) for k in (-1, 0, 1)])
    typ = typ[(typ["ts"] >= t0) & (typ["ts"] <= horizon_end)].sort_values("ts")
    if not typ.empty:
        fig.add_trace(go.Scatter(x=typ["ts"], y=typ["typical"], name="typical (same weekday, 4 weeks)",
                                 line={"color": "#9aa5ad", "dash": "dot"}))
    fig.add_trace(go.Scatter(x=hist["ts"], y=hist["value"], name="observed before issue", line={"color": "#1f2a30"}))
    if not mine.empty:
        x = list(mine["target_ts"]) + list(mine["target_ts"])[::-1]
        y = list(mine["p90"]) + list(mine["p10"])[::-1]
        fig.add_trace(go.Scatter(x=x, y=y, fill="toself", fillcolor="rgba(230,90,40,0.22)", line={"width": 0},
                                 mode="lines",
                                 name="P10-P90 band", hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=mine["target_ts"], y=mine["p50"], name="forecast P50", mode="lines+markers",
                                 line={"color": "#e65a28", "width": 3}))
    if after["value"].notna().any():
        fig.add_trace(go.Scatter(x=after["ts"], y=after["value"], name="observed after issue", mode="markers",
                                 marker={"color": "#1f2a30", "symbol": "x", "size": 8}))
    fig.add_vline(x=ctx.issued_at, line_dash="dash", line_color="#5a6670")
    fig.add_annotation(x=ctx.issued_at, y=1.02, yref="paper", text="issued", showarrow=False, font={"size": 11})
    fig.update_layout(height=380, margin={"l": 10, "r": 10, "t": 30, "b": 10}, yaxis_title=units,
                      legend={"orientation": "h", "y": -0.15},
                      title=f"{plot_text(approach)}: last 24 h and the forecast")
    st.plotly_chart(fig, width="stretch", key="sd_history", config={"displayModeBar": "hover"})

acc = series.accuracy(mine)
m1, m2, m3, m4 = st.columns(4)
nxt = mine.iloc[0] if not mine.empty else None
m1.metric(f"Next {int(nxt['horizon_min'])} min (P50)" if nxt is not None else "Forecast",
          f"{nxt['p50']:.0f}" if nxt is not None else "n/a",
          f"{nxt['p50'] - nxt['typical']:+.0f} vs typical" if nxt is not None and pd.notna(nxt["typical"]) else None,
          delta_color="off")
if acc:
    m2.metric("Mean absolute error so far", f"{acc['mae']:.1f}")
    m3.metric("Inside P10-P90", f"{acc['coverage_pct']:.0f}%")
    m4.metric("Bias (forecast - observed)", f"{acc['bias']:+.1f}")
else:
    m2.info("The forecast times have not passed yet: the observed values will appear here.", icon=":material/schedule:")

left, right = st.columns(2)
with left, sh.guarded("typical day"):
    day_dets = dets
    prof = series.typical_day(panel, day_dets, ctx.issued_at)
    today = series.window(panel, day_dets, ctx.issued_at.normalize(), ctx.issued_at)
    fig2 = go.Figure()
    for i, lab in enumerate(labels):
        color = PALETTE[i % len(PALETTE)]
        p = prof[prof["approach"] == lab]
        fig2.add_trace(go.Scatter(x=p["ts"], y=p["typical"], name=f"{plot_text(lab)} typical",
                                  line={"color": color, "dash": "dot"}))
        t = today[today["approach"] == lab]
        fig2.add_trace(go.Scatter(x=t["ts"], y=t["value"], name=f"{plot_text(lab)} today", line={"color": color}))
    fig2.add_vline(x=ctx.issued_at, line_dash="dash", line_color="#5a6670")
    fig2.update_layout(height=340, margin={"l": 10, "r": 10, "t": 30, "b": 10}, yaxis_title=units,
                       title=f"Typical {ctx.issued_at:%A} (dotted) and today so far", showlegend=True,
                       legend={"font": {"size": 10}})
    st.plotly_chart(fig2, width="stretch", key="sd_typical", config={"displayModeBar": "hover"})
with right, sh.guarded("forecast table"):
    st.markdown("**Forecast against observed**")
    show = pd.DataFrame({
        "time": mine["target_ts"].dt.strftime("%H:%M"),
        "P10": mine["p10"], "P50": mine["p50"], "P90": mine["p90"], "typical": mine["typical"],
        "observed": mine["observed"], "error": mine["error"],
        "in band": mine["inside_band"].map({1.0: "yes", 0.0: "no"}).fillna(""),
    })
    num = st.column_config.NumberColumn
    st.dataframe(show, hide_index=True, width="stretch", key="sd_table", column_config={
        "time": st.column_config.TextColumn("time", width="small", help="Start of the forecast 15 minutes"),
        **{c: num(c, format="%.0f", width="small") for c in ("P10", "P50", "P90", "typical", "observed")},
        "error": num("error", format="%+.1f", width="small", help="forecast P50 - observed"),
        "in band": st.column_config.TextColumn("in band", width="small",
                                               help="Observed value inside the P10-P90 band")})

with sh.guarded("events read"):  # incidents, work zones and events this forecast took into account
    st.markdown("**Events the model read for this forecast**")
    read = uev.events_read(ctx.model, panel, list(dets["detector_id"]), ctx.issued_at) if ctx.model else None
    if ctx.model is None:
        st.caption("The model is still loading: the events it reads show once it is ready.")
    elif read is None:
        st.caption("The model in use does not read events: it forecasts from the readings alone.")
    elif read.empty:
        st.caption("No incident, work zone or event near this site is in effect at this time.")
    else:
        label = dict(zip(dets["detector_id"], dets["label"], strict=True))
        for (ico, kind, text), g in read.groupby(["icon", "kind", "text"], sort=False):
            by = ", ".join(md(label.get(d, d)) for d in g["detector_id"])
            st.markdown(f"{ico} **{md(kind)}**: {md(text)} ({md(g['when'].iloc[0])}; read by {by})",
                        help="As the model read it: " + md(g["read"].iloc[0]))

with st.expander("What the model reads about this approach"), sh.guarded("context text"):
    from trafficcore.data.windows import context_fields
    from trafficcore.text import context_text

    row = panel.index_of(ctx.issued_at)
    fields = context_fields(panel, panel.column(one["detector_id"].iloc[0]), row)
    st.text(context_text(fields))
