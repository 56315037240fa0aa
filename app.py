"""trafficcore dashboard: router and shared sidebar. Every computation lives in trafficcore.

The sidebar holds what every page shares: the dataset, the model answering forecasts, the "as of"
clock (issue time) and the selected site. Dataset, site, issue time and horizon are mirrored in
the URL query (`?dataset=demo&site=S07&at=2025-10-21T08:00&h=60`), so a link reproduces a view and
survives page switches.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import pandas as pd
import streamlit as st

_T0 = time.perf_counter()
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # `pages._shared` must import under AppTest as under `streamlit run`
    sys.path.insert(0, str(HERE))

from pages import _shared as sh  # noqa: E402
from trafficcore import config  # noqa: E402
from trafficcore.ui import clock  # noqa: E402
from trafficcore.ui import models as uim  # noqa: E402
from trafficcore.ui.safe import md  # noqa: E402
from trafficcore.ui.series import site_options  # noqa: E402

LOGO = str(HERE / "assets" / "logo.svg")
CSS = HERE / "assets" / "style.css"
st.set_page_config(page_title="trafficcore", page_icon=LOGO, layout="wide", initial_sidebar_state="expanded")
logging.basicConfig(level=logging.INFO)
st.logo(LOGO, size="large")
if CSS.exists():
    st.html(f"<style>{CSS.read_text()}</style>")

PAGES = HERE / "pages"
NAV = {
    "Explore": [
        st.Page(PAGES / "forecast_map.py", title="Forecast map", icon=":material/map:", url_path="map", default=True),
        st.Page(PAGES / "site_detail.py", title="Site detail", icon=":material/show_chart:", url_path="site"),
        st.Page(PAGES / "live.py", title="Live", icon=":material/sensors:", url_path="live"),
        st.Page(PAGES / "incident.py", title="Incident response", icon=":material/emergency:", url_path="incident"),
    ],
    "Engineer": [
        st.Page(PAGES / "signal_whatif.py", title="Signal what-if", icon=":material/traffic:", url_path="signal"),
        st.Page(PAGES / "tod_plans.py", title="Time-of-day plans", icon=":material/schedule:", url_path="plans"),
    ],
    "Explain": [
        st.Page(PAGES / "why_forecast.py", title="Why this forecast", icon=":material/psychology:", url_path="why"),
        st.Page(PAGES / "model_report.py", title="Model report", icon=":material/leaderboard:", url_path="report"),
    ],
    "Data": [
        st.Page(PAGES / "import_quality.py", title="Import & quality", icon=":material/upload_file:",
                url_path="data"),
    ],
}


def _reset_view() -> None:
    """A new dataset has other sites, models and another time range: forget the old selection."""
    for key in ("site", "asof_date", "asof_time", "model"):
        sh.kept_store().pop(key, None)


def _set_time(ts: pd.Timestamp) -> None:
    sh.keep("asof_date", ts.date())
    sh.keep("asof_time", f"{ts:%H:%M}")


def _first_run_query() -> dict:
    """The URL query as the session found it (read once, so page switches cannot erase it)."""
    if "_qp0" not in st.session_state:
        st.session_state["_qp0"] = {k: st.query_params.get(k) for k in ("dataset", "site", "at", "h")}
    return st.session_state["_qp0"]


def _once(flag: str) -> bool:
    """True the first time a session asks (the URL query applies only to a session's first view)."""
    first = not st.session_state.get(flag)
    st.session_state[flag] = True
    return first


def sidebar() -> sh.Context | None:
    db = str(config.db_path())
    store = sh.get_store(db)
    qp = _first_run_query()
    version = sh.store_version(db)
    names = sh.get_names(db, version)
    if not names:
        st.sidebar.warning("The store is empty. Run `trafficcore demo` to generate the demo city, "
                           "or import data on the **Import & quality** page.")
        return None
    if sh.kept("dataset") not in names:
        want = qp.get("dataset") if _once("_qp_dataset") else None
        sh.keep("dataset", want if want in names else ("demo" if "demo" in names else names[0]))
    dataset = st.sidebar.selectbox("Dataset", names, **sh.persistent("dataset", None, then=_reset_view))
    info = sh.get_info(db, dataset, version)
    if info.get("synthetic"):
        st.sidebar.caption(":material/science: synthetic data")
    stamp = sh.get_stamp(db, dataset, version)
    panel = sh.get_panel(db, dataset, stamp)
    if len(panel.times) < 20:
        st.sidebar.warning(f"Dataset '{md(dataset)}' has too few readings to forecast from.")
        return None

    # ---- model
    options = sh.get_choices(db, dataset, info, version)
    keys = [c.key for c in options]
    if sh.kept("model") not in keys:
        sh.keep("model", keys[0])
    current = options[keys.index(sh.kept("model"))]
    key = st.sidebar.selectbox("Model", keys, format_func=lambda k: options[keys.index(k)].label,
                               help=md(current.label) + (f" (folder {md(current.path)})" if current.path else ""),
                               **sh.persistent("model", keys[0]))
    choice = options[keys.index(key)]

    # ---- as-of clock
    first, last = clock.issue_range(panel)
    times = clock.time_options(panel)
    day0, hhmm0 = sh.kept("asof_date"), sh.kept("asof_time")
    if day0 is None or hhmm0 not in times or not first.date() <= day0 <= last.date():
        want = clock.from_url(qp.get("at")) if _once("_qp_at") else None
        _set_time(clock.snap(panel, want) if want is not None else clock.default_issue_time(panel))
    st.sidebar.markdown("**As of** (forecast issue time)")
    c1, c2 = st.sidebar.columns([3, 2])
    day = c1.date_input("Date", min_value=first.date(), max_value=last.date(), label_visibility="collapsed",
                        format="YYYY-MM-DD", **sh.persistent("asof_date", None))
    hhmm = c2.selectbox("Time", times, label_visibility="collapsed", **sh.persistent("asof_time", times[0]))
    issued_at = clock.snap(panel, clock.combine(day, hhmm))
    st.sidebar.button("Jump to the newest reading", on_click=_set_time, args=(last,), icon=":material/update:",
                      width="stretch")
    st.sidebar.caption(clock.describe(issued_at, panel))

    # ---- site
    sites = site_options(panel)
    ids = list(sites["site_id"])
    if sh.kept("site") not in ids:
        want = qp.get("site") if _once("_qp_site") else None
        sh.keep("site", want if want in ids else (ids[0] if ids else None))
    labels = dict(zip(sites["site_id"], sites["label"], strict=True))
    site = (st.sidebar.selectbox("Site", ids, format_func=lambda s: labels.get(s, s), **sh.persistent("site", None))
            if ids else None)

    if sh.kept("horizon") is None:
        try:
            sh.keep("horizon", int(qp.get("h") or 60) if _once("_qp_h") else 60)
        except ValueError:
            sh.keep("horizon", 60)

    # ---- model status
    model, status, answering, stored = None, "", choice, False
    with st.sidebar.container(border=True):
        st.markdown("**Model in use**")
        try:
            lkey = sh.loader_key(db, dataset, stamp, choice)
            loader = sh.loader_for(lkey)
            busy = sh.in_background(choice) and (loader is None or not loader.ready)
            if busy and sh.has_stored(db, dataset, stamp, choice, issued_at):
                # this model issued these forecasts ahead (`trafficcore demo`): show them, load the model later
                stored = True
                status = (f"{choice.label}: these forecasts were issued by it ahead of time and read from the store; "
                          "the model itself is loading in the background (other times, explanations).")
                st.caption(md(status))
                st.session_state["_load_soon"] = (db, dataset, stamp, choice)
                st.session_state.setdefault("_load_soon_at", time.perf_counter() + LOAD_DELAY_S)
                _refresh_when_loaded(lkey)
            elif busy:
                # a slow model is being prepared in the background: answer with the historical average
                answering = next(c for c in options if c.key == "fit:historical_average")
                model, note = sh.get_model(db, dataset, stamp, answering)
                status = (f"{choice.label}: being prepared, the page refreshes when it is ready. Meanwhile: "
                          + uim.describe(answering, model, note))
                st.caption(md(status))
                # deferred like the stored first view's load (LOAD_DELAY_S says why): a region's first map took
                # 6 s longer in the browser while torch loaded beside it
                st.session_state["_load_soon"] = (db, dataset, stamp, choice)
                st.session_state.setdefault("_load_soon_at", time.perf_counter() + LOAD_DELAY_S)
                _refresh_when_loaded(lkey)
            else:
                model, note = sh.get_model(db, dataset, stamp, choice)
                status = uim.describe(choice, model, note)
                tip = uim.path_help(choice)
                st.caption(md(status), help=md(tip) if tip else None)
        except Exception as exc:  # noqa: BLE001 - a broken model must not take the app down
            sh.log.exception("model %s for %s failed", choice.key, dataset)
            status = f"The model '{choice.label}' could not be prepared ({type(exc).__name__}); choose another."
            st.warning(md(status))

    ctx = sh.Context(db=db, store=store, dataset=dataset, info=info, stamp=stamp, panel=panel, choice=answering,
                     model=model, model_note=status, issued_at=issued_at, site=site, horizon=int(sh.kept("horizon")),
                     stored=stored)
    sync_query(ctx)
    return ctx


#: Seconds between a session's first view (drawn from stored forecasts, or by the historical average while
#: the model loads) and the start of the model's background load: importing torch and transformers takes
#: the CPU the browser needs to draw the map (software WebGL on a small machine), so the load waits. A page
#: that needs the model itself (an explanation, a day profile, another issue time) starts it at once.
LOAD_DELAY_S = 8.0


@st.fragment(run_every=1.0)
def _refresh_when_loaded(key: str) -> None:
    """Poll the background loader (starting a deferred load when due); rerun the whole app once it is ready."""
    pending = st.session_state.get("_load_soon")
    if pending and time.perf_counter() >= st.session_state.get("_load_soon_at", 0.0):
        sh.start_loading(*st.session_state.pop("_load_soon"))
    loader = sh.loader_for(key)
    if loader is not None and loader.ready:
        st.rerun(scope="app")


def sync_query(ctx: sh.Context) -> None:
    """Mirror the shared selection in the URL (rewritten after page switches, which clear it)."""
    want = {"dataset": ctx.dataset, "at": clock.to_url(ctx.issued_at), "h": str(ctx.horizon)}
    if ctx.site:
        want["site"] = ctx.site
    if st.query_params.to_dict() != want:
        st.query_params.from_dict(want)


try:
    st.session_state["_ctx"] = sidebar()
except Exception as exc:  # noqa: BLE001 - never a raw traceback in the browser
    st.session_state["_ctx"] = None
    sh.report_failure("sidebar", exc)

sh.PAGES.update({p.url_path or "map": p for group in NAV.values() for p in group})
page = st.navigation(NAV)
try:
    page.run()
except Exception as exc:  # noqa: BLE001
    sh.report_failure(f"page {page.title}", exc)
finally:  # server time per run, for the 1-second bar (the browser tests read these lines)
    sh.timing.info("run page=%s took %.3f s", page.url_path or "map", time.perf_counter() - _T0)
