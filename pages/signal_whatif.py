"""Signal what-if: test a timing plan for the selected intersection against its forecast demand.

Edit the approaches (lanes, saturation flow, turning shares) and the phases (greens, intergreens);
the HCM/Webster analysis updates per approach and 15-minute interval over the forecast horizon.
Webster's and the optimiser's suggestions can be loaded with one click, plans kept as scenarios
A and B for comparison, checked in a SUMO microsimulation, and downloaded.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pandas as pd
import plotly.express as px
import streamlit as st

from pages import _shared as sh
from trafficcore.errors import DataError, TrafficCoreError
from trafficcore.signal import export
from trafficcore.signal.analysis import analyse
from trafficcore.signal.optimise import optimise, webster
from trafficcore.signal.plan import Plan
from trafficcore.ui import signals as us
from trafficcore.ui.safe import md
from trafficcore.ui.uploads import plain_error

QUANTS = {"p50": "P50 (median)", "p90": "P90 (busy)", "p10": "P10 (quiet)"}


@st.cache_data(show_spinner="Searching cycle lengths and splits...", max_entries=32)
def optimised(plan_json: str, demand: pd.DataFrame, quantiles: tuple[str, ...]) -> dict:
    res = optimise(Plan.from_dict(json.loads(plan_json)), demand, quantiles=quantiles)
    return {"plan": res.plan.to_dict(), "delay": res.delay_veh_h, "current": res.current_delay_veh_h,
            "saving": res.saving_pct}


@st.cache_data(show_spinner="Running SUMO...", max_entries=8)
def simulated(plan_json: str, demand: pd.DataFrame, quantile: str) -> tuple[pd.DataFrame, dict]:
    from trafficcore.signal.sumo import simulate

    sim = simulate(Plan.from_dict(json.loads(plan_json)), demand, quantile=quantile, timeout_s=90)
    return sim.rows, sim.summary


@st.cache_data(show_spinner=False, max_entries=16)
def sumo_xml(plan_json: str) -> str:
    """The plan as a SUMO additional file (runs netconvert once per plan, so only on download)."""
    with tempfile.TemporaryDirectory(prefix="trafficcore-export-") as tmp:
        path = export.write_sumo_additional(Plan.from_dict(json.loads(plan_json)), Path(tmp) / "plan.add.xml")
        return path.read_text(encoding="utf-8")


def _load_plan(prefix: str, plan: dict) -> None:
    """Button callback: put a suggested plan's times into the phase editor."""
    for i, p in enumerate(plan["phases"]):
        for field in ("green", "yellow", "all_red"):
            sh.keep(f"{prefix}_p{i}_{field}", float(p[field]))


def _reset(prefix: str, saved_key: str) -> None:
    """Button callback: back to the site's default plan (forget edits made here)."""
    for k in [k for k in sh.kept_store() if k.startswith(prefix + "_")]:
        del sh.kept_store()[k]
        st.session_state.pop(k, None)
    st.session_state.pop(saved_key, None)
    st.session_state.pop(f"{prefix}_approaches", None)


def _keep(slot: str, key: str, plan: dict) -> None:
    st.session_state.setdefault(key, {})[slot] = plan


ctx = sh.require_context()
sh.header("Signal what-if", ctx, "HCM capacity, v/c, control delay, LOS and queues of a timing plan against "
          "the forecast demand.")
sh.require_model(ctx)
panel = ctx.panel
site = ctx.site
names = panel.sites.set_index("site_id")["name"]
approaches0, notes = us.site_approaches(panel, site) if site else (pd.DataFrame(), [])
if approaches0.empty:
    st.info("This site has no vehicle-count detectors with a compass approach, so it cannot be timed here. "
            "Pick another site in the sidebar." + (" " + md(" ".join(notes)) if notes else ""))
    st.stop()
if panel.info.get("source", "").startswith("citypulse") or "Bluetooth" in str(panel.info.get("description", "")):
    st.warning("This dataset's counts are a sample of the traffic (Bluetooth matches), not total flow: "
               "v/c and delay would be far too low. Use it for patterns only.")
h1, h2 = st.columns([4, 1], vertical_alignment="bottom")
h1.subheader(f"{md(names.get(site, site))} ({md(site)})")
for n in notes:
    st.caption(md(n))
prefix = f"sw_{ctx.dataset}_{site}"

c1, c2 = st.columns([2, 3])
quantile = c1.radio("Demand", list(QUANTS), format_func=QUANTS.get, horizontal=True,
                    **sh.persistent("sw_quantile", "p50"))
