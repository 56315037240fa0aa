"""Hostile text in a real browser (issue 15): a site name, a live batch's `source`, an uploaded file's name and
a cell holding Markdown links, images and `<img>` tags are shown as text, and the browser never requests the
URL they name. Chromium driven by Playwright against `streamlit run` on 127.0.0.1 (see tests/test_browser.py),
over a small store made here (the test city with one hostile site name), not the demo city.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
import pytest
from test_browser import ARGS, CHROMIUM, _idle, streamlit_server

from trafficcore.ui.safe import JOINER

pytestmark = pytest.mark.browser
sync_api = pytest.importorskip("playwright.sync_api", reason="the Python package playwright is not installed")

EVIL = "127.0.0.1:9"
LINKS = f"[x](http://{EVIL}/evil) ![i](http://{EVIL}/i.png) <img src=\"http://{EVIL}/h.png\">"
SITE = f"Evil St {LINKS}"
SOURCE = f"feed {LINKS} http://{EVIL}/bare"
FILE = f"counts ![f](http:{EVIL}) <img src=x>.csv"
CELL = f"[c](http://{EVIL}/cell) <img src=\"http://{EVIL}/cell.png\">"
#: Elements that would make the browser fetch or link to the hostile host.
LIVE_LINKS = f'a[href*="{EVIL}"], img[src*="{EVIL}"], img[src="x"], a[href^="javascript"]'


def _links(page) -> list[str]:
    """The elements (outer HTML) that link to or load from the hostile host."""
    return page.locator(LIVE_LINKS).evaluate_all("els => els.map(e => e.outerHTML)")


def _wait_shown(page, text: str) -> None:
    """Wait until the page's text holds `text` (ignoring the invisible joiners `safe.md` puts into URLs)."""
    page.wait_for_function("t => document.body.innerText.replaceAll('\\u2060', '').includes(t)", arg=text)


def _hostile(url: str) -> bool:
    u = urlparse(url)
    return (u.hostname, u.port) == ("127.0.0.1", 9)


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    from test_app_support import city_tables

    from trafficcore.data.store import Store
    from trafficcore.live.ingest import ingest_observations

    tmp = tmp_path_factory.mktemp("hostile-browser")
    tables = city_tables()
    tables.sites.loc[tables.sites["site_id"] == "S2", "name"] = SITE
    store = Store(tmp / "city.duckdb")
    store.ingest("city", tables)
    newest = pd.Timestamp(store.query("SELECT max(ts) AS t FROM observations")["t"][0])
    ingest_observations(store, "city", pd.DataFrame({"detector_id": ["S2:N"], "ts": [newest + pd.Timedelta("15min")],
                                                     "value": [5.0]}), source=SOURCE)
    with streamlit_server(Path(store.path), tmp, tmp / "streamlit.log") as url:
        yield url


def test_hostile_text_is_shown_never_fetched_or_linked(app_url, tmp_path_factory):
    requests: list[str] = []
    with sync_api.sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("profile")), executable_path=str(CHROMIUM), headless=True, args=ARGS,
            viewport={"width": 1366, "height": 900})
        ctx.set_default_timeout(60_000)
        page = ctx.new_page()
        page.on("request", lambda r: requests.append(r.url))
        try:
            for path, shown in (("site", SITE), ("signal", SITE), ("map", SITE), ("live", SOURCE)):
                page.goto(f"{app_url}/{path}?dataset=city&site=S2")
                _wait_shown(page, shown)  # the very characters, as text
                _idle(page)
                assert _links(page) == [], path
                assert "Something went wrong" not in page.inner_text("body"), path

            page.goto(f"{app_url}/data?dataset=city")
            page.get_by_role("tab", name="Import a file").click()
            files = [("Observations CSV", FILE, f"detector_id,timestamp,value\nX1:N,2025-01-01 00:00,5\n"
                                                f"X1:N,2025-01-01 00:15,{CELL}\n".encode()),
                     ("Sites CSV", "sites.csv", b"site_id,name,lat,lon\nX1,First St,52.1,5.1\n"),
                     ("Detectors CSV", "detectors.csv", b"detector_id,site_id,approach\nX1:N,X1,N\n")]
            for label, name, data in files:
                box = page.locator('[data-testid="stFileUploader"]', has_text=label)
                box.locator('input[type="file"]').set_input_files({"name": name, "mimeType": "text/csv",
                                                                   "buffer": data})
                _idle(page)
            page.get_by_label("Dataset name").fill("hostile")
            page.get_by_label("Dataset name").press("Enter")
            _idle(page)
            page.get_by_role("button", name="Check and import").click()
            err = page.locator('[data-testid="stAlertContentError"]', has_text="row 3")
            err.wait_for(timeout=30_000)
            _idle(page)
            text = err.inner_text()
            assert FILE in text.replace(JOINER, "") and CELL in text.replace(JOINER, ""), text
            assert err.locator("a, img").count() == 0 and _links(page) == []
            page.wait_for_timeout(500)
        finally:
            ctx.close()
    assert not [u for u in requests if _hostile(u)], [u for u in requests if _hostile(u)]
    assert not [u for u in requests if u.endswith("/x")]  # `<img src=x>` relative to the app
