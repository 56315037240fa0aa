"""Incident response: an incident's expected effect on its site and neighbours over the next two hours, and how
the robust optimiser would retime the signals it affects.

Pick one of the dataset's events (the demo city plants crashes, closures, concerts and matches) or type one;
the model in use forecasts the area with and without it (P10-P90), and the affected signals get the plan
the optimiser recommends for the new demand. Everything is computed by `trafficcore.live.incident`;
this page only asks and draws.
"""

from __future__ import annotations

import json

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from pages import _shared as sh
from trafficcore.errors import DataError
from trafficcore.live import incident as inc
from trafficcore.live import incident_report as rep
from trafficcore.ui.safe import md, plot_text
from trafficcore.ui.series import site_options
from trafficcore.ui.uploads import plain_error

SOURCES = {"list": "From the dataset's events", "typed": "Type an incident"}


@st.cache_data(show_spinner=False, max_entries=8)
def incidents(db: str, dataset: str, stamp: str, history_steps: int) -> pd.DataFrame:
    return inc.incident_list(sh.get_panel(db, dataset, stamp), history_steps)


@st.cache_data(show_spinner="Forecasting with and without the incident...", max_entries=16)
def effect(db: str, dataset: str, stamp: str, _model, model_key: str, model_name: str, incident_json: str,
           radius_km: float) -> inc.IncidentEffect:
    panel = sh.get_panel(db, dataset, stamp)
    incident = inc.Incident.from_dict(json.loads(incident_json))
    return inc.incident_effect(_model, panel, incident, radius_km=radius_km, max_signals=0, model_name=model_name)


@st.cache_data(show_spinner="Retiming the affected signals for the new demand...", max_entries=16)
def retimed(db: str, dataset: str, stamp: str, _result: inc.IncidentEffect, key: str, plans_json: str
            ) -> inc.IncidentEffect:
    return inc.retime(sh.get_panel(db, dataset, stamp), _result, json.loads(plans_json))


def _engineer_plans(dataset: str) -> dict:
    """Plans an engineer made on the Signal what-if page this session, by site: they are the plans in force."""
    prefix = f"whatif_{dataset}_"
    return {k[len(prefix):]: v["plan"] for k, v in st.session_state.items()
            if isinstance(k, str) and k.startswith(prefix) and isinstance(v, dict) and "plan" in v}


def _use_model(key: str) -> None:
    sh.keep("model", key)


def _label(row) -> str:
    return f"{row.start_ts:%a %d %b %H:%M} · {row.kind} · {row.site} — {str(row.text)[:70]}"


def _chart(result: inc.IncidentEffect, site_id: str, units: str, step: pd.Timedelta) -> go.Figure:
    s = result.site_series(site_id)
    fig = go.Figure()
    for which, colour, fill, dash in (("without", "#5a6670", "rgba(90,102,112,0.18)", "dash"),
                                      ("with", "#d6452b", "rgba(214,69,43,0.20)", "solid")):
        label = "with the incident" if which == "with" else "without it"
        fig.add_trace(go.Scatter(x=s["target_ts"], y=s[f"p90_{which}"], mode="lines", line={"width": 0},
                                 showlegend=False, hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=s["target_ts"], y=s[f"p10_{which}"], mode="lines", line={"width": 0},
                                 fill="tonexty", fillcolor=fill, name=f"P10-P90 {label}", hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=s["target_ts"], y=s[f"p50_{which}"], mode="lines+markers", name=f"P50 {label}",
                                 line={"color": colour, "dash": dash, "width": 2}))
    if s["observed"].notna().any():
        fig.add_trace(go.Scatter(x=s["target_ts"], y=s["observed"], mode="markers", name="observed",
                                 marker={"color": "#1f2a33", "symbol": "x", "size": 8}))
    i = result.incident
    lo, hi = s["target_ts"].min(), s["target_ts"].max() + step
    if i.start < hi and i.end > lo:  # when the incident is on, within the view
        fig.add_vrect(x0=max(i.start, lo), x1=min(i.end, hi), fillcolor="#1f2a33", opacity=0.06, line_width=0,
                      annotation_text=plot_text(i.kind), annotation_position="top left")
    name = result.sites.set_index("site_id")["name"].get(site_id, site_id)
    fig.update_layout(height=380, margin={"l": 10, "r": 10, "t": 36, "b": 10},
                      title=plot_text(f"{name}: all approaches, {units} per interval"),
                      legend={"orientation": "h", "y": -0.15}, yaxis_title=units)
    return fig


ctx = sh.require_context()
sh.header("Incident response", ctx, "What an incident will do to its site and its neighbours over the next "
          "2 hours (forecast with and without it, P10-P90), and how to retime the signals it affects.")
