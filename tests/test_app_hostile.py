"""Hostile text in the data (issue 15): site names, live-batch sources, uploaded file names and cells are shown
as the characters they are, never rendered as Markdown links, images or HTML. Through AppTest: what reaches
Streamlit's Markdown elements is escaped (tests/test_browser.py checks the browser fetches nothing)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest
from test_app import texts
from test_app_support import city_tables

from trafficcore.data.store import Store
from trafficcore.live.ingest import ingest_observations
from trafficcore.ui.safe import JOINER, md, plot_text
from trafficcore.ui.uploads import plain_error

APP = Path(__file__).resolve().parents[1] / "app.py"
EVIL = "127.0.0.1:9"
PAYLOAD = (f"[x](http://{EVIL}/evil) ![i](http://{EVIL}/i.png) <img src=\"http://{EVIL}/h.png\"> "
           f"http://{EVIL}/bare :red[red] **bold**")


def unrendered(text: str) -> bool:
    """No Markdown link or image, no HTML tag, no bare URL, no directive left unescaped in a Markdown source."""
    live = re.sub(r"\\.", "", text)  # what a backslash escapes is shown as is
    return "](" not in live and "<" not in live and "http://" not in live and ":red[" not in live


def test_md_escapes_every_markdown_and_html_construct():
    out = md(PAYLOAD + "\n# heading\n- item")
    assert unrendered(out) and "\n" not in out
    shown = out.replace("\\", "").replace(JOINER, "")  # what the reader sees (U+2060 is invisible)
    assert shown == PAYLOAD + " # heading - item"
    assert md("Mill St / 1st Ave (N)") == "Mill St / 1st Ave (N)" and md(None) == ""  # plain names stay as typed
    assert md("1. first") == "1\\. first" and md("- item") == "\\- item"  # not a list
    assert plot_text('<a href="http://x">y</a>') == '&lt;a href="http://x"&gt;y&lt;/a&gt;'


def test_import_error_escapes_the_file_name_and_the_cell():
    from trafficcore.errors import DataError

    err = DataError("/tmp/up/a.csv", f"not a number: '{PAYLOAD}'", row=3, column="A")
    text = plain_error(err, {"/tmp/up/a.csv": f"counts {PAYLOAD}.csv"})
    assert text.startswith(f"In **counts {md(PAYLOAD)}.csv**, row 3, column 'A': ")
    assert unrendered(text) and "/tmp/up" not in text


@pytest.fixture(scope="module")
def hostile_db(tmp_path_factory) -> str:
    tables = city_tables()
    tables.sites.loc[tables.sites["site_id"] == "S2", "name"] = PAYLOAD
    store = Store(tmp_path_factory.mktemp("hostile") / "city.duckdb")
    store.ingest("city", tables)
    newest = pd.Timestamp(store.query("SELECT max(ts) AS t FROM observations")["t"][0])
    reading = pd.DataFrame({"detector_id": ["S2:N"], "ts": [newest + pd.Timedelta("15min")], "value": [5.0]})
    ingest_observations(store, "city", reading, source=PAYLOAD)  # the API's free-text `source`
    return str(store.path)


@pytest.fixture
def app(hostile_db, monkeypatch, tmp_path):
    monkeypatch.setenv("TRAFFICCORE_DB", hostile_db)
    monkeypatch.setenv("TRAFFICCORE_REPORTS", str(tmp_path))

    def open_page(name: str) -> AppTest:
        at = AppTest.from_file(str(APP), default_timeout=90)
        at.query_params.update({"dataset": "city", "site": "S2"})
        at.run()
        at.switch_page(f"pages/{name}.py").run()
        assert not at.exception, name
        return at

    return open_page


@pytest.mark.parametrize("name,where", [("site_detail", "title"), ("signal_whatif", "subheader"),
                                        ("forecast_map", "subheader")])
def test_a_site_name_is_shown_escaped(app, name, where):
    at = app(name)
    shown = [e.value for e in getattr(at, where) if "127" in str(e.value)]
    assert shown and all(md(PAYLOAD) in v for v in shown), shown
    assert unrendered(texts(at))


def test_the_live_batch_source_is_shown_escaped(app):
    at = app("live")
    caption = next(c.value for c in at.caption if c.value.startswith("Last batch"))
    assert f"readings from {md(PAYLOAD)}, received" in caption
    assert unrendered(texts(at))


def test_an_uploaded_file_name_and_cell_are_shown_escaped(app):
    at = app("import_quality")
    at.selectbox(key="imp_format").set_value("matrix").run()
    cell = f"[x](http://{EVIL}/evil) <img src=\"http://{EVIL}/h.png\">"
    body = f"time,A,B\n2025-01-01 00:00,1,2\n2025-01-01 00:15,{cell},3\n".encode()
    at.get("file_uploader")[0].upload(f"counts ![i](http:{EVIL}) <b>.csv", body, "text/csv").run()
    at.text_input(key="imp_name").set_value("evil").run()
    at.button(key="imp_go").click().run()
    errors = [e.value for e in at.error]
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"In **{md('counts ![i](http:' + EVIL + ') <b>.csv')}**, row 3, column 'A'")
    assert md(cell) in errors[0] and unrendered(errors[0]) and "<b>" not in errors[0]
