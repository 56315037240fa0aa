"""A synthetic region of N signalised sites: the demo city's flow model on a metropolitan map, for scale work.

`trafficcore demo --sites N` builds it. The map is the only new part; everything that makes the demo city
realistic (weekly profiles by land use, commuting towards the centre, corridor noise with an upstream lag,
weather, holidays, venue events, parades, a test-period marathon, roadworks, lane closures, crashes, event
texts with held-out wordings, detector faults) and the counterfactual truth (`demo.DemoTruth`) come from
`trafficcore.data.demo.simulate`, run on this map.

The map ("Greater Lindenhaven", around the demo city's centre, fictional):

- an arterial grid: north-south streets and east-west avenues, 400 m apart in the centre, 550 m in the
  inner suburbs and 700 m beyond; every fourth road is an arterial (2 lanes, 3 near the centre) that goes on
  out of town, the others are collectors;
- the N grid nodes nearest the centre are the signalised sites (a roughly round city), numbered north to
  south and west to east (`S0001` ... for N = 2,000); most are crossroads with 4 approaches, edge nodes
  T-junctions unless their road goes on out of town;
- land use: a central business district (every site within 1.2 km of the centre), an industrial belt in
  the south-east suburbs, a hospital per 300 sites, retail strips on arterials, schools, and residential
  streets everywhere else; the site description says which, as in the demo city;
- the demo city's three venues (stadium, arena, park) placed around the centre; parades run on the
  collectors through the centre, the marathon on two central arterials;
- incidents (roadworks, lane closures, crashes) scale with the number of sites: N / 40 times the demo
  city's rate.

Why a separate module: the demo city's fixed map is what its docs, tests and shipped model name; the region
is a different map drawn by rules, so that any N gives a plausible city. Generation runs in float32 and
observations are handed to the store in chunks (`observation_chunks`), so 2,000 sites x 4 weeks (about
22 million readings) fit comfortably in a few GB.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import lru_cache

import numpy as np
import pandas as pd

from trafficcore.data import demo
from trafficcore.data.schema import CanonicalTables

REGION = "Greater Lindenhaven"
#: Every site within this distance of the centre is in the central business district.
CBD_RADIUS_M = 1200.0
#: Grid spacing (metres) by ring: steps 0-2 from the centre, 3-7, and beyond.
SPACING_M = (400.0, 550.0, 700.0)
ARTERIAL_EVERY = 4
MIN_SITES = 4
MAX_SITES = 20_000
#: Weeks of data when `--sites` is given without `--weeks` (the issue's 2,000 sites x 4 weeks).
DEFAULT_WEEKS = 4
_MAP_SEED = 20250902  # the map is the same for every seed, as in the demo city

_STREET_WORDS = (
    "Harbour", "Mill", "Station", "Canal", "King", "Park", "Elm", "Oak", "Birch", "Willow", "Maple", "Cedar",
    "Ash", "Beech", "Chestnut", "Alder", "Hazel", "Linden", "Poplar", "Rowan", "Juniper", "Holly", "Laurel",
    "Bridge", "Church", "Market", "Queen", "Prince", "Castle", "Abbey", "Meadow", "Orchard", "Brook", "River",
    "Dyke", "Polder", "Windmill", "Tulip", "Heron", "Falcon", "Lark", "Swan", "Garden", "Forge", "Tanner",
    "Weaver", "Baker", "Cooper", "Fisher", "Miller", "Dock", "Quay", "Lock", "Sluice", "Ferry", "Pier",
)
_STREET_SUFFIX = ("St", "Rd", "Ln", "Way", "Dr")


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _street_names(n: int) -> list[str]:
    names = [f"{w} {s}" for s in _STREET_SUFFIX for w in _STREET_WORDS]
    if n > len(names):
        raise ValueError(f"a region needs {n} north-south street names, {len(names)} available")
    return names[:n]


def _axis(n: int) -> np.ndarray:
    """Positions (metres) of n parallel roads, symmetric about the centre, spaced by ring (`SPACING_M`)."""
    half = n // 2
    gaps = [SPACING_M[0] if k < 3 else SPACING_M[1] if k < 8 else SPACING_M[2] for k in range(half)]
    pos = np.cumsum([gaps[0] / 2] + gaps[1:])
    return np.concatenate([-pos[::-1], pos])


def check_sites(n_sites: object) -> int:
    """The number of sites asked for, or a ValueError naming the allowed range."""
    if isinstance(n_sites, bool) or not isinstance(n_sites, (int, np.integer)) or not (
            MIN_SITES <= n_sites <= MAX_SITES):
        raise ValueError(f"--sites must be a whole number from {MIN_SITES} to {MAX_SITES:,}, got {n_sites!r}")
    return int(n_sites)


@lru_cache(maxsize=4)
def layout(n_sites: int) -> demo.Layout:
    """The region's map for N sites (deterministic: the same for every seed)."""
    n = check_sites(n_sites)
    rng = np.random.default_rng([_MAP_SEED, n])
    side = 2 * math.ceil(math.sqrt(n * 4 / math.pi) / 2 + 1)  # even: the centre lies between two roads
    xs, ys = _axis(side), _axis(side)
    cx, cy = np.meshgrid(np.arange(side), np.arange(side))
    cx, cy = cx.ravel(), cy.ravel()
    dist = np.hypot(xs[cx], 1.1 * ys[cy])  # a slightly wide city
    keep = np.lexsort((cx, cy, dist))[:n]  # the n nodes nearest the centre
    order = keep[np.lexsort((cx[keep], -cy[keep]))]  # north to south, west to east (as in the demo city)
    col, row = cx[order], cy[order]
    xy = np.c_[xs[col], ys[row]]
    grid = [(float(c), float(r)) for c, r in zip(col, row, strict=True)]

    ns_names, ew_names = _street_names(side), [f"{_ordinal(r + 1)} Ave" for r in range(side)]
    mid = side // 2
    corridors = [demo.Corridor(ns_names[c], "NS", c, np.array([0.0, 1.0]), (c - mid) % ARTERIAL_EVERY == 2)
                 for c in range(side)]
    corridors += [demo.Corridor(ew_names[r], "EW", r, np.array([1.0, 0.0]), (r - mid) % ARTERIAL_EVERY == 2)
                  for r in range(side)]
    at = {(int(c), int(r)): s for s, (c, r) in enumerate(zip(col, row, strict=True))}
    node_corridors = [[int(c), side + int(r)] for c, r in zip(col, row, strict=True)]
    legs = []
    for s, (c, r) in enumerate(zip(col.tolist(), row.tolist(), strict=True)):
        for ci in node_corridors[s]:
            corridors[ci].nodes.append(s)
        legs.extend(_legs(s, c, r, at, corridors, side))
    used = [i for i, cor in enumerate(corridors) if cor.nodes]
    for cor in corridors:
        cor.nodes.sort(key=lambda s: float(xy[s] @ cor.axis))
        cor.pos_km = {s: float(xy[s] @ cor.axis) / 1000.0 for s in cor.nodes}

    land_use = _land_use(xy, col, row, corridors, side, rng)
    venue_xy = _venues(xs, ys, xy)
    width = max(2, len(str(n)))
    site_ids = [f"S{s + 1:0{width}d}" for s in range(n)]
    sites, site_ll = demo.sites_frame(grid, xy, land_use, node_corridors, corridors, legs, rng, site_ids, venue_xy,
                                       label=f"region {REGION}")
    corridor_at = {(cor.orient, cor.index): i for i, cor in enumerate(corridors)}
    return demo.finish_layout(
        grid, xy, land_use, corridors, node_corridors, legs, sites, site_ll, rng,
        venue_xy=venue_xy, corridor_at=corridor_at, parade_routes=_parade_routes(corridors, used, mid, side),
        marathon_routes=_marathon_routes(corridors, used, mid, side), marathon_xy=venue_xy["park"],
        incident_scale=n / 40.0,
    )


