"""Timing optimisation for a fixed phase sequence: Webster, a delay-minimising search, robust and time-of-day plans.

- `webster`: Webster's (1958) optimum cycle ``C0 = (1.5 L + 5) / (1 - Y)`` for the design interval
  (the one with the highest Y; y read at Webster's own timing, not the user's greens), and greens
  that equalise the degree of saturation of the critical lane groups. For plain sequential phases
  that is Webster's ``g_i = (y_i / Y)(C - L)``; with overlapping groups or minimum greens it is the
  linear programme "maximise the smallest green margin ``g_j / (y_j C)``", which reduces to the
  same rule when nothing else binds. When every lane group is served by one phase (the usual
  case) that programme is solved exactly by a bisection on the margin, without an LP solver:
  importing SciPy's optimiser costs about half a second, which the command line cannot afford.
- `optimise`: searches cycle lengths (coarse grid, then 1 s around the best) and, for each, starts
  from the equal-saturation split and moves green between phases in steps of 4, 2, 1 s while the
  total control delay over the whole demand horizon falls. The current plan is a candidate too,
  so the result never does worse than it. Delay is HCM control delay, in vehicle-hours.
- Robust: the objective is the expected delay over P10/P50/P90 demand with Swanson's weights
  0.3/0.4/0.3 (the usual three-point approximation of a mean from the 10th/50th/90th percentiles).
- `time_of_day`: splits a day profile into k contiguous plans. Breakpoints minimise the
  within-plan spread of the lane-group flow ratios y (exact dynamic programme over breakpoints,
  each plan at least `min_intervals` long: a controller should not switch plans every 15
  minutes); each plan is then optimised on its own intervals and its delay reported against the
  current plan over the same intervals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from trafficcore.errors import DataError
from trafficcore.signal.analysis import Model, webster_cycle
from trafficcore.signal.demand import QUANTILES, demand_matrix, interval_hours
from trafficcore.signal.plan import Plan

SWANSON = {"p10": 0.3, "p50": 0.4, "p90": 0.3}
#: upper bound of the green margin g_j / (y_j C) in the equal-saturation programme (keeps it bounded).
_MAX_MARGIN = 1e6


# ---------------------------------------------------------------------- splits
def equal_saturation_greens(model: Model, cycle: float, y: np.ndarray) -> np.ndarray | None:
    """Displayed greens (P,) at `cycle` maximising the smallest margin g_j / (y_j C); None if infeasible.

    `y` (G,) is the design flow ratio of each lane group. Lane group j's effective green is
    ``sum_{p in j} G_p + const_j`` (its intergreens minus its lost times), so the problem is linear.
    """
    n_p = len(model.min_green)
    budget = cycle - model.intergreen.sum()
    if budget < model.min_green.sum() - 1e-9:
        return None
    if not np.any(y > 1e-12):
        extra = (budget - model.min_green.sum()) / n_p
        return model.min_green + extra
    const = (model.served * model.intergreen[None, :]).sum(axis=1) - (model.last * model.lost[None, :]).sum(axis=1)
    rows = np.flatnonzero(y > 1e-12)
    served = model.served[rows]
    if np.all(served.sum(axis=1) == 1):
        return _max_min_margin_single(model.min_green.astype(float), served.argmax(axis=1), y[rows] * cycle,
                                      const[rows], budget)
    from scipy.optimize import linprog  # only overlapping lane groups need a general LP solver

    a_ub = np.hstack([-served.astype(float), (y[rows] * cycle)[:, None]])
    b_ub = const[rows]
    a_eq = np.hstack([np.ones((1, n_p)), np.zeros((1, 1))])
    bounds = [(float(m), None) for m in model.min_green] + [(0.0, _MAX_MARGIN)]
    c = np.zeros(n_p + 1)
    c[-1] = -1.0
    res = linprog(c, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=[budget], bounds=bounds, method="highs")
    if res.status != 0:
        return None
    return np.asarray(res.x[:n_p], dtype=float)


def _max_min_margin_single(min_green: np.ndarray, phase: np.ndarray, yc: np.ndarray, const: np.ndarray,
                           budget: float) -> np.ndarray | None:
    """`equal_saturation_greens` when lane group j is served by phase `phase[j]` alone.

    At margin t phase p needs ``max(min_p, max_j (t yc_j - const_j))`` seconds, a continuous,
    non-decreasing function of t, so the largest feasible t is where the needs add up to the
    budget; there the greens are exactly the needs (any other split would leave a group below t).
    """
    n_p = len(min_green)

    def needs(t: float) -> np.ndarray:
        g = min_green.copy()
        np.maximum.at(g, phase, t * yc - const)
        return g

    if needs(0.0).sum() > budget + 1e-9:
        return None
    if needs(_MAX_MARGIN).sum() <= budget:
        lo = _MAX_MARGIN
    else:
        lo, hi = 0.0, _MAX_MARGIN
        for _ in range(200):  # to float resolution: |hi - lo| halves each step
            mid = 0.5 * (lo + hi)
            if mid in (lo, hi):
                break
            if needs(mid).sum() <= budget:
                lo = mid
            else:
                hi = mid
    g = needs(lo)
    spare = budget - g.sum()
    if spare > 0:  # rounding slack of the bisection, or a margin capped at _MAX_MARGIN: share it equally
        g = g + spare / n_p
    return g


def round_greens(greens: np.ndarray, budget: float, min_green: np.ndarray, resolution: float = 1.0) -> np.ndarray:
    """Round greens to `resolution` keeping their sum at `budget` and each at least its minimum."""
    if resolution <= 0:
        return greens.astype(float)
    lo = np.ceil(min_green / resolution - 1e-9) * resolution
    g = np.maximum(np.floor(greens / resolution + 1e-9) * resolution, lo)
    left = budget - g.sum()
    order = np.argsort(-(greens - g))
    i = 0
    while left >= resolution - 1e-9 and i < 10 * len(g):
        g[order[i % len(g)]] += resolution
        left -= resolution
        i += 1
    while left <= -resolution + 1e-9:
        j = int(np.argmax(g - lo))
        if g[j] - lo[j] < resolution - 1e-9:
            break
        g[j] -= resolution
        left += resolution
    g[int(np.argmax(g))] += left  # sub-resolution remainder (fractional intergreens)
    return g


# ---------------------------------------------------------------------- objective
class _Objective:
    """Expected total control delay (veh-h) of a timing over scenarios x intervals."""

    def __init__(self, model: Model, flows: np.ndarray, weights: np.ndarray, t_h: float, initial_queue: bool):
        self.model, self.flows, self.t_h, self.initial_queue = model, flows, t_h, initial_queue
        self.weights = weights / weights.sum()
        self.calls = 0

    def __call__(self, cycle: float, greens: np.ndarray) -> float:
        self.calls += 1
        r = self.model.evaluate(self.flows, cycle, greens, self.t_h, self.initial_queue, queues=False)
        per_s = (r["v"] * r["delay"]).sum(axis=(1, 2)) * self.t_h / 3600.0
        total = float(per_s @ self.weights)
        return total if math.isfinite(total) else float("inf")


def _design_y(model: Model, flows: np.ndarray, weights: np.ndarray, t_h: float) -> np.ndarray:
    """Per-group design flow ratio: highest over intervals of the scenario-weighted y at the current timing."""
    cycle, greens = model.plan_timing()
    r = model.evaluate(flows, cycle, greens, t_h, queues=False)
    s = np.where(r["s"] > 0, r["s"], np.inf)
    y = np.tensordot(weights / weights.sum(), r["v"] / s, axes=(0, 0))  # (N, G)
    return y.max(axis=0)


def _flows(demand: pd.DataFrame, plan: Plan, quantiles: tuple[str, ...]) -> tuple[pd.DatetimeIndex, np.ndarray]:
    stacks = []
    intervals = None
    for q in quantiles:
        if q not in QUANTILES:
            raise DataError("<demand>", f"quantile must be one of {list(QUANTILES)}, got {q!r}", column="quantile")
        intervals, v = demand_matrix(demand, plan, q)
        stacks.append(v)
    return intervals, np.stack(stacks)


# ---------------------------------------------------------------------- Webster
@dataclass
class WebsterResult:
    """Webster's cycle and equal-saturation greens for the design interval."""

    plan: Plan
    cycle_unrounded: float
    y_total: float
    lost_time: float
    design_interval: pd.Timestamp | None
    critical_groups: list[str]


