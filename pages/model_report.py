"""Model report: accuracy per horizon against the baselines, ablations and P10-P90 coverage from the newest
benchmark report, the served forecasts' accuracy over the last 7 days beside it, plus the training runs recorded in
the store."""

from __future__ import annotations

from pathlib import Path

import plotly.express as px
import streamlit as st

from pages import _shared as sh
from pages._monitor import served_section
from trafficcore.errors import DataError
from trafficcore.ui import SYNTHETIC_LABEL
from trafficcore.ui import report as ur
from trafficcore.ui.safe import md

ctx = sh.context()
st.title("Model report")
st.caption("How accurate the forecasts are, against honest baselines, on days the models never saw.")


@st.cache_data(show_spinner=False, ttl=300)
def reports(dirs_state: tuple) -> dict[str, str]:
    """Report files (newest run first) and their names in words, cached until a report folder changes."""
    return {str(p): name for p, name in ur.report_names([Path(d) for d, _ in dirs_state]).items()}


names = reports(tuple((str(d), d.stat().st_mtime) for d in ur.report_dirs()))
if not names:
    st.info("No benchmark report found yet. Run for example `trafficcore benchmark --dataset demo --protocol standard "
            "--models persistence,seasonal_naive,historical_average,gbt,lm --seeds 0,1,2 "
            "--json reports/demo_standard.json`; "
            f"reports are read from {', '.join(str(d) for d in ur.report_dirs()) or 'reports/ and data/'}.",
            icon=":material/info:")
else:
    path = st.selectbox("Report (newest run first)", list(names), format_func=names.get, key="rep_path")
    try:
        rep = ur.load_report(path)
    except DataError as exc:
        st.error(f"This report cannot be read: {md(exc.message)}")
        st.stop()
    split = rep.get("split") or {}
    test = split.get("test") if isinstance(split, dict) else None
    st.markdown(f"**{md(names[path])}**" + (f" · test days {md(test[0])} to {md(test[1])}" if isinstance(test, list)
                                                and len(test) == 2 else ""))
    if (isinstance(split, dict) and split.get("synthetic")) or str(rep.get("dataset", "")).startswith("demo"):
        st.caption(f":material/science: **{SYNTHETIC_LABEL}** These numbers show the method works, not how it "
                   "does on a real city.")
    res = ur.results_frame(rep)
    offered = ur.metrics_in(res)
    metric = st.segmented_control("Metric", offered, default=offered[0], key="rep_metric",
                                  format_func=lambda m: ur.METRIC_INFO[m][0]) or offered[0]
    label = ur.METRIC_INFO[metric][0]
    shown = res.assign(**{metric: res[metric] * ur.scale(metric)})
    left, right = st.columns([3, 2])
    with left, sh.guarded("metric chart"):
        fig = px.line(shown.sort_values("horizon_min"), x="horizon_min", y=metric, color="model", markers=True,
                      labels={"horizon_min": "horizon (min)", metric: label})
        right_margin = 10
        if metric == "coverage_p10_p90":
            # the label sits right of the plot area, clear of the model lines that run close to 80%
            fig.add_hline(y=ur.COVERAGE_GOAL_PCT, line_dash="dot", annotation_text="goal 80%",
                          annotation_position="right")
            right_margin = 80
        fig.update_layout(height=340, margin={"l": 10, "r": right_margin, "t": 10, "b": 10})
        st.plotly_chart(fig, width="stretch", key="rep_chart")
    with right:
        st.dataframe((ur.metric_table(res, metric) * ur.scale(metric)).round(1 if metric in ur.PERCENT else 3),
                     width="stretch", key="rep_table")
    if rep.get("seeds"):
        n_seeds = len(rep["seeds"])
        st.subheader(f"Over {n_seeds} seed{'s' if n_seeds != 1 else ''} (mean ± sd)")
        st.caption("Each seeded model was trained once per seed; deterministic models were run once (sd 0).")
        st.dataframe(ur.seed_summary(rep), hide_index=True, width="stretch", key="rep_seeds")
        cis = ur.interval_table(rep)
        if not cis.empty:
            b = rep.get("bootstrap") or {}
            st.subheader(f"Against {b.get('reference', 'gbt')}: 95% interval of the MAE difference")
            st.caption("Paired on the same samples; moving-block bootstrap over issue times "
                       f"({b.get('block_hours', 4):g}-hour blocks, all detectors together, "
                       f"{b.get('replicates', 2000):,} replicates). "
                       "Negative means lower error than the reference; an interval that spans zero is not a clear "
                       "difference.")
            st.dataframe(cis, hide_index=True, width="stretch", key="rep_ci")
    vs = ur.versus_best_baseline(res, "mae")
    st.subheader("Against the best baseline (MAE)")
    if vs.empty:
        st.caption("The report has no model beyond the baselines.")
    else:
        st.dataframe(ur.for_display(vs).round(3), hide_index=True, width="stretch", key="rep_vs")
    c1, c2 = st.columns(2)
    with c1:
        st.subheader("Ablations")
        abl = ur.results_frame(rep, "ablations")
        if abl.empty:
            st.caption("No ablations in this report.")
        else:
            cols = [c for c in ("model", "variant", "horizon_min", "mae", "rmse", "wape", "coverage_p10_p90")
                    if c in abl.columns]
            st.dataframe(ur.for_display(abl[cols]).round(3), hide_index=True, width="stretch", key="rep_abl")
    with c2:
        st.subheader("P10-P90 coverage")
        cov = ur.coverage_table(res)
        st.dataframe(ur.for_display(cov).round(1), hide_index=True, width="stretch", key="rep_cov")
    timing = ur.timing_rows(rep)
    if not timing.empty:
        with st.expander("Timing"):
            st.dataframe(timing, hide_index=True, width="stretch")

served_section(ctx, rep if names else None)

st.subheader("Training runs")
with sh.guarded("training runs"):
    card = ur.shipped_model_card()
    if card:
        facts = " · ".join(f"**{label}** {md(card[k])}" for k, label in (("name", "model"), ("recipe", "recipe"),
                                                                         ("dataset", "dataset")) if card.get(k))
        st.markdown(f"**Shipped demo model** (`data/demo_model`): {facts}")
        val = ur.model_card_metrics(card)
        if not val.empty:
            st.caption("Validation metrics it recorded when it was trained (its own validation days; a benchmark "
                       "against the baselines is above once one has been run).")
            st.dataframe(ur.for_display(val).round(3), hide_index=True,
                         width="content", key="rep_card")
        with st.expander("Full model card (config.json)"):
            st.json(card, expanded=False)
    if ctx is not None:
        runs = ur.training_runs(ctx.store)
        if runs.empty:
            st.caption("No training runs recorded in the store yet (`trafficcore train ...` records them).")
        else:
            st.dataframe(runs, hide_index=True, width="stretch", key="rep_runs")
