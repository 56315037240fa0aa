"""The Forecast map of a region: areas when zoomed out, one area's sites after a click or a site search."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from trafficcore.data import region
from trafficcore.data.store import Store
from trafficcore.ui import mapview

APP = Path(__file__).resolve().parents[1] / "app.py"


@pytest.fixture(scope="module")
def region_db(tmp_path_factory):
    db = tmp_path_factory.mktemp("region") / "r.duckdb"
    tables, counts, truth = region.simulate(30, seed=0)
    Store(db).ingest("region", tables, region.observation_chunks(counts, truth.times, truth.detector_ids))
    return str(db)


def _layers(at) -> dict:
    spec = json.loads(at.get("deck_gl_json_chart")[0].proto.json)
    return {layer["id"]: layer.get("data") for layer in spec["layers"]}


def test_region_map_opens_on_areas_and_zooms_to_a_searched_site(region_db, monkeypatch):
    monkeypatch.setenv("TRAFFICCORE_DB", region_db)
    monkeypatch.setattr(mapview, "DIRECT_LIMIT", 10)  # 30 sites count as a region here
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.query_params.update({"dataset": "region"})
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    layers = _layers(at)
    assert "areas" in layers and layers["sites"] == [] and "roads" not in layers
    assert sum(a["sites"] for a in layers["areas"]) == 30 and 1 < len(layers["areas"]) < 30
    assert "click one to zoom in" in " ".join(h.proto.body for h in at.get("html"))
    target = at.sidebar.selectbox(key="site").options[17]
    site_id = target.split(" · ")[-1]
    at.sidebar.selectbox(key="site").set_value(site_id).run()
    layers = _layers(at)
    shown = {s["site_id"] for s in layers["sites"]}
    assert "areas" not in layers and site_id in shown and len(shown) < 30 and layers["label"]
    back = next(b for b in at.button if b.key == "map_whole")
    back.click().run()
    assert "areas" in _layers(at)


def test_area_totals_sum_their_sites():
    totals = pd.DataFrame({
        "site_id": ["a", "b", "c"], "name": ["A", "B", "C"], "lat": [52.0, 52.0005, 52.3], "lon": [5.0, 5.0005, 5.3],
        "forecast": [100.0, 300.0, 50.0], "p10": [80.0, 250.0, 40.0], "p90": [120.0, 350.0, 60.0],
        "approaches": [4, 4, 3], "typical": [100.0, np.nan, 25.0], "target_ts": pd.Timestamp("2025-01-01"),
    })
    grid = mapview.area_grid(totals, target=4)
    areas = mapview.area_totals(totals, grid).set_index("sites")
    assert len(areas) == 2 and areas["forecast"].sum() == 450.0
    two = areas.loc[2]
    assert two["forecast"] == 400.0 and two["typical"] == 100.0
    assert two["change_pct"] == pytest.approx(0.0)  # only the site with a typical value is compared
    assert "2 sites around B" == two["name"] and 52.0 < two["lat"] < 52.0005
    assert areas.loc[1, "change_pct"] == pytest.approx(100.0)
    key = mapview.area_of([52.0], [5.0], grid)[0]
    assert mapview.inside(totals, mapview.area_bounds(key, grid, margin=0)).tolist() == [True, True, False]
