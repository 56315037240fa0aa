"""The command line starts without loading the heavy libraries (issue 15).

Nothing here is timed (start-up time is machine- and load-dependent; `python -m
trafficcore.bench_startup` measures it). What users rely on is that `trafficcore --help` and a
light command do not pay for torch, transformers, Streamlit, LightGBM, Plotly or GeoPandas, so
each check imports in a fresh interpreter and looks at `sys.modules`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "streamlit", "lightgbm", "plotly", "geopandas", "sumolib", "fastapi", "uvicorn",
         "duckdb", "pandas", "scipy", "shap", "sklearn")


def _loaded_after(code: str) -> list[str]:
    """The HEAVY modules in `sys.modules` after a fresh interpreter runs `code`."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_the_cli_loads_no_heavy_library():
    assert _loaded_after("import trafficcore.cli") == []


def test_help_lists_every_command_without_loading_heavy_libraries():
    code = ("import contextlib, io\nfrom trafficcore.cli import app\nbuf = io.StringIO()\n"
            "with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):\n"
            "    app(['--help'], prog_name='trafficcore')\n"
            "for name in ('import', 'demo', 'train', 'forecast', 'signal', 'serve', 'ingest', 'replay'):\n"
            "    assert name in buf.getvalue(), name")
    assert _loaded_after(code) == []


def test_signal_package_root_exports_resolve_on_use():
    """The lazy root still hands out the lab's functions, `optimise` being the function, not its module."""
    code = ("import trafficcore.signal.optimise\nfrom trafficcore.signal import optimise, analyse, load_plan\n"
            "assert callable(optimise) and optimise.__module__ == 'trafficcore.signal.optimise'\n"
            "assert analyse.__module__ == 'trafficcore.signal.analysis'")
    assert "pandas" in _loaded_after(code)


def test_optimising_a_plan_of_single_phase_lane_groups_does_not_load_scipy():
    """SciPy's optimiser costs ~0.5 s to import; the usual plan (each lane group in one phase) never needs it."""
    plan, demand = REPO / "docs/examples/plan_4leg.json", REPO / "docs/examples/demand_4leg.csv"
    code = ("from trafficcore.signal import load_plan, optimise\n"
            "from trafficcore.signal.demand import read_demand_csv\n"
            f"r = optimise(load_plan({str(plan)!r}), read_demand_csv({str(demand)!r}))\n"
            "assert r.delay_veh_h <= r.current_delay_veh_h")
    assert "scipy" not in _loaded_after(code)
