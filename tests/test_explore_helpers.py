"""Issue 15 helpers without Streamlit: change colours, selection opacity, period text, short model path, progress."""

from __future__ import annotations

import numpy as np
import pandas as pd

from trafficcore.ui import forecasts as uif
from trafficcore.ui import models as uim
from trafficcore.ui import signals as us


def _totals(changes):
    n = len(changes)
    return pd.DataFrame({"site_id": [f"S{i}" for i in range(n)], "name": [f"n{i}" for i in range(n)],
                         "forecast": 100.0, "p10": 80.0, "p90": 120.0, "typical": 100.0,
                         "change_pct": changes, "lat": 0.0, "lon": 0.0})


def test_small_changes_have_visible_colours_and_others_stay_at_60_percent():
    styled, legend = uif.style_sites(_totals([-5.0, 0.0, 5.0, np.nan]), "change", selected="S1")
    grey = np.array(styled["color"].iloc[1][:3])
    for i in (0, 2):  # a 5 % change is clearly coloured, far from the "typical" grey
        assert np.abs(np.array(styled["color"].iloc[i][:3]) - grey).max() >= 60
    assert styled["color"].iloc[0][2] > styled["color"].iloc[0][0]  # lower: blue
    assert styled["color"].iloc[2][0] > styled["color"].iloc[2][2]  # higher: red/orange
    assert [c[3] for c in styled["color"]] == [uif.DIM_ALPHA, 255, uif.DIM_ALPHA, uif.DIM_ALPHA]
    assert 0.55 <= uif.DIM_ALPHA / 255 <= 0.65
    assert "no typical value" in [label for label, _ in legend]


def test_period_text_ends_at_24_00_not_00_00():
    day = pd.Timestamp("2025-10-24")
    assert us.period_text(day, day + pd.Timedelta(days=1)) == "00:00-24:00"
    assert us.period_text(day + pd.Timedelta(hours=6), day + pd.Timedelta(hours=9)) == "06:00-09:00"
    assert us.clock_end(day, day + pd.Timedelta(hours=7)) == "07:00"


def test_short_path_and_help():
    assert uim.short_path("/very/long/absolute/data/demo_model") == "data/demo_model"
    c = uim.ModelChoice("shipped", "Shipped", "saved", path="/a/b/demo_model")
    assert uim.path_help(c) == "Model folder: /a/b/demo_model"
    assert uim.path_help(uim.ModelChoice("fit:x", "X", "fit", name="x")) is None


def test_day_forecast_reports_progress_and_matches_one_batch(tmp_path):
    from test_app_support import make_city_db

    from trafficcore.data.panel import load_panel
    from trafficcore.data.store import Store
    from trafficcore.live import fallback

    panel = load_panel(Store(make_city_db(tmp_path / "city.duckdb")), "city")
    model, _ = fallback.fit_baseline("historical_average", panel)
    dets = list(panel.detectors["detector_id"][:2])
    day = panel.times[-1].normalize() - pd.Timedelta(days=1)
    steps = []
    fc = us.day_forecast(model, panel, dets, day, progress=lambda d, n: steps.append((d, n)))
    one = us.day_forecast(model, panel, dets, day, chunks=1)
    assert len(steps) > 1 and steps[-1][0] == steps[-1][1]
    pd.testing.assert_frame_equal(fc, one)
