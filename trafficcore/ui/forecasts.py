"""Forecast frames shaped for people: typical values, per-site totals, map colours, approach tables.

"Typical" means the mean of the same weekday and time of day over the previous few weeks, read
only from the data (never from the model), so "change against typical" is a model-independent
yardstick a planner already thinks in ("busier than a normal Tuesday 8:00").
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from trafficcore.data.panel import Panel

WEEK = pd.Timedelta(days=7)
#: colour stops (r, g, b): low -> high volume, and lower -> typical -> higher.
VOLUME_STOPS = [(255, 237, 160), (254, 178, 76), (240, 59, 32), (128, 0, 38)]
#: Diverging, saturated on both sides and a mid grey (not a pale one) at "typical", so a circle's colour
#: reads on a white canvas and on the light basemap; the ramp runs over sqrt(|change| / limit), so a
#: 5 % change is already a clear blue or orange (a linear ramp left most of a normal day pale grey).
CHANGE_STOPS = [(5, 48, 97), (33, 102, 172), (67, 147, 195), (128, 128, 128), (230, 120, 60), (200, 40, 40),
                (103, 0, 31)]
CHANGE_LIMIT_PCT = 40.0
#: Colour of a site with no typical value (nothing to compare against): light, outlined, unlike "typical".
NO_TYPICAL_RGB = (225, 225, 225)
#: Fill opacity of sites other than the selected one (about 60 %), and of every site when none is selected.
DIM_ALPHA = 155
FULL_ALPHA = 235


def unit(panel: Panel, measure: str = "volume") -> str:
    """How values of a measure read on screen, e.g. "veh / 15 min"."""
    if measure == "speed":
        return "km/h"
    minutes = int(panel.interval / pd.Timedelta(minutes=1))
    return f"veh / {minutes} min"


def main_measure(panel: Panel) -> str:
    """The measure a map shows: volume where the dataset has it, else speed."""
    measures = set(panel.detectors["measure"].dropna())
    return "volume" if "volume" in measures or not measures else sorted(measures)[0]


def typical_values(panel: Panel, detector_ids, target_ts, weeks: int = 4) -> np.ndarray:
    """Mean of the same weekday and time over the `weeks` weeks before each target (NaN if never seen)."""
    cols = np.array([panel.column(d) for d in detector_ids], dtype=np.int64)
    rows = ((pd.DatetimeIndex(target_ts) - panel.times[0]) // panel.interval).to_numpy(dtype=np.int64)
    week = int(WEEK / panel.interval)
    stack = []
    for k in range(1, weeks + 1):
        r = rows - k * week
        ok = (r >= 0) & (r < len(panel.times))
        vals = np.full(len(rows), np.nan, dtype=np.float64)
        vals[ok] = panel.values[r[ok], cols[ok]]
        stack.append(vals)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN column: an honest NaN
        return np.nanmean(np.vstack(stack), axis=0)


def with_context(fc: pd.DataFrame, panel: Panel, weeks: int = 4) -> pd.DataFrame:
    """The Forecast frame plus site, approach, measure, typical value and observed value (where known)."""
    det = panel.detectors.set_index("detector_id")
    out = fc.copy()
    out["site_id"] = det.loc[out["detector_id"], "site_id"].to_numpy()
    out["approach"] = det.loc[out["detector_id"], "approach"].fillna("").to_numpy()
    out["measure"] = det.loc[out["detector_id"], "measure"].fillna("volume").to_numpy()
    out["typical"] = typical_values(panel, out["detector_id"], out["target_ts"], weeks)
    out["observed"] = observed_values(panel, out["detector_id"], out["target_ts"])
    return out


def observed_values(panel: Panel, detector_ids, ts) -> np.ndarray:
    """Readings at the given interval starts (NaN where missing or outside the data)."""
    cols = np.array([panel.column(d) for d in detector_ids], dtype=np.int64)
    rows = ((pd.DatetimeIndex(ts) - panel.times[0]) // panel.interval).to_numpy(dtype=np.int64)
    ok = (rows >= 0) & (rows < len(panel.times))
    out = np.full(len(rows), np.nan, dtype=np.float64)
    out[ok] = panel.values[rows[ok], cols[ok]]
    return out


def site_totals(fcx: pd.DataFrame, panel: Panel, horizon: int, measure: str = "volume") -> pd.DataFrame:
    """Per site at one horizon: the forecast (sum of approaches for volume, mean for speed) against typical."""
    part = fcx[(fcx["horizon_min"] == horizon) & (fcx["measure"] == measure)]
    how = "sum" if measure == "volume" else "mean"
    # a site's typical total only counts approaches whose typical value is known, on both sides
    known = part["typical"].notna()
    g = part.groupby("site_id")
    agg = pd.DataFrame(
        {
            "forecast": g["p50"].agg(how),
            "p10": g["p10"].agg(how),
            "p90": g["p90"].agg(how),
            "approaches": g["detector_id"].count(),
            "target_ts": g["target_ts"].first(),
        }
    )
    kg = part[known].groupby("site_id")
    agg["typical"] = kg["typical"].agg(how)
    agg["forecast_known"] = kg["p50"].agg(how)
    agg["change_pct"] = 100.0 * (agg["forecast_known"] - agg["typical"]) / agg["typical"].where(agg["typical"] > 0)
    sites = panel.sites.set_index("site_id")[["name", "lat", "lon"]]
    out = agg.join(sites, how="left").reset_index()
    return out.dropna(subset=["lat", "lon"]).drop(columns="forecast_known")


def _ramp(x: np.ndarray, stops: list[tuple[int, int, int]]) -> np.ndarray:
    """Linear colour ramp over stops for x in [0, 1] (NaN -> grey)."""
    x = np.clip(np.nan_to_num(np.asarray(x, dtype=float), nan=-1.0), -1.0, 1.0)
    stops_a = np.array(stops, dtype=float)
    pos = np.linspace(0, 1, len(stops))
    rgb = np.stack([np.interp(np.clip(x, 0, 1), pos, stops_a[:, i]) for i in range(3)], axis=1)
    rgb[x < 0] = NO_TYPICAL_RGB
    return rgb.round().astype(int)


def change_position(change_pct) -> np.ndarray:
    """Where a % change sits on the diverging ramp, 0..1 with 0.5 = typical (square-root scale; NaN stays NaN)."""
    c = np.clip(np.asarray(change_pct, dtype=float), -CHANGE_LIMIT_PCT, CHANGE_LIMIT_PCT) / CHANGE_LIMIT_PCT
    return 0.5 + 0.5 * np.sign(c) * np.sqrt(np.abs(c))


def style_sites(totals: pd.DataFrame, mode: str, selected: str | None = None) -> tuple[pd.DataFrame, list]:
    """Add colour, radius, outline and tooltip text per site; returns the frame and its legend.

    mode "volume": colour by forecast value; mode "change": colour by % against typical. Radius
    always follows the forecast value (square root, so area reads as volume).
    """
    out = totals.copy()
    vmax = float(np.nanpercentile(out["forecast"], 95)) if len(out) and out["forecast"].notna().any() else 1.0
    vmax = vmax if vmax > 0 else 1.0
    if mode == "change":
        rgb = _ramp(change_position(out["change_pct"].to_numpy(dtype=float)), CHANGE_STOPS)
        ticks = [-CHANGE_LIMIT_PCT, -20.0, -5.0, 0.0, 5.0, 20.0, CHANGE_LIMIT_PCT]
        legend = [(f"{t:+.0f}%" if t else "typical", _hex(_ramp(change_position([t]), CHANGE_STOPS)[0]))
                  for t in ticks]
        legend.append(("no typical value", _hex(NO_TYPICAL_RGB)))
    else:
        rgb = _ramp(out["forecast"].to_numpy(dtype=float) / vmax, VOLUME_STOPS)
        legend = [(f"{f * vmax:,.0f}", _hex(_ramp([f], VOLUME_STOPS)[0])) for f in (0.0, 0.33, 0.66, 1.0)]
    is_sel = (out["site_id"] == selected).to_numpy()
    # the selected site stands out by its outline and full colour; the others stay readable at ~60 %
    alpha = np.where(is_sel, 255, DIM_ALPHA if selected is not None and is_sel.any() else FULL_ALPHA)
    out["color"] = [[int(r), int(g), int(b), int(a)] for (r, g, b), a in zip(rgb, alpha, strict=True)]
    size = np.sqrt(np.clip(out["forecast"].fillna(0).to_numpy(dtype=float), 0, None) / vmax)
    out["radius"] = (5 + 14 * np.clip(size, 0, 1.3)).round(1)
    out["line"] = [[20, 20, 20, 255] if s else [90, 90, 90, 200] for s in is_sel]
    out["line_width"] = np.where(is_sel, 3, 1)
    out["forecast_txt"] = [f"{v:,.0f} (P10-P90 {a:,.0f}-{b:,.0f})" for v, a, b in
                           zip(out["forecast"], out["p10"], out["p90"], strict=True)]
    out["typical_txt"] = [f"{v:,.0f}" if pd.notna(v) else "n/a" for v in out["typical"]]
    out["change_txt"] = [f"{v:+.0f}%" if pd.notna(v) else "n/a" for v in out["change_pct"]]
    out["name"] = out["name"].fillna(out["site_id"])
    return out, legend


def _hex(rgb) -> str:
    r, g, b = (int(v) for v in list(rgb)[:3])
    return f"#{r:02x}{g:02x}{b:02x}"


def legend_html(title: str, legend: list[tuple[str, str]]) -> str:
    """A compact legend as HTML built only from our own labels and colours (no user text)."""
    import html

    items = "".join(
        f'<span style="display:inline-flex;align-items:center;margin-right:12px">'
        f'<span style="width:12px;height:12px;border-radius:6px;background:{c};display:inline-block;'
        f'margin-right:4px;border:1px solid #8884"></span>{html.escape(label)}</span>'
        for label, c in legend
    )
    return f'<div style="font-size:0.85rem"><b>{html.escape(title)}</b>&nbsp;&nbsp;{items}</div>'


def road_lines(panel: Panel) -> pd.DataFrame:
    """Links between adjacent sites (from the dataset's adjacency) as line segments for the map."""
    adj = panel.adjacency
    cols = ["src_lon", "src_lat", "dst_lon", "dst_lat"]
    if adj.empty:
        return pd.DataFrame(columns=cols)
    pos = panel.sites.set_index("site_id")[["lat", "lon"]]
    pairs = adj[adj["src"].isin(pos.index) & adj["dst"].isin(pos.index)][["src", "dst"]]
    pairs = pairs[pairs["src"] < pairs["dst"]].drop_duplicates()
    if pairs.empty:
        return pd.DataFrame(columns=cols)
    s, d = pos.loc[pairs["src"]], pos.loc[pairs["dst"]]
    return pd.DataFrame(
        {"src_lon": s["lon"].to_numpy(), "src_lat": s["lat"].to_numpy(), "dst_lon": d["lon"].to_numpy(),
         "dst_lat": d["lat"].to_numpy()}
    ).dropna()


def approach_table(fcx: pd.DataFrame, site_id: str, horizon: int) -> pd.DataFrame:
    """One row per approach of a site at one horizon: P10/P50/P90, typical, change, and the observed value.

    Seven short columns, so the table fits beside the busiest sites at 1366 px (the target time is in the
    page's caption, the detector id in the approach when it has no compass direction).
    """
    part = fcx[(fcx["site_id"] == site_id) & (fcx["horizon_min"] == horizon)]
    out = pd.DataFrame(
        {
            "approach": part["approach"].replace("", np.nan).fillna(part["detector_id"]),
            "P10": part["p10"].round(0),
            "P50": part["p50"].round(0),
            "P90": part["p90"].round(0),
            "typical": part["typical"].round(0),
            "change %": (100 * (part["p50"] - part["typical"]) / part["typical"].where(part["typical"] > 0)).round(0),
            "observed": part["observed"].round(0),
        }
    )
    return out.reset_index(drop=True)


def horizons_of(fc: pd.DataFrame, low: int = 15, high: int = 120) -> list[int]:
    """The forecast's horizons inside [low, high] minutes, for the horizon slider."""
    hs = sorted(int(h) for h in fc["horizon_min"].unique())
    inside = [h for h in hs if low <= h <= high]
    return inside or hs
