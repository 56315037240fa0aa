"""`trafficcore demo --sites N`: a valid region with the demo city's realism and truth; the default city unchanged."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from trafficcore.cli import app
from trafficcore.data import demo, region
from trafficcore.data.store import Store

runner = CliRunner()


@pytest.fixture(scope="module")
def city():
    return region.generate_with_truth(12, seed=0)


def _fingerprint(tables, truth) -> str:
    h = hashlib.sha256()
    o = tables.observations
    h.update("\x00".join(o["detector_id"]).encode())
    h.update(o["ts"].to_numpy("datetime64[ns]").astype(np.int64).tobytes())
    h.update(o["value"].to_numpy(np.float64).tobytes())
    for name in ("sites", "detectors", "events", "weather", "adjacency"):
        h.update(tables.table(name).to_csv(index=False).encode())
    h.update(truth.faults.to_csv(index=False).encode())
    h.update(truth.expected.tobytes())
    h.update(truth.without_events.tobytes())
    h.update(repr(tables.info).encode())
    return h.hexdigest()


def test_the_default_demo_city_is_byte_for_byte_what_it_was():
    # computed with the generator before the region refactor (commit 69dd758); the shipped model was fit on it
    got = _fingerprint(*demo.generate_with_truth(seed=0, weeks=4))
    assert got == "b2bf9226d69ba17c6a2e0b29b94b4fe57e8bc356fdad1318fc885b3e00f23a87"


def test_cli_builds_a_valid_region_and_leaves_the_demo_default(tmp_path):
    db = str(tmp_path / "r.duckdb")
    res = runner.invoke(app, ["demo", "--sites", "12", "--db", db])
    assert res.exit_code == 0, res.output
    assert "12 sites" in res.output
    [info] = json.loads(runner.invoke(app, ["datasets", "--json", "--db", db]).output)
    assert info["name"] == "region" and info["sites"] == 12 and info["synthetic"] is True
    assert info["end"] == "2025-09-28T23:45:00"  # 4 weeks by default with --sites
    store = Store(db, read_only=True)
    meta = store.dataset_info("region")
    assert "demo" not in meta["source"].lower()  # the demo city's shipped model does not claim the region
    tables, truth = region.generate_with_truth(12, seed=0)
    assert info["observations"] == len(tables.observations)
    stored = store.observations("region")
    pd.testing.assert_frame_equal(stored.reset_index(drop=True),
                                  tables.observations.sort_values(["detector_id", "ts"]).reset_index(drop=True),
                                  check_dtype=False)
    bad = runner.invoke(app, ["demo", "--sites", "2", "--db", db])
    assert bad.exit_code == 2 and "--sites" in bad.output


def test_region_map_is_an_arterial_grid_of_mostly_four_approach_crossroads():
    tables, _ = region.generate_with_truth(60, seed=0)
    sites, det, adj = tables.sites, tables.detectors, tables.adjacency
    assert len(sites) == 60 and sites["site_id"].is_unique and sites["site_id"].str.fullmatch(r"S\d{2}").all()
    per_site = det.groupby("site_id").size()
    assert per_site.between(3, 4).all() and (per_site == 4).mean() >= 0.6
    assert (det["detector_id"] == det["site_id"] + ":" + det["approach"]).all()
    assert det["detector_id"].is_unique and set(det["approach"]) == set("NESW")
    assert sites["name"].str.fullmatch(r"[\w' ]+ / [\w' ]+").all() and sites["name"].is_unique
    assert sites["description"].str.contains("Synthetic region").all()
    for use in ("City centre", "esidential", "Retail strip", "school"):
        assert sites["description"].str.contains(use).any(), use
    assert (det["lanes"] >= 2).any() and (det["lanes"] == 1).any()  # arterials and collectors
    pairs = set(zip(adj["src"], adj["dst"], strict=True))
    assert all((b, a) in pairs for a, b in pairs) and set(adj["src"]) == set(sites["site_id"])
    assert adj["weight"].between(300, 800).all()  # one block apart


def test_region_has_the_demo_city_realism(city):
    tables, truth = city
    obs = tables.observations
    ev = tables.events
    expected_kinds = {"concert", "football match", "festival", "parade", "marathon", "road works", "public holiday"}
    assert expected_kinds <= set(ev["kind"])
    lay = region.layout(12)
    for kind, text in zip(ev["kind"], ev["text"], strict=True):
        assert demo.phrasing_index(kind, text, lay) is not None, text
    held = demo.held_out_mask(ev, lay)
    _, val_end = region.split_dates(tables)
    assert held.any() and not (held & (ev["start_ts"] < val_end)).any()
    wd = obs[obs["ts"].dt.day_of_week < 5]
    hour = wd["ts"].dt.hour
    assert wd[hour == 8]["value"].mean() > 2 * wd[hour == 3]["value"].mean()  # a morning peak over the night
    assert wd["value"].mean() > 1.1 * obs[obs["ts"].dt.day_of_week >= 5]["value"].mean()
    assert len(tables.weather) == 4 * 7 * 24 and tables.weather["precip_mm"].gt(0).any()
    assert set(truth.faults["fault"]) == {"zero", "stuck", "gap", "outage"}


def test_counterfactual_truth_is_consistent(city):
    """expected - without_events is exactly what the events did: nothing away from any event, less on an
    incident's blocked approaches, more near a venue; and the counts are Poisson draws of `expected`."""
    tables, truth = city
    exp, calm, times = truth.expected, truth.without_events, truth.times
    ev = tables.events[tables.events["kind"] != "public holiday"]
    active = np.zeros(len(times), bool)
    for e in ev.itertuples():
        active[times.searchsorted(e.start_ts - pd.Timedelta(hours=4)):
               times.searchsorted(e.end_ts + pd.Timedelta(hours=4))] = True
    assert (~active).sum() > 500 and np.array_equal(exp[~active], calm[~active])
    assert (exp != calm).any()
    det = tables.detectors
    col = {d: i for i, d in enumerate(truth.detector_ids)}
    sites = tables.sites.set_index("site_id")
    for e in ev[ev["kind"].isin(["concert", "football match"])].itertuples():
        km = np.hypot((sites["lat"] - e.lat) * 111.3, (sites["lon"] - e.lon) * 68.6)
        near = [col[d] for d in det["detector_id"][det["site_id"].isin(sites.index[km < 1.5])]]
        if not near:
            continue
        w = slice(times.searchsorted(e.start_ts - pd.Timedelta(hours=2)),
                  times.searchsorted(e.end_ts + pd.Timedelta(hours=1)))
        assert exp[w][:, near].sum() > calm[w][:, near].sum()
    cuts = 0
    for e in ev[ev["kind"].isin(["crash", "lane closure"])].itertuples():
        here = det[det["site_id"] == e.site_id]
        leg = here.iloc[int(np.argmin(np.hypot(here["lat"] - e.lat, here["lon"] - e.lon)))]
        w = slice(times.searchsorted(e.start_ts), times.searchsorted(e.end_ts))
        if w.stop > w.start:
            assert exp[w, col[leg["detector_id"]]].sum() < calm[w, col[leg["detector_id"]]].sum()
            cuts += 1
    assert cuts >= 3
    wide = tables.observations.pivot(index="ts", columns="detector_id", values="value").reindex(
        index=times, columns=truth.detector_ids).to_numpy()
    faulty = np.zeros_like(wide, dtype=bool)
    for f in truth.faults.itertuples():
        faulty[times.searchsorted(f.start_ts):times.searchsorted(f.end_ts), col[f.detector_id]] = True
    ok = np.isfinite(wide) & ~faulty
    assert wide[ok].sum() / exp[ok].sum() == pytest.approx(1.0, abs=0.01)