#: Most rounds of the Webster fixed point (permitted-left saturation flows <-> timing); it settles in a few.
WEBSTER_ROUNDS = 30


def _webster_timing(model: Model, y: np.ndarray, lost: float, plan: Plan, resolution: float):
    """(design interval, Y, unrounded C0, rounded cycle, rounded greens) for flow ratios y (N, G)."""
    y_tot, best = model.critical(y)
    n = int(np.argmax(y_tot))
    c0 = webster_cycle(lost, float(y_tot[n]))
    c_round = min(plan.cycle_max, max(plan.cycle_min, math.ceil(min(c0, 1e6) / resolution) * resolution))
    c_round = max(c_round, math.ceil((model.intergreen.sum() + model.min_green.sum()) / resolution) * resolution)
    g = equal_saturation_greens(model, c_round, y[n])
    if g is None:
        raise DataError(plan.source, f"cycle {c_round:g} s cannot hold the minimum greens", column="cycle_max")
    g = round_greens(g, c_round - model.intergreen.sum(), model.min_green, resolution)
    return n, float(y_tot[n]), int(best[n]), c0, float(c_round), g


def webster(plan: Plan, demand: pd.DataFrame, quantile: str = "p50", resolution: float = 1.0) -> WebsterResult:
    """Webster's optimum cycle and splits for the interval of `demand` with the highest Y.

    Why a fixed point and not the plan's own timing: Webster's cycle needs the flow ratios
    ``y = v / s`` and the lost time only, but the saturation flow of a lane group with permitted
    left turns depends on the timing (how long the opposing queue takes to clear, g_f). Taking s
    at the user's greens made the suggestion follow them (demo site S28: N-S green 41 -> 20 s moved
    Webster from 86 to 115 s, because the starved N-S green cut the permitted-left saturation flow).
    Instead it starts from the protected saturation flows (no filtering loss: a property of the
    lanes alone), times the plan Webster's way, re-reads s at that timing and repeats until the
    timing repeats. The answer then depends on the demand, the lanes, the phase sequence,
    intergreens, minimum greens and cycle bounds, and not on the greens the user typed.
    """
    model = Model(plan)
    intervals, flows = _flows(demand, plan, (quantile,))
    t_h = interval_hours(demand)
    lost = plan.total_lost_time
    v = flows[0] @ model.share.T  # (N, G)
    y = v / np.where(model.s_prot > 0, model.s_prot, np.inf)
    seen: set[tuple[float, ...]] = set()
    for _ in range(WEBSTER_ROUNDS):
        n, y_n, best, c0, cycle, g = _webster_timing(model, y, lost, plan, resolution)
        key = (cycle, *np.round(g, 6))
        if key in seen:
            break
        seen.add(key)
        r = model.evaluate(flows, cycle, g, t_h, queues=False)
        s = np.where(r["s"][0] > 0, r["s"][0], np.inf)
        y = r["v"][0] / s
    crit = [model.group_ids[i] for i in np.flatnonzero(model.packings[best])]
    return WebsterResult(plan.with_timing(cycle, list(g)), c0, y_n, lost, intervals[n], crit)


