"""Windowing: no target, and no observation at or after the issue time, reaches any input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import tiny_tables

from trafficcore.data.panel import load_panel
from trafficcore.data.windows import WindowSpec, build_samples, context_fields, issue_grid
from trafficcore.text import context_text


@pytest.fixture
def panel(store):
    store.ingest("tiny", tiny_tables())
    return load_panel(store, "tiny")


def test_no_leakage(panel):
    """Every value is unique, so a value's presence tells exactly which reading it is."""
    spec = WindowSpec(history_steps=8, horizons_min=(15, 30, 60), n_neighbours=2)
    rows = issue_grid(panel, spec=spec)
    s = build_samples(panel, rows, spec=spec)
    ts_of_value = {}
    for d in range(panel.values.shape[1]):
        for t in range(panel.values.shape[0]):
            ts_of_value[float(panel.values[t, d])] = t
    issue_row_of_sample = s.issue_idx
    inputs = np.concatenate([s.history, s.neighbours.reshape(len(s), -1), s.last_week], axis=1)
    for i in range(0, len(s), 7):
        t = issue_row_of_sample[i]
        seen = [ts_of_value[v] for v in inputs[i] if not np.isnan(v)]
        assert max(seen) < t, "an input comes from the issue interval or later"
        targets = {v for v in s.targets[i] if not np.isnan(v)}
        assert not targets & set(inputs[i][~np.isnan(inputs[i])])


def test_targets_and_history_alignment(panel):
    spec = WindowSpec(history_steps=4, horizons_min=(15, 60), n_neighbours=1)
    row = panel.index_of("2025-01-09 08:00")
    s = build_samples(panel, np.array([row]), np.array([0]), spec=spec)
    base = row  # detector 0 value == row number
    assert list(s.history[0]) == [base - 4, base - 3, base - 2, base - 1]
    assert list(s.targets[0]) == [base, base + 3]  # intervals ending 08:15 and 09:00
    assert list(s.last_week[0]) == [base - 7 * 96, base + 3 - 7 * 96]
    assert s.neighbours[0, 0, -1] == 96 * 15 + base - 1  # B:N is A:N's graph neighbour


def test_targets_past_end_are_nan(panel):
    spec = WindowSpec(history_steps=4, horizons_min=(15, 30))
    s = build_samples(panel, np.array([len(panel.times)]), spec=spec)
    assert np.isnan(s.targets).all() and not np.isnan(s.history).any()


def test_context_text_reads_events(store):
    t = tiny_tables()
    t.events = pd.DataFrame(
        {
            "event_id": ["e1", "e2"],
            "start_ts": pd.to_datetime(["2025-01-10 19:00", "2025-01-10 19:30"]),
            "end_ts": pd.to_datetime(["2025-01-10 22:00", "2025-01-10 20:30"]),
            "lat": [52.0, 52.0],
            "lon": [5.0, 5.0],
            "site_id": ["A", "A"],
            "kind": ["concert", "crash"],
            "text": ["Concert at the arena", "Crash blocking a lane"],
            "source": ["t", "t"],
        }
    )
    store.ingest("ev", t)
    p = load_panel(store, "ev")
    text = context_text(context_fields(p, 0, p.index_of("2025-01-10 18:30")))
    assert "Concert at the arena (starts in 30 min)" in text
    assert "Crash" not in text  # an unplanned incident is not known before it happens
    later = context_text(context_fields(p, 0, p.index_of("2025-01-10 19:45")))
    assert "Crash blocking a lane (started 15 min ago)" in later
    far = context_text(context_fields(p, 2, p.index_of("2025-01-10 18:30")))
    assert "Concert" not in far  # site C is 2.3 km away
