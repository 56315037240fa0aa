"""Beyond one machine: observations in Parquet files, detector shards, and torchrun training and forecasting.

The bar (issue 17): 2-rank `torchrun` training and batch forecasting give the same forecasts as 1 rank.
`test_two_ranks_train_and_forecast_like_one` launches the real commands through torchrun on CPU (gloo) and
compares them with one process holding both shards.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from trafficcore.data.schema import CanonicalTables, DatasetInfo

REPO = Path(__file__).resolve().parents[1]
AT = "2024-01-20 08:00"


def line_city(n_sites: int = 8, days: int = 22, seed: int = 0) -> CanonicalTables:
    """Sites on a line, two approaches each, 15-minute counts with a daily profile, a shared anomaly, noise
    and a few gaps; adjacency between consecutive sites (so a shard's halo is its edge sites' neighbours)."""
    rng = np.random.default_rng(seed)
    times = pd.date_range("2024-01-01", periods=days * 96, freq="15min")  # a Monday
    hour = times.hour + times.minute / 60
    weekend = times.day_of_week >= 5
    shape = np.where(weekend, 20 + 90 * np.exp(-((hour - 13) ** 2) / 8),
                     20 + 150 * np.exp(-((hour - 8) ** 2) / 2) + 120 * np.exp(-((hour - 17) ** 2) / 3))
    anomaly = np.cumsum(rng.normal(0, 0.02, len(times))) * 0.3
    sites = pd.DataFrame({"site_id": [f"S{i:02d}" for i in range(n_sites)],
                          "name": [f"Site {i}" for i in range(n_sites)],
                          "lat": -37.80 - 0.004 * np.arange(n_sites), "lon": 145.0 + 0.004 * np.arange(n_sites)})
    dets, obs = [], []
    for i, s in enumerate(sites["site_id"]):
        for a in ("N", "S"):
            d = f"{s}:{a}"
            dets.append({"detector_id": d, "site_id": s, "approach": a, "measure": "volume", "interval_s": 900})
            lam = np.clip(shape * (0.4 + 0.1 * i + (0.2 if a == "N" else 0)) * (1 + anomaly), 0, None)
            v = rng.poisson(lam).astype(float)
            v[rng.random(len(v)) < 0.01] = np.nan
            obs.append(pd.DataFrame({"detector_id": d, "ts": times, "value": v}).dropna())
    src = list(sites["site_id"][:-1]) + list(sites["site_id"][1:])
    dst = list(sites["site_id"][1:]) + list(sites["site_id"][:-1])
    return CanonicalTables(
        DatasetInfo(synthetic=False, source="line city (tests)", timezone="UTC", interval_s=900),
        sites=sites, detectors=pd.DataFrame(dets), observations=pd.concat(obs, ignore_index=True),
        adjacency=pd.DataFrame({"src": src, "dst": dst, "weight": 400.0, "kind": "road"}))


@pytest.fixture
def city(tmp_path):
    """A store holding the line city as `city` and a second dataset `other` that is never exported."""
    from helpers import tiny_tables

    from trafficcore.data.store import Store

    path = tmp_path / "tc.duckdb"
    store = Store(path)
    store.ingest("city", line_city())
    store.ingest("other", tiny_tables())
    return path


def _same_panel(a, b) -> None:
    assert a.times.equals(b.times)
    assert list(a.detectors["detector_id"]) == list(b.detectors["detector_id"])
    assert np.array_equal(a.values, b.values, equal_nan=True)


# ------------------------------------------------------------------------------ Parquet observations
def test_parquet_observations_load_the_same_panels(city, tmp_path, monkeypatch):
    from trafficcore.data.panel import load_panel
    from trafficcore.data.store import Store

    table = Store(city, read_only=True)
    res = table.export_parquet("city", tmp_path / "obs")
    files = sorted((tmp_path / "obs").rglob("*.parquet"))
    assert [f.relative_to(tmp_path / "obs").as_posix() for f in files] == [
        "dataset=city/month=2024-01/part-0.parquet"]
    assert res["rows"] == len(line_city().observations)
    files_store = Store(city, read_only=True, observations_parquet=tmp_path / "obs")
    assert files_store.parquet_datasets() == ["city"]
    _same_panel(load_panel(table, "city"), load_panel(files_store, "city"))
    # a dataset with no partition in the folder is still read from the DuckDB table, through the same view
    _same_panel(load_panel(table, "other"), load_panel(files_store, "other"))
    assert files_store.datasets() == table.datasets()
    ids = ["S03:N", "S05:S"]
    pd.testing.assert_frame_equal(files_store.observations("city", ids, start="2024-01-05", end="2024-01-06"),
                                  table.observations("city", ids, start="2024-01-05", end="2024-01-06"))
    # and the environment variable does the same for every command
    monkeypatch.setenv("TRAFFICCORE_OBSERVATIONS_PARQUET", str(tmp_path / "obs"))
    assert Store(city, read_only=True).parquet_datasets() == ["city"]


def test_detector_filtered_read_skips_other_detectors_row_groups(city, tmp_path):
    from trafficcore.data.panel import VALUES_SQL, load_panel
    from trafficcore.data.store import Store

    Store(city, read_only=True).export_parquet("city", tmp_path / "obs", row_group_rows=2048)
    store = Store(city, read_only=True, observations_parquet=tmp_path / "obs")
    full = load_panel(store, "city")
    some = load_panel(store, "city", detectors=["S06:S", "S02:N", "nope"])
    assert list(some.detectors["detector_id"]) == ["S02:N", "S06:S"]  # panel order; unknown ids are not columns
    assert some.times.equals(full.times)  # the whole dataset's grid, so shards line up row by row
    assert np.array_equal(some.values, full.values[:, [full.column("S02:N"), full.column("S06:S")]], equal_nan=True)
    with store.connect() as con:  # the panel's own query: the detector filter reaches the Parquet scan
        con.register("_sel", pd.DataFrame({"detector_id": ["S02:N"], "col": [0]}))
        plan = con.execute("EXPLAIN ANALYZE " + VALUES_SQL,
                           [full.times[0].to_pydatetime(), 900_000_000, 1, "city", full.times[0].to_pydatetime()]
                           ).fetchall()[0][1]
    scanned, total = map(int, re.search(r"Row Groups Scanned: (\d+) / (\d+)", plan).groups())
    assert total >= 16 and scanned <= total // 8, plan


def test_parquet_observations_are_read_only(city, tmp_path):
    from trafficcore.data.store import Store
    from trafficcore.errors import DataError

    Store(city, read_only=True).export_parquet("city", tmp_path / "obs")
    before = Store(city, read_only=True).datasets()
    with pytest.raises(DataError, match="read from this Parquet folder"):
        Store(city, observations_parquet=tmp_path / "obs").ingest("city", line_city(seed=1))
    with pytest.raises(DataError, match="read from this Parquet folder"), \
            Store(city, observations_parquet=tmp_path / "obs").transaction() as con:
        con.execute("DELETE FROM observations WHERE dataset = 'other'")
    assert Store(city, read_only=True).datasets() == before


def test_bad_parquet_folders_are_named(city, tmp_path):
    from trafficcore.data.panel import load_panel
    from trafficcore.data.store import Store
    from trafficcore.errors import DataError

    with pytest.raises(DataError, match="not a folder of Parquet files"):
        load_panel(Store(city, read_only=True, observations_parquet=tmp_path / "missing"), "city")
    (tmp_path / "bad" / "dataset=x y").mkdir(parents=True)
    with pytest.raises(DataError, match="dataset=x y"):
        load_panel(Store(city, read_only=True, observations_parquet=tmp_path / "bad"), "city")


def test_export_command(city, tmp_path):
    from trafficcore.cli import app
    from trafficcore.data.store import Store

    out = tmp_path / "obs"
    r = CliRunner().invoke(app, ["export", "parquet", "--dataset", "city", "--out", str(out), "--db", str(city)])
    assert r.exit_code == 0, r.output
    assert f"exported {len(line_city().observations):,} observations" in r.output
    assert (out / "dataset=city" / "month=2024-01" / "part-0.parquet").exists()
    # again: the partition is replaced, not appended to
    r = CliRunner().invoke(app, ["export", "parquet", "--dataset", "city", "--out", str(out), "--db", str(city)])
    assert r.exit_code == 0, r.output
    assert Store(city, read_only=True, observations_parquet=out).datasets() == Store(city, read_only=True).datasets()
    assert sorted(p.name for p in out.iterdir()) == ["dataset=city"]
    r = CliRunner().invoke(app, ["export", "parquet", "--dataset", "ghost", "--out", str(out), "--db", str(city)])
    assert r.exit_code == 2 and "no such dataset" in r.output


# ------------------------------------------------------------------------------ shards
def test_shard_panel_reads_its_detectors_and_their_neighbours(city):
    from trafficcore.data.panel import load_panel
    from trafficcore.data.shard import load_shard, owned_columns, partition
    from trafficcore.data.store import Store

    store = Store(city, read_only=True)
    full = load_panel(store, "city")
    ids = list(full.detectors["detector_id"])
    parts = partition(ids, 4)
    assert [len(p) for p in parts] == [4, 4, 4, 4] and sum(parts, []) == ids
    shard = load_shard(store, "city", [1], 4, neighbours=[(4, "graph")])
    nb_full = full.neighbour_matrix(4, "graph")
    want = set(parts[1]) | {ids[j] for d in parts[1] for j in nb_full[full.column(d)] if j >= 0}
    assert set(shard.detectors["detector_id"]) == want and len(want) < len(ids)
    for d in parts[1]:  # the same neighbours as in the whole network, the same readings
        assert shard.neighbours(d, method="graph") == full.neighbours(d, method="graph")
        assert np.array_equal(shard.values[:, shard.column(d)], full.values[:, full.column(d)], equal_nan=True)
    assert [shard.detectors["detector_id"][c] for c in owned_columns(shard)] == parts[1]
    with pytest.raises(ValueError, match="loaded with neighbours"):
        shard.neighbour_matrix(2, "distance")


def test_profile_put_together_from_shards_equals_one_fit(city):
    from trafficcore.data.panel import load_panel
    from trafficcore.data.profile import DetectorProfile
    from trafficcore.data.shard import load_shard
    from trafficcore.data.store import Store

    store = Store(city, read_only=True)
    full = load_panel(store, "city")
    rows = np.arange(0, 1500)
    one = DetectorProfile.fit(full, rows)
    parts = []
    for k in range(3):
        p = load_shard(store, "city", [k], 3)
        parts.append(DetectorProfile.fit(p, rows).part(p.shard.owned))
    both = DetectorProfile.combine(parts, list(full.detectors["detector_id"]))
    for name in ("table", "cross", "scale", "shape"):
        assert np.array_equal(getattr(one, name), getattr(both, name), equal_nan=True), name
    assert both.overall == pytest.approx(one.overall, rel=1e-12)
    assert np.array_equal(one.own_out_tables(full)[1], both.own_out_tables(full)[1])


def test_sampler_needs_shards_that_divide_the_batch(city, tmp_path):
    r = _cli("train", "--dataset", "city", "--preset", _recipe_file(tmp_path), "--shards", "3", "--out",
             tmp_path / "m", "--db", city, "--no-progress", "--device", "cpu")
    assert r.exit_code == 2 and "must divide the batch size" in r.output
    r = _cli("train", "--dataset", "city", "--model", "gbt", "--shards", "2", "--out", tmp_path / "m", "--db", city)
    assert r.exit_code == 2 and "--shards applies to the lm" in r.output


def test_recipe_files(city, tmp_path):
    from trafficcore.models.lm.recipes import Recipe

    shipped = REPO / "docs" / "examples" / "recipe_numeric.json"
    recipe = Recipe.from_dict(json.loads(shipped.read_text()))
    assert recipe.model["transformer"] is False and recipe.model["dropout"] == 0.0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**recipe.to_dict(), "model": {"no_such_field": 1}}))
    for preset, why in ((bad, "not a recipe"), (tmp_path / "missing.json", "cannot read it"),
                        ("fastest", "unknown preset")):
        r = _cli("train", "--dataset", "city", "--preset", preset, "--out", tmp_path / "m", "--db", city)
        assert r.exit_code == 2 and why in r.output, r.output


# ------------------------------------------------------------------------------ torchrun: the bar
from trafficcore.models.lm.recipes import Phase, Recipe  # noqa: E402

#: A numeric-path recipe without dropout (each rank would draw its own masks): ~70 steps of 64 samples.
TINY = Recipe("tiny", "tests: sharded training", (
    Phase("numeric", trains="numeric", epochs=1.0, batch_size=64, lr=2e-3, evals=3, patience=3, sampler="random",
          samples=4500),), model={"transformer": False, "dropout": 0.0, "skip_hidden": 64},
    val_samples=1000, eval_samples=400)

def _recipe_file(folder: Path) -> Path:
    path = folder / "tiny.json"
    path.write_text(json.dumps(TINY.to_dict()))
    return path


def _cli(*args):
    from trafficcore.training.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args: list, nproc: int = 2, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRAFFICCORE_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(nproc),
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{_free_port()}", *map(str, args)]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    return run


def _forecasts(db: Path, output: str) -> pd.DataFrame:
    """The forecasts of the run the command's output names, in the order they were written."""
    from trafficcore.data.store import Store

    run_id = re.findall(r"forecast (fc-\S+):", output)
    assert len(run_id) == 1, output  # one run, reported once (by rank 0 alone under torchrun)
    fc = Store(db, read_only=True).query("SELECT * FROM forecasts WHERE run_id = ?", run_id)
    return fc.drop(columns=["run_id"]).reset_index(drop=True)


