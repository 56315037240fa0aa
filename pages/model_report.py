"""Model report: accuracy per horizon against the baselines, ablations and P10-P90 coverage from the newest
benchmark report, plus the training runs recorded in the store."""

from __future__ import annotations

from pathlib import Path

import plotly.express as px
import streamlit as st

from pages import _shared as sh
from trafficcore import config
from trafficcore.errors import DataError
from trafficcore.ui import report as ur
from trafficcore.ui.safe import md

ctx = sh.context()
st.title("Model report")
st.caption("How accurate the forecasts are, against honest baselines, on days the models never saw.")


@st.cache_data(show_spinner=False, ttl=300)
def reports(dirs_state: tuple) -> list[str]:
    """Report files, cached until a report folder changes (its mtime is part of the key)."""
    return [str(p) for p in ur.find_reports([Path(d) for d, _ in dirs_state])]


paths = reports(tuple((str(d), d.stat().st_mtime) for d in ur.report_dirs()))
if not paths:
    st.info("No benchmark report found yet. Run for example `trafficcore benchmark --dataset demo --protocol standard "
            "--models persistence,seasonal_naive,historical_average,gbt,lm --json reports/demo_standard.json`; "
            f"reports are read from {', '.join(str(d) for d in ur.report_dirs()) or 'reports/ and data/'}.",
            icon=":material/info:")
else:
    labels = {p: p.replace(str(config.PROJECT_ROOT) + "/", "") for p in paths}
    path = st.selectbox("Report (newest first)", paths, format_func=labels.get, key="rep_path")
    try:
        rep = ur.load_report(path)
    except DataError as exc:
        st.error(f"This report cannot be read: {md(exc.message)}")
        st.stop()
    split = rep.get("split") or {}
    st.markdown(f"**Dataset** {md(rep.get('dataset', '?'))} · **protocol** {md(rep.get('protocol', '?'))}"
                + (f" · test {md(split.get('test'))}" if isinstance(split, dict) and split.get("test") else ""))
    if str(rep.get("dataset", "")).startswith("demo"):
        st.caption(":material/science: The demo city is synthetic: these numbers show the method works, not how "
                   "it does on a real city.")
    res = ur.results_frame(rep)
    offered = ur.metrics_in(res)
    metric = st.segmented_control("Metric", offered, default=offered[0], key="rep_metric",
                                  format_func=lambda m: ur.METRIC_INFO[m][0]) or offered[0]
    left, right = st.columns([3, 2])
    with left, sh.guarded("metric chart"):
        fig = px.line(res.sort_values("horizon_min"), x="horizon_min", y=metric, color="model", markers=True,
                      labels={"horizon_min": "horizon (min)", metric: ur.METRIC_INFO[metric][0]})
        if metric == "coverage_p10_p90":
            fig.add_hline(y=0.8, line_dash="dot", annotation_text="goal 80%")
        fig.update_layout(height=340, margin={"l": 10, "r": 10, "t": 10, "b": 10})
        st.plotly_chart(fig, width="stretch", key="rep_chart")
    with right:
        st.dataframe(ur.metric_table(res, metric).round(3), width="stretch", key="rep_table")
    vs = ur.versus_best_baseline(res, "mae")
    st.subheader("Against the best baseline (MAE)")
    if vs.empty:
        st.caption("The report has no model beyond the baselines.")
    else:
        st.dataframe(vs.round(3), hide_index=True, width="stretch", key="rep_vs")
    c1, c2 = st.columns(2)
    with c1:
        st.subheader("Ablations")
        abl = ur.results_frame(rep, "ablations")
        if abl.empty:
            st.caption("No ablations in this report.")
        else:
            cols = [c for c in ("model", "variant", "horizon_min", "mae", "rmse", "wape", "coverage_p10_p90")
                    if c in abl.columns]
            st.dataframe(abl[cols].round(3), hide_index=True, width="stretch", key="rep_abl")
    with c2:
        st.subheader("P10-P90 coverage")
        cov = ur.coverage_table(res)
        st.dataframe(cov.round(1), hide_index=True, width="stretch", key="rep_cov")
    timing = ur.flat_timing(rep)
    if not timing.empty:
        with st.expander("Timing"):
            st.dataframe(timing.astype({"value": str}), hide_index=True, width="stretch")

st.subheader("Training runs")
with sh.guarded("training runs"):
    card = ur.shipped_model_card()
    if card:
        facts = " · ".join(f"**{k}** {md(card[k])}" for k in ("model_class", "preset", "dataset") if card.get(k))
        st.markdown(f"**Shipped demo model** (`data/demo_model`): {facts}")
        val = ur.model_card_metrics(card)
        if not val.empty:
            st.caption("Validation metrics it recorded when it was trained (its own validation days; a benchmark "
                       "against the baselines is above once one has been run).")
            labels = {m: info[0] for m, info in ur.METRIC_INFO.items()}
            st.dataframe(val.rename(columns={"horizon_min": "horizon (min)", **labels}).round(3), hide_index=True,
                         width="content", key="rep_card")
        with st.expander("Full model card (config.json)"):
            st.json(card, expanded=False)
    if ctx is not None:
        runs = ur.training_runs(ctx.store)
        if runs.empty:
            st.caption("No training runs recorded in the store yet (`trafficcore train ...` records them).")
        else:
            st.dataframe(runs, hide_index=True, width="stretch", key="rep_runs")
