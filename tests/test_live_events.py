"""Live events on the demo city with the shipped model: feeds import, match detectors and change the forecasts of
those they concern; a resent feed writes nothing; updates and cancellations by id; bad feeds exit 2 unchanged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from trafficcore import config
from trafficcore.cli import app
from trafficcore.data.loaders.event_feeds import parse_document, read_event_file
from trafficcore.data.store import Store
from trafficcore.data.windows import context_fields
from trafficcore.live.events import (
    active_events,
    affected_now,
    ingest_event_file,
    ingest_events,
    refresh_for_events,
)
from trafficcore.live.ingest import latest_forecasts, live_model, live_panel, refresh_forecasts

DATA = Path(__file__).resolve().parent / "data"
TZ = "Europe/Amsterdam"
NOW = pd.Timestamp("2025-10-27 00:00")  # the live issue time: just after the demo city's newest reading
runner = CliRunner()


@pytest.fixture(scope="module")
def demo_template(tmp_path_factory):
    """The demo city as `trafficcore demo` imports it (the shipped model serves it), built once."""
    from trafficcore.data import demo

    if not (config.DEMO_MODEL_DIR / "config.json").exists():
        pytest.skip(f"no shipped demo model in {config.DEMO_MODEL_DIR}")
    path = tmp_path_factory.mktemp("events") / "demo.duckdb"
    Store(path).ingest("demo", demo.generate(seed=0, weeks=8))
    return path


@pytest.fixture
def city(demo_template, tmp_path):
    shutil.copy(demo_template, tmp_path / "demo.duckdb")
    return Store(tmp_path / "demo.duckdb")


def snapshot(store: Store) -> tuple:
    """Everything an events batch may touch, as comparable values."""
    ev = store.query("SELECT count(*) AS n, sum(hash(event_id, start_ts, end_ts, text, status, site_id)) AS h "
                     "FROM events WHERE dataset = 'demo'").iloc[0]
    log = store.query("SELECT count(*) AS n FROM ingest_log WHERE dataset = 'demo'")["n"].iloc[0]
    fc = store.query("SELECT count(*) AS n, coalesce(sum(p50), 0) AS s FROM forecasts WHERE dataset = 'demo'")
    fc = fc.iloc[0]
    return int(ev["n"]), str(ev["h"]), int(log), int(fc["n"]), float(fc["s"] or 0)


def p50(store: Store) -> pd.Series:
    fc = latest_forecasts(store, "demo")
    return fc.set_index(["detector_id", "horizon_min"])["p50"]


# ------------------------------------------------------------------------------------------ importing feeds
@pytest.mark.slow
@pytest.mark.parametrize("name, n, first_site", [("wzdx_demo.geojson", 3, "S25"), ("open511_demo.json", 7, "S32")])
def test_a_feed_imports_matches_detectors_and_changes_their_forecasts(city, name, n, first_site):
    refresh_forecasts(city, "demo")
    assert live_model(city, "demo")[1]["source"] == "shipped"  # the shipped language model reads the events
    before = p50(city)
    out = ingest_event_file(city, "demo", DATA / name)
    assert out.status == "ingested", out.message
    assert out.result["new"] == n and out.result["written"] == n and not out.result["duplicate_batch"]
    stored = city.events("demo").set_index("event_id")
    first = stored.loc[out.result["events"][0]]
    assert first["site_id"] == first_site and first["status"] == "active"
    after = p50(city)
    moved = (after - before).abs().groupby(level=0).max()
    changed = set(moved[moved > 1e-3].index)
    # the detectors re-issued are those near an event a forecast issued now reads, and their forecasts moved
    panel = live_panel(city, "demo")
    model = live_model(city, "demo")[0]
    now_events = panel.events[panel.events["event_id"].isin(out.result["events"])]
    expected = set(affected_now(panel, now_events, model.spec))
    assert expected and expected <= set(out.result["detectors"])
    assert changed <= expected and len(changed) >= 0.9 * len(expected), (len(changed), len(expected))
    assert f"forecasts re-issued for {len(expected)} detectors at 2025-10-27 00:00" in out.message
    # and the model read them: the context of a detector beside the first event names it
    row = panel.index_of(NOW)
    det = next(d for d in sorted(expected) if d.startswith(first_site))
    texts = [e["text"] for e in context_fields(panel, panel.column(det), row, model.spec)["events"]]
    assert first["text"] in texts


@pytest.mark.slow
def test_a_cad_log_changes_the_forecasts_near_each_incident(city):
    refresh_forecasts(city, "demo")
    before = p50(city)
    out = ingest_event_file(city, "demo", DATA / "cad_demo.csv")
    assert out.status == "ingested" and out.result["new"] == 4, out.message
    after = p50(city)
    assert (after - before).abs().loc["S30:N"].max() > 0.01  # Station Rd / 2nd Ave: the crash (injuries unknown)
    ev = active_events(city, "demo")
    crash = ev[ev["event_id"] == "cad:20251026:0457"].iloc[0]
    assert crash["started"] and "S30" in crash["sites"] and crash["text"].endswith("injuries unknown")


# ------------------------------------------------------------------------------------------ idempotence
def test_a_resent_feed_writes_nothing(city):
    rows = read_event_file(DATA / "wzdx_demo.geojson", TZ)
    first = ingest_events(city, "demo", rows)
    assert first.new == 3 and first.batch_id
    before = snapshot(city)
    again = ingest_events(city, "demo", read_event_file(DATA / "wzdx_demo.geojson", TZ))
    assert again.duplicate_batch and again.written == 0 and again.batch_id == first.batch_id
    assert snapshot(city) == before
    # the same events in another order, and a feed whose generation time alone changed: the same batch
    doc = json.loads((DATA / "wzdx_demo.geojson").read_text())
    doc["features"].reverse()
    doc["feed_info"]["update_date"] = "2025-10-26T23:55:00Z"
    assert ingest_events(city, "demo", parse_document(doc, "feed", TZ)).duplicate_batch
    out = ingest_event_file(city, "demo", DATA / "wzdx_demo.geojson", refresh=False)
    assert out.status == "duplicate" and "the same events were ingested before" in out.message
    assert snapshot(city) == before
    # a file taken once is recognised by its bytes, before parsing
    assert ingest_event_file(city, "demo", DATA / "cad_demo.csv", refresh=False).status == "ingested"
    n = snapshot(city)
    out = ingest_event_file(city, "demo", DATA / "cad_demo.csv", refresh=False)
    assert out.status == "duplicate" and "already ingested" in out.message and snapshot(city) == n


def test_updates_replace_the_row_and_cancellations_end_the_event(city):
    doc = json.loads((DATA / "wzdx_demo.geojson").read_text())
    ingest_events(city, "demo", parse_document(doc, "feed", TZ))
    live_panel(city, "demo")  # cached: the batches below must patch its events
    p = doc["features"][0]["properties"]
    p["end_date"] = "2025-11-02T17:00:00Z"
    p["vehicle_impact"] = "all-lanes-closed"
    res = ingest_events(city, "demo", parse_document(doc, "feed", TZ))
    assert (res.new, res.updated, res.unchanged) == (0, 1, 2)
    row = city.events("demo").set_index("event_id").loc["wzdx:5c9a2e1e-3f0b-4c44-9d8e-2a1f6b7c0001"]
    assert row["end_ts"] == pd.Timestamp("2025-11-02 18:00") and "road closed" in row["text"]
    assert (city.events("demo")["event_id"] == row.name).sum() == 1
    doc["features"][1]["properties"]["event_status"] = "cancelled"
    res = ingest_events(city, "demo", parse_document(doc, "feed", TZ))
    assert (res.cancelled, res.updated, res.unchanged) == (1, 0, 2)
    cancelled = "wzdx:5c9a2e1e-3f0b-4c44-9d8e-2a1f6b7c0002"
    assert city.events("demo").set_index("event_id").loc[cancelled, "status"] == "cancelled"  # kept, marked
    panel = live_panel(city, "demo")
    assert cancelled not in set(panel.events["event_id"])  # no model reads it
    assert cancelled not in set(active_events(city, "demo")["event_id"])
    assert res.detectors and "S16:N" in res.detectors  # its detectors are re-forecast without it


def test_an_ended_event_ends_when_the_feed_says_and_a_family_is_replaced(city):
    doc = json.loads((DATA / "open511_demo.json").read_text())
    ingest_events(city, "demo", parse_document(doc, "feed", TZ))
    doc["events"][0]["status"] = "ARCHIVED"
    doc["events"][0]["updated"] = "2025-10-26T23:40:00+01:00"
    doc["events"][1]["schedule"]["recurring_schedules"][0]["end_date"] = "2025-10-27"  # two nights left
    res = ingest_events(city, "demo", parse_document(doc, "feed", TZ))
    assert (res.ended, res.removed, res.unchanged) == (1, 3, 3)
    ev = city.events("demo").set_index("event_id")
    assert ev.loc["open511:lindenhaven/LH-2041", "end_ts"] == pd.Timestamp("2025-10-26 23:40")
    assert sorted(i for i in ev.index if "LH-2037" in i) == ["open511:lindenhaven/LH-2037#1",
                                                              "open511:lindenhaven/LH-2037#2"]
    # an ended crash stays in the context for an hour after it cleared (traffic recovers), then drops out
    ids = set(active_events(city, "demo", at="2025-10-27 00:30")["event_id"])
    assert "open511:lindenhaven/LH-2041" in ids
    assert "open511:lindenhaven/LH-2041" not in set(active_events(city, "demo", at="2025-10-27 00:45")["event_id"])


@pytest.mark.slow
def test_cancelling_every_event_brings_the_forecasts_back(city):
    refresh_forecasts(city, "demo")
    before = p50(city)
    doc = json.loads((DATA / "wzdx_demo.geojson").read_text())
    res = ingest_events(city, "demo", parse_document(doc, "feed", TZ))
    fc = refresh_for_events(city, "demo", res)
    assert fc is not None and (p50(city) - before).abs().max() > 0.01
    for f in doc["features"]:
        f["properties"]["event_status"] = "cancelled"
    res = ingest_events(city, "demo", parse_document(doc, "feed", TZ))
    assert res.cancelled == 3
    refresh_for_events(city, "demo", res)
    assert np.allclose(p50(city).loc[before.index], before, atol=1e-4)


# ------------------------------------------------------------------------------------------ the command
def test_a_malformed_feed_exits_2_and_changes_nothing(city, tmp_path):
    doc = json.loads((DATA / "wzdx_demo.geojson").read_text())
    doc["features"][2]["properties"]["start_date"] = "2025-13-40T07:00:00Z"
    bad = tmp_path / "b_feed.geojson"
    bad.write_text(json.dumps(doc))
    later = tmp_path / "c_cad.csv"
    shutil.copy(DATA / "cad_demo.csv", later)
    before = snapshot(city)
    res = runner.invoke(app, ["events", "ingest", str(bad), str(later), "--dataset", "demo", "--db", str(city.path),
                              "--no-forecasts"])
    assert res.exit_code == 2, res.output
    assert "column 'features[2].properties.start_date'" in res.output and "not a date/time" in res.output
    assert "1 later file(s) not read" in res.output
    assert snapshot(city) == before
    res = runner.invoke(app, ["events", "ingest", str(DATA / "events_demo.csv"), "--dataset", "nowhere",
                              "--db", str(city.path)])
    assert res.exit_code == 2 and "nowhere" in res.output


def test_the_command_takes_files_and_a_watched_folder(city, tmp_path):
    res = runner.invoke(app, ["events", "ingest", str(DATA / "events_demo.csv"), "--dataset", "demo",
                              "--db", str(city.path), "--no-forecasts"])
    assert res.exit_code == 0 and "events_demo.csv (own): 2 events, 2 new" in res.output, res.output
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(DATA / "open511_demo.json", inbox / "a_open511.json")
    shutil.copy(DATA / "events_demo.csv", inbox / "b_same_again.csv")
    (inbox / "c_broken.json").write_text('{"events": [{"id": "x", "start": "soon"}]}')
    (inbox / "d_upload.json.part").write_text("{")
    res = runner.invoke(app, ["events", "ingest", "--watch", str(inbox), "--once", "--dataset", "demo",
                              "--db", str(city.path), "--no-forecasts"])
    assert res.exit_code == 0, res.output
    assert "1 ingested, 1 duplicate, 1 rejected" in res.output
    assert sorted(p.name for p in (inbox / "done").iterdir()) == ["a_open511.json", "b_same_again.csv"]
    error = (inbox / "rejected" / "c_broken.json.error.txt").read_text()
    assert "column 'events[0].start'" in error and "not a date/time: 'soon'" in error
    assert (inbox / "d_upload.json.part").exists()
    listed = runner.invoke(app, ["events", "list", "--dataset", "demo", "--db", str(city.path)])
    assert "open511:lindenhaven/LH-2041 [crash]" in listed.output and "LH-CONCERT-1027" not in listed.output


@pytest.mark.slow
def test_the_site_detail_lists_the_events_the_shipped_model_read(city):
    from trafficcore.live.serving import load_saved
    from trafficcore.ui.events import events_read

    ingest_events(city, "demo", read_event_file(DATA / "wzdx_demo.geojson", TZ))
    panel = live_panel(city, "demo")
    model = load_saved(config.DEMO_MODEL_DIR)
    dets = ["S25:N", "S25:S", "S01:N"]
    read = events_read(model, panel, dets, NOW)
    works = read[read["text"].str.startswith("Roadworks on Park Rd northbound")]
    assert set(works["detector_id"]) == {"S25:N", "S25:S"}  # S01 is 3 km away
    assert works["read"].str.contains(r"\(started 4 h ago, ends in 5 days, 0\.\d km away\)").all(), works["read"]
    assert works["icon"].iloc[0] == ":material/construction:" and works["when"].iloc[0] == "started 4 h ago"


def test_the_models_fast_context_reads_live_events_as_the_reference_does(city):
    from trafficcore.models.lm.inputs import FastContext

    for name in ("wzdx_demo.geojson", "open511_demo.json", "cad_demo.csv", "events_demo.csv"):
        ingest_events(city, "demo", read_event_file(DATA / name, TZ))
    panel = live_panel(city, "demo")
    fc = FastContext(panel)
    rows = [panel.index_of(NOW) - k for k in (0, 1, 4, 12)]
    hits = 0
    for d in range(0, len(panel.detectors), 3):
        for r in rows:
            want = context_fields(panel, d, r)
            assert fc.fields(d, r) == want, (panel.detectors["detector_id"].iloc[d], r)
            hits += bool(want["events"])
    assert hits > 40  # the probe covers many detectors that read the live events
