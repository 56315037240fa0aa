"""Live accuracy and the monitoring alerts, on the live-test city of tests/live_data.py.

- a replay scores every served forecast as its reading arrives, and the live MAE, WAPE and coverage per
  horizon equal the benchmark scorer's on the same forecasts;
- scoring is incremental and idempotent: a late correction, a forecast issued after its target was
  observed and a full rescore all give what scoring from scratch gives;
- a detector halved mid-day raises `detector_drift` within 2 hours of readings; the same day unaltered
  raises nothing; decay and coverage alerts fire when the served accuracy leaves the thresholds;
- `trafficcore monitor` prints it, a replay carries the source's serving model.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from live_data import DETECTORS, copy_of, live_store, readings
from typer.testing import CliRunner

from trafficcore.cli import app
from trafficcore.data.store import Store, open_duckdb
from trafficcore.evaluation.benchmark import score_standard
from trafficcore.evaluation.metrics import coverage, error_terms, from_sums, mae, wape
from trafficcore.live import drift, monitor, registry
from trafficcore.live.alerts import MONITOR_KINDS, current_alerts
from trafficcore.live.ingest import ingest_observations, refresh_forecasts
from trafficcore.live.replay import replay

START, END = pd.Timestamp("2025-03-16 06:00"), pd.Timestamp("2025-03-16 14:00")  # 32 intervals, the last day


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    """The city replayed from 06:00 to 14:00 of its last day, forecasts re-issued after every interval."""
    path = tmp_path_factory.mktemp("monitor") / "town.duckdb"
    store = live_store(Store(path))
    keeper = open_duckdb(path)  # one connection held open: each of the replay's connections then costs ~1 ms
    try:
        res = replay(store, "town", START, END, speed=0, alerts=False)
    finally:
        keeper.close()
    assert len(res.steps) == 32
    return path


@pytest.fixture
def live(replayed, tmp_path):
    return copy_of(replayed, tmp_path / "live.duckdb")


def served_pairs(store: Store, dataset: str = "town-live") -> pd.DataFrame:
    """Every stored live forecast with its reading (NaN where none arrived), straight from the tables."""
    return store.query(
        """SELECT f.run_id, f.detector_id, f.issued_at, f.horizon_min, f.p10, f.p50, f.p90, o.value
           FROM forecasts f LEFT JOIN observations o
             ON o.dataset = f.dataset AND o.detector_id = f.detector_id AND o.ts = f.target_ts
           WHERE f.dataset = ? AND f.run_id LIKE 'live:%'""", [dataset])


def test_error_sums_give_the_metrics_exactly():
    rng = np.random.default_rng(0)
    y = rng.poisson(30, 500).astype(float)
    y[::7] = np.nan
    mid = y + rng.normal(0, 5, 500)
    mid[::7] = rng.normal(30, 5, 72)
    lo, hi = mid - 6, mid + 6
    terms = {k: v.sum() for k, v in error_terms(y, lo, mid, hi).items()}
    rates = from_sums(**terms)
    assert terms["n"] == 500 - 72
    assert rates["mae"] == pytest.approx(mae(y, mid), rel=1e-12)
    assert rates["wape"] == pytest.approx(wape(y, mid), rel=1e-12)
    assert rates["coverage_p10_p90"] == pytest.approx(coverage(y, lo, hi), rel=1e-12)
    with pytest.raises(ValueError, match="NaN/inf where the truth is known"):
        error_terms(y[:3], lo[:3], np.array([1.0, np.nan, 2.0]), hi[:3])


def test_live_accuracy_equals_the_benchmark_scorer_on_the_same_forecasts(live):
    pairs = served_pairs(live)
    run = monitor.serving_run(live, "town-live")
    assert run == "live:historical_average" and set(pairs["run_id"]) == {run}
    got = monitor.accuracy(live, "town-live", hours=24, by=["horizon_min"]).set_index("horizon_min")
    # the benchmark's own scorer, on the forecasts laid out as (samples, horizons) with their readings
    wide = pairs.pivot_table(index=["detector_id", "issued_at"], columns="horizon_min",
                             values=["p10", "p50", "p90", "value"], dropna=False)
    hs = sorted(pairs["horizon_min"].unique())
    q = np.stack([wide[p][hs].to_numpy() for p in ("p10", "p50", "p90")], axis=-1)
    y = wide["value"][hs].to_numpy()

    class Spec:
        horizons_min = hs

    bench = {r["horizon_min"]: r for r in score_standard("served", Spec, y, q)}
    assert list(got.index) == hs
    for h in hs:
        assert got.loc[h, "n"] == bench[h]["n"] > 0
        assert got.loc[h, "mae"] == pytest.approx(bench[h]["mae"], rel=1e-3)
        assert got.loc[h, "wape"] == pytest.approx(bench[h]["wape"], rel=1e-3)
        assert got.loc[h, "coverage_p10_p90"] == pytest.approx(bench[h]["coverage_p10_p90"], rel=1e-3)
    # the 15-minute forecasts of the first 31 issue times were all observed: 6 detectors x 31
    assert got.loc[15, "n"] == 6 * 31


def test_scoring_is_incremental_and_idempotent(live):
    def table():
        return live.query("SELECT * EXCLUDE (scored_at) FROM forecast_accuracy WHERE dataset = 'town-live' "
                          "ORDER BY ALL")

    as_scored = table()
    assert monitor.rescore(live, "town-live") == int(as_scored["n"].sum())
    pd.testing.assert_frame_equal(table(), as_scored)  # scoring from scratch gives what arrived piecemeal
    # a late correction: the reading of X:N at 10:00 changes; only its hour's buckets change, to the right sums
    before = monitor.accuracy(live, "town-live", 24, ["detector_id"]).set_index("detector_id")
    ingest_observations(live, "town-live", readings("2025-03-16 10:00", {"X:N": 900.0}, dets=["X:N"]))
    after = monitor.accuracy(live, "town-live", 24, ["detector_id"]).set_index("detector_id")
    assert after.loc["X:N", "mae"] > before.loc["X:N", "mae"]
    assert after.drop(index="X:N")["abs_err"].equals(before.drop(index="X:N")["abs_err"])
    corrected = table()
    monitor.rescore(live, "town-live")
    pd.testing.assert_frame_equal(table(), corrected)
    # a forecast issued after its target was observed (a late issue) is scored at once
    n0 = int(corrected["n"].sum())
    late = refresh_forecasts(live, "town-live", at="2025-03-16 06:00")  # the replay first issued at 06:15
    assert late["issued_at"].unique().tolist() == [START]
    assert int(table()["n"].sum()) == n0 + len(late)  # every one of its targets has a reading


def test_no_drift_on_a_normal_day_and_a_halved_detector_is_flagged_within_two_hours(live, tmp_path):
    for at in pd.date_range(START, END - pd.Timedelta(minutes=15), freq="30min"):
        assert current_alerts(live, "town-live", at=at, kinds=["detector_drift"]).empty, at
    # the same hours again, with Y:S halved from 10:00: replayed into a fresh copy
    store = copy_of(live.path, tmp_path / "shift.duckdb")
    shift = pd.Timestamp("2025-03-16 10:00")

    def halve(feed: pd.DataFrame) -> pd.DataFrame:
        hit = (feed["detector_id"] == "Y:S") & (feed["ts"] >= shift)
        return feed.assign(value=np.where(hit, np.round(feed["value"] * 0.5), feed["value"]))

    replay(store, "town", shift - pd.Timedelta(hours=2), shift + pd.Timedelta(hours=3), speed=0, forecasts=False,
           alerts=False, feed_filter=halve, into="shifted")
    fired = None
    for k in range(1, 13):  # k readings of halved data
        found = current_alerts(store, "shifted", at=shift + (k - 1) * pd.Timedelta(minutes=15),
                               kinds=["detector_drift"])
        assert set(found["detector_id"]) <= {"Y:S"}
        if len(found):
            fired = k
            break
    assert fired is not None and fired <= 8, fired
    assert "of its typical level" in found["message"].iloc[0]
    assert found["start_ts"].iloc[0] >= shift - pd.Timedelta(hours=2)


def test_flat_lining_detector(live):
    values = [60.0, 60.0, 60.0, 61.0, 61.0, 61.0, 60.0, 60.0]  # never 8 alike in a row: not `stuck`
    flat = pd.concat([readings(t, {"X:W": v}) for v, t in
                      zip(values, pd.date_range("2025-03-16 14:00", periods=8, freq="15min"), strict=True)])
    ingest_observations(live, "town-live", flat, score=False)
    found = current_alerts(live, "town-live", kinds=["detector_drift", "stuck"])
    assert found["detector_id"].tolist() == ["X:W"] and found["kind"].tolist() == ["detector_drift"]
    assert "hardly vary" in found["message"].iloc[0]


def test_decay_and_coverage_alerts(live):
    th = {"decay_hours": 3, "coverage_hours": 3, "rolling_hours": 4, "min_hours": 2}
    run = "live:historical_average"
    roll = monitor.rolling(live, "town-live", run, 4, 6)
    assert roll["hours_scored"].iloc[-1] == 4 and np.isfinite(roll["mae"]).all()
    # the on-the-spot baseline recorded no validation MAE: decay cannot be judged
    assert current_alerts(live, "town-live", kinds=["accuracy_decay"], **th).empty
    # ... against a recorded one it is: far below what is served (decay), and far above it (none)
    live_mae = float(roll["mae"].iloc[-1])
    folder = live.path.parent / "ha"
    from trafficcore.live.ingest import live_model

    live_model(live, "town-live")[0].save(folder)

    def claim(val_mae: float) -> pd.DataFrame:
        """The serving model registered as having recorded `val_mae` on validation."""
        live.query("DELETE FROM model_runs WHERE dataset = 'town-live'")
        registry.register(live, "town-live", "historical_average", folder,
                          {"val": {str(h): {"mae": val_mae} for h in (15, 30)}}, {}, run_id="historical_average")
        return current_alerts(live, "town-live", kinds=["accuracy_decay"], **th)

    assert claim(live_mae * 2).empty  # serving far better than promised: no decay
    assert claim(live_mae * 0.85).empty  # 18% worse: within the 25% margin
    found = claim(live_mae / 2)  # twice the promised error, over every trailing window
    a = found.iloc[0]
    assert len(found) == 1 and a["kind"] == "accuracy_decay" and a["severity"] == "critical"
    # targets from 06:00 to 13:45 fill 8 hour buckets; from the second on, a window holds the 2 hours it needs
    assert "+100% against the validation MAE" in a["message"] and "for 7 hours in a row" in a["message"]
    # coverage: the served bands hold some share of readings; a range that excludes it raises the alert
    cov = float(roll["coverage_p10_p90"].iloc[-1])
    assert current_alerts(live, "town-live", kinds=["coverage"], **th, coverage_low=cov - 0.05).empty
    found = current_alerts(live, "town-live", kinds=["coverage"], **th, coverage_low=min(cov + 0.05, 0.99),
                           coverage_high=1.0)
    assert len(found) == 1 and "the band is too narrow" in found["message"].iloc[0]
    with pytest.raises(ValueError, match="unknown alert kind"):
        current_alerts(live, "town-live", kinds=["nope"])


def test_monitor_command(live):
    runner = CliRunner()
    res = runner.invoke(app, ["monitor", "--db", str(live.path)])
    assert res.exit_code == 0, res.output
    assert "town-live: served forecasts scored up to the hour 2025-03-16T13:00:00" in res.output
    assert "| historical_average | 15 |" in res.output and "monitoring alerts: none" in res.output
    res = runner.invoke(app, ["monitor", "--db", str(live.path), "--dataset", "town-live", "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)
    day = {r["horizon_min"]: r for r in rep["windows"]["24h"]["by_horizon"]}
    want = monitor.accuracy(live, "town-live", 24, ["horizon_min"]).set_index("horizon_min")
    assert day[15]["mae"] == pytest.approx(want.loc[15, "mae"]) and day[15]["n"] == want.loc[15, "n"]
    assert rep["alerts"] == [] and rep["serving_run"] == "live:historical_average"
    res = runner.invoke(app, ["monitor", "--db", str(live.path), "--dataset", "nowhere"])
    assert res.exit_code == 2 and "no dataset named 'nowhere'" in res.output


def test_replay_is_served_by_the_source_model(tmp_path):
    store = live_store(Store(tmp_path / "s.duckdb"))
    from trafficcore.live.ingest import live_model

    model, _ = live_model(store, "town")
    model.save(tmp_path / "ha")
    rid = registry.register(store, "town", "historical_average", tmp_path / "ha", {"val": {"15": {"mae": 3.0}}}, {},
                            promote=True)
    replay(store, "town", "2025-03-16 12:00", "2025-03-16 12:30", speed=0, alerts=False)
    copy = registry.promoted(store, "town-live")
    assert copy["run_id"] == f"{rid}@town-live" and copy["parent_run_id"] == rid
    assert monitor.serving_run(store, "town-live") == f"live:{rid}@town-live"
    assert monitor.reference(store, "town-live", f"live:{rid}@town-live")["val_mae"] == 3.0
    assert registry.promoted(store, "town")["run_id"] == rid  # the source keeps its own


def test_drift_ranges_need_history(tmp_path):
    """Two days of data are too little to know a detector's range: no drift alert, no error."""
    store = live_store(Store(tmp_path / "short.duckdb"), days=2)
    drift.clear_cache()
    assert current_alerts(store, "town", kinds=MONITOR_KINDS).empty
    halved = readings("2025-03-05 00:00", {d: 1.0 for d in DETECTORS})
    ingest_observations(store, "town", halved)
    assert current_alerts(store, "town", kinds=MONITOR_KINDS).empty


