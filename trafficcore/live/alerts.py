"""Alerts: where the street departs from the forecast, where a signal will fail, where a detector lies.

Four kinds, each computed from what is stored (readings, live forecasts) as of a time `at`:

- `band_exceedance`: a detector's readings fell outside the forecast P10-P90 band for `band_n`
  consecutive readings (default 3). One reading outside an 80 % band happens one time in five by
  design; three in a row is rare enough (about 1 in 125 for independent errors) to point at an
  incident or a detector fault. The band compared is the live forecast issued closest before each
  reading (shortest horizon), the one an operator was looking at.
- `los_ef`: a signalised site's newest live forecast, run through the HCM analysis of its default
  plan (`trafficcore.signal.site`: approaches on compass legs, two phases, 90 s cycle), predicts
  level of service E or F on an approach within the horizon. The plan is a stated default, not the
  site's real timing, so the message says so.
- `stuck`: the same non-zero reading `stuck_k` times in a row (default 8: two hours of 15-minute
  counts); real traffic counts are never that flat, a frozen detector is.
- `zero`: zeros for `zero_k` readings in a row (default 4) at times when the detector's typical
  profile (same day type and time of day over the previous four weeks) expects at least
  `zero_typical` (default 5) per interval, so an empty night road does not raise an alert.

Three more watch the service itself (issue 16; thresholds in `trafficcore.config.MONITOR_THRESHOLDS`):

- `accuracy_decay`: the serving model's MAE over the trailing 24 hours (its served forecasts scored as
  readings arrived, `trafficcore.live.monitor`; mean over horizons) has been above the validation MAE
  the model recorded by more than `decay_margin` for `decay_hours` hours in a row. A 24-hour window
  holds a whole daily cycle, so rush hours (larger errors in vehicles) do not read as decay.
- `coverage`: the share of readings inside the served P10-P90 bands over the trailing 24 hours has been
  outside [`coverage_low`, `coverage_high`] for `coverage_hours` hours: the band no longer means 80 %.
- `detector_drift`: a detector's readings over the last `drift_window_min` minutes, against its own
  typical day (the `profile_days` before today), left the range that ratio spanned over those days
  (its `drift_quantile` quantiles) by more than `drift_margin`: a level shift (a halved count, a
  lane lost or double counted), or readings that hardly vary any more (flat-lining). A detector
  already reported `stuck` or `zero` is not reported again as drifting.

Runs are the trailing ones: a run must reach the detector's newest reading at or before `at` to be
current; a fault that already ended is history, not an alert.
"""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd

from trafficcore import config
from trafficcore.data.panel import Panel
from trafficcore.data.profile import slot_means
from trafficcore.data.store import Store
from trafficcore.errors import DataError

ALERT_COLUMNS = ["kind", "severity", "detector_id", "site_id", "start_ts", "end_ts", "message"]
KINDS = ("band_exceedance", "los_ef", "stuck", "zero", "accuracy_decay", "coverage", "detector_drift")
#: The kinds that watch the service (live accuracy, band calibration, detectors' data), issue 16.
MONITOR_KINDS = ("accuracy_decay", "coverage", "detector_drift")
DEFAULTS = {
    "band_n": 3,  # consecutive readings outside P10-P90
    "stuck_k": 8,  # identical non-zero readings in a row
    "zero_k": 4,  # zero readings in a row where traffic is expected
    "zero_typical": 5.0,  # typical reading above which a zero is suspicious
    "lookback": 96,  # readings examined per detector
    "profile_days": 28,  # history the typical profile is taken from
    **config.MONITOR_THRESHOLDS,
}
#: Thresholds that count something (hours, readings, minutes): whole numbers of at least 1.
_COUNTS = ("band_n", "stuck_k", "zero_k", "lookback", "decay_hours", "coverage_hours", "rolling_hours", "min_hours",
           "drift_window_min", "profile_days")
SEVERITY_ORDER = {"critical": 0, "warning": 1}