fc = ctx.forecast()
site_fc = fc[fc["detector_id"].isin(us.detector_map(approaches0))]
step_min = int(panel.interval / pd.Timedelta(minutes=1))
demand = us.site_demand(site_fc, approaches0, step_min)
c2.caption(f"Forecast issued {ctx.issued_at:%a %d %b %H:%M}: {demand['interval_start'].nunique()} intervals from "
           f"{demand['interval_start'].min():%H:%M} to "
           f"{demand['interval_start'].max() + pd.Timedelta(minutes=int(demand['interval_min'].iloc[0])):%H:%M}, "
           "flow rates in veh/h.")

st.markdown("##### Approaches")
saved = st.session_state.get(f"whatif_{ctx.dataset}_{site}")
h2.button("Reset to default", key="sw_reset", on_click=_reset, args=(prefix, f"whatif_{ctx.dataset}_{site}"),
          icon=":material/restart_alt:", help="Default geometry and two phases (N-S, E-W) at a 90 s cycle")
# The editor starts from the last table made here: edits are absolute cell values, so whether Streamlit
# keeps the editor's edits (same visit) or drops them (after a page switch), the table is the same.
approaches = st.data_editor(
    saved["approaches"] if saved else approaches0, key=f"{prefix}_approaches", hide_index=True, width="stretch",
    num_rows="fixed",
    disabled=["approach", "detectors"],
    column_config={
        "leg": st.column_config.SelectboxColumn("leg", options=["N", "E", "S", "W"], required=True,
                                                help="The side traffic comes from"),
        "lanes": st.column_config.NumberColumn("lanes", min_value=1, max_value=8, step=1),
        "left_lanes": st.column_config.NumberColumn("left lanes", min_value=0, max_value=3, step=1),
        "right_lanes": st.column_config.NumberColumn("right lanes", min_value=0, max_value=3, step=1),
        "left_pct": st.column_config.NumberColumn("left %", min_value=0, max_value=100, step=1),
        "through_pct": st.column_config.NumberColumn("through %", min_value=0, max_value=100, step=1),
        "right_pct": st.column_config.NumberColumn("right %", min_value=0, max_value=100, step=1),
        "sat_flow": st.column_config.NumberColumn("sat. flow (pc/h/ln)", min_value=600, max_value=2400, step=50),
        "sat_adjust": st.column_config.NumberColumn("sat. adjust", min_value=0.5, max_value=1.2, step=0.01),
        "heavy_pct": st.column_config.NumberColumn("heavy %", min_value=0, max_value=60, step=1),
    },
)

st.markdown("##### Phases")
defaults = saved["phases"] if saved else us.default_phases(approaches0)
options = us.movement_options(approaches)
n_phases = st.columns([1, 4])[0].number_input("Number of phases", min_value=1, max_value=6, step=1,
                                             **sh.persistent(f"{prefix}_nphases", len(defaults)))
phases = []
for i in range(int(n_phases)):
    d = defaults[i] if i < len(defaults) else {"name": f"phase {i + 1}", "movements": [], "green": 10.0,
                                               "yellow": 3.0, "all_red": 1.0, "min_green": 5.0}
    k = {f: sh.persistent(f"{prefix}_p{i}_{f}", d[f]) for f in ("name", "movements", "green", "yellow", "all_red",
                                                                  "min_green")}
    cols = st.columns([1.3, 3, 1, 1, 1, 1])
    name = cols[0].text_input("Phase", **k["name"])
    moves = cols[1].multiselect("Movements", options, help="'N' = every turn of N; 'N.L' left only; 'N.TR' through "
                                "and right", **k["movements"])
    green = cols[2].number_input("Green (s)", min_value=0.0, max_value=200.0, step=1.0, **k["green"])
    yellow = cols[3].number_input("Yellow (s)", min_value=0.0, max_value=10.0, step=0.5, **k["yellow"])
    red = cols[4].number_input("All-red (s)", min_value=0.0, max_value=10.0, step=0.5, **k["all_red"])
    ming = cols[5].number_input("Min green", min_value=0.0, max_value=60.0, step=1.0, **k["min_green"])
    phases.append({"name": name or f"phase {i + 1}", "movements": moves, "green": green, "yellow": yellow,
                   "all_red": red, "min_green": ming})
cycle = sum(p["green"] + p["yellow"] + p["all_red"] for p in phases)
st.caption(f"Cycle: **{cycle:g} s** (greens + yellows + all-reds). Left turns in a phase with the opposing "
           "through are permitted (filtering); give them their own phase for protection.")