# ---------------------------------------------------------------------- search
@dataclass
class OptimiseResult:
    """The best timing found, the current plan's delay on the same demand, and the search trace."""

    plan: Plan
    current: Plan
    delay_veh_h: float
    current_delay_veh_h: float
    quantiles: tuple[str, ...]
    weights: tuple[float, ...]
    trace: pd.DataFrame = field(repr=False)
    evaluations: int = 0

    @property
    def saving_pct(self) -> float:
        if self.current_delay_veh_h <= 0:
            return 0.0
        return 100.0 * (self.current_delay_veh_h - self.delay_veh_h) / self.current_delay_veh_h


def _local_search(obj: _Objective, model: Model, cycle: float, greens: np.ndarray, resolution: float):
    best = obj(cycle, greens)
    g = greens.copy()
    n_p = len(g)
    for step in (4 * resolution, 2 * resolution, resolution):
        improved = True
        while improved:
            improved = False
            move = None
            for i in range(n_p):
                if g[i] - step < model.min_green[i] - 1e-9:
                    continue
                for j in range(n_p):
                    if i == j:
                        continue
                    trial = g.copy()
                    trial[i] -= step
                    trial[j] += step
                    val = obj(cycle, trial)
                    if val < best - 1e-9:
                        best, move = val, trial
            if move is not None:
                g = move
                improved = True
    return best, g


