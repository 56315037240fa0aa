"""The demo city: deterministic, labelled synthetic, and carrying the structure the models are meant to learn."""

from __future__ import annotations

import re
import time

import numpy as np
import pandas as pd
import pytest

from trafficcore.data import demo


@pytest.fixture(scope="module")
def city():
    t0 = time.perf_counter()
    tables, truth = demo.generate_with_truth(seed=0)
    print(f"\ndemo city generated in {time.perf_counter() - t0:.2f} s ({len(tables.observations):,} observations)")
    return tables, truth


@pytest.fixture(scope="module")
def tables(city):
    return city[0]


@pytest.fixture(scope="module")
def obs(tables):
    """Observations with calendar columns (weekday, hour, holiday) for profile checks."""
    o = tables.observations
    hol = set(demo.holidays())
    return o.assign(
        dow=o["ts"].dt.day_of_week,
        hour=o["ts"].dt.hour + o["ts"].dt.minute / 60,
        holiday=o["ts"].dt.normalize().isin(hol),
    )


def _workdays(obs: pd.DataFrame) -> pd.DataFrame:
    return obs[(obs["dow"] < 5) & ~obs["holiday"]]


def test_same_seed_same_city_other_seed_differs():
    a, b, c = (demo.generate(seed=s, weeks=4) for s in (3, 3, 4))
    assert a.info == b.info
    for name in ("sites", "detectors", "observations", "events", "weather", "adjacency"):
        pd.testing.assert_frame_equal(a.table(name), b.table(name))
    assert a.sites.equals(c.sites)  # the map is fixed; the seed drives what varies
    assert not a.observations["value"].equals(c.observations["value"])
    assert not a.events["text"].equals(c.events["text"])
    assert not a.weather["precip_mm"].equals(c.weather["precip_mm"])


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="weeks"):
        demo.generate(weeks=3)
    with pytest.raises(ValueError, match="seed"):
        demo.generate(seed=-1)
    with pytest.raises(ValueError, match="start"):
        demo.generate(start="2025-09-01 06:00")


def test_labelled_synthetic(tables):
    info = tables.info
    assert info.synthetic is True
    assert info.source == "trafficcore demo city (synthetic) seed=0"
    assert "SYNTHETIC" in info.description and "Not real" in info.description
    assert (info.timezone, info.interval_s, info.measure) == ("Europe/Amsterdam", 900, "volume")
    assert tables.sites["description"].str.contains("Synthetic").all()


def test_eight_weeks_on_a_fifteen_minute_grid(tables):
    ts = tables.observations["ts"]
    assert ts.min() == pd.Timestamp("2025-09-01")
    assert ts.max() - ts.min() >= pd.Timedelta(weeks=8) - pd.Timedelta(minutes=15)
    assert ((ts - ts.min()) % pd.Timedelta(minutes=15) == pd.Timedelta(0)).all()
    assert tables.observations.duplicated(["detector_id", "ts"]).sum() == 0
    assert len(tables.weather) == 8 * 7 * 24 and tables.weather["precip_mm"].gt(0).any()


def test_map_sites_and_approach_detectors(tables):
    sites, det = tables.sites, tables.detectors
    assert 35 <= len(sites) <= 45 and sites["site_id"].is_unique
    per_site = det.groupby("site_id").size()
    assert per_site.between(3, 4).all() and set(per_site.index) == set(sites["site_id"])
    assert det["detector_id"].str.fullmatch(r"S\d{2}:[NESW]").all()
    assert (det["detector_id"] == det["site_id"] + ":" + det["approach"]).all()
    assert sites["name"].str.fullmatch(r"[\w' ]+ / [\w' ]+").all()
    assert sites["lat"].between(51.9, 52.2).all() and sites["lon"].between(5.0, 5.25).all()
    uses = ("near the stadium", "school", "Retail strip", "esidential", "Industrial", "Harbour Arena")
    for word in uses:
        assert sites["description"].str.contains(word, case=False).any(), word
    assert set(det["measure"]) == {"volume"} and set(det["interval_s"]) == {900}