problem = us.turn_shares_problem(approaches)
if problem:
    st.error(md(problem) + " Fix the turning percentages above.", icon=":material/error:")
    st.stop()
try:
    plan = us.build_plan(approaches, phases, name=f"{names.get(site, site)} what-if")
except DataError as exc:
    st.error("The plan is not possible: " + plain_error(exc).replace("In **the plan**, ", "").replace(
        "column ", "field ") + ".", icon=":material/error:")
    st.stop()
plan_json = json.dumps(plan.to_dict(), sort_keys=True)
st.session_state[f"whatif_{ctx.dataset}_{site}"] = {"approaches": approaches, "phases": phases, "plan": plan.to_dict()}

result = analyse(plan, demand, quantile=quantile)
s = result.summary
st.markdown("##### Results over the forecast horizon")
m = st.columns(5)
m[0].metric("Cycle", f"{plan.cycle:g} s")
m[1].metric("Mean control delay", f"{s['delay_s']:.1f} s/veh")
m[2].metric("Intersection LOS", s["los"])
m[3].metric("Worst v/c", f"{s['max_x']:.2f}")
m[4].metric("Total delay", f"{s['delay_veh_h']:.1f} veh-h")
t1, t2, t3 = st.tabs(["Per approach", "Per interval", "Delay chart"])
with t1:
    st.dataframe(us.approach_summary(result.approaches), hide_index=True, width="stretch", key="sw_summary")
with t2:
    st.dataframe(us.results_table(result.approaches), hide_index=True, width="stretch", key="sw_results")
with t3, sh.guarded("delay chart"):
    fig = px.line(result.approaches, x="interval_start", y="delay_s", color="approach", markers=True,
                  labels={"interval_start": "interval", "delay_s": "control delay (s/veh)"})
    fig.update_layout(height=300, margin={"l": 10, "r": 10, "t": 10, "b": 10})
    st.plotly_chart(fig, width="stretch", key="sw_chart")

st.markdown("##### Suggestions")
sug = st.columns(3)
with sug[0], sh.guarded("webster"):
    try:
        w = webster(plan, demand, quantile)
        wa = analyse(w.plan, demand, quantile)
        st.markdown(f"**Webster** (Y = {w.y_total:.2f}, L = {w.lost_time:g} s)")
        st.caption(md(us.greens_text(w.plan)))
        st.metric("Mean delay", f"{wa.summary['delay_s']:.1f} s/veh",
                  f"{wa.summary['delay_s'] - s['delay_s']:+.1f} vs yours", delta_color="inverse")
        st.caption("Cycle (1.5 L + 5)/(1 − Y) from the busiest interval's flow ratios y = v/s and the lost time: "
                   "your greens are not an input. Phases, intergreens, minimum greens, lanes and turns are.")
        st.button("Use Webster's plan", key="sw_use_webster", on_click=_load_plan, args=(prefix, w.plan.to_dict()))
    except TrafficCoreError as exc:
        st.info(f"Webster's method has no answer here: {md(exc)}")
opt_on = st.session_state.get("sw_opt_on", False)
ABOUT = {
    "Optimised": f"Least total control delay over the horizon for the demand shown ({QUANTS[quantile]}): "
                 "searches cycle lengths and splits of this phase sequence.",
    "Robust (P10/P50/P90)": "Least expected delay over the forecast band, P10/P50/P90 weighted 0.3/0.4/0.3 "
                            "(Swanson): gives up a little at the median to hold up if traffic comes in busier "
                            "or quieter than forecast.",
}
for col, label, qs in ((sug[1], "Optimised", (quantile,)), (sug[2], "Robust (P10/P50/P90)", ("p10", "p50", "p90"))):
    with col, sh.guarded(label):
        st.markdown(f"**{label}**")
        st.caption(ABOUT[label])
        if not opt_on:
            if label == "Optimised":
                st.button("Optimise the timings", key="sw_opt", icon=":material/tune:",
                          help="Runs both searches: optimised for the demand shown, and robust over the band",
                          on_click=lambda: st.session_state.update(sw_opt_on=True))
            continue
        try:
            o = optimised(plan_json, demand, qs)
            op = Plan.from_dict(o["plan"])
            oa = analyse(op, demand, quantile)
            st.caption(md(us.greens_text(op)))
            st.metric("Mean delay", f"{oa.summary['delay_s']:.1f} s/veh",
                      f"{oa.summary['delay_s'] - s['delay_s']:+.1f} vs yours", delta_color="inverse")
            st.button(f"Use the {label.split(' ')[0].lower()} plan", key=f"sw_use_{qs[0]}{len(qs)}",
                      on_click=_load_plan, args=(prefix, o["plan"]))
        except TrafficCoreError as exc:
            st.info(f"No better plan found: {md(exc)}")

