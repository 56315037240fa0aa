"""The `trafficcore` command as a user runs it: exit codes, --db, and a store left untouched by bad input."""

from __future__ import annotations

import json

from conftest import shared_path
from typer.testing import CliRunner

from trafficcore.cli import app

runner = CliRunner()


def test_bad_scats_csv_exits_2_and_changes_nothing(tmp_path):
    src = shared_path("scats_boroondara_oct2006", "scats_oct2006_data.csv")
    db = str(tmp_path / "x.duckdb")
    ok = runner.invoke(app, ["import", "scats", str(src), "--dataset", "scats", "--db", db])
    assert ok.exit_code == 0, ok.output
    before = runner.invoke(app, ["datasets", "--json", "--db", db]).output
    [info] = json.loads(before)
    assert (info["sites"], info["detectors"], info["observations"], info["interval_s"]) == (40, 140, 401_995, 900)
    lines = src.read_text().splitlines()
    cells = lines[4].split(",")
    cells[14] = "x7"  # V04 of the fifth line
    lines[4] = ",".join(cells)
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    res = runner.invoke(app, ["import", "scats", str(bad), "--dataset", "scats", "--db", db])
    assert res.exit_code == 2
    assert "row 5" in res.output and "V04" in res.output and "bad.csv" in res.output
    assert runner.invoke(app, ["datasets", "--json", "--db", db]).output == before


def test_demo_and_datasets_json(tmp_path):
    db = str(tmp_path / "d.duckdb")
    assert runner.invoke(app, ["demo", "--weeks", "8", "--db", db]).exit_code == 0
    [info] = json.loads(runner.invoke(app, ["datasets", "--json", "--db", db]).output)
    assert info["name"] == "demo" and info["synthetic"] is True and info["interval_s"] == 900
    assert set(info) == {"name", "sites", "detectors", "observations", "start", "end", "interval_s", "synthetic"}


def test_env_var_selects_the_store(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAFFICCORE_DB", str(tmp_path / "env.duckdb"))
    assert runner.invoke(app, ["demo", "--weeks", "8"]).exit_code == 0
    assert (tmp_path / "env.duckdb").exists()
    assert json.loads(runner.invoke(app, ["datasets", "--json"]).output)[0]["name"] == "demo"


def test_unknown_format_and_missing_file_exit_2(tmp_path):
    db = str(tmp_path / "e.duckdb")
    assert runner.invoke(app, ["import", "nope", "x.csv", "--dataset", "a", "--db", db]).exit_code == 2
    res = runner.invoke(app, ["import", "long", str(tmp_path / "missing.csv"), "--sites", "s.csv", "--detectors",
                              "d.csv", "--dataset", "a", "--db", db])
    assert res.exit_code == 2 and "file not found" in res.output