def test_adjacency_links_consecutive_intersections_both_ways(tables):
    adj = tables.adjacency
    assert set(adj["kind"]) == {"road"} and (adj["weight"] > 0).all()
    pairs = set(zip(adj["src"], adj["dst"], strict=True))
    assert all((b, a) in pairs for a, b in pairs)
    assert set(adj["src"]) == set(tables.sites["site_id"])  # every intersection is on the road graph
    # neighbours are one block apart (450-800 m), never across town
    assert adj["weight"].between(250, 800).all()


def test_volumes_plausible(tables, obs):
    det = tables.detectors.set_index("detector_id")
    peak = _workdays(obs).groupby("detector_id")["value"].quantile(0.98)
    lanes = det.loc[peak.index, "lanes"]
    assert peak[lanes >= 2].median() == pytest.approx(300, rel=0.35)
    assert peak[lanes == 1].between(50, 250).all()
    assert peak.max() < 700
    assert (tables.observations["value"] >= 0).all()
    assert (tables.observations["value"] % 1 == 0).all()


def test_weekday_peaks_and_weekend_lull(obs):
    wd = _workdays(obs)
    am = wd[(wd["hour"] >= 7.5) & (wd["hour"] < 8.5)]["value"].mean()
    midday = wd[(wd["hour"] >= 11.5) & (wd["hour"] < 12.5)]["value"].mean()
    night = wd[(wd["hour"] >= 2) & (wd["hour"] < 4)]["value"].mean()
    assert am > 1.3 * midday > 1.3 * night
    weekend = obs[obs["dow"] >= 5]
    assert wd["value"].mean() > 1.2 * weekend["value"].mean()


def test_holiday_looks_like_a_sunday(obs):
    hol = obs[obs["holiday"]]
    assert hol["ts"].dt.normalize().nunique() == 2
    assert hol["value"].mean() < 0.8 * _workdays(obs)["value"].mean()


def test_commuters_head_into_town_in_the_morning_and_out_in_the_evening(tables, obs):
    det = tables.detectors.merge(tables.sites[["site_id", "lat", "lon"]], on="site_id", suffixes=("", "_site"))
    k = np.cos(np.radians(demo.CENTRE_LAT))
    leg = np.c_[(det["lon"] - det["lon_site"]) * k, det["lat"] - det["lat_site"]]  # site -> detector: the leg
    out = np.c_[(det["lon_site"] - demo.CENTRE_LON) * k, det["lat_site"] - demo.CENTRE_LAT]  # centre -> site
    cos = (leg * out).sum(1) / np.linalg.norm(leg, axis=1) / np.linalg.norm(out, axis=1)
    inbound = set(det["detector_id"][cos > 0.5])  # legs on the far side of the site carry traffic towards the centre
    outbound = set(det["detector_id"][cos < -0.5])
    wd = _workdays(obs)
    am = wd[(wd["hour"] >= 7) & (wd["hour"] < 9)].groupby("detector_id")["value"].mean()
    pm = wd[(wd["hour"] >= 16) & (wd["hour"] < 18)].groupby("detector_id")["value"].mean()
    assert am[list(inbound)].mean() > 1.25 * am[list(outbound)].mean()
    assert pm[list(outbound)].mean() > 1.15 * pm[list(inbound)].mean()


def _window_ratio(tables, ev, detectors, before=pd.Timedelta(hours=2), after=pd.Timedelta(hours=1)) -> float | None:
    """Counts at `detectors` during the event window versus the same window a week earlier (rows in both)."""
    o = tables.observations
    o = o[o["detector_id"].isin(detectors)]
    week = pd.Timedelta(days=7)
    lo, hi = ev.start_ts - before, ev.end_ts + after
    now = o[(o["ts"] >= lo) & (o["ts"] < hi)]
    then = o[(o["ts"] >= lo - week) & (o["ts"] < hi - week)].assign(ts=lambda d: d["ts"] + week)
    both = now.merge(then, on=["detector_id", "ts"], suffixes=("_now", "_then"))
    if both.empty or ev.start_ts - week < o["ts"].min():
        return None
    return both["value_now"].sum() / max(both["value_then"].sum(), 1.0)


