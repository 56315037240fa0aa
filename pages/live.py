"""Live: the newest readings, the forecasts re-issued from them, the current alerts and how accurate the served
forecasts are (pages/_monitor.py), refreshing by itself.

Readings arrive through `trafficcore ingest`, the API's /observations or `trafficcore replay`; this page
only reads what they stored (trafficcore.live), so it can stay open beside them. The part below the
controls is an `st.fragment` that re-runs every few seconds without redrawing the rest of the page.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from pages import _shared as sh
from pages._monitor import accuracy_section
from trafficcore.live import alerts as la
from trafficcore.live import events as lev
from trafficcore.live import ingest as li
from trafficcore.ui.safe import md, plot_text

ctx = sh.require_context()
sh.header("Live", ctx, "Newest readings, forecasts re-issued as they arrive, and alerts. Feed it with "
          "`trafficcore ingest --watch DIR`, the API, or `trafficcore replay --dataset NAME --from TIME`.")

c1, c2 = st.columns([1, 3])
every = c1.selectbox("Refresh every", [5, 15, 60], index=1, format_func=lambda s: f"{s} s", key="live_every")
auto = c2.toggle("Refresh automatically", value=True, key="live_auto")
SEVERITY_ICON = {"critical": "🔴", "warning": "🟠"}


def _when(ts) -> str:
    return "—" if ts is None or pd.isna(ts) else f"{pd.Timestamp(ts):%Y-%m-%d %H:%M}"


def _site_chart(store, dataset: str, site: str, fc: pd.DataFrame, newest) -> go.Figure | None:
    """The site's detectors: the last 12 hours of readings and their newest forecast band."""
    mine = fc[fc["site_id"] == site]
    if newest is None or mine.empty:
        return None
    obs = store.observations(dataset, sorted(mine["detector_id"].unique()), start=pd.Timestamp(newest)
                             - pd.Timedelta(hours=12))
    fig = go.Figure()
    for i, (det, g) in enumerate(mine.groupby("detector_id")):
        hue = (i * 67) % 360
        colour, band = f"hsl({hue}, 65%, 45%)", f"hsla({hue}, 65%, 45%, 0.15)"
        o = obs[obs["detector_id"] == det]
        fig.add_scatter(x=o["ts"], y=o["value"], name=f"{plot_text(det)} observed", mode="lines",
                        line={"color": colour})
        g = g.sort_values("target_ts")
        fig.add_scatter(x=list(g["target_ts"]) + list(g["target_ts"][::-1]), y=list(g["p90"]) + list(g["p10"][::-1]),
                        fill="toself", line={"width": 0}, fillcolor=band,
                        name=f"{plot_text(det)} P10–P90", hoverinfo="skip", showlegend=False)
        fig.add_scatter(x=g["target_ts"], y=g["p50"], name=f"{plot_text(det)} forecast", mode="lines",
                        line={"color": colour, "dash": "dash"})
    fig.update_layout(height=340, margin={"l": 10, "r": 10, "t": 10, "b": 10}, legend={"orientation": "h"},
                      yaxis_title="reading per interval")
    return fig


def _events_section(store, dataset: str) -> None:
    """Incidents, work zones and events in effect now (`trafficcore events ingest`, POST /events): what the
    live forecasts read, with the sites whose detectors they concern. Cells of st.dataframe are plain text."""
    ev = lev.active_events(store, dataset)
    st.subheader("Events in effect")
    if ev.empty:
        st.caption("No incident, work zone or event in effect. Feed them with `trafficcore events ingest` "
                   "(WZDx, Open511, CAD logs, CSV) or POST /events.")
        return
    view = pd.DataFrame({
        "kind": ev["kind"], "what": ev["text"],
        "from": pd.to_datetime(ev["start_ts"]), "until": pd.to_datetime(ev["end_ts"]),
        "sites": [", ".join(x) for x in ev["sites"]], "source": ev["source"],
    })
    st.dataframe(view, hide_index=True, width="stretch", key="live_events", column_config={
        "from": st.column_config.DatetimeColumn("from", format="YYYY-MM-DD HH:mm"),
        "until": st.column_config.DatetimeColumn("until", format="YYYY-MM-DD HH:mm",
                                                 help="blank: not known yet (an incident until it is cleared)"),
        "what": st.column_config.TextColumn("what", width="large")})


@st.fragment(run_every=every if auto else None)
def live_view() -> None:
    with sh.guarded("live view"), ctx.store.held():  # one connection held: the refresh's many reads are cheap
        store, dataset = ctx.store, ctx.dataset
        status = li.live_status(store, dataset)
        alerts = la.current_alerts(store, dataset)
        fc = li.latest_forecasts(store, dataset)
        m1, m2, m3, m4 = st.columns(4)
        m1.metric("Newest reading", _when(status["newest_reading"]))
        m2.metric("Forecasts issued at", _when(status["last_issue"]))
        m3.metric("Batches taken in", f"{status['batches']:,}")
        n_crit = int((alerts["severity"] == "critical").sum())
        m4.metric("Alerts", f"{len(alerts)}", delta=f"{n_crit} critical" if n_crit else None, delta_color="inverse")
        if status["last_batch_at"] is not None:
            st.caption(f"Last batch: {status['last_batch_rows']} readings from {md(status['last_batch_source'])}, "
                       f"received {_when(status['last_batch_at'])} UTC. Forecasts by "
                       f"{md((status['live_run'] or 'no model yet').removeprefix(li.LIVE_RUN_PREFIX))}.")
        else:
            st.caption("No live batch received yet for this dataset.")

        st.subheader("Alerts")
        if alerts.empty:
            st.success("Nothing out of the ordinary: readings within the forecast band, no stuck or silent "
                       "detectors, no signal predicted at level of service E or F.", icon=":material/check_circle:")
        else:
            view = alerts.assign(severity=alerts["severity"].map(lambda s: f"{SEVERITY_ICON.get(s, '')} {s}"))
            st.dataframe(view, hide_index=True, width="stretch", key="live_alerts",
                         column_config={"start_ts": st.column_config.DatetimeColumn("from", format="YYYY-MM-DD HH:mm"),
                                        "end_ts": st.column_config.DatetimeColumn("to", format="YYYY-MM-DD HH:mm")})

        _events_section(store, dataset)
        accuracy_section(store, dataset)

        st.subheader("Latest forecasts")
        if fc.empty:
            st.info("No live forecasts yet: they are issued when readings arrive.", icon=":material/info:")
            return
        table = fc.pivot_table(index=["site_id", "detector_id", "issued_at"], columns="horizon_min", values="p50")
        table.columns = [f"P50 +{h} min" for h in table.columns]
        st.dataframe(table.round(1).reset_index(), hide_index=True, width="stretch", key="live_forecasts")
        if ctx.site is not None:
            fig = _site_chart(store, dataset, ctx.site, fc, status["newest_reading"])
            if fig is not None:
                st.markdown(f"**Site {md(ctx.site)}**: last 12 hours and the newest forecast")
                st.plotly_chart(fig, width="stretch", key="live_chart")


live_view()