sh.require_model(ctx)
panel = ctx.panel
# the sidebar's choice (the serving model by default), waited for: a stand-in answering while it loads reads no text
choices = sh.get_choices(ctx.db, ctx.dataset, ctx.info, sh.store_version(ctx.db))
chosen = next((c for c in choices if c.key == sh.kept("model")), ctx.choice)
model = sh.loaded_model(ctx) if chosen.key == ctx.choice.key else sh.get_model(ctx.db, ctx.dataset, ctx.stamp,
                                                                                 chosen)[0]
steps = int(model.spec.history_steps)

source = st.segmented_control("Incident", list(SOURCES), format_func=SOURCES.get, **sh.persistent("inc_source", "list"))
source = source or "list"
if source == "list":
    table = incidents(ctx.db, ctx.dataset, ctx.stamp, steps)
    if table.empty:
        st.info("This dataset has no events that can be analysed here (none, or none with enough readings "
                "before them). Type an incident instead.", icon=":material/info:")
        st.stop()
    ids = list(table["event_id"])
    labels = {r.event_id: _label(r) for r in table.itertuples(index=False)}
    if sh.kept("inc_event") not in ids:
        sh.keep("inc_event", ids[inc.nearest_to(table, ctx.issued_at)])
    eid = st.selectbox(f"Event ({len(ids)} in this dataset; the nearest to the sidebar's time first selected)", ids,
                       format_func=lambda i: labels.get(i, i), **sh.persistent("inc_event", ids[0]))
    incident = inc.from_event(panel, eid)
else:
    sites = site_options(panel)
    site_ids = list(sites["site_id"])
    site_labels = dict(zip(sites["site_id"], sites["label"], strict=True))
    if sh.kept("inc_site") not in site_ids:
        sh.keep("inc_site", ctx.site if ctx.site in site_ids else site_ids[0])
    if sh.kept("inc_date") is None:
        sh.keep("inc_date", ctx.issued_at.date())
        sh.keep("inc_time", ctx.issued_at.time())
    c1, c2, c3 = st.columns([2, 1.4, 1])
    site = c1.selectbox("Site", site_ids, format_func=lambda s: site_labels.get(s, s),
                        **sh.persistent("inc_site", site_ids[0]))
    kind = c2.selectbox("Kind", inc.KINDS, accept_new_options=True, help="Or type another kind",
                        **sh.persistent("inc_kind", inc.KINDS[0]))
    minutes = c3.number_input("Expected duration (min)", min_value=5, max_value=inc.MAX_DURATION_MIN, step=15,
                              **sh.persistent("inc_minutes", 60))
    text = st.text_input("What happened, as a report would say it (the model reads these words)",
                         max_chars=inc.MAX_TEXT_CHARS,
                         placeholder="Crash on Harbour Rd at the 5th Ave junction: two lanes blocked",
                         **sh.persistent("inc_text", ""))
    d1, d2, _ = st.columns([1, 1, 2])
    day = d1.date_input("Starts on", format="YYYY-MM-DD", **sh.persistent("inc_date", ctx.issued_at.date()))
    at = d2.time_input("at", step=900, **sh.persistent("inc_time", ctx.issued_at.time()))
    if not str(text).strip():
        st.info("Describe the incident in a sentence to see its effect.", icon=":material/edit:")
        st.stop()
    try:
        incident = inc.typed_incident(panel, site, kind, text, pd.Timestamp.combine(day, at), minutes)
    except DataError as exc:
        st.error(plain_error(exc).replace("In **<incident>**, ", ""), icon=":material/error:")
        st.stop()

radius = st.slider("Neighbours within (km)", min_value=0.2, max_value=3.0, step=0.1,
                   help="Sites this close to the incident are shown (and sites adjacent to its site). The model reads "
                        f"an event within {model.spec.event_radius_km:g} km of a detector.",
                   **sh.persistent("inc_radius", float(model.spec.event_radius_km)))
incident_json = json.dumps(incident.to_dict(), sort_keys=True)
try:
    result = effect(ctx.db, ctx.dataset, ctx.stamp, model, chosen.key, chosen.label, incident_json, float(radius))
except DataError as exc:
    st.error(plain_error(exc).replace("In **<incident>**, ", ""), icon=":material/error:")
    st.stop()

i = result.incident
st.markdown(f"**{md(i.kind.capitalize())}** near **{md(result.sites['name'].iloc[0])}**, "
            f"{i.start:%a %d %b %H:%M}-{i.end:%H:%M}: {md(i.text)}")
why = ("when an unplanned incident is first known" if i.unplanned
       else f"{inc.PLANNED_LEAD_MIN} min before a planned event starts")
st.caption(f"Forecast issued {result.issued_at:%a %d %b %H:%M} ({why}) for the next {result.span_min} min by "
           f"{md(result.model)}; computed in {result.seconds.get('forecast', 0):.1f} s.")
notes = [n for n in result.notes if not n.startswith("Synthetic data")]  # the page's banner says it already
if notes:
    st.info("\n".join(f"- {md(n)}" for n in notes), icon=":material/info:")
