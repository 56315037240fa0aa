"""The explanation sanity check of issue 4: the generator's no-event truth and the forecasts it selects."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trafficcore.data import demo
from trafficcore.data.panel import load_panel
from trafficcore.data.windows import WindowSpec, context_fields
from trafficcore.evaluation.explanations import planted_cases


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    from trafficcore.data.store import Store

    tables, truth = demo.generate_with_truth(seed=0, weeks=8)
    store = Store(tmp_path_factory.mktemp("sanity") / "demo.duckdb")
    store.ingest("demo", tables)
    panel = load_panel(store, "demo")
    cols = pd.Index(truth.detector_ids).get_indexer(panel.detectors["detector_id"])
    assert truth.times.equals(pd.DatetimeIndex(panel.times)) and (cols >= 0).all()
    return panel, truth.expected[:, cols], truth.without_events[:, cols]


def test_without_events_is_the_same_city_where_no_event_acts(city):
    panel, expected, calm = city
    assert expected.shape == calm.shape
    same = np.isclose(expected, calm, rtol=1e-6)
    assert same.mean() > 0.5  # most intervals and detectors are untouched by any event
    # a football match: arrivals before kick-off raise the flow at the stadium's site
    ev = panel.events[panel.events["kind"] == "football match"].iloc[0]
    t = panel.index_of(pd.Timestamp(ev["start_ts"]).floor("15min") - pd.Timedelta(minutes=30))
    site = (panel.detectors["site_id"] == ev["site_id"]).to_numpy()
    assert (expected[t, site] > 1.2 * calm[t, site]).any()


def test_planted_cases_are_the_first_forecasts_whose_text_shows_an_event_that_changes_the_target(city):
    panel, expected, calm = city
    cases = planted_cases(panel, expected, calm, horizon_min=30)
    assert len(cases) >= 20 and cases["held_out"].any() and (~cases["held_out"]).any()
    assert set(cases["direction"]) == {-1, 1}
    spec = WindowSpec()
    for c in cases.itertuples(index=False):
        r = panel.index_of(c.issued_at)
        d = panel.column(c.detector_id)
        target = r + 30 // 15 - 1  # the row of the interval ending 30 minutes after the issue time
        effect = expected[target, d] - calm[target, d]
        assert abs(effect) >= 0.2 * calm[target, d] and np.sign(effect) == c.direction
        texts = [e["text"] for e in context_fields(panel, d, r, spec)["events"]]
        assert c.text in texts, (c.text, c.issued_at)
        # the interval before: either the event was not visible yet, or it did not change its target
        earlier = [e["text"] for e in context_fields(panel, d, r - 1, spec)["events"]]
        assert c.text not in earlier or abs(expected[r, d] - calm[r, d]) < 0.2 * calm[r, d]