def optimise(
    plan: Plan,
    demand: pd.DataFrame,
    quantiles: tuple[str, ...] = ("p50",),
    weights: tuple[float, ...] | None = None,
    initial_queue: bool = False,
    cycle_step: float = 5.0,
    resolution: float = 1.0,
    cycle_min: float | None = None,
    cycle_max: float | None = None,
) -> OptimiseResult:
    """Minimise total control delay over the demand horizon for the plan's phase sequence.

    `quantiles` = ("p10", "p50", "p90") with `weights` None gives the robust (Swanson) objective.
    """
    quantiles = tuple(quantiles)
    if weights is None:
        weights = tuple(SWANSON[q] for q in quantiles) if len(quantiles) == 3 else tuple(1.0 for _ in quantiles)
    if len(weights) != len(quantiles) or min(weights) < 0 or sum(weights) <= 0:
        raise DataError("<optimise>", "one non-negative weight per quantile, not all zero", column="weights")
    model = Model(plan)
    _, flows = _flows(demand, plan, quantiles)
    w = np.asarray(weights, dtype=float)
    t_h = interval_hours(demand)
    obj = _Objective(model, flows, w, t_h, initial_queue)
    current = obj(plan.cycle, np.array(plan.greens))
    y = _design_y(model, flows, w, t_h)
    lo = max(cycle_min if cycle_min is not None else plan.cycle_min, model.intergreen.sum() + model.min_green.sum())
    hi = cycle_max if cycle_max is not None else plan.cycle_max
    if lo > hi:
        raise DataError(plan.source, f"the minimum greens and intergreens need {lo:g} s, above cycle_max {hi:g} s",
                        column="cycle_max")
    trace: dict[float, tuple[float, np.ndarray]] = {}

    def run(cycle: float) -> None:
        if cycle in trace or cycle < lo - 1e-9 or cycle > hi + 1e-9:
            return
        budget = cycle - model.intergreen.sum()
        g0 = equal_saturation_greens(model, cycle, y)
        if g0 is None:
            return
        g0 = round_greens(g0, budget, model.min_green, resolution)
        trace[cycle] = _local_search(obj, model, cycle, g0, resolution)

    first = math.ceil(lo / resolution) * resolution
    for c in np.arange(first, hi + 1e-9, cycle_step):
        run(float(round(c, 6)))
    if trace:
        best_c = min(trace, key=lambda k: trace[k][0])
        for dc in np.arange(resolution, cycle_step, resolution):
            run(float(round(best_c - dc, 6)))
            run(float(round(best_c + dc, 6)))
    tr = pd.DataFrame(
        [{"cycle": c, "delay_veh_h": v, "greens": [round(float(x), 3) for x in g]} for c, (v, g) in trace.items()]
    ).sort_values("cycle").reset_index(drop=True) if trace else pd.DataFrame(columns=["cycle", "delay_veh_h", "greens"])
    best_plan, best_val = plan, current
    if trace:
        best_c = min(trace, key=lambda k: trace[k][0])
        val, g = trace[best_c]
        if val < current - 1e-9:
            best_plan, best_val = plan.with_timing(best_c, [float(x) for x in g]), val
    return OptimiseResult(best_plan, plan, best_val, current, quantiles, tuple(float(x) for x in w), tr, obj.calls)


