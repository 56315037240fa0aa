"""The display-shaping helpers behind the pages (trafficcore.ui), without Streamlit."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from test_app_support import GAP, STUCK, ZERO, city_tables

from trafficcore.data.panel import load_panel
from trafficcore.data.store import Store
from trafficcore.errors import DataError
from trafficcore.live import fallback
from trafficcore.ui import clock, datasets, forecasts, models, quality, report, series, signals, uploads


@pytest.fixture(scope="module")
def panel(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("ui") / "city.duckdb")
    store.ingest("city", city_tables())
    return load_panel(store, "city")


@pytest.fixture(scope="module")
def fitted(panel):
    return fallback.fit_baseline("historical_average", panel)


def test_ui_never_imports_streamlit():
    import subprocess
    import sys

    code = ("import sys, trafficcore.ui, trafficcore.ui.clock, trafficcore.ui.forecasts, trafficcore.ui.quality, "
            "trafficcore.ui.series, trafficcore.ui.signals, trafficcore.ui.uploads, trafficcore.ui.report, "
            "trafficcore.ui.models, trafficcore.ui.first_view; print('streamlit' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------- clock
def test_default_issue_time_is_a_weekday_morning_with_data_after_it(panel):
    t = clock.default_issue_time(panel)
    assert t == pd.Timestamp("2025-03-28 08:00")  # the last Friday; Monday 31 Mar is past the data
    assert t.day_of_week < 5 and t + pd.Timedelta(hours=2) <= panel.times[-1] + panel.interval


def test_snap_floors_onto_the_grid_and_clips(panel):
    assert clock.snap(panel, "2025-03-20 08:07") == pd.Timestamp("2025-03-20 08:00")
    assert clock.snap(panel, "2020-01-01") == panel.times[16]
    assert clock.snap(panel, "2030-01-01") == panel.times[-1] + panel.interval


def test_url_round_trip_and_garbage(panel):
    t = pd.Timestamp("2025-03-20 08:15")
    assert clock.from_url(clock.to_url(t)) == t
    assert clock.from_url("not a time") is None and clock.from_url(None) is None
    assert len(clock.time_options(panel)) == 96 and clock.time_options(panel)[33] == "08:15"


# ---------------------------------------------------------------------------- maps and forecasts
def test_view_state_frames_all_points():
    pts = pd.DataFrame({"lat": [52.0, 52.1], "lon": [5.0, 5.2]})
    v = datasets.view_state(pts)
    assert v["latitude"] == pytest.approx(52.05) and v["longitude"] == pytest.approx(5.1)
    wider = datasets.view_state(pd.DataFrame({"lat": [52.0, 52.4], "lon": [5.0, 5.8]}))
    assert wider["zoom"] == pytest.approx(v["zoom"] - 2, abs=0.05)  # four times the span, two zoom levels out


def test_typical_is_the_mean_of_the_same_slot_in_previous_weeks(panel):
    det, ts = "S1:N", pd.Timestamp("2025-03-27 08:00")
    col = panel.frame([det])[det]
    want = np.mean([col[ts - pd.Timedelta(days=7 * k)] for k in (1, 2, 3)])  # only 3 weeks lie before
    assert forecasts.typical_values(panel, [det], [ts])[0] == pytest.approx(want)
    assert np.isnan(forecasts.typical_values(panel, [det], [pd.Timestamp("2025-03-05 08:00")])[0])


def test_site_totals_add_the_approaches(panel, fitted):
    model, _ = fitted
    fc = forecasts.with_context(models.forecast(model, panel, "2025-03-27 08:00"), panel)
    tot = forecasts.site_totals(fc, panel, 30).set_index("site_id")
    s1 = fc[(fc["site_id"] == "S1") & (fc["horizon_min"] == 30)]
    assert tot.loc["S1", "forecast"] == pytest.approx(s1["p50"].sum())
    assert tot.loc["S1", "change_pct"] == pytest.approx(100 * (s1["p50"].sum() / s1["typical"].sum() - 1))
    styled, legend = forecasts.style_sites(tot.reset_index(), "volume", selected="S1")
    big, small = styled["forecast"].idxmax(), styled["forecast"].idxmin()
    assert styled.loc[big, "radius"] > styled.loc[small, "radius"]
    assert styled.loc[styled["site_id"] == "S1", "line_width"].item() == 3
    _, change_legend = forecasts.style_sites(tot.reset_index(), "change")
    assert legend != change_legend and any(label == "typical" for label, _ in change_legend)


def test_change_colours_run_from_blue_to_red():
    df = pd.DataFrame({"site_id": ["a", "b", "c"], "name": ["a", "b", "c"], "forecast": [10.0, 10.0, 10.0],
                       "p10": 5.0, "p90": 15.0, "typical": [10.0, 10.0, 10.0], "change_pct": [-40.0, 0.0, 40.0]})
    styled, _ = forecasts.style_sites(df, "change")
    lower, same, higher = (c[:3] for c in styled["color"])
    assert lower[2] > lower[0] and higher[0] > higher[2] and same[0] == same[1] == same[2]


def test_legend_html_escapes_labels():
    html = forecasts.legend_html("<b>t</b>", [("<img src=x onerror=alert(1)>", "#ffffff")])
    assert "<img" not in html and "&lt;img" in html


def test_ui_forecast_equals_the_protocol_predict(panel, fitted):
    from trafficcore.models.base import predict

    model, _ = fitted
    t = pd.Timestamp("2025-03-27 17:00")
    a = models.forecast(model, panel, t, neighbour_idx=panel.neighbour_matrix(4, "graph"))
    b = predict(model, panel, t)
    pd.testing.assert_frame_equal(a, b)


def _demo_store(tmp_path) -> Store:
    """A store with a synthetic dataset "demo" (source "test") and a real-looking one "scats"."""
    import dataclasses

    from helpers import tiny_tables

    store = Store(tmp_path / "s.duckdb")
    store.ingest("demo", tiny_tables(days=3))
    t = tiny_tables(days=3)
    store.ingest("scats", dataclasses.replace(t, info=dataclasses.replace(t.info, source="scats", synthetic=False)))
    return store


def test_model_choices_prefer_saved_models_and_offer_baselines(tmp_path):
    store = _demo_store(tmp_path)
    shipped = tmp_path / "demo_model"
    assert [c.key for c in models.choices(store, "demo", {}, shipped)][0] == "fit:historical_average"
    shipped.mkdir()
    (shipped / "config.json").write_text(json.dumps({"model_class": "lm", "dataset_source": "test"}))
    found = models.choices(store, "demo", {}, shipped)
    keys = [c.key for c in found]
    assert keys[0] == "shipped" and "fit:gbt" in keys
    assert found[0].label == "Shipped demo model (language model)"
    assert "shipped" not in [c.key for c in models.choices(store, "scats", {}, shipped)]


def test_model_choices_put_the_promoted_version_first_and_leave_out_rejected_candidates(tmp_path):
    from trafficcore.live import registry

    store = _demo_store(tmp_path)
    folders = {}
    for name in ("shipped", "a", "b", "c"):
        folders[name] = tmp_path / name
        folders[name].mkdir()
        (folders[name] / "config.json").write_text(json.dumps({"model_class": "lm", "dataset_source": "test"}))
    a = registry.register(store, "demo", "lm", folders["a"], {}, {})
    b = registry.register(store, "demo", "lm", folders["b"], {}, {}, status="rejected")
    keys = [c.key for c in models.choices(store, "demo", {}, folders["shipped"])]
    assert keys[:2] == ["shipped", f"run:{a}"] and f"run:{b}" not in keys  # nothing promoted: shipped first
    c = registry.register(store, "demo", "lm", folders["c"], {}, {}, promote=True)
    found = models.choices(store, "demo", {}, folders["shipped"])
    keys = [c_.key for c_ in found]
    assert keys[:3] == [f"run:{c}", "shipped", f"run:{a}"] and f"run:{b}" not in keys
    assert found[0].label.startswith("Language model trained ") and f"(promoted, {c})" in found[0].label


def test_fit_note_says_which_days_were_learnt(fitted):
    _, note = fitted
    assert note["first"] < note["last"] <= pd.Timestamp("2025-03-31")


# ---------------------------------------------------------------------------- site series
def test_history_window_ends_at_the_issue_time(panel):
    dets = series.site_detectors(panel, "S1")
    h = series.history(panel, dets, "2025-03-27 08:00", hours=24)
    assert h["ts"].max() == pd.Timestamp("2025-03-27 07:45") and h["ts"].min() == pd.Timestamp("2025-03-26 08:00")
    assert set(h["approach"]) == set(dets["label"])


def test_typical_day_uses_only_earlier_weeks(panel):
    dets = series.site_detectors(panel, "S1")[:1]
    prof = series.typical_day(panel, dets, "2025-03-27")
    row = prof[prof["ts"] == pd.Timestamp("2025-03-27 08:00")].iloc[0]
    col = panel.frame(list(dets["detector_id"]))[dets["detector_id"].iloc[0]]
    vals = [col[pd.Timestamp("2025-03-27 08:00") - pd.Timedelta(days=7 * k)] for k in (1, 2, 3)]
    assert row["typical"] == pytest.approx(np.mean(vals)) and row["high"] == max(vals) and row["weeks"] == 3


def test_accuracy_of_a_replayed_forecast(panel, fitted):
    model, _ = fitted
    fc = forecasts.with_context(models.forecast(model, panel, "2025-03-27 08:00"), panel)
    table = series.forecast_table(fc, series.site_detectors(panel, "S1"))
    acc = series.accuracy(table)
    assert acc["targets"] == 32 and acc["mae"] == pytest.approx(np.mean(np.abs(table["p50"] - table["observed"])))
    live = forecasts.with_context(models.forecast(model, panel, panel.times[-1] + panel.interval), panel)
    assert series.accuracy(series.forecast_table(live, series.site_detectors(panel, "S1"))) is None


# ---------------------------------------------------------------------------- quality
def test_fault_flags_find_exactly_the_injected_faults(panel):
    flags = quality.fault_flags(panel).set_index("detector_id")
    assert set(flags.index[flags["status"] == "check"]) == {STUCK[0], ZERO[0], GAP[0]}
    assert flags.loc[STUCK[0], "stuck_runs"] == 1 and flags.loc[STUCK[0], "longest_stuck_h"] == STUCK[2] / 4
    assert flags.loc[ZERO[0], "zero_runs"] == 1
    assert flags.loc[GAP[0], "gaps"] == 1 and flags.loc[GAP[0], "longest_gap_h"] == GAP[2] / 4
    assert flags.loc[GAP[0], "coverage_pct"] == pytest.approx(100 * (1 - GAP[2] / len(panel.times)), abs=0.05)
    s = quality.quality_summary(flags.reset_index())
    assert (s["detectors"], s["flagged"], s["stuck"], s["zero"], s["with_gaps"]) == (24, 3, 1, 1, 1)


def test_coverage_matrix_shows_the_gap_day(panel):
    cov = quality.coverage_matrix(panel)
    assert cov.shape == (24, 28)
    assert cov.loc[GAP[0], "2025-03-18"] == pytest.approx(100 * (96 - GAP[2]) / 96, abs=0.1)
    assert cov.loc["S1:N"].min() == 100.0


# ---------------------------------------------------------------------------- uploads
def test_plain_error_names_the_users_file_row_and_column(tmp_path):
    obs = uploads.save_upload("../../etc/my counts.csv", b"detector_id,timestamp,value\nA,2025-01-01,x\n", tmp_path)
    assert obs.parent == tmp_path and obs.name == "my counts.csv"
    sites = uploads.save_upload("s.csv", b"site_id,name,lat,lon\nS,S,52,5\n", tmp_path)
    dets = uploads.save_upload("d.csv", b"detector_id,site_id\nA,S\n", tmp_path)
    with pytest.raises(DataError) as e:
        uploads.load("long", {"observations": obs, "sites": sites, "detectors": dets})
    text = uploads.plain_error(e.value, {str(obs): "my counts.csv"})
    assert text.startswith("In **my counts.csv**, row 2, column 'value'") and str(tmp_path) not in text


def test_missing_required_file_and_cli_only_formats(tmp_path):
    with pytest.raises(DataError, match="needed"):
        uploads.load("long", {"observations": tmp_path / "x.csv"})
    with pytest.raises(ValueError, match="trafficcore import citypulse"):
        uploads.load("citypulse", {})
    odd = uploads.plain_error(RuntimeError("bad header\nTraceback (most recent call last)"))
    assert "bad header" in odd and "Traceback" not in odd and "RuntimeError" not in odd
    assert uploads.check_dataset_name("bad name!", []) and uploads.check_dataset_name("ok_1", []) is None


# ---------------------------------------------------------------------------- signal tables
def test_legs_prefer_exact_directions():
    assert signals.assign_legs(["NE", "N", "S", "W"]) == {"N": "N", "NE": "E", "S": "S", "W": "W"}
    assert len(signals.assign_legs(["N", "NE", "E", "SE", "S"])) == 4


def test_default_plan_is_valid_and_demand_is_in_vehicles_per_hour(panel, fitted):
    model, _ = fitted
    apps, notes = signals.site_approaches(panel, "S1")
    assert list(apps["leg"]) == ["N", "E", "S", "W"] and notes == []
    plan = signals.build_plan(apps, signals.default_phases(apps))
    assert plan.cycle == 90 and [p.name for p in plan.phases] == ["N-S", "E-W"]
    fc = models.forecast(model, panel, "2025-03-27 08:00", ["S1:N", "S1:E", "S1:S", "S1:W"])
    demand = signals.site_demand(fc, apps, 15)
    first = demand[(demand["approach"] == "N") & (demand["interval_start"] == pd.Timestamp("2025-03-27 08:00"))]
    p50 = fc[(fc["detector_id"] == "S1:N") & (fc["horizon_min"] == 15)]["p50"].item()
    assert first["p50"].item() == pytest.approx(4 * p50, rel=1e-5)


def test_impossible_plan_names_the_field(panel):
    apps, _ = signals.site_approaches(panel, "S1")
    phases = signals.default_phases(apps)
    phases[1]["movements"] = ["E"]  # W is never served
    with pytest.raises(DataError) as e:
        signals.build_plan(apps, phases)
    assert "W" in e.value.message
    apps.loc[0, "left_pct"] = 50
    assert "not 100 %" in signals.turn_shares_problem(apps)


def test_day_forecast_tiles_the_day(panel, fitted):
    model, _ = fitted
    fc = signals.day_forecast(model, panel, ["S1:N"], "2025-03-27")
    assert len(fc) == 96 and fc["target_ts"].is_unique
    ahead = fc["target_ts"] - fc["issued_at"]
    assert (ahead >= pd.Timedelta(0)).all() and (ahead < pd.Timedelta("2h")).all()


# ---------------------------------------------------------------------------- report
def test_report_discovery_and_tables(tmp_path):
    rows = [{"model": m, "horizon_min": h, "mae": v + h / 100, "rmse": v, "wape": 0.1, "coverage_p10_p90": 0.8}
            for m, v in (("historical_average", 12.0), ("gbt", 10.0), ("lm", 9.0)) for h in (15, 60)]
    (tmp_path / "a.json").write_text(json.dumps({"results": rows}))
    (tmp_path / "b.json").write_text("{not json")
    (tmp_path / "c.json").write_text(json.dumps({"results": [{"model": "x"}]}))
    assert report.find_reports([tmp_path]) == [tmp_path / "a.json"]
    res = report.results_frame(report.load_report(tmp_path / "a.json"))
    t = report.metric_table(res)
    assert list(t.index) == ["lm", "gbt", "historical_average"] and list(t.columns) == ["15 min", "60 min"]
    vs = report.versus_best_baseline(res)
    assert vs["gain_pct"].round(3).tolist() == [round(100 * (10.15 - 9.15) / 10.15, 3),
                                               round(100 * (10.6 - 9.6) / 10.6, 3)]
    with pytest.raises(DataError):
        report.load_report(tmp_path / "c.json")