def test_planned_events_raise_counts_near_their_venue(tables):
    sites = tables.sites.set_index("site_id")
    det = tables.detectors
    ratios = []
    for ev in tables.events[tables.events["kind"].isin(["concert", "football match"])].itertuples():
        km = np.hypot((sites["lat"] - ev.lat) * 111.3, (sites["lon"] - ev.lon) * 68.6)
        near = det["detector_id"][det["site_id"].isin(sites.index[km < 0.7])]
        r = _window_ratio(tables, ev, near)
        if r is not None:
            ratios.append(r)
    assert len(ratios) >= 8
    assert np.mean(ratios) > 1.2


def test_incidents_and_closures_cut_counts_on_the_blocked_road(tables):
    det = tables.detectors
    ratios = []
    for ev in tables.events[tables.events["kind"].isin(["crash", "lane closure", "marathon"])].itertuples():
        if ev.kind == "marathon":  # the text names the two closed roads and no junction
            roads = [r for r in det["road"].unique() if re.search(rf"\b{re.escape(r)}\b", ev.text)]
            assert len(roads) == 2, ev.text
            blocked = det["detector_id"][det["road"].isin(roads)]
        else:  # an incident is placed on the blocked leg: its road is that of the nearest approach detector
            here = det[det["site_id"] == ev.site_id]
            road = here["road"].iloc[int(np.argmin(np.hypot(here["lat"] - ev.lat, here["lon"] - ev.lon)))]
            assert road in ev.text
            blocked = here["detector_id"][here["road"] == road]
        r = _window_ratio(tables, ev, blocked, before=pd.Timedelta(0), after=pd.Timedelta(0))
        if r is not None:
            ratios.append(r)
    assert len(ratios) >= 20
    assert np.median(ratios) < 0.95


def test_rain_lowers_volumes(tables, obs):
    wd = _workdays(obs)
    wd = wd[(wd["hour"] >= 7) & (wd["hour"] < 20)]
    slot = wd["ts"].dt.hour * 4 + wd["ts"].dt.minute // 15
    typical = wd.groupby([wd["detector_id"], wd["dow"], slot])["value"].transform("median")
    rel = (wd["value"] / typical.clip(lower=1))[wd["value"] > 0]
    rain = tables.weather.set_index("ts")["precip_mm"]
    wet = wd.loc[rel.index, "ts"].dt.floor("h").map(rain) >= 1.0
    assert wet.sum() > 500
    assert rel[wet].median() < rel[~wet].median() - 0.02


def test_phrasings_cover_every_kind_with_many_wordings():
    for kind in ("concert", "football match", "road works", "crash", "parade", "festival", "lane closure", "marathon"):
        assert len(demo.PHRASINGS[kind]) >= 5, kind
    for kind, templates in demo.PHRASINGS.items():
        assert len(templates) >= 5 and len(set(templates)) == len(templates)
        assert any(slot in " ".join(templates) for slot in ("{venue}", "{road}", "{site}", "{name}"))
        held = demo.HELD_OUT[kind]
        assert held and all(0 <= i < len(templates) for i in held)
        if kind not in demo.HELD_OUT_KINDS:
            assert len(held) < len(templates)  # some wordings stay available for training
    assert set(demo.HELD_OUT_KINDS) <= set(demo.PHRASINGS)
    assert all(len(demo.HELD_OUT[k]) == len(demo.PHRASINGS[k]) for k in demo.HELD_OUT_KINDS)


