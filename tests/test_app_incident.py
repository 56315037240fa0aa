"""The Incident response page through AppTest: on the demo city with the shipped language model (it reads the
incident's words), and on the small test city whose historical average reads none (the page says so)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from test_app_support import make_city_db

from trafficcore import config
from trafficcore.data import demo
from trafficcore.data.panel import load_panel
from trafficcore.data.store import Store
from trafficcore.live import incident as inc
from trafficcore.live.serving import load_saved
from trafficcore.signal.site import build_plan, default_phases, site_approaches
from trafficcore.ui import clock
from trafficcore.ui.safe import md

APP = Path(__file__).resolve().parents[1] / "app.py"
HOSTILE = "Crash <img src=x> by [the depot](http://127.0.0.1:9/x) on *Harbour Rd*: two lanes blocked"


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory):
    if not (config.DEMO_MODEL_DIR / "config.json").exists():
        pytest.skip(f"no shipped demo model in {config.DEMO_MODEL_DIR}")
    path = tmp_path_factory.mktemp("incident-page") / "demo.duckdb"
    Store(path).ingest("demo", demo.generate(seed=0, weeks=8))
    return str(path)


def _open(db: str, monkeypatch, tmp_path, **query) -> AppTest:
    monkeypatch.setenv("TRAFFICCORE_DB", db)
    monkeypatch.setenv("TRAFFICCORE_REPORTS", str(tmp_path))
    at = AppTest.from_file(str(APP), default_timeout=240)
    at.query_params.update(query)
    at.run()
    at.switch_page("pages/incident.py").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    return at


def metric(at, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def texts(at) -> str:
    return "\n".join(str(e.value) for kind in ("caption", "markdown", "info", "warning") for e in getattr(at, kind))


def test_pick_a_planted_incident_and_see_its_effect_and_the_signal_plans(demo_db, monkeypatch, tmp_path):
    at = _open(demo_db, monkeypatch, tmp_path, dataset="demo")
    assert at.title[0].value == "Incident response"
    panel = load_panel(Store(demo_db, read_only=True), "demo")
    table = inc.incident_list(panel)
    # the list opens on the event nearest the sidebar's time
    assert at.selectbox(key="inc_event").value == table["event_id"].iloc[
        inc.nearest_to(table, clock.default_issue_time(panel))]
    assert "Shipped demo model" in texts(at)  # the serving model, not a stand-in that reads no text
    for label in ("Change at the incident site", "Sites reading it", "Signals retimed"):
        assert metric(at, label)
    assert len(at.get("plotly_chart")) == 1 and len(at.get("download_button")) == 3

    concert = table[(table["kind"] == "concert") & (table["start_ts"] >= demo.splits("2025-09-01", 8)[1])]
    eid = concert["event_id"].iloc[0]
    at.selectbox(key="inc_event").set_value(eid).run()
    assert not at.exception and not at.error
    want = inc.incident_effect(load_saved(config.DEMO_MODEL_DIR), panel, inc.from_event(panel, eid))
    own = want.sites[want.sites["role"] == "incident site"].iloc[0]
    assert metric(at, "Change at the incident site") == f"{own['change_pct']:+.1f} %" and own["change_pct"] > 5
    signals = next(df.value for df in at.dataframe if "recommended" in df.value.columns)
    assert list(signals["site"]) == [s.name for s in want.signals]
    lines = [m.value for m in at.markdown if m.value.startswith("- **")]
    assert len(lines) == len(want.signals) and all(("keep the plan" in x) or ("retime" in x) for x in lines)
    # the chart draws both forecasts with their bands, and what was observed
    names = [t.get("name") for t in json.loads(at.get("plotly_chart")[0].proto.spec)["data"]]
    assert {"P50 with the incident", "P50 without it", "P10-P90 with the incident", "P10-P90 without it",
            "observed"} <= set(names)

    # a plan an engineer made in the Signal what-if for the incident's site is the plan in force there
    site = want.incident.site_id
    approaches, _ = site_approaches(panel, site)
    given = build_plan(approaches, default_phases(approaches), name="engineer's plan")
    at.session_state[f"whatif_demo_{site}"] = {"plan": given.to_dict()}
    at.run()
    signals = next(df.value for df in at.dataframe if "recommended" in df.value.columns)
    assert signals["plan in force"].iloc[0] == "N-S 41 s; E-W 41 s (90 s)"
    assert "plan given for this site" in texts(at)


def test_type_an_incident_its_words_are_shown_as_text(demo_db, monkeypatch, tmp_path):
    at = _open(demo_db, monkeypatch, tmp_path, dataset="demo", site="S07", at="2025-10-22T07:45")
    at.segmented_control(key="inc_source").set_value("typed").run()
    assert "Describe the incident" in texts(at)
    at.text_input(key="inc_text").set_value(HOSTILE).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.selectbox(key="inc_site").value == "S07"
    shown = "\n".join(m.value for m in at.markdown)
    assert md(HOSTILE) in shown and HOSTILE not in shown  # escaped: no image, link or emphasis
    assert "Forecast issued Wed 22 Oct 07:45" in texts(at)
    assert metric(at, "Change at the incident site") != "+0.0 %"


def test_a_model_that_reads_no_text_is_named_as_such(tmp_path_factory, monkeypatch, tmp_path):
    db = make_city_db(tmp_path_factory.mktemp("incident-city") / "city.duckdb")
    at = _open(db, monkeypatch, tmp_path, dataset="city", site="S2")
    assert at.selectbox(key="inc_event").value == "E1"  # the test city's one concert
    assert "does not read event text" in texts(at)
    assert metric(at, "Change at the incident site") == "+0.0 %"
    assert "train one with" in texts(at)  # no saved model of this dataset reads text
    assert not [b for b in at.button if str(b.label).startswith("Use ")]
