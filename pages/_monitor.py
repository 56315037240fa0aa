"""The Live page's "served forecast accuracy" section: how well the forecasts served live are doing now, against
what the model promised on validation, and a rollback button for the engineer on duty.

Drawn inside the Live page's auto-refreshing fragment; everything it shows comes from
`trafficcore.ui.monitor.accuracy_view` (accuracy buckets kept up to date as readings arrive), and the
rollback goes through `trafficcore.live.registry.rollback`, the same as `trafficcore models rollback`.
"""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from trafficcore import config
from trafficcore.live import registry
from trafficcore.ui import monitor as um
from trafficcore.ui.safe import md


def _pct(x) -> str:
    return "—" if x is None or x != x else f"{100 * x:.1f}%"


def _num(x) -> str:
    return "—" if x is None or x != x else f"{x:.2f}"


def _trend_chart(view: um.AccuracyView) -> go.Figure:
    t = view.trend
    fig = go.Figure()
    fig.add_scatter(x=t["hour_ts"], y=t["mae"], mode="lines", name="MAE, trailing 24 h", line={"color": "#1f77b4"})
    if view.val_mae is not None:
        margin = float(config.MONITOR_THRESHOLDS["decay_margin"])
        fig.add_hline(y=view.val_mae, line_dash="dot", line_color="#2ca02c", annotation_text="validation MAE",
                      annotation_position="bottom right")
        fig.add_hline(y=view.val_mae * (1 + margin), line_dash="dash", line_color="#d62728",
                      annotation_text=f"decay alert (+{margin:.0%})", annotation_position="top right")
    fig.update_layout(height=260, margin={"l": 10, "r": 10, "t": 10, "b": 10}, showlegend=False,
                      yaxis_title="MAE (reading per interval)")
    return fig


def _rollback(store, dataset: str, view: um.AccuracyView) -> None:
    """A popover with the evidence (each version's served MAE) and the button."""
    target = view.rollback
    if target is None:
        st.caption("Rollback: this dataset has no earlier promoted model version to go back to.")
        return
    served = {r["version"]: r for r in view.by_version.to_dict("records")}

    def live(run: str) -> str:
        r = served.get(run)
        return f"served MAE {r['mae']:.2f} over {r['n']:,} forecasts (7 days)" if r else "not served in the last 7 days"

    with st.popover(f"Roll back to {md(target['to'])}", icon=":material/history:"):
        st.markdown(f"**Current:** {md(target['from'])}: {live(target['from'])}  \n"
                    f"**Previous:** {md(target['to'])}: {live(target['to'])}")
        st.caption("Re-promotes the previous version (as `trafficcore models rollback`); forecasts issued from now "
                   "on come from it, and rolling back again undoes this.")
        if st.button("Roll back now", type="primary", key="live_rollback"):
            done = registry.rollback(store, dataset)
            st.session_state["live_rolled_back"] = f"Rolled back {done['from']} → {done['to']}."
            st.rerun()  # the section redraws with the version now promoted


def accuracy_section(store, dataset: str) -> None:
    """The section itself (called inside the Live page's fragment)."""
    st.subheader("Served forecast accuracy")
    note = st.session_state.pop("live_rolled_back", None)
    if note:
        st.success(md(note), icon=":material/history:")
    view = um.accuracy_view(store, dataset)
    if view.empty:
        st.info("No served forecast has been scored yet: forecasts are scored as the readings they forecast "
                "arrive.", icon=":material/info:")
        _rollback(store, dataset, view)
        return
    day, week = view.headline.get("24h", {"n": 0}), view.headline["7d"]
    c1, c2, c3, c4 = st.columns(4)
    delta = None
    if view.val_mae and day.get("n"):
        delta = f"{day['mae'] / view.val_mae - 1:+.0%} vs validation {view.val_mae:.2f}"
    c1.metric("MAE, last 24 h", _num(day.get("mae")), delta=delta, delta_color="inverse")
    lo, hi = (float(config.MONITOR_THRESHOLDS[k]) for k in ("coverage_low", "coverage_high"))
    c2.metric("P10–P90 coverage, last 24 h", _pct(day.get("coverage_p10_p90")),
              help=f"Share of readings inside the served P10–P90 band: 80% is the goal; an alert is raised when it "
                   f"stays outside {lo:.0%}–{hi:.0%}.")
    c3.metric("MAE, last 7 days", _num(week.get("mae")))
    c4.metric("Forecasts scored, 7 days", f"{int(week.get('n') or 0):,}")
    st.caption(f"Model {md(view.model or um.version_of(view.serving_run))} "
               f"(version {md(um.version_of(view.serving_run))}); windows end at the newest reading's hour, "
               f"{view.window_end:%Y-%m-%d %H:00}."
               + ("" if view.val_mae is not None else " It recorded no validation MAE, so decay is not checked."))
    left, right = st.columns([3, 2])
    with left:
        st.plotly_chart(_trend_chart(view), width="stretch", key="live_acc_trend")
    with right:
        st.dataframe(um.for_display(view.by_horizon).round(2), hide_index=True, width="stretch",
                     key="live_acc_horizons")
    with st.expander("By model version, site and hour of day"):
        st.markdown("**Model versions, last 7 days**")
        st.dataframe(um.for_display(view.by_version).round(2), hide_index=True, width="stretch",
                     key="live_acc_versions")
        st.markdown("**Least accurate sites, last 24 h**")
        st.dataframe(um.for_display(view.worst_sites).round(2), hide_index=True, width="stretch",
                     key="live_acc_sites")
        st.markdown("**By hour of day, last 7 days**")
        st.dataframe(um.for_display(view.by_hour).round(2), hide_index=True, width="stretch", key="live_acc_hours")
    _rollback(store, dataset, view)


def served_section(ctx, rep: dict | None) -> None:
    """The Model report's "served forecasts, last 7 days" table: live accuracy per horizon of the selected dataset,
    beside the benchmark report's MAE when the report is about that dataset (or the dataset replays it)."""
    from pages import _shared as sh
    from trafficcore.ui import report as ur

    st.subheader("Served forecasts, last 7 days")
    if ctx is None:
        st.caption("Load a dataset to see how its served forecasts did.")
        return
    with sh.guarded("served forecasts"):
        bench = None
        if rep is not None:
            src = str(rep.get("dataset") or "")
            if src and (src == ctx.dataset or str(ctx.info.get("description") or "").startswith(f"Replay of {src} ")):
                bench = ur.results_frame(rep)
        table = um.served_vs_benchmark(ctx.store, ctx.dataset, bench)
        if table.empty:
            st.caption(f"No served forecast of {md(ctx.dataset)} has been scored in the last 7 days (live forecasts "
                       "are scored as their readings arrive: `trafficcore ingest`, the API or `trafficcore replay`).")
            return
        st.caption("MAE of the forecasts the live service issued, scored against the readings that followed "
                   "(`trafficcore monitor`)" + (", beside the benchmark's MAE on its test days." if bench is not None
                                                else "; select a benchmark report of this dataset to compare."))
        pct = [c for c in table.columns if "(%)" in c]
        st.dataframe(table.round(3).round({c: 1 for c in pct}), hide_index=True, width="stretch", key="rep_served")

