"""Why this forecast: which words of the context and which numbers pushed one forecast up or down.

The page explains the P50 forecast of the selected site's approach at the sidebar's issue time and
a chosen horizon (trafficcore.explain: permutation Shapley values over words and numeric groups,
TreeSHAP for gradient boosting). It says first whether the model in use reads text at all: only then is
a scenario note offered ("concert at the stadium at 7 pm"), restated as the model reads it (times relative
to the issue time, places as distances: trafficcore.notes) and shown so; otherwise the page says why and
offers a model that reads text where one is available.
"""

from __future__ import annotations

import importlib.util
import time

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from pages import _shared as sh
from trafficcore.data.windows import context_fields
from trafficcore.models.base import reads_text
from trafficcore.text import context_text
from trafficcore.ui import models as uim
from trafficcore.ui import series
from trafficcore.ui.safe import md, plot_text

HAVE_EXPLAIN = importlib.util.find_spec("trafficcore.explain") is not None


@st.cache_data(show_spinner="Explaining the forecast...", max_entries=64)
def explanation(db: str, dataset: str, stamp: str, _choice, choice_key: str, detector: str, issued_at: str,
                horizon: int, note: str):
    from trafficcore import explain as tx

    model, _ = sh.get_model(db, dataset, stamp, _choice)
    e = tx.explain(model, sh.get_panel(db, dataset, stamp), detector, pd.Timestamp(issued_at), horizon,
                   note=note or None)
    return e, tx.tokens_html(e), tx.features_frame(e), tx.phrases(e)


def importance(ctx: sh.Context, model, choice_key: str, day: str, horizon: int, n: int):
    """Mean |attribution| over a sample of `n` forecasts of the day (kept per model and data version).

    The first time shows a progress bar (one step per forecast explained); later runs read the kept result.
    """
    from trafficcore import explain as tx

    key = (ctx.db, ctx.dataset, ctx.stamp, choice_key, day, int(horizon), int(n))
    out = sh.memo_get("global_importance", key)
    if out is not None:
        return out
    t0 = time.perf_counter()
    with st.status(f"Explaining a sample of {n} forecasts...", expanded=True) as box:
        panel = ctx.panel
        rng = np.random.default_rng(0)
        dets = rng.choice(panel.detectors["detector_id"].to_numpy(), size=n)
        hours = rng.choice(np.arange(6, 21), size=n)
        pairs = [(d, pd.Timestamp(day) + pd.Timedelta(hours=int(h))) for d, h in zip(dets, hours, strict=True)]
        bar = st.progress(0.0)
        out = tx.global_importance(model, panel, pairs, horizon_min=horizon, n_permutations=4,
                                   progress=lambda d, k: bar.progress(d / k, text=f"{d} of {k} forecasts explained"))
        box.update(label=f"Explained {n} forecasts in {time.perf_counter() - t0:.1f} s", state="complete",
                   expanded=False)
    sh.memo_put("global_importance", key, out, max_entries=8)
    return out


#: Plotly's toolbar only on hover: drawn on top, it covered the chart titles.
PLOTLY_CONFIG = {"displayModeBar": "hover"}


def bars(names, values, title: str) -> go.Figure:
    colours = ["#e53935" if v >= 0 else "#1e88e5" for v in values]
    fig = go.Figure(go.Bar(x=list(values), y=list(names), orientation="h", marker_color=colours))
    fig.update_layout(height=max(220, 26 * len(names) + 60), margin={"l": 10, "r": 10, "t": 44, "b": 10},
                      title=title, yaxis={"autorange": "reversed"},
                      xaxis_title="change of the forecast")
    return fig


ctx = sh.require_context()
sh.header("Why this forecast", ctx, "Which words of the context and which numbers pushed the forecast up or down.")
sh.require_model(ctx)
panel = ctx.panel
site = ctx.site
dets = series.site_detectors(panel, site) if site else None
if dets is None or dets.empty:
    st.info("Choose a site with detectors in the sidebar.")
    st.stop()
labels = list(dets["label"])
choice = sh.chosen(ctx)
if choice.key != ctx.choice.key:  # the picked model is still being prepared: explaining needs the model itself
    with st.spinner(f"Preparing {choice.label}..."):
        model, _ = sh.get_model(ctx.db, ctx.dataset, ctx.stamp, choice)
else:
    model = sh.loaded_model(ctx)
text_model = reads_text(model)
c1, c2 = st.columns([2, 2])
approach = c1.selectbox("Approach", labels, key="why_approach")
detector = dets.loc[dets["label"] == approach, "detector_id"].iloc[0]
hs = [int(h) for h in model.spec.horizons_min]
if st.session_state.get("why_h") not in hs:
    st.session_state["why_h"] = min(hs, key=lambda h: abs(h - ctx.horizon))
horizon = c2.select_slider("Horizon (minutes ahead)", options=hs, key="why_h")
note = ""
if text_model:
    st.caption(f":material/article: **{md(choice.label)}** reads text: the events near this site and a "
               "scenario note. Times and places in a note are restated as the model reads them, relative to "
               f"the issue time ({ctx.issued_at:%a %d %b %H:%M}) and to this approach.")
    note = st.text_input("Scenario note (optional): the model reads it with the context", key="why_note",
                         max_chars=300, placeholder="e.g. concert at the stadium at 7 pm, 20,000 visitors").strip()