def _legs(s: int, c: int, r: int, at: dict, corridors: list, side: int) -> list[dict]:
    """A node's approaches: towards each neighbouring site, and out of town where the road goes on."""
    spec = [("N", (0, 1), c, r + 1, c), ("E", (1, 0), c + 1, r, side + r),
            ("S", (0, -1), c, r - 1, c), ("W", (-1, 0), c - 1, r, side + r)]
    out, missing = [], []
    for a, u, nc, nr, corr in spec:
        leg = {"site": s, "approach": a, "u": np.asarray(u, float), "corr": corr, "from": a}
        if (nc, nr) in at or corridors[corr].arterial or (c + r) % 2 == 0:  # a neighbour, or the road goes on
            out.append(leg)
        else:
            missing.append(leg)
    while len(out) < 3 and missing:  # a corner: its roads go on out of town
        out.append(missing.pop(0))
    return sorted(out, key=lambda g: "NESW".index(g["approach"]))


def _land_use(xy: np.ndarray, col: np.ndarray, row: np.ndarray, corridors: list, side: int,
              rng: np.random.Generator) -> list[str]:
    """Centre, industrial belt, hospitals, retail on arterials, schools; the rest residential."""
    n = len(xy)
    dist = np.hypot(xy[:, 0], xy[:, 1])
    angle = np.degrees(np.arctan2(xy[:, 1], xy[:, 0]))
    reach = float(dist.max()) or 1.0
    use = np.array(["residential"] * n, dtype=object)
    on_arterial = np.array([corridors[c].arterial or corridors[side + r].arterial
                            for c, r in zip(col, row, strict=True)])
    u = rng.random(n)
    use[(dist > 0.45 * reach) & (angle > -75) & (angle < -15) & (u < 0.7)] = "industrial"
    use[(use == "residential") & on_arterial & (rng.random(n) < 0.3)] = "retail"
    use[(use == "residential") & (rng.random(n) < 0.12)] = "school"
    free = np.flatnonzero((use == "residential") & (dist > CBD_RADIUS_M))
    n_hosp = max(1, n // 300)
    if free.size:
        use[rng.choice(free, size=min(n_hosp, free.size), replace=False)] = "hospital"
    use[dist <= min(CBD_RADIUS_M, 0.5 * reach)] = "centre"
    return use.tolist()


def _venues(xs: np.ndarray, ys: np.ndarray, xy: np.ndarray) -> dict[str, np.ndarray]:
    """Stadium, arena and park in the middle of a block, at set bearings around the centre."""
    reach = max(float(np.hypot(xy[:, 0], xy[:, 1]).max()), 1500.0)
    want = {"stadium": (0.45, -0.35), "arena": (-0.45, 0.15), "park": (-0.2, 0.45)}
    mx, my = (xs[:-1] + xs[1:]) / 2, (ys[:-1] + ys[1:]) / 2
    out = {}
    for key, (fx, fy) in want.items():
        x = mx[np.argmin(np.abs(mx - fx * reach))]
        y = my[np.argmin(np.abs(my - fy * reach))]
        out[key] = np.array([x, y])
    return out


def _through_centre(corridors: list, used: list[int], orient: str, arterial: bool, mid: int, side: int) -> list[int]:
    """Corridors of one orientation and class that have sites, nearest the centre first."""
    base = 0 if orient == "NS" else side
    found = [i for i in used if corridors[i].orient == orient and corridors[i].arterial == arterial]
    return sorted(found, key=lambda i: (abs(i - base - mid + 0.5), i))


def _parade_routes(corridors: list, used: list[int], mid: int, side: int) -> tuple[int, int]:
    ns = _through_centre(corridors, used, "NS", False, mid, side)
    ew = _through_centre(corridors, used, "EW", False, mid, side)
    return ns[0], ew[0]


def _marathon_routes(corridors: list, used: list[int], mid: int, side: int) -> tuple[tuple[int, int], ...]:
    ns = _through_centre(corridors, used, "NS", True, mid, side) or _through_centre(corridors, used, "NS", False,
                                                                                    mid, side)
    ew = _through_centre(corridors, used, "EW", True, mid, side) or _through_centre(corridors, used, "EW", False,
                                                                                    mid, side)
    pairs = [(a, b) for a in ns[:2] for b in ew[:2]]
    return tuple(pairs[:3])


def source(n_sites: int, seed: int) -> str:
    """The dataset's `source`: names the generator, and not the demo city (whose shipped model does not apply)."""
    return f"trafficcore synthetic region '{REGION}' ({n_sites} sites) seed={seed}"


def simulate(n_sites: int, seed: int = 0, weeks: int = DEFAULT_WEEKS, start: str = "2025-09-01"
             ) -> tuple[CanonicalTables, np.ndarray, demo.DemoTruth]:
    """Tables without observations, the (T, D) float32 counts (NaN = missing row), and the truth."""
    lay = layout(check_sites(n_sites))
    return demo.simulate(lay, seed, weeks, start, title=f"region '{REGION}'", source=source(n_sites, seed),
                         dtype=np.float32)


def generate_with_truth(n_sites: int, seed: int = 0, weeks: int = DEFAULT_WEEKS, start: str = "2025-09-01"
                        ) -> tuple[CanonicalTables, demo.DemoTruth]:
    """The region with its observations as one frame (small N; `trafficcore demo --sites` writes in chunks)."""
    tables, counts, truth = simulate(n_sites, seed, weeks, start)
    tables.observations = pd.concat(list(observation_chunks(counts, truth.times, truth.detector_ids)),
                                    ignore_index=True)
    return tables, truth


def observation_chunks(counts: np.ndarray, times: pd.DatetimeIndex, detector_ids: list[str],
                       rows_per_chunk: int = 2_000_000) -> Iterator[pd.DataFrame]:
    """Long observations (detector_id, ts, value), detector blocks at a time, sorted by detector then time."""
    n_t, n_d = counts.shape
    per = max(1, rows_per_chunk // max(n_t, 1))
    ts = times.to_numpy()
    ids = np.array(detector_ids, dtype=object)
    for d0 in range(0, n_d, per):
        block = counts[:, d0:d0 + per].T  # (detectors, times)
        vals = block.reshape(-1)
        keep = ~np.isnan(vals)
        yield pd.DataFrame({
            "detector_id": np.repeat(ids[d0:d0 + per], n_t)[keep],
            "ts": np.tile(ts, block.shape[0])[keep],
            "value": vals[keep].astype(np.float64),
        })


def split_dates(tables: CanonicalTables) -> tuple[pd.Timestamp, pd.Timestamp]:
    """(train_end, val_end): the region keeps the demo city's split (the last 2 weeks test, 1 week before it
    validation); held-out event wordings and the marathon fall in the test weeks, as there."""
    return demo.split_dates(tables)