if not result.reads_text:
    readers = [c for c in choices if c.kind == "saved" and c.path and inc.saved_reads_text(c.path)]
    for c in readers[:3]:
        st.button(f"Use {c.label}", key=f"inc_use_{c.key}", on_click=_use_model, args=(c.key,),
                  icon=":material/psychology:")
    if not readers:
        st.caption("No saved model of this dataset reads text: train one with `trafficcore train --model lm` "
                   "(the shipped demo model reads text, on the demo city).")

sites = result.sites
own = sites[sites["role"] == "incident site"].iloc[0] if (sites["role"] == "incident site").any() else sites.iloc[0]
m = st.columns(3)
m[0].metric("Change at the incident site", f"{own['change_pct']:+.1f} %",
            help="P50 over the view, summed over the site's approaches: with the incident against without it")
m[1].metric("Sites reading it", f"{int(sites['reads_event'].sum())} of {len(sites)}",
            help="Sites with a detector whose context mentions the incident (the model's reading rule)")
m[2].metric("Largest change nearby", f"{sites['change_pct'].abs().max():.1f} %")

units = "vehicles" if (panel.detectors["measure"].fillna("volume") == "volume").any() else "value"
c1, c2 = st.columns([3, 2])
with c1, sh.guarded("incident chart"):
    names = dict(zip(sites["site_id"], sites["name"], strict=True))
    chart_site = st.selectbox("Site on the chart", list(sites["site_id"]), key="inc_chart_site",
                              format_func=lambda s: f"{names.get(s, s)} · {s}")
    st.plotly_chart(_chart(result, chart_site, units, panel.interval), width="stretch", key="inc_chart")
with c2, sh.guarded("incident sites"):
    st.markdown("##### Sites")
    st.dataframe(sites[["name", "change_pct", "role", "km", "with", "without"]].rename(
        columns={"change_pct": "change %"}), hide_index=True, width="stretch", key="inc_sites", column_config={
        "km": st.column_config.NumberColumn("km", format="%.2f"),
        "with": st.column_config.NumberColumn("with", format="%.0f", help="P50 summed over the view"),
        "without": st.column_config.NumberColumn("without", format="%.0f"),
        "change %": st.column_config.NumberColumn("change %", format="%+.1f%%")})

st.markdown("##### Signals: the robust plan for the demand with the incident")
plans = _engineer_plans(ctx.dataset)
forecast_notes = result.notes
result = retimed(ctx.db, ctx.dataset, ctx.stamp, result, f"{chosen.key}|{incident_json}|{radius}",
                 json.dumps(plans, sort_keys=True))
if result.signals:
    st.metric("Signals retimed", f"{sum(s.recommended != s.current for s in result.signals)} of "
              f"{len(result.signals)}", help="Signals whose recommended plan differs from the plan in force")
    frame = rep.signals_frame(result)
    shown = pd.DataFrame({
        "site": frame["name"], "plan in force": frame["greens_before"] + " (" + frame["cycle_before"].map(
            "{:g} s".format) + ")",
        "recommended": frame["greens_after"] + " (" + frame["cycle_after"].map("{:g} s".format) + ")",
        "delay without (s/veh)": frame["delay_without_s"].round(1),
        "delay with, before (s/veh)": frame["delay_before_s"].round(1),
        "delay with, after (s/veh)": frame["delay_after_s"].round(1),
        "LOS before → after": frame["los_before"] + " → " + frame["los_after"],
        "demand change %": frame["demand_change_pct"].round(1)})
    st.dataframe(shown, hide_index=True, width="stretch", key="inc_signals")
    for sig in result.signals:
        st.markdown(f"- **{md(sig.name)}**: {md(rep.plan_change_text(sig))}")
    st.caption(f"Retimed in {result.seconds.get('signals', 0):.1f} s. Mean control delay (HCM) at P50 demand over "
               "the view. Plan in force: "
               + md("; ".join(sorted({s.plan_source for s in result.signals}))) + ". Recommended: the Signal "
               "what-if's robust optimiser (least expected delay over P10/P50/P90) on the demand with the incident.")
else:
    st.caption("No signal near the incident can be timed here.")
for note in result.notes[len(forecast_notes):]:  # what retiming added: signals it could not time
    st.caption(md(note))

d1, d2, d3, _ = st.columns([1, 1, 1, 2])
stem = f"incident_{ctx.dataset}_{i.event_id}".replace(" ", "_")
d1.download_button("Report JSON", rep.to_json(result), f"{stem}.json", "application/json", key="inc_dl_json",
                   icon=":material/download:")
d2.download_button("Forecasts CSV", rep.forecast_csv(result), f"{stem}_forecasts.csv", "text/csv",
                   key="inc_dl_csv", icon=":material/download:")
d3.download_button("Signals CSV", rep.signals_csv(result), f"{stem}_signals.csv", "text/csv", key="inc_dl_signals",
                   icon=":material/download:")