# ---------------------------------------------------------------------- time of day
@dataclass
class TimeOfDayResult:
    """k plans with their periods, each with its delay and the current plan's delay over the same period."""

    segments: pd.DataFrame
    plans: list[Plan]
    delay_veh_h: float
    current_delay_veh_h: float

    @property
    def saving_pct(self) -> float:
        if self.current_delay_veh_h <= 0:
            return 0.0
        return 100.0 * (self.current_delay_veh_h - self.delay_veh_h) / self.current_delay_veh_h


def segment_profile(features: np.ndarray, k: int, min_len: int = 1) -> list[int]:
    """Breakpoints (start index of segments 2..k) minimising the total within-segment squared spread.

    Exact dynamic programme, O(k n^2) with prefix sums; every segment has at least `min_len` rows.
    """
    x = np.asarray(features, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    n = len(x)
    if k < 1 or k * min_len > n:
        raise ValueError(f"cannot split {n} intervals into {k} plans of at least {min_len} intervals")
    c1 = np.vstack([np.zeros(x.shape[1]), np.cumsum(x, axis=0)])
    c2 = np.concatenate([[0.0], np.cumsum((x**2).sum(axis=1))])

    def sse(i: int, j: int) -> float:  # rows i..j-1
        s = c1[j] - c1[i]
        return float(c2[j] - c2[i] - (s @ s) / (j - i))

    inf = float("inf")
    cost = np.full((k + 1, n + 1), inf)
    back = np.zeros((k + 1, n + 1), dtype=int)
    cost[0, 0] = 0.0
    for m in range(1, k + 1):
        for j in range(m * min_len, n + 1):
            best, arg = inf, -1
            for i in range((m - 1) * min_len, j - min_len + 1):
                if cost[m - 1, i] == inf:
                    continue
                v = cost[m - 1, i] + sse(i, j)
                if v < best:
                    best, arg = v, i
            cost[m, j], back[m, j] = best, arg
    cuts, j = [], n
    for m in range(k, 0, -1):
        j = back[m, j]
        cuts.append(j)
    return sorted(cuts)[1:]


def time_of_day(
    plan: Plan,
    demand: pd.DataFrame,
    k: int,
    quantiles: tuple[str, ...] = ("p50",),
    min_intervals: int = 4,
    **optimise_kw,
) -> TimeOfDayResult:
    """Split the demand profile into `k` time-of-day plans and optimise each (see module docstring)."""
    model = Model(plan)
    intervals, flows = _flows(demand, plan, quantiles)
    w = np.asarray(optimise_kw.get("weights") or ([SWANSON[q] for q in quantiles] if len(quantiles) == 3
                                                  else [1.0] * len(quantiles)), dtype=float)
    t_h = interval_hours(demand)
    cycle, greens = model.plan_timing()
    r = model.evaluate(flows, cycle, greens, t_h, queues=False)
    s = np.where(r["s"] > 0, r["s"], np.inf)
    feats = np.tensordot(w / w.sum(), r["v"] / s, axes=(0, 0))  # (N, G)
    try:
        cuts = segment_profile(feats, k, min_intervals)
    except ValueError as e:
        raise DataError("<demand>", f"{e} (demand has {len(intervals)} intervals)", column="interval_start") from None
    bounds = [0, *cuts, len(intervals)]
    step = pd.Timedelta(minutes=float(demand["interval_min"].iloc[0]))
    rows, plans = [], []
    total_new = total_cur = 0.0
    for no, (i, j) in enumerate(zip(bounds[:-1], bounds[1:], strict=True), start=1):
        part = demand[demand["interval_start"].isin(intervals[i:j])]
        part.attrs.update(demand.attrs)
        res = optimise(plan, part, quantiles=quantiles, **optimise_kw)
        p = res.plan
        plans.append(p)
        total_new += res.delay_veh_h
        total_cur += res.current_delay_veh_h
        rows.append({
            "plan_no": no,
            "start": intervals[i],
            "end": intervals[j - 1] + step,
            "intervals": j - i,
            "cycle": p.cycle,
            "greens": [round(g, 2) for g in p.greens],
            "delay_veh_h": res.delay_veh_h,
            "current_delay_veh_h": res.current_delay_veh_h,
            "saving_pct": res.saving_pct,
        })
    return TimeOfDayResult(pd.DataFrame(rows), plans, total_new, total_cur)