def test_region_generation_is_deterministic_and_float32():
    a, ca, ta = region.simulate(12, seed=3)
    b, cb, tb = region.simulate(12, seed=3)
    assert ca.dtype == np.float32 and ta.expected.dtype == np.float32
    assert np.array_equal(ca, cb, equal_nan=True) and a.events.equals(b.events)
    c, cc, _ = region.simulate(12, seed=4)
    assert a.sites.equals(c.sites) and not np.array_equal(ca, cc, equal_nan=True)


def test_chunked_import_is_all_or_nothing(tmp_path):
    """A bad chunk (a detector split over two chunks) leaves the store as it was."""
    store = Store(tmp_path / "c.duckdb")
    tables, counts, truth = region.simulate(12, seed=0)
    chunks = list(region.observation_chunks(counts, truth.times, truth.detector_ids, rows_per_chunk=30_000))
    assert len(chunks) > 2
    store.ingest("region", tables, iter(chunks))
    n = store.datasets()[0]["observations"]
    assert n == sum(len(c) for c in chunks)
    store.ingest("region", tables, iter(chunks))  # re-import: replaces, never duplicates
    assert store.query("SELECT count(*) AS n, count(DISTINCT (detector_id, ts)) AS k FROM observations"
                       ).iloc[0].tolist() == [n, n]
    from trafficcore.errors import DataError

    with pytest.raises(DataError, match="more than one chunk"):
        store.ingest("other", tables, iter(chunks + chunks[:1]))
    assert store.dataset_names() == ["region"]


