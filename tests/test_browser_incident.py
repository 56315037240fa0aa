"""Incident response in a real browser (issue 16): from the Forecast map to the Incident response page, pick a
planted incident from the page's list, and see the forecast with and without it and the recommended signal plan.

Same set-up as tests/test_browser.py (its fixtures: Debian chromium driven by Playwright against `streamlit run`
over a store made by `trafficcore demo`); the measured time from picking the incident to the view goes to
test-artifacts/browser/timings.json with the others.
"""

from __future__ import annotations

import re
import time

import pytest
from test_browser import ARTIFACTS, TIMINGS, _idle, _mark, _metric, _record_runs, browser, page, server  # noqa: F401

pytestmark = pytest.mark.browser


def _main(pg):
    return pg.locator('[data-testid="stMain"]')


def test_pick_an_incident_and_see_its_effect_and_the_recommended_plan(server, page):  # noqa: F811
    from trafficcore.data import demo
    from trafficcore.data.panel import load_panel
    from trafficcore.data.store import Store
    from trafficcore.live import incident as inc

    panel = load_panel(Store(server["db"], read_only=True), "demo")
    table = inc.incident_list(panel)
    concert = table[(table["kind"] == "concert") & (table["start_ts"] >= demo.splits("2025-09-01", 8)[1])].iloc[0]
    prefix = f"{concert['start_ts']:%a %d %b %H:%M} · concert"

    page.goto(server["url"] + "/")
    link = _main(page).get_by_role("link", name="Incident response")
    link.wait_for(timeout=120_000)  # on the map, under the selected site's approaches
    mark, t0 = _mark(server), time.perf_counter()
    link.click()
    page.get_by_role("heading", name="Incident response").wait_for()
    # the page waits for the shipped language model (it loads in the background after the first page)
    page.locator('[data-testid="stMetric"]', has_text="Change at the incident site").first.wait_for(timeout=240_000)
    TIMINGS["browser_s"]["open_incident_response"] = round(time.perf_counter() - t0, 2)
    _idle(page)
    _record_runs(server, mark, "open incident response")
    before = _metric(page, "Change at the incident site")

    box = _main(page).locator('[data-testid="stSelectbox"]', has_text="Event (")
    box.click()
    page.keyboard.type(prefix)
    option = page.get_by_role("option", name=re.compile(re.escape(prefix)))
    option.first.wait_for()
    mark, t0 = _mark(server), time.perf_counter()
    option.first.click()
    page.wait_for_function(
        "([label, old]) => { const m = [...document.querySelectorAll('[data-testid=\"stMetric\"]')]"
        ".find(e => e.innerText.includes(label)); return m && !m.innerText.includes(old); }",
        arg=["Change at the incident site", before], timeout=120_000)
    _idle(page)
    TIMINGS["browser_s"]["incident_picked_to_with_without_view"] = round(time.perf_counter() - t0, 2)
    _record_runs(server, mark, "pick an incident")

    change = _metric(page, "Change at the incident site")
    assert float(change.replace("%", "").strip()) > 5, change  # a concert crowd at the arena's junction
    chart = _main(page).locator(".js-plotly-plot").first
    for legend in ("P50 with the incident", "P50 without it", "P10-P90 with the incident"):
        assert chart.get_by_text(legend).count(), legend
    text = _main(page).inner_text()
    assert "Signals: the robust plan for the demand with the incident" in text
    assert re.search(r"(keep the plan in force \(cycle \d+ s|retime: cycle \d+ → \d+ s)", text), text[-2000:]
    assert concert["text"][:40] in text
    assert "Something went wrong" not in text and "Traceback" not in page.content()
    chart.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "07_incident_response.png"))
