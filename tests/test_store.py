"""The store: one transaction per ingest, idempotent re-import, upserts, query helpers."""

from __future__ import annotations

import pandas as pd
import pytest
from helpers import tiny_tables

from trafficcore.data.store import Store
from trafficcore.errors import DataError


def table_counts(store: Store) -> dict[str, int]:
    return {
        t: int(store.query(f"SELECT count(*) AS n FROM {t}")["n"][0]) for t in ("sites", "detectors", "observations")
    }


def test_ingest_and_summary(store):
    store.ingest("tiny", tiny_tables())
    [info] = store.datasets()
    assert (info["name"], info["sites"], info["detectors"], info["observations"]) == ("tiny", 3, 3, 3 * 96 * 15)
    assert info["start"] == "2025-01-01T00:00:00" and info["end"] == "2025-01-15T23:45:00"
    assert info["interval_s"] == 900 and info["synthetic"] is True


def test_reimport_changes_nothing(store):
    store.ingest("tiny", tiny_tables())
    before = (store.datasets(), store.observations("tiny"))
    store.ingest("tiny", tiny_tables())
    after = (store.datasets(), store.observations("tiny"))
    assert before[0] == after[0]
    pd.testing.assert_frame_equal(before[1], after[1])


def test_overlapping_range_upserts(store):
    store.ingest("tiny", tiny_tables(days=10))
    store.ingest("tiny", tiny_tables(days=10, start="2025-01-06", value_offset=0.5))
    obs = store.observations("tiny", ["A:N"])
    assert obs["ts"].min() == pd.Timestamp("2025-01-01") and obs["ts"].max() == pd.Timestamp("2025-01-15 23:45")
    assert len(obs) == 96 * 15  # union of the two ranges, no duplicates
    at = obs.set_index("ts")["value"]
    assert at[pd.Timestamp("2025-01-06")] == 0.5  # replaced by the second file
    assert at[pd.Timestamp("2025-01-05 23:45")] == 96 * 5 - 1  # kept from the first


def test_datasets_side_by_side(store):
    store.ingest("one", tiny_tables())
    store.ingest("two", tiny_tables(days=2))
    assert [d["name"] for d in store.datasets()] == ["one", "two"]
    assert len(store.observations("two")) == 3 * 96 * 2
    assert len(store.observations("one")) == 3 * 96 * 15


def test_failed_ingest_leaves_store_unchanged(store):
    store.ingest("tiny", tiny_tables())
    before = (store.datasets(), table_counts(store))
    bad = tiny_tables(start="2025-02-01")
    bad.observations.loc[5, "detector_id"] = "nope"
    with pytest.raises(DataError, match="unknown detector id 'nope'"):
        store.ingest("tiny", bad)
    assert (store.datasets(), table_counts(store)) == before


def test_error_midway_rolls_back(store, monkeypatch):
    """A failure after some tables were written rolls all of them back."""
    import trafficcore.data.store as store_mod

    store.ingest("tiny", tiny_tables())
    before = (store.datasets(), table_counts(store))
    real = store_mod._upsert

    def failing(con, table, dataset, df):
        if table == "observations":
            raise RuntimeError("disk full")
        return real(con, table, dataset, df)

    monkeypatch.setattr(store_mod, "_upsert", failing)
    t = tiny_tables(start="2025-03-01")
    t.sites["name"] = "renamed"
    with pytest.raises(RuntimeError):
        store.ingest("tiny", t)
    assert (store.datasets(), table_counts(store)) == before
    assert set(store.sites("tiny")["name"]) == {"A St", "B St", "C St"}


def test_query_helpers(store):
    store.ingest("tiny", tiny_tables())
    obs = store.observations("tiny", ["B:N"], start="2025-01-02", end="2025-01-02 01:00")
    assert list(obs["ts"].dt.strftime("%H:%M")) == ["00:00", "00:15", "00:30", "00:45"]
    assert obs["value"].iloc[0] == 96 * 15 + 96
    gdf = store.sites_gdf("tiny")
    assert gdf.crs.to_epsg() == 4326 and gdf.geometry.iloc[0].y == pytest.approx(52.0)
    dgdf = store.detectors_gdf("tiny")
    assert list(dgdf["detector_id"]) == ["A:N", "B:N", "C:S"] and dgdf.geometry.iloc[2].x == pytest.approx(5.01)


def test_db_path_resolution(tmp_path, monkeypatch):
    from trafficcore import config

    monkeypatch.setenv("TRAFFICCORE_DB", str(tmp_path / "env.duckdb"))
    assert config.db_path() == tmp_path / "env.duckdb"
    assert config.db_path(tmp_path / "x.duckdb") == tmp_path / "x.duckdb"
    monkeypatch.delenv("TRAFFICCORE_DB")
    assert config.db_path() == config.DEFAULT_DB
