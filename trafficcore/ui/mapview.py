"""The Forecast map at region scale: areas aggregated when zoomed out, one area's sites when zoomed in.

Why: a few hundred circles draw at once, but a region of 2,000 sites with their roads and tooltips makes
a deck of megabytes that a small machine takes seconds to send and draw, and at city zoom the circles
overlap into a smear nobody can read. Above `DIRECT_LIMIT` sites the map therefore opens on a grid of
square areas, each drawn as one circle that sums its sites' forecasts (sized and coloured like a site), and
a click on an area (or choosing a site in the sidebar) zooms to it: the area and a margin of one cell
around it, where every site is drawn as usual. At most `DIRECT_LIMIT` sites the map is as it always was.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

#: Sites drawn one by one up to this many; above it the city view is aggregated into areas.
DIRECT_LIMIT = 400
#: About how many areas the aggregated city view shows at most, and about how many sites an area holds.
TARGET_AREAS = 150
SITES_PER_AREA = 12
_KM_PER_DEG_LAT = 111.32


def aggregated(n_sites: int) -> bool:
    """Whether the map opens on areas rather than sites."""
    return n_sites > DIRECT_LIMIT


def area_grid(sites: pd.DataFrame, target: int | None = None) -> tuple[float, float, float, float]:
    """(lat0, lon0, dlat, dlon): a grid of square cells over the sites' extent with about `target` cells
    (default: a dozen sites a cell, at most `TARGET_AREAS` cells)."""
    if target is None:
        target = min(TARGET_AREAS, max(4, len(sites) // SITES_PER_AREA))
    lat, lon = sites["lat"].to_numpy(float), sites["lon"].to_numpy(float)
    lat0, lon0 = float(np.nanmin(lat)), float(np.nanmin(lon))
    k = math.cos(math.radians(float(np.nanmean(lat))))
    h_km = max((float(np.nanmax(lat)) - lat0) * _KM_PER_DEG_LAT, 0.1)
    w_km = max((float(np.nanmax(lon)) - lon0) * _KM_PER_DEG_LAT * k, 0.1)
    side_km = max(math.sqrt(h_km * w_km / max(target, 1)), 0.2)
    return lat0, lon0, side_km / _KM_PER_DEG_LAT, side_km / (_KM_PER_DEG_LAT * k)


def area_of(lat, lon, grid: tuple[float, float, float, float]) -> np.ndarray:
    """The area key ("A<row>-<col>") of points on the grid."""
    lat0, lon0, dlat, dlon = grid
    r = np.floor((np.asarray(lat, float) - lat0) / dlat).astype(int)
    c = np.floor((np.asarray(lon, float) - lon0) / dlon).astype(int)
    return np.array([f"A{a}-{b}" for a, b in zip(r, c, strict=True)], dtype=object)


def area_totals(totals: pd.DataFrame, grid: tuple[float, float, float, float], measure: str = "volume"
                ) -> pd.DataFrame:
    """Per area: its sites' forecast and band (summed for volume, mean for speed), the typical value over
    the sites that have one, the change against it, and the forecast-weighted centre; in the columns of
    `forecasts.site_totals`, so `forecasts.style_sites` colours areas the way it colours sites.
    """
    if totals.empty:
        return totals.assign(sites=pd.Series(dtype=int))
    t = totals.assign(area=area_of(totals["lat"], totals["lon"], grid))
    how = "sum" if measure == "volume" else "mean"
    g = t.groupby("area", sort=True)
    w = t["forecast"].clip(lower=0).fillna(0) + 1e-9
    out = pd.DataFrame({
        "forecast": g["forecast"].agg(how), "p10": g["p10"].agg(how), "p90": g["p90"].agg(how),
        "approaches": g["approaches"].sum(), "sites": g["site_id"].count(),
        "lat": (t["lat"] * w).groupby(t["area"]).sum() / w.groupby(t["area"]).sum(),
        "lon": (t["lon"] * w).groupby(t["area"]).sum() / w.groupby(t["area"]).sum(),
        "busiest": t.sort_values("forecast", ascending=False).groupby("area")["name"].first(),
    })
    known = t[t["typical"].notna()]
    kg = known.groupby("area")
    out["typical"] = kg["typical"].agg(how)
    fk = kg["forecast"].agg(how)
    out["change_pct"] = 100.0 * (fk - out["typical"]) / out["typical"].where(out["typical"] > 0)
    out = out.reset_index().rename(columns={"area": "site_id"})
    out["name"] = [f"{n} sites around {b}" if n > 1 else str(b) for n, b in
                   zip(out["sites"], out["busiest"].fillna(""), strict=True)]
    return out.drop(columns="busiest")


def area_bounds(key: str, grid: tuple[float, float, float, float], margin: int = 1
                ) -> tuple[float, float, float, float]:
    """(lat_min, lat_max, lon_min, lon_max) of an area and `margin` cells around it."""
    lat0, lon0, dlat, dlon = grid
    r, c = (int(x) for x in key[1:].split("-", 1))
    return (lat0 + (r - margin) * dlat, lat0 + (r + 1 + margin) * dlat,
            lon0 + (c - margin) * dlon, lon0 + (c + 1 + margin) * dlon)


def inside(df: pd.DataFrame, bounds: tuple[float, float, float, float], lat: str = "lat", lon: str = "lon"
           ) -> pd.Series:
    """Rows whose point lies within `bounds`."""
    a, b, c, d = bounds
    return (df[lat] >= a) & (df[lat] < b) & (df[lon] >= c) & (df[lon] < d)


def roads_inside(roads: pd.DataFrame, bounds: tuple[float, float, float, float]) -> pd.DataFrame:
    """Road links with at least one end inside `bounds`."""
    if roads.empty:
        return roads
    keep = inside(roads, bounds, "src_lat", "src_lon") | inside(roads, bounds, "dst_lat", "dst_lon")
    return roads[keep]
