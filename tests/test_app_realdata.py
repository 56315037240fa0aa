"""Every page on real data: the SCATS Boroondara workbook imported as `trafficcore import scats` does.

Needs ../shared/data (skipped, with the reason, when it is absent).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import shared_path
from streamlit.testing.v1 import AppTest

from trafficcore.data.store import Store

APP = Path(__file__).resolve().parents[1] / "app.py"
PAGES = ["site_detail", "signal_whatif", "tod_plans", "why_forecast", "model_report", "import_quality"]


@pytest.fixture(scope="module")
def scats_db(tmp_path_factory):
    folder = shared_path("scats_boroondara_oct2006")
    from trafficcore.data.loaders import scats

    db = tmp_path_factory.mktemp("scats") / "scats.duckdb"
    tables = scats.load(folder / "Scats_Data_October_2006.xlsx",
                        sites_listing=folder / "SCATSSiteListingSpreadsheet_VicRoads.xls")
    Store(db).ingest("scats", tables)
    return str(db)


@pytest.mark.realdata
@pytest.mark.slow
def test_every_page_works_on_scats(scats_db, monkeypatch, tmp_path):
    monkeypatch.setenv("TRAFFICCORE_DB", scats_db)
    monkeypatch.setenv("TRAFFICCORE_REPORTS", str(tmp_path))
    at = AppTest.from_file(str(APP), default_timeout=180).run()
    assert not at.exception and not at.error
    assert at.selectbox(key="dataset").value == "scats"
    assert not any("Synthetic" in c.value for c in at.caption)  # real data is not labelled synthetic
    assert at.query_params["at"] in ("2006-10-31T08:00", ["2006-10-31T08:00"])  # the last Tuesday, 08:00
    for name in PAGES:
        at.switch_page(f"pages/{name}.py").run()
        assert not at.exception, name
        assert not at.error, (name, [e.value for e in at.error])
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Detectors"] == "140"