def test_ingest_command_writes_one_json_line_per_batch(tmp_path):
    import subprocess
    import sys

    store = live_store(Store(tmp_path / "log.duckdb"))
    good, bad = tmp_path / "a.csv", tmp_path / "b.csv"
    readings("2025-03-17 00:00").rename(columns={"ts": "timestamp"}).to_csv(good, index=False)
    readings("2025-03-17 00:07").rename(columns={"ts": "timestamp"}).to_csv(bad, index=False)  # off the grid
    res = subprocess.run([sys.executable, "-m", "trafficcore.cli", "ingest", "--dataset", "town", "--log-format",
                          "json", "--no-forecasts", "--db", str(store.path), str(good), str(bad)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    events = [json.loads(line) for line in res.stderr.splitlines() if line.startswith("{")]
    batch, refused = events[0], events[1]
    assert batch["event"] == "ingest_batch" and batch["dataset"] == "town" and batch["written"] == 6
    assert batch["first_ts"] == "2025-03-17T00:00:00" and batch["logger"] == "trafficcore.live.ingest"
    assert refused["event"] == "ingest_rejected" and refused["column"] == "ts" and refused["level"] == "info"
    assert "ingested" in res.stdout  # the human lines stay on stdout


def test_json_formatter():
    import logging

    from trafficcore.logs import JsonFormatter

    rec = logging.LogRecord("trafficcore.x", logging.WARNING, __file__, 1, "thing_happened", None, None)
    rec.count, rec.ratio, rec.when, rec.ids = np.int64(3), float("nan"), pd.Timestamp("2025-01-01 08:00"), ["a"]
    out = json.loads(JsonFormatter().format(rec))
    assert out["event"] == "thing_happened" and out["level"] == "warning" and out["logger"] == "trafficcore.x"
    assert out["count"] == 3 and out["ratio"] is None and out["when"] == "2025-01-01T08:00:00" and out["ids"] == ["a"]
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        rec.exc_info = sys.exc_info()
    assert "RuntimeError: boom" in json.loads(JsonFormatter().format(rec))["exc"]


def test_a_shift_that_persists_stays_flagged_days_later(tmp_path):
    """The halved days enter the detector's history, but too far from its usual level to widen its range."""
    from live_data import city

    tables = city(days=18)
    obs = tables.observations
    hit = (obs["detector_id"] == "Y:S") & (obs["ts"] >= pd.Timestamp("2025-03-15 12:00"))
    tables.observations = obs.assign(value=np.where(hit, np.round(obs["value"] * 0.5), obs["value"]))
    store = Store(tmp_path / "persist.duckdb")
    store.ingest("town", tables)
    for at in ("2025-03-15 14:00", "2025-03-16 12:00", "2025-03-18 12:00"):
        found = current_alerts(store, "town", at=at, kinds=["detector_drift"])
        assert found["detector_id"].tolist() == ["Y:S"], at
    # without trimming the history, the first shifted day already hides it the day after
    assert current_alerts(store, "town", at="2025-03-18 12:00", kinds=["detector_drift"], drift_trim=1e9).empty
