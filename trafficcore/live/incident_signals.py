"""The signal side of incident response: which signals the incident touches, and how the robust optimiser would
retime them for the demand it brings.

Reuses the signal lab's public functions (`trafficcore.signal`): a site's approaches and default plan
(`signal.site`), its forecast demand (`site_demand`), the HCM analysis (`analyse`) and the robust optimiser
(`optimise` over P10/P50/P90 with Swanson's weights), exactly as the Signal what-if page calls them.

For each affected signal three delays are reported, all at P50 demand over the whole view: the plan in
force without the incident (what the day would have been), the same plan with it ("before"), and the
recommended plan with it ("after"). The plan in force is the one the caller gives (the Signal what-if
page's plan for that site, when an engineer made one). Else it is not known (the store holds no signal
timings), and the plan the same robust optimiser tunes to the forecast *without* the incident stands in
for it, starting from the site's default phases (compass legs, two phases): comparing against the
untuned 90 s default instead would credit the incident with every second the default plan wastes. So the
recommended change is the incident's doing alone, and is "no change" where the incident does not move the
optimum. The report says which plan was used.

Affected signals: the incident's own site when it can be timed, then the other shown sites whose
forecast the incident changes, largest change first, at most `max_signals` (each optimisation takes a
fraction of a second, twice per signal where the plan in force is tuned here).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pandas as pd

from trafficcore.data.panel import Panel
from trafficcore.errors import DataError
from trafficcore.signal.plan import Plan

#: A site whose P50 total over the view moves by less than this share is not retimed (unless it is the incident's).
MIN_CHANGE_PCT = 0.5
ROBUST = ("p10", "p50", "p90")
#: Where no plan is given: the plan in force is taken to be the one the same optimiser tunes to the traffic
#: expected without the incident, so that the recommended change is the incident's doing alone.
TUNED = "tuned to the forecast without the incident (the site's real timing is not known)"


@dataclass
class SignalChange:
    """The robust optimiser's answer at one signal: the current plan and the recommended one on the new demand.

    Delays are HCM control delay at P50 demand over the whole view, s/veh; `robust_*` are the optimiser's
    objective (expected total delay over P10/P50/P90, veh-h) for the current and the recommended plan.
    """

    site_id: str
    name: str
    plan_source: str  # "default plan" or what the caller said the plan is
    current: dict  # plan JSON (trafficcore.signal.plan/1)
    recommended: dict
    delay_without_s: float
    delay_before_s: float
    delay_after_s: float
    los_without: str
    los_before: str
    los_after: str
    max_x_before: float
    max_x_after: float
    robust_before_veh_h: float
    robust_after_veh_h: float
    demand_change_pct: float  # P50 demand with vs without, over the view

    @property
    def cycle_before(self) -> float:
        return float(self.current["cycle"])

    @property
    def cycle_after(self) -> float:
        return float(self.recommended["cycle"])

    def greens(self) -> pd.DataFrame:
        """Phase by phase: movements, green now and recommended (s)."""
        return pd.DataFrame([{"phase": a["name"], "movements": " ".join(a["movements"]), "green_before": a["green"],
                              "green_after": b["green"]}
                             for a, b in zip(self.current["phases"], self.recommended["phases"], strict=True)])

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def affected_signals(result, max_signals: int) -> list[str]:
    """Sites to retime: the incident's own, then the others the incident changes most (see module docstring)."""
    sites = result.sites
    own = [s for s in sites.loc[sites["role"] == "incident site", "site_id"]]
    others = sites[(sites["role"] != "incident site") & (sites["change_pct"].abs() >= MIN_CHANGE_PCT)]
    others = others.assign(_a=others["change_pct"].abs()).sort_values("_a", ascending=False)
    return (own + list(others["site_id"]))[: max(0, int(max_signals))]


def _demand(forecast: pd.DataFrame, approaches: pd.DataFrame, step_min: int, which: str) -> pd.DataFrame:
    from trafficcore.data.schema import FORECAST_COLUMNS
    from trafficcore.signal.site import site_demand

    fc = forecast.rename(columns={f"{q}_{which}": q for q in ROBUST})
    return site_demand(fc[FORECAST_COLUMNS], approaches, step_min)


def signal_changes(panel: Panel, result, plans: dict, max_signals: int = 4) -> tuple[list, list[str]]:
    """SignalChange per affected signal, and notes on the signals that could not be timed."""
    from trafficcore.signal.analysis import analyse
    from trafficcore.signal.optimise import optimise
    from trafficcore.signal.site import build_plan, default_phases, site_approaches

    if max_signals <= 0:
        return [], []
    step_min = int(panel.interval / pd.Timedelta(minutes=1))
    names = result.sites.set_index("site_id")["name"]
    changes, notes, skipped = [], [], []
    if panel.detectors["measure"].fillna("volume").eq("volume").sum() == 0:
        return [], ["This dataset measures speeds, not vehicle counts: signal timing needs counts."]
    for site in affected_signals(result, max_signals):
        approaches, _ = site_approaches(panel, site)
        if approaches.empty:
            skipped.append(str(names.get(site, site)))
            continue
        try:
            f = result.forecast[result.forecast["site_id"] == site]
            d_with = _demand(f, approaches, step_min, "with")
            d_without = _demand(f, approaches, step_min, "without")
            if site in plans:
                plan, source = plans[site], "plan given for this site"
                if not isinstance(plan, Plan):
                    plan = Plan.from_dict(plan, source=f"plan for {site}")
            else:
                default = build_plan(approaches, default_phases(approaches), name=f"plan of {site}")
                plan = optimise(default, d_without, quantiles=ROBUST).plan
                source = TUNED
            before = analyse(plan, d_with, "p50").summary
            without = analyse(plan, d_without, "p50").summary
            opt = optimise(plan, d_with, quantiles=ROBUST)
            after = analyse(opt.plan, d_with, "p50").summary
        except (DataError, ValueError) as exc:
            skipped.append(f"{names.get(site, site)} ({exc})")
            continue
        v_with, v_without = float(d_with["p50"].sum()), float(d_without["p50"].sum())
        changes.append(SignalChange(
            str(site), str(names.get(site, site)), source, plan.to_dict(), opt.plan.to_dict(),
            float(without["delay_s"]), float(before["delay_s"]), float(after["delay_s"]), str(without["los"]),
            str(before["los"]), str(after["los"]), float(before["max_x"]), float(after["max_x"]),
            float(opt.current_delay_veh_h), float(opt.delay_veh_h),
            100.0 * (v_with - v_without) / v_without if v_without > 0 else 0.0))
    if skipped:
        notes.append("Not timed (no vehicle-count approaches on compass legs, or the plan could not be built): "
                     + ", ".join(skipped) + ".")
    return changes, notes
