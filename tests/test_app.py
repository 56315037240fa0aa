"""Every page through Streamlit's AppTest, on a store the test builds."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import tiny_tables
from streamlit.testing.v1 import AppTest

from trafficcore.data.store import Store

APP = Path(__file__).resolve().parents[1] / "app.py"


@pytest.fixture
def app_db(tmp_path, monkeypatch):
    db = tmp_path / "app.duckdb"
    Store(db).ingest("tiny", tiny_tables())
    monkeypatch.setenv("TRAFFICCORE_DB", str(db))
    return db


def test_datasets_page_lists_and_maps(app_db):
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception
    assert at.selectbox(key="dataset").value == "tiny"
    assert "tiny" in at.dataframe[0].value["name"].tolist()
    assert any("Synthetic" in w.value for w in at.warning)


def test_empty_store_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAFFICCORE_DB", str(tmp_path / "empty.duckdb"))
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception
    assert any("trafficcore demo" in w.value for w in at.warning)
