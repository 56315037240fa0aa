"""Time the Explore pages through Streamlit AppTest on a store (the demo city by default).

    TRAFFICCORE_DB=/tmp/hx/demo.duckdb python tests/bench_explore_pages.py [--profile site|why|plans]

Prints seconds per step: the first map view, the model loaded, then each page's first run and a
rerun (cached), and the "Explain a sample of 24" click. With --profile, cProfile's top entries for that step.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = Path(__file__).resolve().parents[1] / "app.py"


def timed(label: str, fn, profile: bool = False):
    prof = cProfile.Profile() if profile else None
    t0 = time.perf_counter()
    if prof:
        prof.enable()
    out = fn()
    if prof:
        prof.disable()
    print(f"{label:<40s} {time.perf_counter() - t0:6.2f} s", flush=True)
    if prof:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(35)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", choices=["site", "why", "plans", "global"], default=None)
    ap.add_argument("--site", default="S07")
    args = ap.parse_args()
    at = AppTest.from_file(str(APP), default_timeout=600)
    at.query_params.update({"dataset": "demo", "site": args.site})
    timed("map, first view", at.run)
    # wait for the serving model (the first view may read stored forecasts while it loads)
    sys.path.insert(0, str(APP.parent))
    from pages import _shared as sh

    t0 = time.perf_counter()
    ctx = at.session_state["_ctx"]
    sh.loaded_model(ctx) if ctx.model is None else None
    print(f"{'model loaded (wait)':<40s} {time.perf_counter() - t0:6.2f} s", flush=True)
    timed("map, rerun", at.run)
    for name, key in (("site_detail", "site"), ("tod_plans", "plans"), ("why_forecast", "why")):
        timed(f"{name}, first", lambda n=name: at.switch_page(f"pages/{n}.py").run(), args.profile == key)
        timed(f"{name}, rerun", at.run)
        assert not at.exception, [e.value for e in at.exception]
    timed("why: explain a sample of 24", lambda: at.button(key="why_global").click().run(), args.profile == "global")
    assert not at.exception, [e.value for e in at.exception]
    timed("why: rerun after the sample", at.run)


if __name__ == "__main__":
    main()