st.markdown("##### Scenarios A and B")
scen_key = f"{prefix}_scenarios"
b1, b2, _ = st.columns([1, 1, 3])
b1.button("Keep as scenario A", key="sw_keep_a", on_click=_keep, args=("A", scen_key, plan.to_dict()))
b2.button("Keep as scenario B", key="sw_keep_b", on_click=_keep, args=("B", scen_key, plan.to_dict()))
kept = st.session_state.get(scen_key, {})
if kept:
    summaries = {"current": s}
    for slot in sorted(kept):
        summaries[f"scenario {slot}"] = analyse(Plan.from_dict(kept[slot]), demand, quantile).summary
    st.dataframe(us.compare(summaries), width="stretch", key="sw_compare")
    st.caption(" · ".join(f"{slot}: {md(us.greens_text(Plan.from_dict(p)))}" for slot, p in sorted(kept.items())))
else:
    st.caption("Keep the current plan as A, change it, keep it as B: both are then compared on the same demand.")

st.markdown("##### Verify in SUMO and export")
sumo_key = f"{prefix}_sumo"
v1, v2 = st.columns([2, 3])
if v1.button("Verify in SUMO", key="sw_sumo", icon=":material/directions_car:"):
    try:
        with st.spinner("Running the plan in SUMO: netconvert, the signal program and the flows..."):
            sim_rows, sim_summary = simulated(plan_json, demand, quantile)
        st.session_state[sumo_key] = {"plan": plan_json, "quantile": quantile, "rows": sim_rows,
                                      "summary": sim_summary}
    except TrafficCoreError as exc:
        st.session_state.pop(sumo_key, None)
        st.error("SUMO could not run: " + md(exc), icon=":material/error:")
sim = st.session_state.get(sumo_key)
if sim and sim["plan"] == plan_json and sim["quantile"] == quantile:  # shown until the plan or demand changes
    summary = sim["summary"]
    ratio, warning = us.sumo_comparison(s["delay_s"], summary["delay_s"])
    k = st.columns(3)
    k[0].metric("Analytic delay (HCM)", f"{s['delay_s']:.1f} s/veh")
    k[1].metric("SUMO delay", f"{summary['delay_s']:.1f} s/veh")
    k[2].metric("SUMO / analytic", "–" if ratio is None else f"{ratio:.2f}")
    if warning:
        st.warning(warning, icon=":material/warning:")
    st.caption(us.SUMO_DIFFERENCES)
    both = result.approaches.merge(sim["rows"], on=["approach", "interval_start"], how="left")
    st.dataframe(pd.DataFrame({
        "interval": both["interval_start"].dt.strftime("%H:%M"), "approach": both["approach"],
        "analytic delay (s/veh)": both["delay_s"].round(1), "SUMO delay (s/veh)": both["sim_delay_s"].round(1),
        "analytic queue 95% (veh)": both["queue_p95_veh"].round(1),
        "SUMO max queue (veh)": both["sim_max_queue_veh"].round(1),
    }), hide_index=True, width="stretch", key="sw_sumo_table")
    st.caption(f"Mean delay: analytic {s['delay_s']:.1f} s/veh, SUMO {summary['delay_s']:.1f} s/veh "
               f"({summary['vehicles']:,} vehicles, {summary['teleports']} teleports, "
               f"{summary['wall_s']:.1f} s to run).")
with v2:
    d1, d2, d3 = st.columns(3)
    stem = f"plan_{site}".replace(" ", "_")
    d1.download_button("Plan JSON", json.dumps(plan.to_dict(), indent=2), f"{stem}.json", "application/json",
                       key="sw_dl_json", icon=":material/download:")
    d2.download_button("Timing sheet CSV", export.timing_sheet(plan).to_csv(index=False), f"{stem}.csv", "text/csv",
                       key="sw_dl_csv", icon=":material/download:")
    d3.download_button("SUMO tlLogic XML", lambda: sumo_xml(plan_json), f"{stem}.add.xml", "application/xml",
                       key="sw_dl_xml", icon=":material/download:", on_click="ignore")
