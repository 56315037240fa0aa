"""Incident response (`trafficcore.live.incident`): on the demo city, whose generator knows what each planted
event did to every detector, with the model that serves it (the shipped language model)."""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from trafficcore import config
from trafficcore.cli import app
from trafficcore.data import demo
from trafficcore.data.panel import load_panel
from trafficcore.data.store import Store
from trafficcore.data.windows import context_fields
from trafficcore.errors import DataError
from trafficcore.live import incident as inc
from trafficcore.live import incident_report as rep
from trafficcore.live.serving import serving_model

runner = CliRunner()


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    """The default demo city (what `trafficcore demo` imports), its generator's truth, and the serving model."""
    if not (config.DEMO_MODEL_DIR / "config.json").exists():
        pytest.skip(f"no shipped demo model in {config.DEMO_MODEL_DIR}")
    tables, truth = demo.generate_with_truth(seed=0, weeks=8)
    path = tmp_path_factory.mktemp("incident") / "demo.duckdb"
    store = Store(path)
    store.ingest("demo", tables)
    serving = serving_model(store, "demo")
    return {"db": str(path), "panel": load_panel(store, "demo"), "truth": truth, "model": serving.model,
            "name": serving.display_name}


def _first(panel, kind: str, after=None) -> str:
    ev = panel.events[panel.events["kind"] == kind]
    if after is not None:
        ev = ev[ev["start_ts"] >= after]
    return str(ev.sort_values("start_ts")["event_id"].iloc[0])


def _planted(truth, frame: pd.DataFrame) -> np.ndarray:
    """What the generator's events added to each row's detector and interval (expected minus no-event counts)."""
    rows = truth.times.get_indexer(pd.to_datetime(frame["target_ts"]))
    col = {d: i for i, d in enumerate(truth.detector_ids)}
    cols = np.array([col[d] for d in frame["detector_id"]])
    return (truth.expected - truth.without_events)[rows, cols]


def test_a_planted_concert_raises_the_forecast_where_the_generator_raised_the_traffic(city):
    """The first concert of the test weeks (never trained on): the incident's effect has the planted sign."""
    panel = city["panel"]
    eid = _first(panel, "concert", after=demo.splits("2025-09-01", 8)[1])
    res = inc.incident_effect(city["model"], panel, inc.from_event(panel, eid))
    assert res.reads_text and res.changed
    assert res.issued_at == inc.default_issue_time(panel, res.incident) == res.incident.start - pd.Timedelta("60min")
    f = res.forecast
    planted = _planted(city["truth"], f)
    diff = (f["p50_with"] - f["p50_without"]).to_numpy()
    big = np.abs(planted) > 3  # intervals where the concert moved the traffic by more than 3 vehicles
    assert big.sum() >= 20
    assert (np.sign(diff[big]) == np.sign(planted[big])).mean() >= 0.8
    assert (diff[big] * np.sign(planted[big])).sum() > 0
    own = res.sites[res.sites["role"] == "incident site"].iloc[0]
    assert own["change_pct"] > 5  # the arena's own junction: busier with the concert
    # the view covers two hours in 15-minute steps, for every detector shown
    assert sorted(f["lead_min"].unique()) == list(range(15, 121, 15))
    assert (f.groupby("detector_id").size() == 8).all()
    assert (f["p10_with"] <= f["p50_with"]).all() and (f["p50_with"] <= f["p90_with"]).all()


def test_with_and_without_differ_only_at_detectors_whose_context_reads_the_incident(city):
    panel, model = city["panel"], city["model"]
    eid = _first(panel, "crash", after=pd.Timestamp("2025-10-20"))
    incident = inc.from_event(panel, eid)
    res = inc.incident_effect(model, panel, incident, radius_km=2.0, max_signals=0)  # wider than the model reads
    first = res.forecast[res.forecast["issued_at"] == res.issued_at]
    moved = (first["p50_with"] - first["p50_without"]).abs() + (first["p90_with"] - first["p90_without"]).abs()
    assert (moved[~first["reads_event"]] == 0).all()
    assert first.loc[~first["reads_event"], "detector_id"].nunique() > 0  # some shown detectors do not read it
    assert (moved[first["reads_event"]] > 0).any()
    # every detector of the city that reads it is shown with the default radius (the model's own)
    with_panel, _ = inc.with_and_without(panel, incident)
    row = panel.index_of(res.issued_at)
    readers = {d for c, d in enumerate(panel.detectors["detector_id"])
               if any(e["text"] == incident.text for e in context_fields(with_panel, c, row, model.spec)["events"])}
    shown = set(inc.incident_effect(model, panel, incident, max_signals=0).forecast["detector_id"])
    assert readers and readers <= shown
    # the events table is the only difference: the incident's row is gone from "without", nothing else
    wp, wo = inc.with_and_without(panel, incident)
    assert len(wp.events) == len(panel.events) == len(wo.events) + 1 and eid not in set(wo.events["event_id"])
    assert wo.values is panel.values and wp.values is panel.values


