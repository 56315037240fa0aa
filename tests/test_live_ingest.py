"""Live ingest: idempotent batches, late data, all-or-nothing validation, re-issued forecasts, lock retry."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from live_data import DETECTORS, readings, typical

from trafficcore.errors import DataError
from trafficcore.live.ingest import (
    batch_id,
    ingest_observations,
    issue_time,
    latest_forecasts,
    live_panel,
    live_status,
    refresh_forecasts,
)

NEXT = pd.Timestamp("2025-03-17 00:00")  # the first interval after the stored history


def snapshot(store) -> tuple:
    """Everything ingest may touch, as comparable values."""
    obs = store.query("SELECT count(*) AS n, sum(value) AS s, max(ts) AS t FROM observations WHERE dataset='town'")
    log = store.query("SELECT count(*) AS n FROM ingest_log")
    return tuple(obs.iloc[0].tolist()) + (int(log["n"].iloc[0]),)


def stored(store, det: str, ts) -> list[float]:
    return list(store.query("SELECT value FROM observations WHERE dataset='town' AND detector_id=? AND ts=?",
                            [det, pd.Timestamp(ts).to_pydatetime()])["value"])


# ------------------------------------------------------------------------------------------ idempotency
def test_same_batch_twice_is_stored_once_and_recognised(town):
    batch = readings(NEXT)
    first = ingest_observations(town, "town", batch)
    assert (first.received, first.written, first.late, first.duplicate_batch) == (6, 6, 0, False)
    assert first.detectors == sorted(DETECTORS) and first.first_ts == first.last_ts == NEXT
    before = snapshot(town)
    again = ingest_observations(town, "town", batch.sample(frac=1, random_state=1))  # same readings, other order
    assert again.duplicate_batch and again.written == 0 and again.batch_id == first.batch_id
    assert snapshot(town) == before
    assert town.query("SELECT count(*) AS n FROM observations WHERE dataset='town' AND ts=?",
                      [NEXT.to_pydatetime()])["n"].iloc[0] == 6
    d = first.to_dict()
    assert d["first_ts"] == "2025-03-17T00:00:00" and d["batch_id"] == first.batch_id and len(d["batch_id"]) == 64


def test_overlapping_batches_write_each_reading_once(town):
    ingest_observations(town, "town", readings(NEXT, dets=DETECTORS[:3]))
    both = pd.concat([readings(NEXT), readings(NEXT + pd.Timedelta("15min"))])
    res = ingest_observations(town, "town", both)
    assert not res.duplicate_batch
    assert res.received == 12 and res.written == 9  # 3 readings were already stored unchanged
    n = town.query("SELECT count(*) AS n FROM observations WHERE dataset='town' AND ts>=?", [NEXT.to_pydatetime()])
    assert n["n"].iloc[0] == 12


def test_exact_repeats_within_a_batch_are_dropped(town):
    batch = pd.concat([readings(NEXT), readings(NEXT).iloc[:2]])
    res = ingest_observations(town, "town", batch)
    assert res.received == 8 and res.written == 6


def test_batch_id_depends_on_content_only():
    a = readings(NEXT)
    b = a.iloc[::-1].reset_index(drop=True)
    c = a.assign(value=a["value"] + 1)
    assert batch_id(a) == batch_id(b) != batch_id(c)


# ------------------------------------------------------------------------------------------ late data
def test_late_reading_is_upserted_and_counted(town):
    ingest_observations(town, "town", readings(NEXT))
    old = pd.Timestamp("2025-03-16 08:00")
    before = stored(town, "X:N", old)
    res = ingest_observations(town, "town", pd.DataFrame({"detector_id": ["X:N"], "ts": [old], "value": [7.0]}))
    assert (res.written, res.late) == (1, 1)
    assert stored(town, "X:N", old) == [7.0] != before
    # a gap filled late (no reading stored there before) is late too
    town.query("DELETE FROM observations WHERE dataset='town' AND detector_id='Y:S' AND ts=?", [old.to_pydatetime()])
    res = ingest_observations(town, "town", pd.DataFrame({"detector_id": ["Y:S"], "ts": [old], "value": [3.0]}))
    assert (res.written, res.late) == (1, 1) and stored(town, "Y:S", old) == [3.0]


def test_newer_reading_is_not_late(town):
    res = ingest_observations(town, "town", readings(NEXT))
    assert res.late == 0


# ------------------------------------------------------------------------------------------ bad input
def _bad(kind: str) -> tuple[pd.DataFrame, int, str]:
    """A 6-row batch with one bad cell in record 4 (row 4 counting the first record as row 1)."""
    df = readings(NEXT).astype({"ts": object, "value": object})
    col, val = {
        "unknown detector": ("detector_id", "X:NORTH"),
        "blank detector": ("detector_id", " "),
        "unparsable ts": ("ts", "yesterday"),
        "zoned ts": ("ts", "2025-03-17T00:00:00+01:00"),
        "off the grid": ("ts", pd.Timestamp("2025-03-17 00:07")),
        "negative": ("value", -3.0),
        "nan": ("value", float("nan")),
        "infinite": ("value", float("inf")),
        "text value": ("value", "many"),
    }[kind]
    df.loc[3, col] = val
    return df, 4, col


@pytest.mark.parametrize("kind", ["unknown detector", "blank detector", "unparsable ts", "zoned ts", "off the grid",
                                  "negative", "nan", "infinite", "text value"])
def test_bad_reading_refuses_the_whole_batch_naming_row_and_column(town, kind):
    before = snapshot(town)
    df, row, col = _bad(kind)
    with pytest.raises(DataError) as e:
        ingest_observations(town, "town", df, source="api:test")
    assert (e.value.file, e.value.row, e.value.column) == ("api:test", row, col)
    assert f"row {row}" in str(e.value) and f"column '{col}'" in str(e.value)
    assert snapshot(town) == before


def test_conflicting_duplicate_names_the_second_row(town):
    df = pd.concat([readings(NEXT), readings(NEXT, {"X:E": 999}).iloc[[1]]], ignore_index=True)
    before = snapshot(town)
    with pytest.raises(DataError, match="conflicting duplicate") as e:
        ingest_observations(town, "town", df)
    assert (e.value.row, e.value.column) == (7, "value")
    assert snapshot(town) == before


def test_row_numbers_from_the_sender(town):
    df = readings(NEXT).assign(row=np.arange(6) + 10)
    df.loc[2, "value"] = -1
    with pytest.raises(DataError) as e:
        ingest_observations(town, "town", df, source="obs.csv")
    assert str(e.value).startswith("obs.csv, row 12, column 'value'")


def test_unknown_dataset_missing_column_and_empty_batch(town):
    before = snapshot(town)
    with pytest.raises(DataError, match="unknown dataset 'nowhere'"):
        ingest_observations(town, "nowhere", readings(NEXT))
    with pytest.raises(DataError, match="missing required column 'value'"):
        ingest_observations(town, "town", readings(NEXT).drop(columns="value"))
    with pytest.raises(DataError, match="unknown column 'speed'"):
        ingest_observations(town, "town", readings(NEXT).assign(speed=1))
    with pytest.raises(DataError, match="no readings"):
        ingest_observations(town, "town", readings(NEXT).iloc[:0])
    assert snapshot(town) == before


def test_a_failure_inside_the_transaction_writes_nothing(town, monkeypatch):
    """The readings and the log row commit together: a failure after the readings were written rolls them back."""
    import trafficcore.live.ingest as li

    class Broken:
        @staticmethod
        def now(tz=None):
            raise RuntimeError("clock failed while logging the batch")

    before = snapshot(town)
    monkeypatch.setattr(li, "datetime", Broken)
    with pytest.raises(RuntimeError, match="clock failed"):
        ingest_observations(town, "town", readings(NEXT))
    assert snapshot(town) == before
    monkeypatch.undo()
    assert ingest_observations(town, "town", readings(NEXT)).written == 6  # and the batch can be sent again


def test_strings_as_an_api_would_send_them(town):
    df = pd.DataFrame({"detector_id": ["X:N", "X:E"], "ts": ["2025-03-17T00:00:00", "2025-03-17 00:00"],
                       "value": ["12", 13]})
    res = ingest_observations(town, "town", df)
    assert res.written == 2 and stored(town, "X:E", NEXT) == [13.0]


# ------------------------------------------------------------------------------------------ forecasts
def test_refresh_reissues_forecasts_for_the_touched_detectors(town):
    res = ingest_observations(town, "town", readings(NEXT, dets=["X:N", "Y:S"]))
    fc = refresh_forecasts(town, "town", res.detectors)
    assert set(fc["detector_id"]) == {"X:N", "Y:S"}
    assert (fc["issued_at"] == NEXT + pd.Timedelta("15min")).all()
    assert fc["run_id"].str.startswith("live:").all()
    assert (fc["p10"] <= fc["p50"]).all() and (fc["p50"] <= fc["p90"]).all()
    stored_fc = latest_forecasts(town, "town")
    assert set(stored_fc["detector_id"]) == {"X:N", "Y:S"} and len(stored_fc) == len(fc)
    # the next interval moves the issue time on
    res = ingest_observations(town, "town", readings(NEXT + pd.Timedelta("15min"), dets=["X:N"]))
    fc2 = refresh_forecasts(town, "town", res.detectors)
    assert (fc2["issued_at"] == NEXT + pd.Timedelta("30min")).all()
    status = live_status(town, "town")
    assert status["last_issue"] == NEXT + pd.Timedelta("30min") and status["batches"] == 2
    assert status["newest_reading"] == NEXT + pd.Timedelta("15min")


def test_now_is_after_the_newest_complete_interval_not_a_half_filled_one(town):
    # 2 of 6 detectors have sent the next interval: the city-wide "now" stays before it, while the two
    # detectors on their own are complete and move on; `at` earlier than that wins
    ingest_observations(town, "town", readings(NEXT, dets=["X:N", "Y:S"]))
    panel = live_panel(town, "town")
    assert issue_time(panel) == NEXT
    assert issue_time(panel, ["X:N", "Y:S"]) == NEXT + pd.Timedelta("15min")
    assert issue_time(panel, at=NEXT - pd.Timedelta("50min")) == NEXT - pd.Timedelta("60min")
    # 5 of 6 is still short of 90%; all 6 completes the interval
    ingest_observations(town, "town", readings(NEXT, dets=["X:E", "X:S", "X:W"]))
    assert issue_time(live_panel(town, "town")) == NEXT
    ingest_observations(town, "town", readings(NEXT, dets=["Y:N"]))
    assert issue_time(live_panel(town, "town")) == NEXT + pd.Timedelta("15min")


def test_api_default_issue_time_follows_the_same_rule(town):
    from trafficcore.api.service import LiveCache

    ingest_observations(town, "town", readings(NEXT, dets=["X:N", "Y:S"]))
    cache = LiveCache(town)
    try:
        assert cache.panel("town").latest == NEXT
    finally:
        cache.close()


def test_ingest_patches_the_cached_panel(town):
    """Readings taken in here reach the next forecast without reloading the dataset."""
    ingest_observations(town, "town", readings(NEXT))
    refresh_forecasts(town, "town", ["X:N"])
    panel = live_panel(town, "town")
    ingest_observations(town, "town", readings(NEXT + pd.Timedelta("15min"), {"X:N": 77.0}))
    patched = live_panel(town, "town")
    assert patched is not panel and len(patched.times) == len(panel.times) + 1
    assert patched.values[patched.index_of(NEXT + pd.Timedelta("15min")), patched.column("X:N")] == 77.0
    assert live_panel(town, "town") is patched  # no reload: the store stamp matches the patched panel


def test_panel_reloads_when_another_writer_changed_the_store(town):
    ingest_observations(town, "town", readings(NEXT))
    refresh_forecasts(town, "town")
    # a plain import (not through ingest_observations) adds a newer interval
    from live_data import city

    tables = city(1, start="2025-03-17")
    tables.observations = tables.observations[tables.observations["ts"] == NEXT + pd.Timedelta("15min")]
    town.ingest("town", tables)
    fc = refresh_forecasts(town, "town")
    assert (fc["issued_at"] == NEXT + pd.Timedelta("30min")).all()
    assert live_panel(town, "town").times[-1] == NEXT + pd.Timedelta("15min")


def test_typical_helper_matches_the_stored_profile(town):
    """Guards the test data itself: a typical reading is close to what was stored a week earlier."""
    t = pd.DatetimeIndex([pd.Timestamp("2025-03-10 08:00")])
    assert abs(stored(town, "X:W", t[0])[0] - typical("X:W", t)) / typical("X:W", t) < 0.15


# ------------------------------------------------------------------------------------------ lock retry
HOLD = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
open(sys.argv[2], "w").close()
time.sleep(float(sys.argv[3]))
con.close()
"""


def _hold_lock(path, ready, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(ready), str(seconds)])
    t0 = time.monotonic()
    while not ready.exists():
        assert time.monotonic() - t0 < 30, "the lock-holding process did not start"
        time.sleep(0.02)
    return proc


def test_connect_waits_for_another_process_to_release_the_lock(town, tmp_path):
    proc = _hold_lock(town.path, tmp_path / "ready", 1.0)
    try:
        t0 = time.monotonic()
        res = ingest_observations(town, "town", readings(NEXT))  # would fail at once without the retry
        waited = time.monotonic() - t0
    finally:
        proc.wait(timeout=30)
    assert res.written == 6 and waited > 0.3


def test_connect_gives_up_with_the_lock_error_after_the_wait(town, tmp_path, monkeypatch):
    import duckdb

    monkeypatch.setenv("TRAFFICCORE_DB_LOCK_WAIT_S", "0.3")
    proc = _hold_lock(town.path, tmp_path / "ready", 3.0)
    try:
        t0 = time.monotonic()
        with pytest.raises(duckdb.IOException, match="lock"):
            town.query("SELECT 1")
        assert 0.2 < time.monotonic() - t0 < 5.0  # gave up after about the 0.3 s wait, not the default 10 s
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert os.path.exists(town.path)
