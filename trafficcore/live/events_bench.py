"""Timing live event ingest: `python -m trafficcore.live.events_bench --db PATH --dataset demo`.

The bars (issue 14): ingesting 1,000 events takes at most 1 s, and re-issuing the forecasts of the
detectors they affect at most 0.5 s. The benchmark never touches the store it is given: it copies the
file to a temporary folder and works there. It writes 1,000 events placed near the dataset's detectors
(on their roads, starting from 3 days before to 3 days after the newest reading, lasting 1 to 48 hours,
mixed kinds with texts in the training texts' words) as a file in each format, then times, on the copy:

- each file read, checked and written (`read_event_file` + `ingest_events`: parsing, one transaction, the
  ingest log, the detectors near each event), median of `repeats` runs (events deleted between runs);
- the same file resent (a duplicate: nothing written), and the file with 10 events changed;
- re-issuing the forecasts the 1,000 events change now (`refresh_for_events`, the model already loaded),
  and the common live case: one new incident, ingested and its detectors re-forecast (median of 3, each a
  new incident, so the encoder reads new sentences every time).

Numbers are wall-clock seconds on this machine, with the process's CPU seconds beside them (on a machine shared
with other jobs the wall clock includes waiting for a core); the table says how many detectors each re-forecast
covered, and the load average is printed below it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from trafficcore import config
from trafficcore.data.store import Store

KINDS = [("crash", "Crash on {road} at {site}: one lane blocked"),
         ("road works", "Roadworks on {road} at {site}: one lane closed"),
         ("lane closure", "Lane closure on {road} at {site}: single-file traffic"),
         ("concert", "Concert near {site}, about 5,000 visitors")]


def synthetic_events(store: Store, dataset: str, n: int, seed: int = 0) -> pd.DataFrame:
    """`n` events near the dataset's detectors (own-format columns), starting around its newest reading."""
    rng = np.random.default_rng(seed)
    det = store.query("""SELECT d.road, coalesce(d.lat, s.lat) AS lat, coalesce(d.lon, s.lon) AS lon, s.name
                         FROM detectors d JOIN sites s ON s.dataset = d.dataset AND s.site_id = d.site_id
                         WHERE d.dataset = ? AND coalesce(d.lat, s.lat) IS NOT NULL""", [dataset])
    now = pd.Timestamp(store.query("SELECT max(ts) AS t FROM observations WHERE dataset = ?", [dataset])["t"][0])
    pick = det.iloc[rng.integers(0, len(det), n)].reset_index(drop=True)
    start = now + pd.to_timedelta(rng.integers(-72 * 60, 72 * 60, n), unit="min")
    kind = rng.integers(0, len(KINDS), n)
    road = pick["road"].fillna("the main road").astype(str)
    return pd.DataFrame({
        "id": [f"bench-{seed}-{i:05d}" for i in range(n)],
        "start": start.round("min"),
        "end": (start + pd.to_timedelta(rng.integers(60, 48 * 60, n), unit="min")).round("min"),
        "lat": pick["lat"] + rng.normal(0, 0.002, n), "lon": pick["lon"] + rng.normal(0, 0.003, n),
        "road": road, "kind": [KINDS[k][0] for k in kind],
        "text": [KINDS[k][1].format(road=r, site=s) for k, r, s in zip(kind, road, pick["name"], strict=True)],
        "status": "active",
    })


