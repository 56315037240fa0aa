"""How long the `trafficcore` command takes to answer: `python -m trafficcore.bench_startup`.

Why a script and not a timed test: start-up time depends on the machine and its load, so it is
measured and printed, never asserted. Each command runs `--runs` times (default 5) in a fresh
subprocess, as a user's shell would start it; the table gives the wall-clock median, min and max and
the median CPU time (user + system of the child, which a busy machine inflates less than wall time).

`--root DIR` measures another checkout (say the main branch) with this same script, for a
before/after table. Issue 15's bar: `--help` and the signal commands at most 1 s (median wall).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"

#: (label, arguments after `trafficcore`); the signal commands use the shipped example plan and demand.
COMMANDS: list[tuple[str, list[str]]] = [
    ("trafficcore --help", ["--help"]),
    ("trafficcore signal --help", ["signal", "--help"]),
    ("trafficcore signal analyse --help", ["signal", "analyse", "--help"]),
    ("trafficcore signal analyse (example)", ["signal", "analyse", "--plan", str(EXAMPLES / "plan_4leg.json"),
                                              "--demand", str(EXAMPLES / "demand_4leg.csv")]),
    ("trafficcore signal optimise (example)", ["signal", "optimise", "--plan", str(EXAMPLES / "plan_4leg.json"),
                                               "--demand", str(EXAMPLES / "demand_4leg.csv")]),
]


def run_once(args: list[str], root: Path) -> tuple[float, float]:
    """(wall s, CPU s) of one `python -m trafficcore.cli ARGS` run with `root` first on the path.

    The child's CPU time is the change in this process's RUSAGE_CHILDREN around the run.
    """
    env = {**os.environ, "PYTHONPATH": str(root)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "trafficcore.cli", *args], cwd=root, env=env,
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"`trafficcore {' '.join(args)}` exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def measure(root: Path, runs: int) -> list[dict[str, float | str]]:
    """One row per command: median/min/max wall seconds and median CPU seconds over `runs` runs.

    Runs are interleaved (every command once, then again) so that a burst of load on a shared machine
    spreads over all commands rather than spoiling one.
    """
    times: dict[str, list[tuple[float, float]]] = {label: [] for label, _ in COMMANDS}
    run_once(["--help"], root)  # warm the file cache once; not counted
    for _ in range(runs):
        for label, args in COMMANDS:
            times[label].append(run_once(args, root))
    rows = []
    for label, _ in COMMANDS:
        walls = [w for w, _ in times[label]]
        rows.append({"command": label, "median_s": statistics.median(walls), "min_s": min(walls),
                     "max_s": max(walls), "cpu_median_s": statistics.median(c for _, c in times[label])})
    return rows


def table(rows: list[dict[str, float | str]], runs: int, root: Path) -> str:
    """The measured rows as a markdown table."""
    lines = [f"start-up of `trafficcore` from {root} ({runs} runs each, {os.cpu_count()} CPUs, "
             f"load average {os.getloadavg()[0]:.1f})", "",
             "| command | median s | min s | max s | CPU median s |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['command']} | {r['median_s']:.2f} | {r['min_s']:.2f} | {r['max_s']:.2f} "
                     f"| {r['cpu_median_s']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Measure and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="runs per command (default 5)")
    ap.add_argument("--root", type=Path, default=ROOT, help="checkout to measure (default: this one)")
    a = ap.parse_args(argv)
    if a.runs < 1:
        ap.error("--runs must be at least 1")
    root = a.root.resolve()
    print(table(measure(root, a.runs), a.runs, root))


if __name__ == "__main__":
    main()
