"""An incident report an operator can hand on: the whole result as JSON, the forecasts and signal changes as CSV.

JSON (`to_json`, schema ``trafficcore.incident/1``) holds everything `incident_effect` returned and reads back
into the same object (`from_json`); the CSV files are the two tables a person reads: the forecasts with and
without the incident per detector and interval (`forecast_csv`), and the plan change and delays per signal
(`signals_csv`).
"""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd

from trafficcore.errors import DataError
from trafficcore.live.incident import (
    FORECAST_COLUMNS,
    SITE_COLUMNS,
    TEXT_COLUMNS,
    TIME_COLUMNS,
    Incident,
    IncidentEffect,
    iso,
    tidy,
)
from trafficcore.live.incident_signals import SignalChange


def to_dict(result: IncidentEffect) -> dict:
    """The whole report as JSON-ready data (`from_dict` reads it back)."""
    return {
        "schema": "trafficcore.incident/1",
        "dataset": result.dataset,
        "incident": result.incident.to_dict(),
        "issued_at": iso(result.issued_at),
        "model": result.model,
        "reads_text": result.reads_text,
        "span_min": result.span_min,
        "radius_km": result.radius_km,
        "notes": list(result.notes),
        "seconds": dict(result.seconds),
        "sites": _records(result.sites),
        "signals": [s.to_dict() for s in result.signals],
        "forecast": _records(result.forecast),
    }


def _records(df: pd.DataFrame) -> list[dict]:
    out = []
    for rec in df.to_dict(orient="records"):
        clean = {}
        for k, v in rec.items():
            if isinstance(v, pd.Timestamp):
                clean[k] = iso(v)
            elif isinstance(v, (float, np.floating)):
                clean[k] = None if not np.isfinite(v) else float(v)
            elif isinstance(v, (np.integer,)):
                clean[k] = int(v)
            elif isinstance(v, np.bool_):
                clean[k] = bool(v)
            else:
                clean[k] = v
        out.append(clean)
    return out


def _typed_frame(records: list[dict], columns: list[str]) -> pd.DataFrame:
    """A frame of `columns` from records, with the dtypes `incident_effect` produces."""
    df = pd.DataFrame(records, columns=columns)
    for c in columns:
        if c in ("horizon_min", "lead_min", "detectors"):
            df[c] = df[c].astype(int)
        elif c == "reads_event":
            df[c] = df[c].astype(bool)
        elif c not in TEXT_COLUMNS + TIME_COLUMNS:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    return tidy(df)


def from_dict(d: dict) -> IncidentEffect:
    """An IncidentEffect from `to_dict`'s output (a report handed on, read back)."""
    if d.get("schema") != "trafficcore.incident/1":
        raise DataError("<incident report>", f"not an incident report (schema {str(d.get('schema'))[:40]!r})",
                        column="schema")
    return IncidentEffect(
        d["dataset"], Incident.from_dict(d["incident"]), pd.Timestamp(d["issued_at"]), d["model"],
        bool(d["reads_text"]), int(d["span_min"]), float(d["radius_km"]),
        _typed_frame(d["sites"], SITE_COLUMNS), _typed_frame(d["forecast"], FORECAST_COLUMNS),
        [SignalChange(**s) for s in d["signals"]], list(d["notes"]), dict(d.get("seconds", {})))


def to_json(result: IncidentEffect) -> str:
    return json.dumps(to_dict(result), indent=2)


def from_json(text: str) -> IncidentEffect:
    return from_dict(json.loads(text))


def forecast_csv(result: IncidentEffect) -> str:
    """The forecasts with and without the incident, one row per detector and interval."""
    return result.forecast.to_csv(index=False)


def read_forecast_csv(text_or_path) -> pd.DataFrame:
    """`forecast_csv` read back (a path or the CSV text)."""
    src = io.StringIO(text_or_path) if isinstance(text_or_path, str) and "\n" in text_or_path else text_or_path
    df = pd.read_csv(src, dtype={"site_id": str, "detector_id": str, "approach": str})
    return _typed_frame(df.to_dict(orient="records"), FORECAST_COLUMNS)


SIGNAL_CSV_COLUMNS = ["site_id", "name", "plan_source", "cycle_before", "cycle_after", "greens_before",
                      "greens_after", "delay_without_s", "delay_before_s", "delay_after_s", "los_without", "los_before",
                      "los_after", "max_x_before", "max_x_after", "robust_before_veh_h", "robust_after_veh_h",
                      "demand_change_pct"]


def signals_frame(result: IncidentEffect) -> pd.DataFrame:
    """One row per affected signal: the plan change (cycle, greens) and delay before and after."""
    rows = []
    for s in result.signals:
        g = s.greens()
        rows.append({**{k: v for k, v in s.to_dict().items() if k in SIGNAL_CSV_COLUMNS},
                     "cycle_before": s.cycle_before, "cycle_after": s.cycle_after,
                     "greens_before": "; ".join(f"{p} {x:g} s" for p, x in zip(g["phase"], g["green_before"],
                                                                              strict=True)),
                     "greens_after": "; ".join(f"{p} {x:g} s" for p, x in zip(g["phase"], g["green_after"],
                                                                             strict=True))})
    return pd.DataFrame(rows, columns=SIGNAL_CSV_COLUMNS)


def signals_csv(result: IncidentEffect) -> str:
    return signals_frame(result).to_csv(index=False)


def summary_lines(result: IncidentEffect) -> list[str]:
    """The report in a few lines of plain text (the command line prints them)."""
    i = result.incident
    out = [f"{i.kind} at {i.site_id or '-'} ({i.event_id}): {i.text}",
           f"  {i.start:%a %d %b %Y %H:%M} to {i.end:%H:%M}; forecast issued {result.issued_at:%a %d %b %H:%M} for "
           f"{result.span_min} min by {result.model}"]
    out += [f"  note: {n}" for n in result.notes]
    out.append("sites (P50 summed over the view, with / without the incident):")
    for s in result.sites.to_dict(orient="records"):
        out.append(f"  {s['site_id']:<8} {str(s['name'])[:28]:<28} {s['role']:<14} {s['km']:5.2f} km  "
                   f"{s['with']:9.0f} / {s['without']:9.0f}  {s['change_pct']:+6.1f}%")
    if result.signals:
        out.append("signals (robust plan for the demand with the incident; mean delay at P50):")
    for s in result.signals:
        out.append(f"  {s.site_id:<8} {plan_change_text(s)}")
    out.append(f"took {result.seconds.get('total', float('nan')):.1f} s")
    return out


def plan_change_text(s: SignalChange) -> str:
    """One signal's recommendation in words: the cycle and greens before -> after, and the delay it buys."""
    g = s.greens()
    delays = (f"{s.delay_without_s:.1f} s/veh without the incident, {s.delay_before_s:.1f} with it "
              f"(LOS {s.los_before})")
    if s.recommended == s.current:
        greens = ", ".join(f"{p} {a:g} s" for p, a in zip(g["phase"], g["green_before"], strict=True))
        return f"keep the plan in force (cycle {s.cycle_before:g} s: {greens}); delay {delays}"
    greens = ", ".join(f"{p} {a:g} → {b:g} s" for p, a, b in zip(g["phase"], g["green_before"], g["green_after"],
                                                                 strict=True))
    return (f"retime: cycle {s.cycle_before:g} → {s.cycle_after:g} s, greens {greens}; delay {delays}, "
            f"{s.delay_after_s:.1f} retimed (LOS {s.los_after}); expected delay over P10-P90 "
            f"{s.robust_before_veh_h:.1f} → {s.robust_after_veh_h:.1f} veh-h")