else:
    readers = [c for c in sh.get_choices(ctx.db, ctx.dataset, ctx.info, sh.store_version(ctx.db))
               if c.key != choice.key and uim.reads_text(c)]
    why = (f"**{md(choice.label)}** does not read text: its forecast comes from numbers only (recent readings, "
           "neighbours, the same time last week, the calendar), so a scenario note would change nothing and is "
           "not offered here.")
    if readers:
        st.info(why + f" **{md(readers[0].label)}** reads text (events near a site, and a note).",
                icon=":material/info:")
        st.button(f"Use {readers[0].label.split(' (')[0]} to try a note", key="why_use_reader",
                  icon=":material/swap_horiz:", on_click=sh.keep, args=("model", readers[0].key))
    else:
        st.info(why + " No model that reads text is available for this dataset; train one with "
                f"`trafficcore train --dataset {md(ctx.dataset)} --model lm`.", icon=":material/info:")

if not HAVE_EXPLAIN:
    st.info("Explanations are not available in this version: the explanation module (`trafficcore.explain`) is "
            "not installed. The forecast and the text the model reads are shown below.", icon=":material/info:")
    fields = context_fields(panel, panel.column(detector), panel.index_of(ctx.issued_at))
    st.text(context_text(fields))
    st.stop()

e, tokens_html, features, phrases = explanation(ctx.db, ctx.dataset, ctx.stamp, choice, choice.key,
                                                detector, str(ctx.issued_at), int(horizon), note)
unit = "veh" if panel.detectors.set_index("detector_id").loc[detector, "measure"] != "speed" else "km/h"
target = pd.Timestamp(e.issued_at) + pd.Timedelta(minutes=int(horizon)) - panel.interval
m = st.columns(4)
m[0].metric(f"Forecast for {target:%H:%M} (P50)", f"{e.prediction:.0f} {unit}")
m[1].metric("Typical for this time", f"{e.typical:.0f} {unit}")
m[2].metric("Base value (no context)", f"{e.base_value:.0f} {unit}")
m[3].metric("Sum of attributions", f"{e.prediction - e.base_value:+.1f} {unit}")
st.info(md(e.summary), icon=":material/lightbulb:")
all_zero = (features["value"].abs().max() if len(features) else 0) < 1e-6 and not any(abs(v) > 1e-6 for _, v in phrases)
if all_zero:
    st.warning(f"The model in use ({md(choice.label)}) does not react to recent readings or to text: "
               "its forecast is the typical profile, so every attribution is zero. To see reasons, choose "
               "gradient boosting in the sidebar, or a language model (the shipped one on the demo city, or one "
               "trained on this dataset with `trafficcore train`).", icon=":material/info:")

left, right = st.columns([3, 2])
with left:
    if note:
        st.markdown("**Your note**")
        st.text(e.note)
        if e.note_read:
            st.markdown("**As the model reads it**")
            st.text(e.note_read)
        else:
            st.warning(f"The model is not given this note: {md(e.note_unread)}. It reads a note as it reads an event, "
                       "and it was shown only events within that window, so it has not learnt what one outside it "
                       "means; the forecast is the one without the note.", icon=":material/schedule:")
        if e.note_recognised:
            st.dataframe(pd.DataFrame(e.note_recognised).rename(columns={"kind": "understood as", "words": "you wrote",
                                                                         "meaning": "the model reads"}),
                         hide_index=True, width="stretch", key="why_note_parts")
        else:
            st.caption("No time, date or known place recognised in the note: the model reads its words only.")
    if text_model:
        st.markdown("**The context the model read**" + (" (shaded: red pushed up, blue pushed down)" if tokens_html
                                                         else ""))
        if tokens_html:
            st.html(tokens_html)
        else:
            st.caption("Nothing to read for this forecast: no event near this site is announced or under way, and "
                       "there is no note. The numbers alone explain it.")
    else:
        st.markdown("**The context** (this model does not read it; shown for reference)")
        fields = context_fields(panel, panel.column(detector), panel.index_of(ctx.issued_at))
        st.text(context_text(fields))
    if phrases:
        ph = pd.DataFrame(phrases, columns=["phrase", "value"])
        ph = ph.reindex(ph["value"].abs().sort_values(ascending=False).index).head(6)
        st.dataframe(ph.round(2), hide_index=True, width="stretch", key="why_phrases")
with right, sh.guarded("attribution chart"):
    st.plotly_chart(bars(features["name"], features["value"], f"Numeric features ({unit})"), width="stretch",
                    key="why_features", config=PLOTLY_CONFIG)
st.caption(f"Additive: base {e.base_value:.2f} + attributions {e.total() - e.base_value:+.2f} = "
           f"{e.total():.2f} (forecast {e.prediction:.2f}).")

st.subheader("Global importance")
gkey = f"why_global_{ctx.dataset}_{choice.key}_{horizon}"
if st.button("Explain a sample of 24 forecasts on this day", key="why_global", icon=":material/bar_chart:"):
    st.session_state[gkey] = True
if st.session_state.get(gkey):
    with sh.guarded("global importance"):
        fdf, tdf = importance(ctx, model, choice.key, str(ctx.issued_at.normalize()), int(horizon), 24)
        g1, g2 = st.columns(2)
        g1.plotly_chart(bars(fdf["name"], fdf["mean_abs"], "Mean |attribution| per feature group"), width="stretch",
                        key="why_gfeat", config=PLOTLY_CONFIG)
        if len(tdf):
            words = [plot_text(t) for t in tdf["token"]]
            g2.plotly_chart(bars(words, tdf["mean_abs"], "Mean |attribution| per frequent word"),
                            width="stretch", key="why_gtok", config=PLOTLY_CONFIG)
        else:
            g2.caption("No word attributions: the model in use does not read text.")
else:
    st.caption("Mean absolute attribution per feature group and per frequent word over a sample of forecasts.")
