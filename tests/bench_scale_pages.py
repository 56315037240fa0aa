"""Time the Forecast map, Site detail and Signal what-if through Streamlit AppTest on one dataset of a store.

    python tests/bench_scale_pages.py --db STORE --dataset region [--json out.json] [--browser]

Run by `python -m trafficcore.evaluation.scale` (the package itself never imports Streamlit). Prints, and
writes as JSON, seconds per step: the map's first view, the wait for the serving model, the map with that
model's forecasts for every detector, a horizon change, a site search in the sidebar (which zooms a region
map into the site's area), back to the whole region, Site detail and Signal what-if (first run and rerun),
the map page's data preparation (the `trafficcore.ui` functions it calls), the deck's JSON size, and this
process's peak memory (the dashboard's, as AppTest runs the app in-process). With --browser (Debian chromium
and Playwright, as in tests/test_browser.py), also the first map in a real browser: seconds from the start of
`streamlit run` until the map canvas shows the circles, and from opening the page.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "app.py"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--browser", action="store_true", help="also time the first map in chromium")
    a = ap.parse_args()
    os.environ["TRAFFICCORE_DB"] = a.db
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(APP.parent))
    from streamlit.testing.v1 import AppTest

    from pages import _shared as sh
    from trafficcore.ui import forecasts as uif
    from trafficcore.ui import mapview

    out: dict = {}
    errors: list[str] = []
    if a.browser:  # first, while nothing is cached: a user's first visit after `streamlit run`
        out.update(browser_first_map(Path(a.db)))

    def timed(key: str, fn):
        t0 = time.perf_counter()
        res = fn()
        out[key] = time.perf_counter() - t0
        print(f"{key:<20s} {out[key]:7.2f} s", flush=True)
        if at.exception:
            errors.append(f"{key}: " + "; ".join(str(e.value) for e in at.exception))
        return res

    at = AppTest.from_file(str(APP), default_timeout=1800)
    at.query_params.update({"dataset": a.dataset})
    timed("map_first_s", at.run)
    ctx = at.session_state["_ctx"]
    t0 = time.perf_counter()  # the serving model (the sidebar's first choice), loaded in the background meanwhile
    serving = sh.get_choices(ctx.db, ctx.dataset, ctx.info, sh.store_version(ctx.db))[0]
    sh.get_model(ctx.db, ctx.dataset, ctx.stamp, serving)
    out["model_wait_s"] = time.perf_counter() - t0
    timed("map_model_s", at.run)
    ctx = at.session_state["_ctx"]
    out["model"] = ctx.choice.label if ctx.choice else None
    hs = list(at.select_slider(key="map_h").options)
    timed("map_horizon_s", lambda: at.select_slider(key="map_h").set_value(hs[0]).run())
    deck = at.get("deck_gl_json_chart")
    out["deck_kb"] = len(deck[0].proto.json) / 1024 if deck else None
    sites = list(at.sidebar.selectbox(key="site").options)
    target = sites[len(sites) // 2]
    timed("site_search_s", lambda: at.sidebar.selectbox(key="site").set_value(target).run())
    out["map_area_s"] = out["site_search_s"]
    deck = at.get("deck_gl_json_chart")
    out["deck_area_kb"] = len(deck[0].proto.json) / 1024 if deck else None
    whole = [b for b in at.button if b.key == "map_whole"]
    if whole:
        timed("map_city_s", lambda: whole[0].click().run())
    timed("site_first_s", lambda: at.switch_page("pages/site_detail.py").run())
    timed("site_rerun_s", at.run)
    timed("signal_first_s", lambda: at.switch_page("pages/signal_whatif.py").run())
    timed("signal_rerun_s", at.run)

    ctx = at.session_state["_ctx"]
    fc = ctx.forecast()
    panel = ctx.panel
    measure = uif.main_measure(panel)
    t0 = time.perf_counter()
    totals = uif.site_totals(fc, panel, ctx.horizon, measure)
    styled, _ = uif.style_sites(totals, "change", ctx.site)
    uif.road_lines(panel)
    if mapview.aggregated(len(styled)):
        grid = mapview.area_grid(styled)
        uif.style_sites(mapview.area_totals(totals, grid, measure), "change")
    out["map_prep_s"] = time.perf_counter() - t0
    out["sites"] = len(styled)
    out["aggregated"] = mapview.aggregated(len(styled))
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["errors"] = errors
    print(json.dumps(out, indent=2))
    if a.json:
        a.json.write_text(json.dumps(out))
    sys.exit(1 if errors else 0)


def browser_first_map(db: Path) -> dict:
    """Seconds until the map canvas shows the circles in chromium: from `streamlit run`, and from opening the page."""
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        from test_browser import ARGS, CHROMIUM, _canvas_has_sites, streamlit_server
    except BaseException as e:  # noqa: BLE001 - pytest's skip (no chromium, no Playwright) is a BaseException
        return {"browser_error": f"no browser measurement: {e}"}
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="tc-browser-") as tmp, sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(str(Path(tmp) / "profile"), executable_path=str(CHROMIUM),
                                                    headless=True, args=ARGS, viewport={"width": 1366, "height": 768})
        page = ctx.new_page()
        started = time.perf_counter()
        try:
            with streamlit_server(db, Path(tmp), Path(tmp) / "streamlit.log") as url:
                t0 = time.perf_counter()
                page.goto(url + "/")
                page.locator('[data-testid="stDeckGlJsonChart"] canvas').first.wait_for(state="visible",
                                                                                       timeout=300_000)
                deadline = time.perf_counter() + 120
                while not _canvas_has_sites(page) and time.perf_counter() < deadline:
                    page.wait_for_timeout(100)
                done = time.perf_counter()
                return {"browser_first_map_s": done - started, "browser_first_map_after_open_s": done - t0}
        finally:
            ctx.close()


if __name__ == "__main__":
    main()