def test_the_second_hour_reads_the_first_hours_forecast_not_the_readings_that_followed(city):
    panel, model = city["panel"], city["model"]
    incident = inc.from_event(panel, _first(panel, "football match", after=pd.Timestamp("2025-10-01")))
    res = inc.incident_effect(model, panel, incident, max_signals=0)
    assert pd.to_datetime(res.forecast["issued_at"]).nunique() == 2  # the model stops at 60 min: issued again
    later = res.forecast[res.forecast["lead_min"] > 60]
    assert (later["issued_at"] == res.issued_at + pd.Timedelta("60min")).all()
    assert later["observed"].notna().any()  # the readings exist in the data...
    values = panel.values.copy()
    values[panel.index_of(res.issued_at):] *= 3.0  # ...and changing them changes nothing
    other = inc.incident_effect(model, dataclasses.replace(panel, values=values), incident, max_signals=0)
    cols = [c for c in inc.FORECAST_COLUMNS if c.startswith("p")]
    pd.testing.assert_frame_equal(other.forecast[cols], res.forecast[cols])
    assert any("issuing it again" in n for n in res.notes)


def test_report_round_trips_through_json_and_csv(city, tmp_path):
    panel = city["panel"]
    res = inc.incident_effect(city["model"], panel, inc.from_event(panel, _first(panel, "concert")),
                              model_name=city["name"])
    assert res.signals
    back = rep.from_json(rep.to_json(res))
    pd.testing.assert_frame_equal(back.forecast, res.forecast)
    pd.testing.assert_frame_equal(back.sites, res.sites)
    assert back.signals == res.signals and back.incident == res.incident
    assert (back.issued_at, back.model, back.notes) == (res.issued_at, city["name"], res.notes)
    path = tmp_path / "f.csv"
    path.write_text(rep.forecast_csv(res))
    pd.testing.assert_frame_equal(rep.read_forecast_csv(path), res.forecast)
    pd.testing.assert_frame_equal(rep.read_forecast_csv(rep.forecast_csv(res)), res.forecast)
    sig = pd.read_csv(io.StringIO(rep.signals_csv(res)))
    assert list(sig.columns) == rep.SIGNAL_CSV_COLUMNS and list(sig["site_id"]) == [s.site_id for s in res.signals]
    with pytest.raises(DataError, match="not an incident report"):
        rep.from_dict({**rep.to_dict(res), "schema": "something else"})


def test_a_typed_incident_is_read_only_by_the_with_forecast(city):
    panel, model = city["panel"], city["model"]
    before = panel.events.copy()
    at = pd.Timestamp("2025-10-22 07:45")
    typed = inc.typed_incident(panel, "S16", "crash", "Lorry overturned on Canal St at 4th Ave, road closed", at, 90)
    assert typed.typed and typed.event_id not in set(panel.events["event_id"]) and typed.unplanned
    wp, wo = inc.with_and_without(panel, typed)
    assert len(wp.events) == len(panel.events) + 1 and wo.events.equals(panel.events)
    res = inc.incident_effect(model, panel, typed, max_signals=1)
    assert res.issued_at == at and res.changed
    assert res.sites.iloc[0]["site_id"] == "S16" and res.signals[0].site_id == "S16"
    pd.testing.assert_frame_equal(panel.events, before)  # the dataset's own table is untouched


@pytest.mark.parametrize("field, kwargs", [
    ("site", {"site_id": "S99"}),
    ("kind", {"kind": "  "}),
    ("text", {"text": ""}),
    ("text", {"text": "x" * (inc.MAX_TEXT_CHARS + 1)}),
    ("start", {"start": "next tuesday-ish"}),
    ("duration", {"duration_min": 0}),
    ("duration", {"duration_min": "long"}),
])
def test_bad_typed_incidents_name_the_field(city, field, kwargs):
    args = {"site_id": "S16", "kind": "crash", "text": "Crash", "start": "2025-10-22 07:45", "duration_min": 30}
    with pytest.raises(DataError) as err:
        inc.typed_incident(city["panel"], **{**args, **kwargs})
    assert err.value.column == field