def write_feeds(ev: pd.DataFrame, folder: Path, tz: str) -> dict[str, Path]:
    """The events as an own-format CSV, a WZDx v4.2 feed (2-point lines) and an Open511 document."""
    out = {"own CSV": folder / "events.csv", "WZDx": folder / "wzdx.geojson", "Open511": folder / "open511.json"}
    ev.to_csv(out["own CSV"], index=False, date_format="%Y-%m-%dT%H:%M")

    def iso(t) -> str:
        return pd.Timestamp(t).tz_localize(tz, ambiguous=False, nonexistent="shift_forward").isoformat()

    features = [{
        "id": r.id, "type": "Feature",
        "properties": {"core_details": {"event_type": "work-zone", "data_source_id": "bench", "road_names": [r.road],
                                        "direction": "northbound", "description": r.text},
                       "start_date": iso(r.start), "end_date": iso(r.end), "location_method": "channel-device-method",
                       "vehicle_impact": "some-lanes-closed", "is_start_date_verified": False,
                       "is_end_date_verified": False, "is_start_position_verified": False,
                       "is_end_position_verified": False},
        "geometry": {"type": "LineString", "coordinates": [[r.lon, r.lat], [r.lon + 0.002, r.lat + 0.001]]},
    } for r in ev.itertuples()]
    out["WZDx"].write_text(json.dumps({"type": "FeatureCollection", "features": features,
                                       "feed_info": {"publisher": "bench", "version": "4.2", "data_sources": []}}))
    events = [{"id": r.id, "status": "ACTIVE", "event_type": "INCIDENT" if r.kind == "crash" else "CONSTRUCTION",
               "event_subtypes": ["ACCIDENT"] if r.kind == "crash" else [], "severity": "MODERATE",
               "headline": r.kind.upper(), "description": r.text,
               "geography": {"type": "Point", "coordinates": [r.lon, r.lat]},
               "roads": [{"name": r.road, "state": "SOME_LANES_CLOSED"}],
               "schedule": {"intervals": [f"{iso(r.start)}/{iso(r.end)}"]}} for r in ev.itertuples()]
    out["Open511"].write_text(json.dumps({"events": events, "meta": {"version": "v1"}}))
    return out


#: CPU seconds of this process in the last `_timed` call: on a machine shared with other jobs the wall clock
#: includes waiting for a core, the CPU time does not (DuckDB may use several threads, so it can exceed the wall).
LAST_CPU: list[float] = [0.0]


def _timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    LAST_CPU[0] = time.process_time() - c0
    return time.perf_counter() - t0, out


def _clear(store: Store, dataset: str) -> None:
    with store.connect() as con:
        con.execute("DELETE FROM events WHERE dataset = ? AND event_id LIKE '%bench-%'", [dataset])
        con.execute("DELETE FROM ingest_log WHERE dataset = ? AND kind = 'events'", [dataset])


