"""`trafficcore ingest` (files and a watched folder) and `trafficcore replay`."""

from __future__ import annotations

import shutil
import threading
import time

import pandas as pd
from live_data import DETECTORS, city
from typer.testing import CliRunner

from trafficcore.cli import app
from trafficcore.live.replay import replay
from trafficcore.live.watch import watch

T0 = pd.Timestamp("2025-03-17 00:00")


def write_csv(path, rows: list[tuple[str, str, object]]) -> None:
    lines = ["detector_id,timestamp,value"] + [f"{d},{t},{v}" for d, t, v in rows]
    path.write_text("\n".join(lines) + "\n")


def interval_rows(ts: pd.Timestamp, value=10, dets=DETECTORS) -> list[tuple]:
    return [(d, f"{ts:%Y-%m-%d %H:%M}", value) for d in dets]


def value_of(store, det: str, ts) -> list[float]:
    return list(store.query("SELECT value FROM observations WHERE dataset='town' AND detector_id=? AND ts=?",
                            [det, pd.Timestamp(ts).to_pydatetime()])["value"])


# ------------------------------------------------------------------------------------------ the watched folder
def test_watch_once_takes_files_in_order_and_files_them(town, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    # b corrects a (same reading, later name): taken after a, so its value stays
    write_csv(inbox / "obs_0000_b.csv", [("X:N", "2025-03-17 00:00", 22)])
    write_csv(inbox / "obs_0000_a.csv", interval_rows(T0, 11))
    write_csv(inbox / "obs_0015.csv", [("X:N", "2025-03-17 00:15", 5), ("X:N", "2025-03-17 00:20", 6)])  # off grid
    (inbox / "obs_0030.csv.part").write_text("detector_id,timestamp,value\n")  # an upload in progress: ignored
    lines = []
    outs = watch(town, "town", inbox, once=True, settle=0.05, echo=lines.append)
    assert [(o.path.name, o.status) for o in outs] == [
        ("obs_0000_a.csv", "ingested"), ("obs_0000_b.csv", "ingested"), ("obs_0015.csv", "rejected")]
    assert value_of(town, "X:N", T0) == [22.0] and value_of(town, "X:E", T0) == [11.0]
    assert value_of(town, "X:N", T0 + pd.Timedelta("15min")) == []  # the bad file wrote nothing
    assert sorted(p.name for p in (inbox / "done").iterdir()) == ["obs_0000_a.csv", "obs_0000_b.csv"]
    error = (inbox / "rejected" / "obs_0015.csv.error.txt").read_text()
    assert "obs_0015.csv, row 3, column 'timestamp'" in error and "not the start of a 900 s interval" in error
    assert (inbox / "rejected" / "obs_0015.csv").exists() and (inbox / "obs_0030.csv.part").exists()
    assert "forecasts re-issued for 6 detectors at 2025-03-17 00:15" in lines[0]
    assert town.query("SELECT count(*) AS n FROM forecasts WHERE run_id LIKE 'live:%'")["n"].iloc[0] > 0


def test_a_file_seen_before_is_skipped_after_a_restart(town, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    write_csv(inbox / "obs_0000.csv", interval_rows(T0, 11))
    assert [o.status for o in watch(town, "town", inbox, once=True, settle=0.05, refresh=False, echo=str)] == [
        "ingested"]
    before = town.query("SELECT count(*) AS n, sum(value) AS s FROM observations").iloc[0].tolist()
    shutil.copy(inbox / "done" / "obs_0000.csv", inbox / "obs_0000.csv")  # dropped again: a fresh process
    outs = watch(town, "town", inbox, once=True, settle=0.05, refresh=False, echo=str)
    assert [o.status for o in outs] == ["duplicate"] and "already ingested" in outs[0].message
    assert town.query("SELECT count(*) AS n, sum(value) AS s FROM observations").iloc[0].tolist() == before
    assert sorted(p.name for p in (inbox / "done").iterdir()) == ["obs_0000.1.csv", "obs_0000.csv"]


def test_a_file_still_being_written_is_left_for_later(town, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    growing = inbox / "obs_0000.csv"
    write_csv(growing, interval_rows(T0, 11)[:3])
    write_csv(inbox / "obs_0015.csv", interval_rows(T0 + pd.Timedelta("15min")))

    def append_later():
        time.sleep(0.5)
        with open(growing, "a") as f:
            f.write(f"Y:N,{T0:%Y-%m-%d %H:%M},11\n")

    writer = threading.Thread(target=append_later)
    writer.start()
    lines = []
    outs = watch(town, "town", inbox, once=True, settle=2.0, refresh=False, echo=lines.append)
    writer.join()
    assert outs == [] and growing.exists()  # it changed while watched; the file after it waits behind it
    assert any("obs_0000.csv is still being written" in x for x in lines)
    outs = watch(town, "town", inbox, once=True, settle=0.05, refresh=False, echo=str)
    assert [(o.path.name, o.status) for o in outs] == [("obs_0000.csv", "ingested"), ("obs_0015.csv", "ingested")]
    assert value_of(town, "Y:N", T0) == [11.0]


def test_watch_until_stopped_picks_up_new_files(town, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    seen = []

    def drop_then_stop():  # the file arrives while the watcher runs; stop once it was taken
        if not (inbox / "obs_0000.csv").exists() and not seen:
            write_csv(inbox / "obs_0000.csv", interval_rows(T0, 11))
        return len(seen) >= 1

    outs = watch(town, "town", inbox, poll=0.05, refresh=False, echo=seen.append, should_stop=drop_then_stop)
    assert [o.status for o in outs] == ["ingested"] and (inbox / "done" / "obs_0000.csv").exists()


# ------------------------------------------------------------------------------------------ the command
def test_ingest_command_files_and_a_bad_file(town, tmp_path):
    good, bad = tmp_path / "a.csv", tmp_path / "b.csv"
    write_csv(good, interval_rows(T0, 12))
    write_csv(bad, [("X:N", "2025-03-17 00:15", 1), ("Q:Q", "2025-03-17 00:15", 1)])
    runner = CliRunner()
    res = runner.invoke(app, ["ingest", "--dataset", "town", "--db", str(town.path), "--no-forecasts", str(bad),
                              str(good)])
    assert res.exit_code == 2
    assert "ingested: a.csv: 6 readings, 6 new or changed (0 late)" in res.output
    assert "b.csv, row 3, column 'detector_id': unknown detector id 'Q:Q'" in res.output
    assert value_of(town, "X:N", T0) == [12.0] and value_of(town, "X:N", T0 + pd.Timedelta("15min")) == []
    res = runner.invoke(app, ["ingest", "--dataset", "town", "--db", str(town.path), str(good)])
    assert res.exit_code == 0 and "duplicate: a.csv: already ingested" in res.output
    res = runner.invoke(app, ["ingest", "--dataset", "town", "--db", str(town.path)])
    assert res.exit_code == 2 and "give either FILE... or --watch DIR" in res.output


def test_ingest_command_watch_once(town, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    write_csv(inbox / "obs.csv", interval_rows(T0, 12))
    res = CliRunner().invoke(app, ["ingest", "--dataset", "town", "--db", str(town.path), "--watch", str(inbox),
                                   "--once", "--poll", "0.1", "--no-forecasts"])
    assert res.exit_code == 0, res.output
    assert "1 ingested, 0 duplicate, 0 rejected" in res.output and (inbox / "done" / "obs.csv").exists()


# ------------------------------------------------------------------------------------------ replay
def test_replay_feeds_history_interval_by_interval(town):
    start, end = pd.Timestamp("2025-03-16 06:00"), pd.Timestamp("2025-03-16 06:30")
    steps = []
    res = replay(town, "town", start, end, speed=0, alerts=True, on_step=lambda s, i, n: steps.append((i, n)))
    assert res.into == "town-live" and not res.stopped
    assert [s.ts for s in res.steps] == list(pd.date_range(start, periods=2, freq="15min"))
    assert steps == [(i, 2) for i in range(2)] and all(s.written == 6 for s in res.steps)
    assert all(s.forecasts > 0 for s in res.steps)
    src = town.query("SELECT detector_id, ts, value FROM observations WHERE dataset='town' AND ts < ? "
                     "ORDER BY ALL", [end.to_pydatetime()])
    live = town.query("SELECT detector_id, ts, value FROM observations WHERE dataset='town-live' ORDER BY ALL")
    pd.testing.assert_frame_equal(src, live)
    assert town.query("SELECT count(*) AS n FROM ingest_log WHERE dataset='town-live'")["n"].iloc[0] == 2
    info = town.dataset_info("town-live")
    assert info["description"].startswith("Replay of town from 2025-03-16 06:00")
    assert len(town.detectors("town-live")) == 6 and len(town.sites("town-live")) == 2
    issued = town.query("SELECT max(issued_at) AS t FROM forecasts WHERE dataset='town-live'")["t"].iloc[0]
    assert issued == end
    # a second replay starts over: the same contents, not twice the readings
    replay(town, "town", start, end, speed=0, forecasts=False, alerts=False)
    again = town.query("SELECT detector_id, ts, value FROM observations WHERE dataset='town-live' ORDER BY ALL")
    pd.testing.assert_frame_equal(src, again)


def test_replay_paces_and_stops_cleanly(town):
    waits = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    steps = []
    res = replay(town, "town", "2025-03-16 06:00", speed=900, forecasts=False, alerts=False, sleep=sleep,
                 on_step=lambda s, i, n: steps.append(i), should_stop=lambda: len(steps) >= 2)
    assert res.stopped and len(res.steps) == 2
    assert waits and all(0 < w <= 1.0 for w in waits)  # a 900 s interval at speed 900: one interval a second
    n = town.query("SELECT count(*) AS n FROM observations WHERE dataset='town-live' AND ts >= '2025-03-16 06:00'")
    assert n["n"].iloc[0] == 12


def test_replay_command(town):
    res = CliRunner().invoke(app, ["replay", "--dataset", "town", "--from", "2025-03-16 23:15", "--speed", "0",
                                   "--into", "demo-feed", "--no-alerts", "--db", str(town.path)])
    assert res.exit_code == 0, res.output
    assert "'demo-feed' built from 'town'" in res.output and "fed 3 intervals, 18 readings" in res.output
    res = CliRunner().invoke(app, ["replay", "--dataset", "town", "--from", "2025-03-16", "--into", "town",
                                   "--db", str(town.path)])
    assert res.exit_code == 2 and "another dataset than its source" in res.output
    town.ingest("other", city(1))
    res = CliRunner().invoke(app, ["replay", "--dataset", "town", "--from", "2025-03-16", "--into", "other",
                                   "--db", str(town.path)])
    assert res.exit_code == 2 and "exists and is not a replay" in res.output
    assert len(town.observations("other")) == 6 * 96  # untouched


# ------------------------------------------------------------------------------------------ hostile input (issue 15)
def test_an_api_source_cannot_make_the_watcher_skip_a_file(town, tmp_path):
    """A client writing a file's digest into its free-text `source` must not get that file skipped."""
    from fastapi.testclient import TestClient

    from trafficcore.api import create_app
    from trafficcore.live.watch import file_sha256

    token = "watch-test-token-0123456789"
    obs = tmp_path / "obs_0000.csv"
    write_csv(obs, interval_rows(T0, 13))
    forged = f"x sha256={file_sha256(obs)}"
    with TestClient(create_app(town.path, tokens=[token], hold_store_s=0)) as c:
        r = c.post("/observations", params={"dataset": "town", "source": forged, "refresh": "false"},
                   json=[{"detector_id": "X:N", "ts": "2025-03-16 23:45", "value": 1.0}],
                   headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    res = CliRunner().invoke(app, ["ingest", "--dataset", "town", "--db", str(town.path), "--no-forecasts",
                                   str(obs)])
    assert res.exit_code == 0, res.output
    assert "ingested: obs_0000.csv: 6 readings, 6 new or changed" in res.output and "skipped" not in res.output
    assert value_of(town, "X:E", T0) == [13.0]


def test_forecasts_lost_to_a_crash_after_the_commit_are_issued_on_the_rerun(town, tmp_path, monkeypatch):
    """Readings committed, then the process dies before re-issuing: the rerun sees a duplicate and must
    still issue the forecasts of the detectors the file touched."""
    from trafficcore.live import ingest as li

    obs = tmp_path / "obs_0000.csv"
    write_csv(obs, interval_rows(T0, 14))
    real = li.refresh_forecasts

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed between the ingest commit and the forecasts")

    monkeypatch.setattr(li, "refresh_forecasts", crash)
    res = CliRunner().invoke(app, ["ingest", "--dataset", "town", "--db", str(town.path), str(obs)])
    assert res.exit_code != 0 and value_of(town, "X:N", T0) == [14.0]  # the readings were committed
    live = "SELECT DISTINCT detector_id FROM forecasts WHERE run_id LIKE 'live:%' AND issued_at >= ?"
    after = (T0 + pd.Timedelta("15min")).to_pydatetime()
    assert town.query(live, [after]).empty

    monkeypatch.setattr(li, "refresh_forecasts", real)
    res = CliRunner().invoke(app, ["ingest", "--dataset", "town", "--db", str(town.path), str(obs)])
    assert res.exit_code == 0, res.output
    assert "duplicate: obs_0000.csv: already ingested" in res.output
    assert "forecasts that were missing re-issued for 6 detectors at 2025-03-17 00:15" in res.output
    assert sorted(town.query(live, [after])["detector_id"]) == sorted(DETECTORS)
    res = CliRunner().invoke(app, ["ingest", "--dataset", "town", "--db", str(town.path), str(obs)])
    assert res.exit_code == 0 and "re-issued" not in res.output  # nothing missing any more: nothing redone