def _dense_neighbours(panel, k: int, method: str) -> np.ndarray:
    """The neighbour ranking's definition, as one (D, D) score matrix (what `Panel.neighbour_matrix` computed
    before it used a k-d tree): same measure, other site; graph-linked sites first (score - 1e7); nearest first,
    ties by column; no coordinates = 1e6 km."""
    from trafficcore.data.panel import haversine_km

    det = panel.detectors
    lat, lon = det["lat"].to_numpy(float), det["lon"].to_numpy(float)
    site, measure = det["site_id"].astype(str).to_numpy(), det["measure"].astype(str).to_numpy()
    dist = np.nan_to_num(haversine_km(lat[:, None], lon[:, None], lat[None, :], lon[None, :]), nan=1e6)
    excluded = (site[:, None] == site[None, :]) | (measure[:, None] != measure[None, :])
    score = np.where(excluded, np.inf, dist)
    if method == "graph":
        pairs = set(zip(panel.adjacency["src"].astype(str), panel.adjacency["dst"].astype(str), strict=True))
        linked = np.array([[(a, b) in pairs for b in site] for a in site])
        score = np.where(linked & ~excluded, score - 1e7, score)
    order = np.argsort(score, axis=1, kind="stable")[:, :k]
    out = np.where(np.isfinite(np.take_along_axis(score, order, axis=1)), order, -1)
    return np.hstack([out, np.full((len(det), k - out.shape[1]), -1)]) if out.shape[1] < k else out


def _toy_panel(rng, n_sites: int):
    from trafficcore.data.panel import Panel

    rows, pos = [], []
    for s in range(n_sites):
        la, lo = (52 + rng.normal(0, 0.03), 5 + rng.normal(0, 0.03)) if not pos or rng.random() > 0.3 else \
            pos[int(rng.integers(len(pos)))]  # some sites share a position: ties
        pos.append((la, lo))
        for a in range(int(rng.integers(1, 5))):
            here = (la, lo) if rng.random() < 0.5 else (la + rng.normal(0, 1e-4), lo + rng.normal(0, 1e-4))
            if rng.random() < 0.1:
                here = (np.nan, np.nan)
            rows.append({"detector_id": f"S{s}:{a}", "site_id": f"S{s}", "lat": here[0], "lon": here[1],
                         "measure": "speed" if rng.random() < 0.2 else "volume"})
    ids = [f"S{s}" for s in range(n_sites)]
    adj = pd.DataFrame([(a, b, 1.0, "road") for a in ids for b in ids if a != b and rng.random() < 0.15],
                       columns=["src", "dst", "weight", "kind"])
    det = pd.DataFrame(rows)
    return Panel(dataset="toy", info={"interval_s": 900}, times=pd.DatetimeIndex([]), detectors=det,
                 values=np.zeros((0, len(det)), np.float32), sites=pd.DataFrame(), events=pd.DataFrame(),
                 weather=pd.DataFrame(), adjacency=adj)


def test_neighbour_ranking_is_the_dense_definition_without_its_quadratic_cost():
    rng = np.random.default_rng(1)
    panels = [_toy_panel(rng, int(n)) for n in rng.integers(1, 30, 25)]
    tables, _ = region.generate_with_truth(60, seed=0)
    from trafficcore.data.panel import Panel

    det = tables.detectors.merge(tables.sites[["site_id"]], on="site_id")
    panels.append(Panel(dataset="r", info={"interval_s": 900}, times=pd.DatetimeIndex([]), detectors=det,
                        values=np.zeros((0, len(det)), np.float32), sites=tables.sites, events=pd.DataFrame(),
                        weather=pd.DataFrame(), adjacency=tables.adjacency))
    for p in panels:
        for k in (1, 4, 6):
            for method in ("distance", "graph"):
                assert np.array_equal(p.neighbour_matrix(k, method), _dense_neighbours(p, k, method)), (k, method)