def empty_alerts() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="datetime64[ns]" if c.endswith("_ts") else object)
                         for c in ALERT_COLUMNS})


def current_alerts(store: Store, dataset: str, at=None, kinds=None, **thresholds) -> pd.DataFrame:
    """Alerts of every kind (or of `kinds` only) as of `at` (default: the newest reading), most severe first.

    `thresholds` override `DEFAULTS` (band_n, stuck_k, zero_k, zero_typical, lookback, profile_days, and the
    monitoring thresholds of `trafficcore.config.MONITOR_THRESHOLDS`).
    """
    from trafficcore.live import drift
    from trafficcore.live.ingest import live_panel

    unknown = sorted(set(thresholds) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown alert threshold(s) {unknown}; choose from {sorted(DEFAULTS)}")
    wanted = set(KINDS if kinds is None else kinds)
    if wanted - set(KINDS):
        raise ValueError(f"unknown alert kind(s) {sorted(wanted - set(KINDS))}; choose from {list(KINDS)}")
    th = {**DEFAULTS, **thresholds}
    for k in _COUNTS:
        if int(th[k]) < 1:
            raise ValueError(f"{k} must be at least 1, got {th[k]!r}")
    if not 0 <= float(th["drift_quantile"]) < 0.5:
        raise ValueError(f"drift_quantile must be in [0, 0.5), got {th['drift_quantile']!r}")
    try:
        panel = live_panel(store, dataset)
    except KeyError:
        raise DataError(dataset, f"unknown dataset {dataset!r}", column="dataset") from None
    if not len(panel.times):
        return empty_alerts()
    end = _end_row(panel, at)  # exclusive
    start = max(0, end - int(th["lookback"]))
    jobs = {
        "band_exceedance": lambda: _band(store, panel, start, end, int(th["band_n"])),
        "stuck": lambda: _stuck(panel, start, end, int(th["stuck_k"])),
        "zero": lambda: _zero(panel, start, end, int(th["zero_k"]), float(th["zero_typical"]),
                              int(th["profile_days"])),
        "los_ef": lambda: _los(store, panel, end),
        "detector_drift": lambda: drift.detector_drift(store, panel, end, th),
    }
    frames = [job() for kind, job in jobs.items() if kind in wanted]
    if wanted & {"accuracy_decay", "coverage"}:
        acc = drift.accuracy_alerts(store, panel, end, th)
        frames.append(acc[acc["kind"].isin(wanted)] if not acc.empty else acc)
    frames = [f for f in frames if not f.empty]
    if not frames:
        return empty_alerts()
    out = pd.concat(frames, ignore_index=True)[ALERT_COLUMNS]
    faulty = set(out.loc[out["kind"].isin(["stuck", "zero"]), "detector_id"])
    out = out[~((out["kind"] == "detector_drift") & out["detector_id"].isin(faulty))]  # said once, as the fault
    order = out["severity"].map(SEVERITY_ORDER).fillna(9)
    return out.assign(_o=order).sort_values(["_o", "kind", "site_id", "detector_id"], kind="stable").drop(
        columns="_o").reset_index(drop=True)


def _end_row(panel: Panel, at) -> int:
    """Panel rows < the returned one are at or before `at`."""
    if at is None:
        return len(panel.times)
    pos = (pd.Timestamp(at) - panel.times[0]) // panel.interval + 1
    return int(min(max(pos, 0), len(panel.times)))


def alert_row(kind, severity, det, site, t0, t1, message) -> dict:
    """One alert as a row of ALERT_COLUMNS."""
    return {"kind": kind, "severity": severity, "detector_id": det, "site_id": site,
            "start_ts": pd.Timestamp(t0), "end_ts": pd.Timestamp(t1), "message": message}


def trailing_run(flags: np.ndarray) -> int:
    """Length of the run of True at the end of `flags`."""
    if not len(flags) or not flags[-1]:
        return 0
    falses = np.flatnonzero(~flags)
    return len(flags) - (int(falses[-1]) + 1 if len(falses) else 0)


def _per_detector(panel: Panel, start: int, end: int):
    """(detector_id, site_id, rows, values) of each detector's finite readings in [start, end)."""
    vals = panel.values[start:end]
    for j, (det, site) in enumerate(zip(panel.detectors["detector_id"], panel.detectors["site_id"], strict=True)):
        ok = np.isfinite(vals[:, j])
        if ok.any():
            rows = start + np.flatnonzero(ok)
            yield j, str(det), (None if pd.isna(site) else str(site)), rows, vals[ok, j].astype(float)


def fmt_time(t) -> str:
    """A time as alert messages write it."""
    return pd.Timestamp(t).strftime("%Y-%m-%d %H:%M")


# ------------------------------------------------------------------------------------------ detectors
def _stuck(panel: Panel, start: int, end: int, k: int) -> pd.DataFrame:
    out = []
    for _, det, site, rows, v in _per_detector(panel, start, end):
        same = np.concatenate([[False], v[1:] == v[:-1]]) & (v != 0)
        n = trailing_run(same) + 1 if same[-1] else 1
        if v[-1] != 0 and n >= k:
            t0, t1 = panel.times[rows[-n]], panel.times[rows[-1]]
            out.append(alert_row("stuck", "warning", det, site, t0, t1,
                              f"{det}: the same reading {v[-1]:g} {n} times in a row since {fmt_time(t0)}; "
                              "the detector may be frozen"))
    return pd.DataFrame(out)


def _zero(panel: Panel, start: int, end: int, k: int, typical_min: float, profile_days: int) -> pd.DataFrame:
    per_day = int(pd.Timedelta(days=1) / panel.interval)
    hist = np.arange(max(0, start - profile_days * per_day), start)
    if not len(hist):
        return pd.DataFrame()
    table = slot_means(panel, hist)  # (D, 2, slots)
    from trafficcore.data.profile import daytype_slot

    daytype, slot = daytype_slot(panel, np.arange(start, end))
    out = []
    for j, det, site, rows, v in _per_detector(panel, start, end):
        typical = table[j, daytype[rows - start], slot[rows - start]]
        expected = np.isfinite(typical) & (typical >= typical_min)
        zero = v == 0
        run = trailing_run(zero)
        if run == 0:
            continue
        n_expected = int(expected[len(v) - run:].sum())
        if n_expected >= k:
            t0, t1 = panel.times[rows[-run]], panel.times[rows[-1]]
            typ = float(np.nanmean(typical[len(v) - run:][expected[len(v) - run:]]))
            sev = "critical" if n_expected >= 2 * k else "warning"
            out.append(alert_row("zero", sev, det, site, t0, t1,
                              f"{det}: zero for {run} readings since {fmt_time(t0)} where about {typ:.0f} per interval "
                              "is typical; the detector may be down or the road closed"))
    return pd.DataFrame(out)


# ------------------------------------------------------------------------------------------ forecast band
def _bands(store: Store, panel: Panel, t0, t1) -> pd.DataFrame:
    """Per (detector, target_ts) in [t0, t1]: the live forecast issued closest before it."""
    return store.query(
        """SELECT detector_id, target_ts, arg_min(p10, horizon_min * 1e9 - epoch(issued_at)) AS p10,
                  arg_min(p90, horizon_min * 1e9 - epoch(issued_at)) AS p90
           FROM forecasts WHERE dataset = ? AND run_id LIKE 'live:%' AND target_ts BETWEEN ? AND ?
           GROUP BY detector_id, target_ts""",
        [panel.dataset, pd.Timestamp(t0).to_pydatetime(), pd.Timestamp(t1).to_pydatetime()],
    )


def _band(store: Store, panel: Panel, start: int, end: int, n: int) -> pd.DataFrame:
    if end <= start:
        return pd.DataFrame()
    bands = _bands(store, panel, panel.times[start], panel.times[end - 1])
    if bands.empty:
        return pd.DataFrame()
    # the bands as (rows, detectors) arrays aligned with the panel window
    lo = np.full((end - start, len(panel.detectors)), np.nan)
    hi = lo.copy()
    col = pd.Index(panel.detectors["detector_id"]).get_indexer(bands["detector_id"].astype(object))
    row = ((pd.DatetimeIndex(bands["target_ts"]) - panel.times[start]) // panel.interval).to_numpy()
    ok = (col >= 0) & (row >= 0) & (row < end - start)
    lo[row[ok], col[ok]] = bands["p10"].to_numpy(float)[ok]
    hi[row[ok], col[ok]] = bands["p90"].to_numpy(float)[ok]
    out = []
    for j, det, site, rows, v in _per_detector(panel, start, end):
        lo_j, hi_j = lo[rows - start, j], hi[rows - start, j]
        has = np.isfinite(lo_j) & np.isfinite(hi_j)
        if not has.any():
            continue
        v, lo_j, hi_j, times = v[has], lo_j[has], hi_j[has], panel.times[rows[has]]
        outside = (v < lo_j) | (v > hi_j)
        run = trailing_run(outside)
        if run >= n:
            above = int((v[-run:] > hi_j[-run:]).sum())
            side = "above" if above * 2 >= run else "below"
            sev = "critical" if run >= 2 * n else "warning"
            out.append(alert_row("band_exceedance", sev, det, site, times[-run], times[-1],
                              f"{det}: {run} readings in a row {side} the forecast P10-P90 band since "
                              f"{fmt_time(times[-run])} (last {v[-1]:g} vs {lo_j[-1]:.0f}-{hi_j[-1]:.0f}); "
                              "possible incident or detector fault"))
    return pd.DataFrame(out)


# ------------------------------------------------------------------------------------------ signals
def _latest_forecast(store: Store, panel: Panel, end: int) -> pd.DataFrame:
    """Each detector's newest live forecast issued at or before the end of the examined readings."""
    limit = (panel.times[end - 1] + panel.interval) if end > 0 else panel.times[0]
    return store.query(  # newest issue time per detector first, then only its rows ranked (see latest_forecasts)
        """WITH newest AS (SELECT detector_id, max(issued_at) AS issued_at FROM forecasts
                           WHERE dataset = $1 AND run_id LIKE 'live:%' AND issued_at <= $2 GROUP BY detector_id)
           SELECT f.detector_id, f.issued_at, f.target_ts, f.horizon_min, f.p10, f.p50, f.p90 FROM forecasts f
           JOIN newest n ON n.detector_id = f.detector_id AND n.issued_at = f.issued_at
           WHERE f.dataset = $1 AND f.run_id LIKE 'live:%'
           QUALIFY row_number() OVER (PARTITION BY f.detector_id, f.horizon_min ORDER BY f.run_id DESC) = 1""",
        [panel.dataset, pd.Timestamp(limit).to_pydatetime()],
    )


#: (store file, dataset, forecast fingerprint) -> LOS alerts; (store file, dataset, detectors) -> site plans.
_LOS_CACHE: dict[tuple, pd.DataFrame] = {}
_PLANS: dict[tuple, dict] = {}
_CACHE_MAX = 16


_CACHE_LOCK = threading.Lock()


def _remember(cache: dict, key: tuple, value):
    with _CACHE_LOCK:
        if len(cache) >= _CACHE_MAX:
            cache.pop(next(iter(cache)), None)
        cache[key] = value
    return value


def _site_plans(store: Store, panel: Panel) -> dict:
    """site -> (approaches, phases, plan) of every site the default plan can describe (cached per detector table)."""
    from trafficcore.signal.site import build_plan, default_phases, site_approaches

    det = panel.detectors
    key = (str(store.path), panel.dataset, int(pd.util.hash_pandas_object(det.astype(str), index=False).sum()))
    if key in _PLANS:
        return _PLANS[key]
    plans = {}
    for site in det["site_id"].dropna().unique():
        approaches, _ = site_approaches(panel, site)
        if approaches.empty:
            continue
        phases = default_phases(approaches)
        try:
            plans[str(site)] = (approaches, phases, build_plan(approaches, phases, name=f"default plan of {site}"))
        except (DataError, ValueError):
            continue  # a site the default plan cannot describe (one approach only, ...) gets no LOS alert
    return _remember(_PLANS, key, plans)


def _los(store: Store, panel: Panel, end: int) -> pd.DataFrame:
    """LOS E/F alerts from the newest live forecasts; cached per forecast (the page polls faster than data come)."""
    fc = _latest_forecast(store, panel, end)
    if fc.empty:
        return pd.DataFrame()
    fc["detector_id"] = fc["detector_id"].astype(object)
    key = (str(store.path), panel.dataset, int(pd.util.hash_pandas_object(fc, index=False).sum()))
    if key not in _LOS_CACHE:
        _remember(_LOS_CACHE, key, _los_compute(store, panel, fc))
    return _LOS_CACHE[key].copy()


def _demands(plans: dict, fc: pd.DataFrame, step_min: int) -> dict[str, pd.DataFrame]:
    """site -> approach demand. One `site_demand` call for every site at once (approach names prefixed by the
    site), as the per-call cost dominates; per site where the sites' forecasts do not line up."""
    from trafficcore.signal.site import site_demand

    sep = "\x1f"
    combined = pd.concat([a.assign(approach=f"{site}{sep}" + a["approach"].astype(str))
                          for site, (a, _, _) in plans.items()], ignore_index=True)
    try:
        both = site_demand(fc, combined, step_min=step_min)
    except (DataError, ValueError):
        out = {}
        for site, (a, _, _) in plans.items():
            try:
                out[site] = site_demand(fc, a, step_min=step_min)
            except (DataError, ValueError):
                continue  # e.g. detectors of one site forecast at different issue times
        return out
    parts = both["approach"].str.split(sep, n=1, expand=True)
    both = both.assign(site=parts[0], approach=parts[1])
    return {site: g.drop(columns="site").reset_index(drop=True) for site, g in both.groupby("site", sort=False)}


def _los_compute(store: Store, panel: Panel, fc: pd.DataFrame) -> pd.DataFrame:
    from trafficcore.signal.analysis import analyse

    step_min = int(panel.interval / pd.Timedelta(minutes=1))
    have = set(fc["detector_id"])
    plans = {site: p for site, p in _site_plans(store, panel).items()
             if all(d in have for ds in p[0]["detectors"] for d in str(ds).split(", ") if d)}
    if not plans:
        return pd.DataFrame()
    demands = _demands(plans, fc, step_min)
    out = []
    for site, demand in demands.items():
        approaches, phases, plan = plans[site]
        try:
            res = analyse(plan, demand).approaches
        except (DataError, ValueError):
            continue
        bad = res[res["los"].isin(["E", "F"])]
        for app, g in bad.groupby("approach", sort=False):
            worst = g.loc[g["delay_s"].idxmax()]
            letter = "F" if (g["los"] == "F").any() else "E"
            dets_app = approaches.loc[approaches["approach"] == app, "detectors"].iloc[0]
            t0, t1 = g["interval_start"].min(), g["interval_start"].max()
            phases_txt = f"{len(phases)} phase{'' if len(phases) == 1 else 's'}, {plan.cycle:g} s cycle"
            out.append(alert_row(
                "los_ef", "critical" if letter == "F" else "warning", dets_app, str(site), t0, t1,
                f"site {site}, approach {app}: level of service {letter} predicted {fmt_time(t0)}-{fmt_time(t1)} "
                f"(v/c up to {g['x'].max():.2f}, delay up to {worst['delay_s']:.0f} s/veh) under the default "
                f"plan ({phases_txt}; not the site's real timing)"))
    return pd.DataFrame(out)