def test_an_issue_time_the_model_cannot_forecast_from_is_refused(city):
    panel, model = city["panel"], city["model"]
    incident = inc.from_event(panel, _first(panel, "crash"))
    for t, why in ((panel.times[-1] + pd.Timedelta("2h"), "outside"), ("2025-10-22 07:50", "grid"),
                   (panel.times[0], "outside")):
        with pytest.raises(DataError, match=why):
            inc.incident_effect(model, panel, incident, t)


def test_a_model_that_reads_no_text_says_so(city):
    from trafficcore.live.fallback import fit_baseline

    panel = city["panel"]
    model, _ = fit_baseline("historical_average", panel)
    res = inc.incident_effect(model, panel, inc.from_event(panel, _first(panel, "concert")), max_signals=1)
    assert not res.reads_text and not res.changed
    assert any("does not read event text" in n for n in res.notes)
    assert res.forecast["issued_at"].nunique() == 1  # its horizons reach 120 min: one issue
    [sig] = res.signals
    assert sig.recommended == sig.current and "keep the plan" in rep.plan_change_text(sig)
    assert inc.saved_reads_text(config.DEMO_MODEL_DIR) and not inc.reads_event_text(model)


def test_signals_get_the_optimisers_plan_against_a_given_plan(city):
    from trafficcore.signal.analysis import analyse
    from trafficcore.signal.site import build_plan, default_phases, site_approaches, site_demand

    panel = city["panel"]
    incident = inc.from_event(panel, _first(panel, "football match"))
    approaches, _ = site_approaches(panel, incident.site_id)
    given = build_plan(approaches, default_phases(approaches), name="in force")
    res = inc.incident_effect(city["model"], panel, incident, plans={incident.site_id: given}, max_signals=2)
    own, *rest = res.signals
    assert own.site_id == incident.site_id and own.current == given.to_dict() and "given" in own.plan_source
    assert all(s.plan_source == "tuned to the forecast without the incident (the site's real timing is not known)"
               for s in rest)
    f = res.forecast[res.forecast["site_id"] == incident.site_id].rename(
        columns={"p10_with": "p10", "p50_with": "p50", "p90_with": "p90"})
    demand = site_demand(f, approaches, 15)
    assert own.delay_before_s == pytest.approx(analyse(given, demand).summary["delay_s"])
    assert own.robust_after_veh_h <= own.robust_before_veh_h  # the optimiser never recommends a worse plan
    assert own.recommended != own.current and "retime" in rep.plan_change_text(own)


def test_cli_writes_the_report_and_refuses_bad_input(city, tmp_path):
    panel = city["panel"]
    eid = _first(panel, "concert")
    out = tmp_path / "r.json"
    ok = runner.invoke(app, ["incident", "--db", city["db"], "--dataset", "demo", "--event", eid, "--json", str(out),
                             "--csv", str(tmp_path / "f.csv"), "--max-signals", "1"])
    assert ok.exit_code == 0, ok.output
    assert "incident site" in ok.output and ("keep the plan" in ok.output or "retime" in ok.output)
    back = rep.from_json(out.read_text())
    assert back.incident.event_id == eid and json.loads(out.read_text())["schema"] == "trafficcore.incident/1"
    assert len(rep.read_forecast_csv(tmp_path / "f.csv")) == len(back.forecast)
    for args, words in ((["--site", "S99", "--kind", "crash", "--text", "x", "--start", "2025-10-22 07:45"],
                         "no site 'S99'"),
                        (["--site", "S16", "--kind", "crash"], "--text, --start"),
                        (["--event", "E9999"], "no event 'E9999'"),
                        (["--event", eid, "--at", "soon"], "column '--at'")):
        bad = runner.invoke(app, ["incident", "--db", city["db"], "--dataset", "demo", *args])
        assert bad.exit_code == 2 and words in bad.output, (args, bad.output)
    listed = runner.invoke(app, ["incident", "--db", city["db"], "--dataset", "demo", "--list"])
    assert listed.exit_code == 0 and eid in listed.output
