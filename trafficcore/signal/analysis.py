"""HCM / Webster analysis of a fixed-time plan against demand, interval by interval.

Methods (HCM 2000 = Highway Capacity Manual 2000, TRB, Chapter 16 "Signalized Intersections"):

- Saturation flow per lane group ``s = 1900 * N * f_adj * f_HV * f_LT * f_RT`` (Eq. 16-4) with
  ``f_HV = 1 / (1 + P_HV (E_T - 1))``, E_T = 2; ``f_RT`` 0.85 for an exclusive right lane,
  ``1 - 0.15 P_R`` (``1 - 0.135 P_R`` single lane) when shared; protected ``f_LT`` 0.95 exclusive,
  ``1 / (1 + 0.05 P_L)`` shared (Exhibit 16-7). ``f_adj`` (the plan's ``sat_adjust``) carries the
  remaining factors (lane width, grade, parking, bus blockage, area type, lane utilisation).
- Permitted left turns (a left turn in a phase that also serves the opposing through), after HCM
  2000 Appendix C: the opposing queue clears for ``g_q = y_o r_o / (1 - y_o) - t_L``; then left
  turners filter through gaps at ``s_lt = v_o e^{-v_o t_c} / (1 - e^{-v_o t_f})`` (t_c = 4.5 s,
  t_f = 2.5 s), i.e. ``E_L1 = 1900 / s_lt`` through cars each. An exclusive lane adds 2 sneakers per
  cycle; a shared lane runs freely until its first left turner arrives (``g_f``, `free_green`), is blocked until
  the opposing queue clears, and then ``f_m = g_f/g + (g_u/g) / (1 + P_L (E_L1 - 1))``,
  ``f_LT = (f_m + 0.91 (N - 1)) / N``. Simplifications: both greens are assumed to start together,
  and the single-lane-opposing ``E_L2`` term is left out.
- Effective green: a lane group green over phases ``p`` gets ``sum(G_p + Y_p + AR_p)`` per
  continuous run minus one lost time ``l1 + Y + AR - e`` at the end of the run.
- Capacity ``c = s g / C``; degree of saturation ``X = v / c``.
- Control delay ``d = d1 PF + d2 (+ d3)`` (Eq. 16-9..16-12): ``d1 = 0.5 C (1 - g/C)^2 /
  (1 - min(1, X) g/C)``, ``PF = (1 - P) f_PA / (1 - g/C)`` with ``P = R_p g/C``, PF <= 1 for AT 3-6 (Exhibit 16-12),
  ``d2 = 900 T [(X - 1) + sqrt((X - 1)^2 + 8 k I X / (c T))]``. With ``initial_queue=True`` the
  unmet demand of one interval becomes the initial queue ``Q_b`` of the next and d1, d3 follow
  HCM 2000 Appendix F (``d3 = 1800 Q_b (1 + u) t / (c T)``, cases in `initial_queue_delay`).
- Level of service by control delay: A <= 10 < B <= 20 < C <= 35 < D <= 55 < E <= 80 < F s/veh;
  a lane group or approach with X > 1 is F whatever its delay (HCM 2010 rule). The intersection
  LOS is by delay alone.
- Back of queue (vehicles): the mean is HCM 2000 Appendix G, per lane ``Q = Q1 + Q2`` with
  ``Q1 = PF2 (v_L C / 3600)(1 - g/C) / (1 - min(1, X) g/C)`` and ``Q2 = 0.25 c_L T [(X - 1) +
  sqrt((X - 1)^2 + 8 k_B X / (c_L T) + 16 k_B Q_bL / (c_L T)^2)]``, ``k_B = 0.12 I (s_L g /
  3600)^0.7`` (pretimed). The 95th percentile is ``Q + 1.645 sqrt(Q)``: a normal approximation
  to a Poisson-distributed queue (the z-form of HCM 2010 Eq. 31-150 with variance = mean).
  Approach queues are summed over the approach's lanes.
- Critical lane groups: the set of groups with pairwise disjoint phase sets whose flow ratios
  ``y = v/s`` add up to the most, ``Y``; for plain sequential phases this is the textbook sum of
  the highest ``y`` per phase. ``L`` is the sum of the phases' lost times; the critical degree of
  saturation ``X_c = Y C / (C - L)`` and Webster's optimum cycle ``C0 = (1.5 L + 5) / (1 - Y)``
  (Webster 1958, Road Research Technical Paper 39), kept within the plan's [cycle_min, cycle_max].
- Intersection totals weight lane-group delays by their flows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from trafficcore.signal.demand import demand_matrix, interval_hours
from trafficcore.signal.plan import OPPOSITE, Plan

LOS_LIMITS = (10.0, 20.0, 35.0, 55.0, 80.0)
LOS_LETTERS = "ABCDEF"
#: Platoon ratio R_p and adjustment f_PA by arrival type (HCM 2000 Exhibit 16-11/16-12).
ARRIVAL_RP = {1: 0.333, 2: 0.667, 3: 1.0, 4: 1.333, 5: 1.667, 6: 2.0}
ARRIVAL_FPA = {1: 1.0, 2: 0.93, 3: 1.0, 4: 1.15, 5: 1.0, 6: 1.0}
#: HCM 2000 Exhibit 16-12: PF may not exceed 1.0 for arrival types 3 to 6.
PF_CAP_FROM_ARRIVAL_TYPE = 3
HEAVY_E_T = 2.0
CRITICAL_GAP_S = 4.5
FOLLOW_UP_S = 2.5
SNEAKERS_PER_CYCLE = 2.0
Z95 = 1.645
MAX_PACKINGS = 50_000


# ---------------------------------------------------------------------- scalar formulas
def level_of_service(delay_s, x=None):
    """HCM LOS letter(s) from control delay; F also where the degree of saturation exceeds 1."""
    d = np.asarray(delay_s, dtype=float)
    idx = np.searchsorted(np.asarray(LOS_LIMITS), d, side="left")
    if x is not None:
        idx = np.where(np.asarray(x, dtype=float) > 1.0 + 1e-12, 5, idx)
    letters = np.asarray(list(LOS_LETTERS))[idx]
    return str(letters) if letters.ndim == 0 else letters


def uniform_delay(cycle, g, x):
    """HCM d1 (s/veh): 0.5 C (1 - g/C)^2 / (1 - min(1, X) g/C)."""
    gc = np.asarray(g, dtype=float) / cycle
    return 0.5 * cycle * (1.0 - gc) ** 2 / (1.0 - np.minimum(1.0, x) * gc)


def incremental_delay(x, c, t_h, k=0.5, i=1.0):
    """HCM d2 (s/veh): 900 T [(X - 1) + sqrt((X - 1)^2 + 8 k I X / (c T))]."""
    x = np.asarray(x, dtype=float)
    c = np.asarray(c, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(c > 0, 8.0 * k * i * x / (np.where(c > 0, c, 1.0) * t_h), np.inf)
    return 900.0 * t_h * ((x - 1.0) + np.sqrt((x - 1.0) ** 2 + term))


def progression_factor(g_over_c, arrival_type=3):
    """HCM 2000 PF = (1 - P) f_PA / (1 - g/C), P = R_p g/C (at most 1), PF at most 1 for arrival types 3-6.

    Why the cap only for 3-6: HCM 2000 Exhibit 16-12 (note: "PF may not exceed 1.0 for AT 3
    through AT 6") lets poor progression (AT 1, 2) raise the uniform delay above random arrivals,
    but not favourable progression at a short green (AT 4, g/C = 0.2 would give 1.054; the exhibit
    lists 1.000).
    """
    gc = np.asarray(g_over_c, dtype=float)
    at = np.asarray(arrival_type)
    rp = np.vectorize(ARRIVAL_RP.get)(at).astype(float)
    fpa = np.vectorize(ARRIVAL_FPA.get)(at).astype(float)
    return _pf(gc, rp, fpa, at)


def _pf(gc, rp, fpa, arrival_type):
    """PF from g/C, R_p, f_PA and arrival type (arrays broadcast); see `progression_factor`."""
    p = np.minimum(1.0, rp * gc)
    with np.errstate(divide="ignore", invalid="ignore"):
        pf = np.where(gc < 1.0, (1.0 - p) * fpa / (1.0 - gc), 1.0)
    return np.where(np.asarray(arrival_type) >= PF_CAP_FROM_ARRIVAL_TYPE, np.minimum(pf, 1.0), pf)


def initial_queue_delay(qb, c, x, t_h: float):
    """HCM 2000 Appendix F initial-queue delay: (d3 s/veh, t h, u) for an interval of T = `t_h` hours.

    Why the cases: a queue Q_b left over from the previous interval is served at the spare
    capacity ``c (1 - X)``, so it clears after ``Q_b / (c (1 - min(1, X)))`` hours if that is
    within T (cases I/II: ``t`` = that time, ``u = 0``), and otherwise lasts the whole interval
    (``t = T``). Then ``u`` is the share of Q_b still queued at the end of T, so that the
    queue-time area is the trapezoid ``T Q_b (1 + u) / 2``: ``u = 1 - c T (1 - min(1, X)) / Q_b``
    (case III, X < 1: partly served, 0 <= u < 1; X >= 1: the queue does not shrink, u = 1).
    ``d3 = 1800 Q_b (1 + u) t / (c T)`` spreads that area over the c T vehicles served.

    The form ``u = 1 - c T / (Q_b (1 - min(1, X)))`` (the factor (1 - X) in the denominator) is
    not the leftover share: it went far below -1 when a queue just failed to clear and gave the
    shipped example d3 of -1909 s/veh. The form used here is continuous with case II at the
    clearing boundary and with the X >= 1 case at X = 1, and d3 is never negative.
    """
    qb = np.asarray(qb, dtype=float)
    c = np.asarray(c, dtype=float)
    x = np.asarray(x, dtype=float)
    spare = c * (1.0 - np.minimum(1.0, x))  # veh/h left over to serve Q_b
    has_q = qb > 0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        clear = np.where(spare > 0, qb / np.where(spare > 0, spare, 1.0), np.inf)
        t = np.where(has_q, np.minimum(t_h, clear), 0.0)
        left = np.where(has_q, 1.0 - c * t_h * (1.0 - np.minimum(1.0, x)) / np.where(has_q, qb, 1.0), 0.0)
        u = np.where(has_q & (clear >= t_h), np.clip(left, 0.0, 1.0), 0.0)
        d3 = np.where(has_q, np.where(c > 0, 1800.0 * qb * (1.0 + u) * t / (np.where(c > 0, c, 1.0) * t_h),
                                      np.inf), 0.0)
    return d3, t, u


#: HCM 2000 Chapter 16 Appendix C, g_f = G exp(-a LTC^b) - t_L: (a, b) for a multilane and a single-lane group.
GF_MULTILANE = (0.882, 0.717)
GF_SINGLE_LANE = (0.860, 0.629)


def free_green(green_s, ltc, lanes: int, lost_s: float):
    """g_f (s): green before the first left turner arrives in a shared lane and blocks it.

    Why two sets of constants: HCM 2000 (Chapter 16, Appendix C, permitted left-turn worksheet)
    fits ``g_f = G exp(-0.882 LTC^0.717) - t_L`` for a multilane group, where through vehicles in
    the other lanes keep moving, and ``g_f = G exp(-0.860 LTC^0.629) - t_L`` for a single-lane
    group. Not clipped: the caller bounds it by the group's effective green.
    """
    a, b = GF_SINGLE_LANE if lanes == 1 else GF_MULTILANE
    return green_s * np.exp(-a * np.asarray(ltc, dtype=float) ** b) - lost_s


def webster_cycle(lost_s: float, y_total: float, cycle_min: float = 0.0, cycle_max: float = np.inf) -> float:
    """Webster's optimum cycle (1.5 L + 5) / (1 - Y), kept within [cycle_min, cycle_max]."""
    if y_total >= 1.0:
        return float(cycle_max)
    return float(min(cycle_max, max(cycle_min, (1.5 * lost_s + 5.0) / (1.0 - y_total))))


def drew_filter_flow(v_opposing):
    """Gap-acceptance saturation flow (veh/h) of a turn filtering through a random opposing flow."""
    v = np.asarray(v_opposing, dtype=float) / 3600.0
    with np.errstate(divide="ignore", invalid="ignore"):
        s = v * np.exp(-v * CRITICAL_GAP_S) / (1.0 - np.exp(-v * FOLLOW_UP_S)) * 3600.0
    return np.where(v > 1e-9, s, 3600.0 / FOLLOW_UP_S)


# ---------------------------------------------------------------------- compiled plan
class Model:
    """The plan's structure as arrays, so one evaluation is a few dozen vector operations.

    Rows of every array are lane groups in `plan.lane_groups()` order; columns of the (G, P)
    arrays are phases. Timing (cycle, greens) is an argument of `evaluate`, not part of the model,
    so the optimiser reuses one model for every candidate.
    """

    def __init__(self, plan: Plan):
        self.plan = plan
        self.groups = plan.lane_groups()
        apps = plan.approach_names
        a_idx = {n: i for i, n in enumerate(apps)}
        n_g, n_p, n_a = len(self.groups), len(plan.phases), len(apps)
        self.group_ids = [g.id for g in self.groups]
        self.group_approach = np.array([a_idx[g.approach] for g in self.groups])
        self.lanes = np.array([g.lanes for g in self.groups], dtype=float)
        self.share = np.zeros((n_g, n_a))
        self.p_left = np.zeros(n_g)
        self.s_prot = np.zeros(n_g)
        self.s_no_lt = np.zeros(n_g)
        self.served = np.zeros((n_g, n_p), dtype=bool)
        self.last = np.zeros((n_g, n_p), dtype=bool)
        self.rp = np.zeros(n_g)
        self.fpa = np.zeros(n_g)
        self.arrival_type = np.zeros(n_g, dtype=int)
        for gi, g in enumerate(self.groups):
            a = plan.approach(g.approach)
            shares = {t: a.share(t) for t in g.movements}
            total = sum(shares.values())
            self.share[gi, a_idx[g.approach]] = total
            p_l = shares.get("L", 0.0) / total if total else 0.0
            p_r = shares.get("R", 0.0) / total if total else 0.0
            self.p_left[gi] = p_l
            f_hv = 1.0 / (1.0 + a.heavy_share * (HEAVY_E_T - 1.0))
            if g.exclusive:
                f_rt = 0.85 if g.movements == ("R",) else 1.0
                f_lt = 0.95 if g.movements == ("L",) else 1.0
            else:
                f_rt = 1.0 - (0.135 if g.lanes == 1 else 0.15) * p_r
                f_lt = 1.0 / (1.0 + 0.05 * p_l)
            base = a.sat_flow_base * g.lanes * a.sat_adjust * f_hv * f_rt
            self.s_no_lt[gi] = base
            self.s_prot[gi] = base * f_lt
            self.rp[gi] = ARRIVAL_RP[a.arrival_type]
            self.fpa[gi] = ARRIVAL_FPA[a.arrival_type]
            self.arrival_type[gi] = a.arrival_type
            for pi, ph in enumerate(plan.phases):
                served = plan.served(ph)
                self.served[gi, pi] = all((g.approach, t) in served for t in g.movements)
            for pi in range(n_p):
                self.last[gi, pi] = self.served[gi, pi] and not self.served[gi, (pi + 1) % n_p]
            if self.served[gi].all():  # green all cycle: one run, charge the lost time once
                self.last[gi, n_p - 1] = True
        self.intergreen = np.array([p.intergreen for p in plan.phases])
        self.lost = np.array([plan.lost_time(p) for p in plan.phases])
        self.min_green = np.array([p.min_green for p in plan.phases])
        self.masks = [int(sum(1 << p for p in np.flatnonzero(self.served[gi]))) for gi in range(n_g)]
        self._build_permitted(plan, a_idx)
        self.packings = _packings(self.masks, n_p)

    def _build_permitted(self, plan: Plan, a_idx: dict[str, int]) -> None:
        """(group, phase) pairs where a left turn must filter through an opposing flow."""
        by_leg = {a.leg: a for a in plan.approaches}
        self.permitted: list[tuple[int, int, int, np.ndarray]] = []  # (group, phase, opposing main group, shares)
        for gi, g in enumerate(self.groups):
            if "L" not in g.movements:
                continue
            opp = by_leg.get(OPPOSITE[plan.approach(g.approach).leg])
            if opp is None:
                continue
            opp_main = [oi for oi, o in enumerate(self.groups) if o.approach == opp.name and "T" in o.movements]
            for pi, ph in enumerate(plan.phases):
                if not self.served[gi, pi]:
                    continue
                served = plan.served(ph)
                if (opp.name, "T") in served and opp.through > 0 or (opp.name, "R") in served and opp.right > 0:
                    w = np.zeros(len(plan.approaches))
                    w[a_idx[opp.name]] = (opp.through if (opp.name, "T") in served else 0.0) + (
                        opp.right if (opp.name, "R") in served else 0.0
                    )
                    self.permitted.append((gi, pi, opp_main[0] if opp_main else -1, w))

    # ------------------------------------------------------------------ timing
    def green_contributions(self, cycle: float, greens: np.ndarray) -> np.ndarray:
        """(G, P) effective green each phase gives each lane group."""
        split = np.asarray(greens, dtype=float) + self.intergreen
        return np.maximum(0.0, self.served * split[None, :] - self.last * self.lost[None, :])

    def plan_timing(self) -> tuple[float, np.ndarray]:
        return float(self.plan.cycle), np.array(self.plan.greens, dtype=float)

    # ------------------------------------------------------------------ evaluation
    def evaluate(
        self,
        flows: np.ndarray,
        cycle: float,
        greens: np.ndarray,
        t_h: float,
        initial_queue: bool = False,
        queues: bool = True,
    ) -> dict[str, np.ndarray]:
        """Evaluate flows[S, N, A] (S scenarios x N intervals x approaches, veh/h) under one timing.

        Returns arrays shaped (S, N, G) (and (G,) for green): v, s, c, x, d1, pf, d2, d3, delay and,
        with `queues`, the mean and 95th-percentile back of queue (vehicles, all lanes).
        """
        plan = self.plan
        V = np.asarray(flows, dtype=float)
        gp = self.green_contributions(cycle, greens)
        g = gp.sum(axis=1)
        v = V @ self.share.T  # (S, N, G)
        cap = np.broadcast_to(self.s_prot[:, None] * gp / cycle, v.shape + gp.shape[1:]).copy()  # (S, N, G, P)
        for gi, pi, oi, w in self.permitted:
            cap[..., gi, pi] = self._permitted_capacity(V, v, g, gp, greens, cycle, gi, pi, oi, w)
        c = cap.sum(axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.where(c > 0, v / np.where(c > 0, c, 1.0), np.where(v > 0, np.inf, 0.0))
            s_eq = np.where(g > 0, c * cycle / np.where(g > 0, g, 1.0), 0.0)
        gc = g / cycle
        pf = _pf(gc, self.rp, self.fpa, self.arrival_type)
        d1u = uniform_delay(cycle, g, x)
        d2 = incremental_delay(x, c, t_h, plan.k, plan.upstream_i)
        d2 = np.where(v > 0, d2, 0.0)
        d1 = d1u * pf
        d3 = np.zeros_like(v)
        qb = np.zeros_like(v)
        if initial_queue:
            d1, d3, qb = self._initial_queue(v, c, x, d1u, pf, gc, cycle, t_h)
        delay = d1 + d2 + d3
        out = {"v": v, "s": s_eq, "c": c, "x": x, "g": g, "d1": d1, "pf": np.broadcast_to(pf, v.shape),
               "d2": d2, "d3": d3, "delay": delay, "qb": qb}
        if queues:
            out.update(self._back_of_queue(v, c, x, s_eq, g, cycle, t_h, qb))
        return out

    def _permitted_capacity(self, V, v, g, gp, greens, cycle, gi, pi, oi, w):
        """Capacity (veh/h) lane group `gi` gets in phase `pi`, where its left turns are opposed.

        HCM 2000 Appendix C in outline: the opposing queue clears for ``g_q = y_o r_o / (1 - y_o) - t_L``;
        left turners then filter at Drew's gap-acceptance flow ``s_lt`` for ``g_u``; an exclusive
        lane also clears 2 sneakers per cycle. In a shared lane through vehicles pass freely until
        the first left turner arrives (``g_f = G exp(-a LTC^b) - t_L``), are blocked behind it until
        the opposing queue has cleared, and share the lane at ``E_L1 = s_base / s_lt`` afterwards:
        ``f_m = g_f / g + (g_u / g) / (1 + P_L (E_L1 - 1))``, at least ``2 (1 + P_L) / g``, and
        ``f_LT = (f_m + 0.91 (N - 1)) / N``.
        """
        plan = self.plan
        t_l = self.lost[pi]
        g_p = gp[gi, pi]
        if g_p <= 0:
            return np.zeros(v.shape[:-1])
        v_o = V @ w
        if oi >= 0:
            y_o = np.minimum(v[..., oi] / self.s_prot[oi], 0.99)
            r_o = max(cycle - g[oi], 0.0)
            g_q = np.clip(y_o * r_o / (1.0 - y_o) - t_l, 0.0, g_p)
        else:
            g_q = np.zeros(v.shape[:-1])
        s_lt = drew_filter_flow(v_o)
        app = plan.approach(self.groups[gi].approach)
        if self.groups[gi].movements == ("L",):
            g_u = np.maximum(0.0, g_p - g_q)
            sneak = SNEAKERS_PER_CYCLE * 3600.0 if self.last[gi, pi] else 0.0
            c_lane = (s_lt * g_u + sneak) / cycle
            return np.minimum(c_lane * self.lanes[gi], self.s_prot[gi] * g_p / cycle)
        n = self.lanes[gi]
        v_left = v[..., gi] * self.p_left[gi]
        ltc = v_left * cycle / 3600.0
        g_f = np.clip(free_green(float(greens[pi]), ltc, int(n), t_l), 0.0, g_p)
        g_u = np.maximum(0.0, g_p - np.maximum(g_q, g_f))
        e_l1 = np.maximum(1.0, app.sat_flow_base / s_lt)
        p_l = self.p_left[gi]
        if n > 1:
            p_l = np.minimum(1.0, p_l * (1.0 + (n - 1.0) * g_p / (g_f + g_u / e_l1 + 4.24)))
        f_m = g_f / g_p + (g_u / g_p) / (1.0 + p_l * (e_l1 - 1.0))
        f_m = np.clip(f_m, np.minimum(1.0, 2.0 * (1.0 + p_l) / g_p), 1.0)
        f_lt = (f_m + 0.91 * (n - 1.0)) / n
        return self.s_no_lt[gi] * f_lt * g_p / cycle

    def _initial_queue(self, v, c, x, d1u, pf, gc, cycle, t_h):
        """HCM 2000 Appendix F: carry unmet demand between consecutive intervals as Q_b.

        d1 is the saturated delay ``0.5 C (1 - g/C)`` while the initial queue is served (t) and the
        usual ``d1 PF`` for the rest of the interval; d3 comes from `initial_queue_delay`.
        """
        d1 = np.empty_like(v)
        d3 = np.zeros_like(v)
        qb_all = np.zeros_like(v)
        ds = 0.5 * cycle * (1.0 - gc)  # d1 at X = 1
        qb = np.zeros(v.shape[:1] + v.shape[2:])
        for n in range(v.shape[1]):
            xn, cn, vn = x[:, n], c[:, n], v[:, n]
            d3[:, n], t, _ = initial_queue_delay(qb, cn, xn, t_h)
            d1[:, n] = ds * t / t_h + d1u[:, n] * pf * (1.0 - t / t_h)
            qb_all[:, n] = qb
            qb = np.maximum(0.0, qb + (vn - cn) * t_h)
        return d1, d3, qb_all

    def _back_of_queue(self, v, c, x, s_eq, g, cycle, t_h, qb):
        """HCM 2000 Appendix G mean back of queue per lane, times lanes; 95th by normal approximation."""
        n = self.lanes
        gc = g / cycle
        with np.errstate(divide="ignore", invalid="ignore"):
            y = np.where(s_eq > 0, v / np.where(s_eq > 0, s_eq, 1.0), 0.0)
            y = np.minimum(y, 0.999)
            pf2 = (1.0 - self.rp * gc) * (1.0 - y) / ((1.0 - gc) * (1.0 - self.rp * y))
            pf2 = np.where(gc < 1.0, np.maximum(pf2, 0.0), 1.0)
            v_l, c_l, s_l = v / n, c / n, s_eq / n
            q1 = pf2 * (v_l * cycle / 3600.0) * (1.0 - gc) / (1.0 - np.minimum(1.0, x) * gc)
            k_b = 0.12 * self.plan.upstream_i * (s_l * g / 3600.0) ** 0.7
            ct = np.where(c_l > 0, c_l * t_h, 1.0)
            q2 = 0.25 * c_l * t_h * ((x - 1.0) + np.sqrt((x - 1.0) ** 2 + 8.0 * k_b * x / ct
                                                           + 16.0 * k_b * (qb / n) / ct**2))
        q2 = np.where((v > 0) & (c_l > 0), q2, 0.0)
        q1 = np.where(v > 0, q1, 0.0)
        q = np.maximum(q1 + q2, 0.0)
        return {"queue_mean": q * n, "queue_p95": (q + Z95 * np.sqrt(q)) * n}

    # ------------------------------------------------------------------ critical path
    def critical(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(Y, index of the critical packing) for y[..., G]."""
        totals = y @ self.packings.T.astype(float)
        best = np.argmax(totals, axis=-1)
        return np.take_along_axis(totals, best[..., None], axis=-1)[..., 0], best


def _packings(masks: list[int], n_phases: int) -> np.ndarray:
    """Sets of lane groups with pairwise disjoint phase sets (each group decided at its first phase)."""
    by_first: dict[int, list[int]] = {p: [] for p in range(n_phases)}
    for gi, m in enumerate(masks):
        if m:
            by_first[(m & -m).bit_length() - 1].append(gi)
    out: list[list[int]] = []

    def walk(p: int, used: int, chosen: list[int]) -> None:
        if len(out) > MAX_PACKINGS:
            raise ValueError("plan too complex for the critical-path search")
        if p == n_phases:
            out.append(list(chosen))
            return
        if used >> p & 1:
            walk(p + 1, used, chosen)
            return
        walk(p + 1, used, chosen)
        for gi in by_first[p]:
            if not used & masks[gi]:
                walk(p + 1, used | masks[gi], chosen + [gi])

    walk(0, 0, [])
    mat = np.zeros((len(out), len(masks)), dtype=bool)
    for k, chosen in enumerate(out):
        mat[k, chosen] = True
    return mat


# ---------------------------------------------------------------------- public API
@dataclass
class Analysis:
    """The result of `analyse`: per lane group, per approach (the OUT.json rows), per interval."""

    plan: Plan
    quantile: str
    lane_groups: pd.DataFrame
    approaches: pd.DataFrame
    intervals: pd.DataFrame
    summary: dict

    def rows(self) -> list[dict]:
        """OUT.json rows: approach, interval_start, v, c, x, delay_s, los, queue_mean_veh, queue_p95_veh."""
        df = self.approaches.copy()
        df["interval_start"] = df["interval_start"].dt.strftime("%Y-%m-%dT%H:%M:%S")
        return frame_records(df)


def frame_records(df: pd.DataFrame) -> list[dict]:
    """A frame's rows as JSON-ready dicts (plain numbers, non-finite values as None); the CLI's --json uses it."""
    out = []
    for rec in df.to_dict(orient="records"):
        clean = {}
        for k, val in rec.items():
            if isinstance(val, (float, np.floating)):
                clean[k] = None if not np.isfinite(val) else round(float(val), 4)
            elif isinstance(val, np.integer):
                clean[k] = int(val)
            elif isinstance(val, pd.Timestamp):
                clean[k] = val.strftime("%Y-%m-%dT%H:%M:%S")
            else:
                clean[k] = val
        out.append(clean)
    return out


def analyse(
    plan: Plan,
    demand: pd.DataFrame,
    quantile: str = "p50",
    initial_queue: bool = False,
    model: Model | None = None,
) -> Analysis:
    """HCM/Webster analysis of `plan` for every interval of `demand` (see module docstring)."""
    model = model or Model(plan)
    intervals, V = demand_matrix(demand, plan, quantile)
    t_h = interval_hours(demand)
    cycle, greens = model.plan_timing()
    r = model.evaluate(V[None], cycle, greens, t_h, initial_queue=initial_queue)
    r = {k: (val[0] if val.ndim == 3 else val) for k, val in r.items()}
    n_t, n_g = r["v"].shape
    y = np.where(r["s"] > 0, r["v"] / np.where(r["s"] > 0, r["s"], 1.0), 0.0)
    y_total, best = model.critical(y)
    crit = model.packings[best]  # (N, G)
    los_g = level_of_service(r["delay"], r["x"])
    lg = pd.DataFrame({
        "interval_start": np.repeat(intervals, n_g),
        "approach": np.tile([g.approach for g in model.groups], n_t),
        "lane_group": np.tile(model.group_ids, n_t),
        "lanes": np.tile(model.lanes.astype(int), n_t),
        "v": r["v"].ravel(),
        "s": r["s"].ravel(),
        "g": np.tile(r["g"], n_t),
        "g_over_c": np.tile(r["g"] / cycle, n_t),
        "c": r["c"].ravel(),
        "x": r["x"].ravel(),
        "y": y.ravel(),
        "critical": crit.ravel(),
        "d1": r["d1"].ravel(),
        "pf": r["pf"].ravel(),
        "d2": r["d2"].ravel(),
        "d3": r["d3"].ravel(),
        "delay_s": r["delay"].ravel(),
        "los": np.asarray(los_g).ravel(),
        "queue_mean_veh": r["queue_mean"].ravel(),
        "queue_p95_veh": r["queue_p95"].ravel(),
        "initial_queue_veh": r["qb"].ravel(),
    })
    # approaches: sums and flow-weighted delay over their lane groups
    n_a = len(plan.approaches)
    onehot = np.zeros((n_g, n_a))
    onehot[np.arange(n_g), model.group_approach] = 1.0
    va = r["v"] @ onehot
    vd = (r["v"] * r["delay"]) @ onehot
    plain = (r["delay"] @ onehot) / np.maximum(onehot.sum(axis=0), 1)
    delay_a = np.where(va > 0, vd / np.where(va > 0, va, 1.0), plain)
    xa = np.full((n_t, n_a), 0.0)
    for ai in range(n_a):
        cols = onehot[:, ai] > 0
        if cols.any():
            xa[:, ai] = r["x"][:, cols].max(axis=1)
    ap = pd.DataFrame({
        "approach": np.tile(plan.approach_names, n_t),
        "interval_start": np.repeat(intervals, n_a),
        "v": va.ravel(),
        "c": (r["c"] @ onehot).ravel(),
        "x": xa.ravel(),
        "delay_s": delay_a.ravel(),
        "los": np.asarray(level_of_service(delay_a, xa)).ravel(),
        "queue_mean_veh": (r["queue_mean"] @ onehot).ravel(),
        "queue_p95_veh": (r["queue_p95"] @ onehot).ravel(),
    })
    # intersection per interval
    lost = plan.total_lost_time
    v_tot = r["v"].sum(axis=1)
    delay_i = np.where(v_tot > 0, (r["v"] * r["delay"]).sum(axis=1) / np.where(v_tot > 0, v_tot, 1.0), 0.0)
    xc = y_total * cycle / max(cycle - lost, 1e-9)
    c0 = [webster_cycle(lost, float(yt), plan.cycle_min, plan.cycle_max) for yt in y_total]
    iv = pd.DataFrame({
        "interval_start": intervals,
        "v": v_tot,
        "Y": y_total,
        "L": lost,
        "xc": xc,
        "webster_cycle": c0,
        "critical_groups": [",".join(np.asarray(model.group_ids)[row]) for row in crit],
        "delay_s": delay_i,
        "los": np.asarray(level_of_service(delay_i)).ravel(),
        "delay_veh_h": (r["v"] * r["delay"]).sum(axis=1) * t_h / 3600.0,
    })
    total_v = float(v_tot.sum())
    summary = {
        "plan": plan.name,
        "quantile": quantile,
        "cycle": cycle,
        "intervals": int(n_t),
        "interval_min": float(t_h * 60.0),
        "total_lost_time_s": lost,
        "vehicles": float(total_v * t_h),
        "delay_s": float((r["v"] * r["delay"]).sum() / total_v) if total_v > 0 else 0.0,
        "delay_veh_h": float(iv["delay_veh_h"].sum()),
        "max_x": float(np.max(r["x"])) if r["x"].size else 0.0,
        "max_xc": float(np.max(xc)) if xc.size else 0.0,
        "initial_queue": bool(initial_queue),
    }
    summary["los"] = str(level_of_service(summary["delay_s"]))
    return Analysis(plan, quantile, lg, ap, iv, summary)
