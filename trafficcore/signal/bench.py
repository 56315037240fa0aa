"""Measure the timing lab against its bars and set analytic delay beside SUMO's.

Run ``python -m trafficcore.signal.bench`` (add ``--no-sumo`` without SUMO). It prints:

1. the time to analyse one intersection over 8 intervals (bar: <= 50 ms),
2. the wall time of one simulated hour of a 4-leg intersection at 2,000 veh/h (bar: <= 3 s),
3. analytic (HCM) and SUMO average delay for three demand levels, well under, near and over
   capacity, on one fixed plan (optimised for the middle level), with the ratio between them.

Numbers are measurements on the machine it runs on, not constants; nothing here is asserted.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd

from trafficcore.signal.analysis import analyse
from trafficcore.signal.demand import read_demand_csv
from trafficcore.signal.optimise import optimise
from trafficcore.signal.plan import Plan, load_plan

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
#: Approach shares of the 2,000 veh/h benchmark hour (arterial N/S, collector E/W).
SPLIT = {"N": 0.35, "S": 0.30, "E": 0.17, "W": 0.18}


def flat_demand(plan: Plan, total_veh_h: float, hours: float = 1.0, interval_min: int = 15,
                start: str = "2026-03-10 07:00") -> pd.DataFrame:
    """A flat demand of `total_veh_h` split over the approaches by `SPLIT` (P10 = P50 = P90)."""
    n = int(round(hours * 60 / interval_min))
    rows = []
    for i in range(n):
        ts = pd.Timestamp(start) + pd.Timedelta(minutes=interval_min * i)
        for a in plan.approach_names:
            v = total_veh_h * SPLIT.get(a, 1.0 / len(plan.approaches))
            rows.append({"approach": a, "interval_start": ts, "interval_min": interval_min,
                         "p10": v, "p50": v, "p90": v})
    return pd.DataFrame(rows)


def bench_analysis(plan: Plan, demand: pd.DataFrame, repeats: int = 50) -> dict:
    analyse(plan, demand)  # warm-up (imports, caches)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        analyse(plan, demand)
        times.append(time.perf_counter() - t)
    return {"intervals": int(demand["interval_start"].nunique()), "median_ms": 1000 * statistics.median(times),
            "max_ms": 1000 * max(times)}


def bench_sumo(plan: Plan, runs: int = 3, total: float = 2000.0) -> dict:
    from trafficcore.signal.sumo import simulate

    demand = flat_demand(plan, total)
    walls, cpus, vehicles = [], [], []
    for seed in range(1, runs + 1):
        t = time.perf_counter()
        c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        sim = simulate(plan, demand, seed=seed)
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        walls.append(time.perf_counter() - t)
        cpus.append(c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime)
        vehicles.append(sim.summary["vehicles"])
    return {"veh_h": total, "median_wall_s": statistics.median(walls), "max_wall_s": max(walls),
            "median_sumo_cpu_s": statistics.median(cpus), "vehicles": int(statistics.median(vehicles))}


def compare_levels(plan: Plan, levels: dict[str, float], seeds: int = 3) -> pd.DataFrame:
    """Analytic vs SUMO delay (s/veh) at several total demands on one fixed plan.

    Besides the intersection, the arterial (N, S: exclusive protected lefts) and the collector
    (E, W: one shared lane with permitted lefts) are reported apart, because they differ in how
    closely the two models agree.
    """
    from trafficcore.signal.sumo import compare, simulate

    rows = []
    for name, total in levels.items():
        demand = flat_demand(plan, total)
        a = analyse(plan, demand)
        a_iq = analyse(plan, demand, initial_queue=True)
        sims = [simulate(plan, demand, seed=s) for s in range(1, seeds + 1)]
        sim_delay = float(np.mean([s.summary["delay_s"] for s in sims]))
        both = pd.concat([compare(a.approaches, s) for s in sims])
        both["vd"] = both["v"] * both["delay_s"]
        both["svd"] = both["sim_vehicles"] * both["sim_delay_s"]

        def part(approaches: list[str], both: pd.DataFrame = both) -> tuple[float, float]:
            b = both[both["approach"].isin(approaches)]
            return float(b["vd"].sum() / b["v"].sum()), float(b["svd"].sum() / b["sim_vehicles"].sum())

        art, col = part(["N", "S"]), part(["E", "W"])
        rows.append({
            "level": name,
            "veh_h": total,
            "Xc": float(a.intervals["xc"].max()),
            "max_X": a.summary["max_x"],
            "hcm_s": a.summary["delay_s"],
            "hcm_d3_s": a_iq.summary["delay_s"],
            "sumo_s": sim_delay,
            "sumo_sd_s": float(np.std([s.summary["delay_s"] for s in sims])),
            "sumo/hcm": sim_delay / a.summary["delay_s"] if a.summary["delay_s"] else float("nan"),
            "NS_hcm_s": art[0],
            "NS_sumo_s": art[1],
            "EW_hcm_s": col[0],
            "EW_sumo_s": col[1],
        })
    return pd.DataFrame(rows)


def calibrate_sumo(greens: tuple[float, float] = (20.0, 40.0), seed: int = 1) -> dict:
    """SUMO's saturation flow and lost time per phase for one through lane, from two saturated runs.

    A single through lane gets 1,500 veh/h (far above capacity) for an hour at two green times; the
    discharge per cycle n(G) = s (G + I - l) / 3600 for both gives s (slope) and l (lost time).
    """
    import re
    import subprocess
    import tempfile

    from trafficcore.signal import sumo as S

    per_cycle = []
    for g in greens:
        plan = Plan.from_dict({
            "cycle": 2 * g + 10,
            "approaches": [{"name": "N", "lanes": 1, "turns": {"T": 1}}, {"name": "E", "lanes": 1, "turns": {"T": 1}}],
            "phases": [{"name": "A", "movements": ["N"], "green": g, "yellow": 3, "all_red": 2},
                       {"name": "B", "movements": ["E"], "green": g, "yellow": 3, "all_red": 2}],
        })
        rows = [{"approach": a, "interval_start": pd.Timestamp("2026-01-01") + pd.Timedelta(minutes=15 * i),
                 "interval_min": 15, "p10": v, "p50": v, "p90": v}
                for i in range(4) for a, v in (("N", 1500.0), ("E", 100.0))]
        with tempfile.TemporaryDirectory(prefix="trafficcore-sumo-") as tmp:
            _, cfg = S.write_scenario(plan, pd.DataFrame(rows), tmp, seed=seed)
            subprocess.run([S.sumo_binary("sumo"), "-c", cfg.name, "--tripinfo-output", "t.xml", "--no-step-log",
                            "true", "--no-warnings", "true"], cwd=tmp, env=S._env(), check=True, capture_output=True)
            text = Path(tmp, "t.xml").read_text(encoding="utf-8")
        arrivals = np.array([float(m) for m in re.findall(r'<tripinfo id="f0_T_[^"]+"[^>]*?arrival="([^"]+)"', text)])
        window = (1200.0, 3600.0)  # saturated, past the first queue build-up
        n = ((arrivals >= window[0]) & (arrivals < window[1])).sum()
        per_cycle.append(n / (window[1] - window[0]) * (2 * g + 10))
    s = (per_cycle[1] - per_cycle[0]) / (greens[1] - greens[0]) * 3600.0
    lost = greens[0] + 5.0 - per_cycle[0] * 3600.0 / s
    return {"sat_flow_veh_h_ln": s, "lost_time_s": lost}


def sumo_baseline_loss(seed: int = 2) -> dict[str, float]:
    """SUMO time loss per turn with (almost) no signal delay: one approach green 290 s of a 310 s cycle.

    HCM control delay leaves out slowing for a turn and drivers' speed noise (Krauss sigma 0.5);
    SUMO's timeLoss counts them, so this is the part of every simulated delay HCM does not model.
    """
    import subprocess
    import tempfile

    from trafficcore.signal import sumo as S

    plan = Plan.from_dict({
        "cycle": 310, "cycle_max": 400,
        "approaches": [{"name": "N", "lanes": 1, "turns": {"L": 0.3, "T": 0.4, "R": 0.3}},
                       {"name": "E", "lanes": 1, "turns": {"T": 1}}],
        "phases": [{"name": "A", "movements": ["N"], "green": 290, "yellow": 3, "all_red": 2},
                   {"name": "B", "movements": ["E"], "green": 10, "yellow": 3, "all_red": 2}],
    })
    rows = [{"approach": a, "interval_start": pd.Timestamp("2026-01-01") + pd.Timedelta(minutes=15 * i),
             "interval_min": 15, "p10": v, "p50": v, "p90": v} for i in range(4) for a, v in (("N", 120.0), ("E", 1.0))]
    demand = pd.DataFrame(rows)
    with tempfile.TemporaryDirectory(prefix="trafficcore-sumo-") as tmp:
        _, cfg = S.write_scenario(plan, demand, tmp, seed=seed)
        subprocess.run([S.sumo_binary("sumo"), "-c", cfg.name, "--tripinfo-output", "t.xml", "--no-step-log", "true",
                        "--no-warnings", "true"], cwd=tmp, env=S._env(), check=True, capture_output=True)
        trips = S._read_trips(Path(tmp, "t.xml"))
    hcm = float(analyse(plan, demand).approaches.query("approach == 'N'")["delay_s"].mean())
    out = trips[trips["approach_idx"] == 0].groupby("turn")["delay"].mean().to_dict()
    return {"hcm_s": hcm, **{f"sumo_{k}_s": float(v) for k, v in out.items()}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-sumo", action="store_true", help="skip the SUMO measurements")
    parser.add_argument("--runs", type=int, default=3, help="SUMO runs for the wall-time bar")
    args = parser.parse_args(argv)
    plan = load_plan(EXAMPLES / "plan_4leg.json")
    demand = read_demand_csv(EXAMPLES / "demand_4leg.csv")
    pd.set_option("display.width", 160)

    a = bench_analysis(plan, demand)
    print(f"analysis, 1 intersection x {a['intervals']} intervals: median {a['median_ms']:.1f} ms, "
          f"max {a['max_ms']:.1f} ms  (bar <= 50 ms)")
    t = time.perf_counter()
    res = optimise(plan, demand)
    print(f"optimise (P50, 8 intervals): {time.perf_counter() - t:.2f} s, {res.evaluations} evaluations, "
          f"{res.saving_pct:.1f}% less delay than the current plan")
    if args.no_sumo:
        return
    s = bench_sumo(plan, runs=args.runs)
    print(f"SUMO, 1 h of a 4-leg intersection at {s['veh_h']:.0f} veh/h ({s['vehicles']} vehicles): "
          f"median {s['median_wall_s']:.2f} s wall, max {s['max_wall_s']:.2f} s  (bar <= 3 s); "
          f"netconvert + sumo CPU {s['median_sumo_cpu_s']:.2f} s; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs")
    # one plan for all levels: optimised for the middle (near-capacity) level
    near = flat_demand(plan, 2600.0)
    fixed = optimise(plan, near).plan
    print(f"comparison plan: cycle {fixed.cycle:g} s, greens {fixed.greens}")
    table = compare_levels(fixed, {"well under": 1500.0, "near": 2600.0, "over": 3100.0})
    print(table.round(2).to_string(index=False))
    cal = calibrate_sumo()
    print(f"SUMO calibration, one through lane (default car, step 0.5 s): saturation flow "
          f"{cal['sat_flow_veh_h_ln']:.0f} veh/h/lane, lost time {cal['lost_time_s']:.1f} s per phase "
          f"(HCM defaults here: 1900 x adjustments, {fixed.lost_time(fixed.phases[0]):g} s)")
    base = sumo_baseline_loss()
    print(f"SUMO time loss with almost no signal delay (HCM {base['hcm_s']:.1f} s): left {base['sumo_L_s']:.1f} s, "
          f"through {base['sumo_T_s']:.1f} s, right {base['sumo_R_s']:.1f} s")


if __name__ == "__main__":  # pragma: no cover
    main()