def test_every_event_row_is_complete_and_its_wording_identifiable(tables):
    ev = tables.events
    assert ev["event_id"].is_unique and (ev["source"] == "demo").all()
    assert (ev["end_ts"] > ev["start_ts"]).all() and ev["text"].str.len().gt(20).all()
    local = ev[ev["kind"] != "public holiday"]
    assert local["site_id"].isin(tables.sites["site_id"]).all()
    hol = ev[ev["kind"] == "public holiday"]
    assert hol["site_id"].isna().all() and len(hol) == 2
    assert (hol["start_ts"].dt.normalize() == hol["end_ts"].dt.normalize()).all()  # one day, however end_ts is read
    for kind, text in zip(ev["kind"], ev["text"], strict=True):
        assert demo.phrasing_index(kind, text) is not None, text
    assert ev["text"].nunique() > 0.9 * len(ev)
    kinds = set(ev["kind"])
    expected = {"concert", "football match", "festival", "parade", "marathon", "road works", "lane closure", "crash"}
    assert expected <= kinds
    assert demo.phrasing_index("concert", "Something else entirely") is None


def test_held_out_wording_only_in_the_test_period(tables):
    train_end, val_end = demo.split_dates(tables)
    assert (train_end, val_end) == (pd.Timestamp("2025-10-06"), pd.Timestamp("2025-10-13"))
    assert demo.SPLIT == {"train": ("2025-09-01", "2025-10-05"), "val": ("2025-10-06", "2025-10-12"),
                          "test": ("2025-10-13", "2025-10-26")}
    assert demo.split_days("2025-09-01", 5)["test"] == ("2025-09-22", "2025-10-05")
    ev = tables.events
    held = demo.held_out_mask(ev)
    in_test = ev["start_ts"] >= val_end
    assert held.any() and not (held & ~in_test).any()
    assert (held & (ev["kind"] != "marathon")).any()  # held-out wordings of known kinds too, not just the new kind
    assert (ev.loc[ev["kind"] == "marathon", "start_ts"] >= val_end).all()
    # training events use every non-held-out wording family: nothing about the split leaks through `source`
    assert set(ev["source"]) == {"demo"}


def test_faults_zero_runs_stuck_values_and_gaps(tables, city):
    truth = city[1]
    obs = tables.observations
    n_times = obs["ts"].nunique()
    assert len(obs) < n_times * len(tables.detectors)  # missing rows
    wide = obs.pivot(index="ts", columns="detector_id", values="value")
    day = wide.between_time("10:00", "18:00")
    zero_run = (day == 0).rolling(8).sum().eq(8).any()
    assert zero_run.sum() >= 3  # detectors reporting 0 for 2 h in the middle of the day
    assert set(truth.faults["fault"]) == {"zero", "stuck", "gap", "outage"}
    for f in truth.faults[truth.faults["fault"] == "zero"].itertuples():
        vals = wide.loc[f.start_ts : f.end_ts - pd.Timedelta(minutes=15), f.detector_id].dropna()
        assert (vals == 0).all()
    for f in truth.faults[truth.faults["fault"] == "stuck"].itertuples():
        vals = wide.loc[f.start_ts : f.end_ts - pd.Timedelta(minutes=15), f.detector_id].dropna()
        assert vals.nunique() <= 1
    full = wide.reindex(truth.times)
    gaps = truth.faults[truth.faults["fault"].isin(["gap", "outage"])]
    rows, cols = full.index.get_indexer(gaps["start_ts"]), full.columns.get_indexer(gaps["detector_id"])
    assert np.isnan(full.to_numpy()[rows, cols]).all()
    assert len(truth.times) == 8 * 7 * 96 > n_times  # a city-wide outage leaves whole intervals without rows
    assert truth.expected.shape == (len(truth.times), len(tables.detectors))


def test_ingests_into_the_store_as_synthetic(store, tables):
    counts = store.ingest("demo", tables)
    assert counts["observations"] == len(tables.observations) and counts["events"] == len(tables.events)
    (summary,) = store.datasets()
    assert summary["name"] == "demo" and summary["synthetic"] is True
    assert summary["sites"] == len(tables.sites) and summary["detectors"] == len(tables.detectors)
    assert summary["timezone"] == "Europe/Amsterdam"
    print(f"\nDuckDB file after ingest: {store.path.stat().st_size / 2**20:.1f} MiB")