def run(store: Store, dataset: str, n: int = 1000, repeats: int = 3) -> list[dict]:
    """Rows of (step, seconds, note) on a copy of `store` (see the module docstring)."""
    from trafficcore.data.loaders.event_feeds import parse_document, read_event_file
    from trafficcore.live.events import dataset_timezone, ingest_events, refresh_for_events
    from trafficcore.live.ingest import refresh_forecasts

    rows = []
    with tempfile.TemporaryDirectory(prefix="tc-events-bench-") as tmp:
        folder = Path(tmp)
        copy = folder / "bench.duckdb"
        shutil.copy(store.path, copy)
        store = Store(copy)
        tz = dataset_timezone(store, dataset)
        ev = synthetic_events(store, dataset, n)
        files = write_feeds(ev, folder, tz)

        def ingest(path: Path):
            return ingest_events(store, dataset, read_event_file(path, tz), source="bench")

        last = None
        for name, path in files.items():
            runs, cpu = [], []
            for _ in range(repeats):
                _clear(store, dataset)
                t, last = _timed(lambda path=path: ingest(path))
                runs.append(t)
                cpu.append(LAST_CPU[0])
            rows.append({"step": f"ingest {n:,} events, {name} ({path.stat().st_size / 2**10:,.0f} KiB), "
                                 f"median of {repeats}", "seconds": statistics.median(runs),
                         "cpu": statistics.median(cpu),
                         "note": f"{last.written:,} written, {len(last.detectors)} detectors near them; runs "
                                 + ", ".join(f"{r:.3f}" for r in runs)})
        t, dup = _timed(lambda: ingest(files["Open511"]))
        rows.append({"step": "the same Open511 feed resent", "seconds": t, "cpu": LAST_CPU[0],
                     "note": f"duplicate batch: {dup.duplicate_batch}, {dup.written} written"})
        changed = ev.assign(text=[f"{x} (updated)" if i < 10 else x for i, x in enumerate(ev["text"])])
        changed_path = folder / "events_changed.csv"
        changed.to_csv(changed_path, index=False, date_format="%Y-%m-%dT%H:%M")
        _clear(store, dataset)
        ingest(files["own CSV"])
        t, upd = _timed(lambda: ingest(changed_path))
        rows.append({"step": f"the own CSV resent with 10 of {n:,} events changed", "seconds": t, "cpu": LAST_CPU[0],
                     "note": f"{upd.updated} updated, {upd.unchanged} unchanged"})

        t, _ = _timed(lambda: refresh_forecasts(store, dataset))
        rows.append({"step": "load the serving model, forecast every detector (not part of the bar)", "seconds": t,
                     "note": "once per process"})
        runs, cpu, ks = [], [], []
        for k in range(repeats):  # new texts each time: the encoder reads new sentences, as a new feed makes it
            _clear(store, dataset)
            feed = folder / f"events_{k}.csv"
            ev.assign(text=ev["text"] + f" (feed {k})").to_csv(feed, index=False, date_format="%Y-%m-%dT%H:%M")
            big = ingest(feed)
            t, fc = _timed(lambda big=big: refresh_for_events(store, dataset, big))
            runs.append(t)
            cpu.append(LAST_CPU[0])
            ks.append(0 if fc is None else fc["detector_id"].nunique())
        rows.append({"step": f"re-forecast the detectors the {n:,} events change now, median of {repeats}",
                     "seconds": statistics.median(runs), "cpu": statistics.median(cpu),
                     "note": "detectors " + ", ".join(map(str, ks)) + "; runs " + ", ".join(f"{r:.3f}" for r in runs)})
        one, re, cpu1, cpu2 = [], [], [], []
        rng = np.random.default_rng(1)
        now = ev["start"].min() + pd.Timedelta(hours=72)
        for i in range(3):
            r = ev.iloc[int(rng.integers(0, n))]
            doc = [{"id": f"bench-incident-{i}", "start": f"{now - pd.Timedelta(minutes=20):%Y-%m-%dT%H:%M}",
                    "lat": float(r["lat"]), "lon": float(r["lon"]), "road": r["road"], "kind": "crash",
                    "text": f"Crash on {r['road']}: two lanes blocked, queues building ({i})"}]
            t1, res = _timed(lambda doc=doc: ingest_events(store, dataset, parse_document(doc, "bench", tz),
                                                           source="bench"))
            cpu1.append(LAST_CPU[0])
            t2, fc = _timed(lambda res=res: refresh_for_events(store, dataset, res))
            cpu2.append(LAST_CPU[0])
            one.append(t1)
            re.append((t2, 0 if fc is None else fc["detector_id"].nunique()))
        rows.append({"step": "ingest one incident, median of 3", "seconds": statistics.median(one),
                     "cpu": statistics.median(cpu1),
                     "note": "runs " + ", ".join(f"{x:.3f}" for x in one)})
        rows.append({"step": "re-forecast the detectors one incident affects, median of 3",
                     "seconds": statistics.median(x for x, _ in re), "cpu": statistics.median(cpu2),
                     "note": "detectors " + ", ".join(str(k) for _, k in re) + "; runs "
                             + ", ".join(f"{x:.3f}" for x, _ in re)})
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", default=None, help="DuckDB store (default: $TRAFFICCORE_DB or data/trafficcore.duckdb)")
    ap.add_argument("--dataset", default="demo")
    ap.add_argument("--events", type=int, default=1000, help="events in each feed")
    ap.add_argument("--repeats", type=int, default=3, help="times each ingest is timed")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: as the live benchmark)")
    args = ap.parse_args(argv)
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:  # pragma: no cover
        pass
    rows = run(Store(config.db_path(args.db), read_only=True), args.dataset, args.events, args.repeats)
    width = max(len(r["step"]) for r in rows)
    print(f"| {'step':<{width}} | seconds | CPU s | note")
    print(f"|{'-' * (width + 2)}|---------|-------|-----")
    for r in rows:
        cpu = f"{r['cpu']:5.3f}" if "cpu" in r else "     "
        print(f"| {r['step']:<{width}} | {r['seconds']:7.3f} | {cpu} | {r['note']}")
    try:
        import os

        print(f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at the end; CPU s: this process)")
    except OSError:  # pragma: no cover
        pass


if __name__ == "__main__":
    main()