@pytest.mark.slow
def test_two_ranks_train_and_forecast_like_one(city, tmp_path, monkeypatch):
    """2 torchrun ranks, each reading only its detectors (here from Parquet files), train and forecast as one
    process holding both shards does: the same weights, bands and profile, and the same forecasts."""
    from safetensors.numpy import load_file

    from trafficcore.data.store import Store

    monkeypatch.setenv("TRAFFICCORE_THREADS", "1")
    Store(city, read_only=True).export_parquet("city", tmp_path / "obs")
    one, two, recipe = tmp_path / "one", tmp_path / "two", _recipe_file(tmp_path)
    r = _cli("train", "--dataset", "city", "--preset", recipe, "--shards", "2", "--out", one, "--db", city,
             "--no-progress", "--device", "cpu", "--no-keep-state")
    assert r.exit_code == 0, r.output
    r = _cli("forecast", "--dataset", "city", "--model", one, "--db", city, "--at", AT)
    assert r.exit_code == 0, r.output
    f_one = _forecasts(city, r.output)

    parquet = ["--db", city, "--observations-parquet", tmp_path / "obs"]
    _torchrun(["-m", "trafficcore.training.cli", "train", "--dataset", "city", "--preset", recipe, "--out", two,
               "--no-progress", "--device", "cpu", "--no-keep-state", *parquet])
    a, b = load_file(str(one / "model.safetensors")), load_file(str(two / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert np.allclose(a[k], b[k], rtol=1e-4, atol=1e-5, equal_nan=True), k
    ca, cb = (json.loads((p / "config.json").read_text()) for p in (one, two))
    assert ca["training_data_sha256"] == cb["training_data_sha256"]
    assert np.allclose(ca["interval_scale"], cb["interval_scale"], rtol=1e-4)
    assert (ca["metrics"]["world_size"], cb["metrics"]["world_size"]) == (1, 2)
    assert ca["metrics"]["phases"][0]["steps"] == cb["metrics"]["phases"][0]["steps"] > 20
    assert cb["metrics"]["val_samples"] == ca["metrics"]["val_samples"] == 1000
    ha, hb = ca["metrics"]["phases"][0]["history"], cb["metrics"]["phases"][0]["history"]
    assert [h["step"] for h in ha] == [h["step"] for h in hb] and len(ha) >= 3
    for x, y in zip(ha, hb, strict=True):  # the same losses and validation errors along the way
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-4) and x["val_mae"] == pytest.approx(y["val_mae"], rel=1e-5)

    run = _torchrun(["-m", "trafficcore.training.cli", "forecast", "--dataset", "city", "--model", two, "--at", AT,
                     *parquet])
    f_two = _forecasts(city, run.stdout)
    assert len(f_two) == 16 * 4 and f_two["detector_id"].nunique() == 16
    pd.testing.assert_frame_equal(f_one.drop(columns=["p10", "p50", "p90"]), f_two.drop(columns=["p10", "p50", "p90"]))
    for q in ("p10", "p50", "p90"):
        assert np.allclose(f_one[q], f_two[q], rtol=1e-4, atol=1e-3), q
    runs = Store(city, read_only=True).query("SELECT metrics_json FROM model_runs WHERE run_id LIKE 'fc-%' "
                                             "ORDER BY created_at")
    assert json.loads(runs["metrics_json"].iloc[-1])["ranks"] == 2
