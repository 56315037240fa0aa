"""The demo city: a synthetic, clearly labelled default dataset that exercises every part of the product.

Lindenhaven is a *fictional* city of 40 signalised intersections placed on a plausible map (around
52.04 N, 5.11 E). It exists so that the dashboard, the models and the evaluation have data with known
structure before a user imports anything real. Nothing here is measured traffic: `DatasetInfo.synthetic`
is True and every description says so.

Why it is built the way it is:

- The map (sites, detectors, venues, land use) is the same for every seed, so screenshots, docs and
  tests can name places; the seed drives everything that varies: traffic noise, weather, events, faults.
- Flows are composed from effects a forecaster should be able to learn, each from a visible cause:
  time-of-day and day-type profiles, commuting towards a centre (approach geometry), land use (the site
  description text), corridor-wide shocks with an upstream-to-downstream lag (adjacency), rain (weather
  table), public holidays and planned or unplanned events (events table, free text).
- Event *size* (attendance, lanes blocked, hours of work) is written only in the free text, in many
  phrasings. A documented subset of phrasings, and the whole kind "marathon", appear only in the test
  period (`HELD_OUT`, `HELD_OUT_KINDS`), so that the value of reading text, and of generalising to
  unseen wording, can be measured. Whether an event used a held-out phrasing is derived from its text
  (`phrasing_index`, `held_out_mask`) rather than stored in a column a model could read.
- Real detectors fail: runs of zeros, stuck values and missing rows are injected and recorded
  (`generate_with_truth`) so that cleaning and robustness can be tested against the truth.

Everything is vectorised numpy over a (time x detector) array; eight weeks take a second or two.
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd

from trafficcore.data.schema import CanonicalTables, DatasetInfo

CITY = "Lindenhaven"
CENTRE_LAT = 52.043
CENTRE_LON = 5.112
TIMEZONE = "Europe/Amsterdam"
INTERVAL_S = 900
SOURCE = "demo"
#: The last TEST_WEEKS weeks are the test period, the VALIDATION_WEEKS before them validation.
TEST_WEEKS = 2
VALIDATION_WEEKS = 1
MIN_WEEKS = TEST_WEEKS + VALIDATION_WEEKS + 1

SLOTS_PER_DAY = 96
_STEP = pd.Timedelta(seconds=INTERVAL_S)
_DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_DAY_ABBR = tuple(d[:3] for d in _DAY_NAMES)
_MONTH_ABBR = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
#: Monthly mean temperature (deg C) of a temperate North Sea climate, for the weather generator.
_MONTH_TEMP = (3.5, 4.0, 6.5, 9.8, 13.4, 16.2, 18.3, 18.0, 15.2, 11.2, 7.2, 4.4)

# ---------------------------------------------------------------------------------------------- the map
#: North-south roads, west to east (grid column 0..5), and east-west avenues, south to north (row 0..5).
NS_ROADS = ("Harbour Rd", "Mill St", "Station Rd", "Canal St", "King St", "Park Rd")
EW_ROADS = ("1st Ave", "2nd Ave", "3rd Ave", "4th Ave", "5th Ave", "6th Ave")
DIAGONAL_ROAD = "Old Dyke Rd"
_ARTERIAL_NS = {1, 3}
_ARTERIAL_EW = {1, 3}
_DX, _DY = 650.0, 550.0  # metres between grid columns / rows
_XC, _YC = 2.45, 2.55  # the city centre in grid units (between Station Rd/Canal St and 3rd/4th Ave)
#: Old Dyke Rd runs south-west to north-east along y = x + 0.5 (grid units), crossing grid roads between nodes.
_DIAGONAL_NODES = ((0.0, 0.5), (0.5, 1.0), (1.0, 1.5), (1.5, 2.0))


@dataclass(frozen=True)
class Venue:
    """A place where planned events happen; `near` is how site descriptions mention it."""

    key: str
    name: str
    x: float
    y: float
    near: str


VENUES = {
    "stadium": Venue("stadium", "Lindenhaven Stadium", 4.55, 1.45, "near the stadium (Lindenhaven Stadium)"),
    "arena": Venue("arena", "Harbour Arena", 0.45, 3.5, "near Harbour Arena (concert hall)"),
    "park": Venue("park", "Linden Park", 1.5, 4.55, "beside Linden Park (festival grounds)"),
}

#: Primary land use of particular grid nodes (x, y); the rest are residential. Land use shapes the
#: daily profile of a site's approaches and is written into the site description.
_LAND_USE = {
    (2, 2): "centre", (3, 2): "centre", (2, 3): "centre", (3, 3): "centre",
    (1, 1): "school", (4, 4): "school", (0, 2): "school", (3, 5): "school", (5, 3): "school", (1.5, 2.0): "school",
    (1, 3): "retail", (4, 3): "retail", (2, 1): "retail", (3, 4): "retail", (0.5, 1.0): "retail",
    (4, 0): "industrial", (5, 0): "industrial", (5, 1): "industrial",
    (2, 4): "hospital",
}
_USE_TEXT = {
    "centre": "City centre: offices, shops and cafes; busy on weekdays, quiet on Sundays.",
    "school": "Residential streets with a primary school on the corner (school run 08:00-08:30 and 15:00).",
    "retail": "Retail strip with supermarkets and street parking; busiest on Saturdays.",
    "industrial": "Industrial estate: warehouses and a distribution centre; early shifts and lorries from 06:00.",
    "hospital": "Next to Lindenhaven General Hospital (staff shifts change at 07:00, 15:00 and 23:00).",
}
_RESIDENTIAL_TEXT = (
    "Residential: terraced housing and a corner shop.",
    "Residential: apartment blocks with on-street parking.",
    "Quiet residential streets with a small park.",
    "Residential: semi-detached homes, commuters drive towards the centre in the morning.",
)
_COMPASS = {"N": "north", "E": "east", "S": "south", "W": "west", "NE": "north-east", "SW": "south-west"}
_BOUND = {"N": "southbound", "E": "westbound", "S": "northbound", "W": "eastbound",
          "NE": "south-westbound", "SW": "north-eastbound"}

# ------------------------------------------------------------------------------------------ the text
#: Templates per event kind. Slots: {venue} {road} {road2} {site} {size} {start} {end} {day}
#: {start_date} {end_date} {impact} {hours} {artist} {home} {away} {festival} {parade} {race} {name}.
PHRASINGS: dict[str, list[str]] = {
    "concert": [
        "Concert: {artist} live at {venue}, doors {start}, about {size} tickets sold",
        "{artist} play {venue} tonight ({day}) from {start} to {end}; {size} fans expected",
        "Sold-out show at {venue}: {artist}, {size} visitors, ends around {end}",
        "{venue} hosts {artist} on {day} evening, {start}-{end}, expected attendance {size}",
        "Live music: {artist} at {venue} {start}-{end}. Capacity crowd of {size}.",
        "Gig alert - {artist} @ {venue}, {size} people, show starts {start}",
        "Expect busy roads near {venue}: {artist} concert, {size} attendees, {start} until {end}",
        "{day}: {artist} in concert at {venue} ({size} spectators), finishing {end}",
        "Music event at {venue} with {artist}; roughly {size} concert-goers between {start} and {end}",
        "Heads up for drivers around {venue} - {size} fans arriving for {artist} before {start}",
    ],
    "football match": [
        "{home} v {away} at {venue}, kick-off {start}, crowd of {size} expected",
        "Football: {home} host {away} at {venue} on {day} ({start}); {size} supporters",
        "Match day at {venue}: {home} vs {away}, {start} kick-off, attendance around {size}",
        "{size} fans expected at {venue} for {home} - {away}, kick-off {start}, final whistle about {end}",
        "Home game for {home} against {away} at {venue}; {start}-{end}, {size} tickets sold",
        "Stadium event: {home} play {away}, {venue}, {day} {start}, expected crowd {size}",
        "Big match at {venue} - {home} vs {away} ({size} spectators), heavy traffic before {start} and after {end}",
        "{away} visit {venue} to face {home}; kick-off {start}, {size} in attendance",
        "Derby day: {home} v {away} at {venue} with {size} supporters, game ends around {end}",
    ],
    "festival": [
        "{festival} at {venue}, {start}-{end}, around {size} visitors expected",
        "Festival day: {festival} in {venue} from {start} until {end}; {size} people",
        "{venue} busy all day ({start}-{end}) with {festival}, expected attendance {size}",
        "{festival} returns to {venue} on {day}: {size} visitors, open {start} to {end}",
        "Open-air event {festival} at {venue}, {size} guests, gates {start}, closes {end}",
        "Crowds of about {size} expected at {venue} for {festival} ({start}-{end})",
        "{day} {start}-{end}: {festival}, {venue}. Organisers expect {size} visitors",
        "Weekend festival {festival} draws {size} people to {venue}; open {start}, last entry {end}",
    ],
    "parade": [
        "{parade} along {road} from {start} to {end}; {size} spectators, road closed",
        "Parade: {road} closed {start}-{end} for the {parade}, about {size} onlookers",
        "{parade} on {day}: {road} shut to traffic between {start} and {end}, {size} expected",
        "Road closure for {parade} on {road} ({start}-{end}); crowds of {size}",
        "{size} people expected to line {road} for the {parade}, {start} until {end}",
        "Procession ({parade}) on {road}, {day} {start}-{end}. No through traffic; {size} spectators",
        "{road} becomes the route of the {parade} from {start}; around {size} watching, reopens {end}",
    ],
    "marathon": [
        "{race}: {road} and {road2} closed {start}-{end}, {size} runners",
        "City marathon on {day} - no traffic on {road} or {road2} between {start} and {end}; {size} participants",
        "{size} runners in the {race}; expect full closures of {road} and {road2} from {start} to {end}",
        "Running event ({race}) closes {road} and {road2}, {start}-{end}, {size} athletes plus spectators",
        "Marathon day: {road} / {road2} shut {start} until {end} for {size} runners",
        "{race} on {day} morning: roads closed along {road} and {road2} ({start}-{end}), {size} entrants",
    ],
    "road works": [
        "Roadworks on {road} at {site}: {impact} from {start_date} to {end_date}, {hours}",
        "{road} ({site}): resurfacing, {impact}, {start_date}-{end_date}, {hours}",
        "Utility works at {site}, {impact} on {road} until {end_date} ({hours})",
        "Construction on {road} near {site} {start_date} to {end_date}: {impact}, {hours}",
        "Water main repairs at {site} - {impact} on {road}, {hours}, ends {end_date}",
        "Planned works: {road} at {site}, {impact} {hours}, {start_date} until {end_date}",
        "Road maintenance on {road}, junction {site}: {impact} ({start_date}-{end_date}, {hours})",
        "Expect delays at {site}: {impact} on {road} for works, {start_date} to {end_date}, {hours}",
        "Gas network works on {road} by {site} from {start_date}; {impact}, {hours}, until {end_date}",
    ],
    "lane closure": [
        "Lane closure on {road} at {site}, {start}-{end}: {impact}",
        "{road} near {site}: {impact} between {start} and {end}",
        "Temporary lane closure {site} ({road}) {start} to {end}, {impact}",
        "Maintenance crew on {road} at {site} from {start} until {end}; {impact}",
        "{impact} on {road} ({site}) {day} {start}-{end} for tree cutting",
        "Short-term closure: {road} at {site}, {impact}, {start}-{end}",
        "Crane lift at {site}: {impact} on {road} from {start} to {end}",
        "{day} {start}-{end}: {impact}, {road} by {site}, cable works",
    ],
    "crash": [
        "Crash on {road} at {site}: {impact}",
        "Collision at {site} on {road} reported {start}, {impact}",
        "Accident {road} near {site} - {impact}",
        "Incident at {site}: vehicles involved on {road}, {impact}",
        "Two-car collision on {road} by {site} at {start}, {impact}",
        "Emergency services at {site} after a crash on {road}; {impact}",
        "Reports of an accident on {road} ({site}) since {start}, {impact}",
        "Lorry involved in collision at {site}, {road}: {impact}",
        "Multi-vehicle crash on {road} at the {site} junction - {impact}",
    ],
    "public holiday": [
        "Public holiday: {name}. Offices and schools closed",
        "{name} ({day}) - bank holiday, most businesses closed",
        "{day} is {name}, a public holiday; schools and offices shut",
        "Holiday: {name}, expect Sunday-like traffic",
        "{name}: national day off, shops open late morning",
        "No school or office hours on {day} for {name}",
    ],
}

#: Indices into PHRASINGS[kind] used only for events that start in the test period.
HELD_OUT: dict[str, list[int]] = {
    "concert": [7, 8, 9],
    "football match": [6, 7, 8],
    "festival": [5, 6, 7],
    "parade": [4, 5, 6],
    "marathon": [0, 1, 2, 3, 4, 5],
    "road works": [6, 7, 8],
    "lane closure": [5, 6, 7],
    "crash": [6, 7, 8],
    "public holiday": [4, 5],
}
#: Kinds that occur only in the test period (every one of their phrasings is held out).
HELD_OUT_KINDS = ("marathon",)
#: Probability that a test-period event of a kind with held-out phrasings uses one of them.
HELD_OUT_SHARE = 0.5

#: Severity classes: capacity lost at the site, and the words the text uses for each.
_IMPACT = {
    "road works": {
        0.3: ["one lane closed", "lane narrowing", "a single lane closed"],
        0.55: ["two lanes closed", "reduced to one lane each way", "heavy restrictions"],
        0.85: ["road closed", "full closure", "closed to through traffic"],
    },
    "lane closure": {
        0.25: ["one lane closed", "nearside lane closed", "lane restriction"],
        0.5: ["two lanes closed", "single-file traffic", "only one lane open"],
    },
    "crash": {
        0.3: ["one lane blocked", "minor delays", "slow traffic past the scene"],
        0.55: ["two lanes blocked", "long delays", "queues building"],
        0.85: ["road closed", "road blocked in both directions", "all lanes closed"],
    },
}
_HOURS = {
    "day": ["weekdays 09:00-15:30", "daytime only (09:00-15:30)", "working hours 09:00-15:30"],
    "full": ["around the clock", "24 hours a day", "day and night"],
}
_ARTISTS = ("The Velvet Dikes", "Nora Blaauw", "Polder Pilots", "Midnight Tram", "Sanne and the Seagulls",
            "DJ Kade", "The Linden Quartet", "Orange Tide", "Brass Republic", "Lotte Vermeer")
_HOME_TEAM = "Lindenhaven FC"
_AWAY_TEAMS = ("FC Oostmoor", "Rivervale United", "SC Dijkstad", "Noordkamp '08", "Achterberg City",
               "VV Kreekhorst", "Sporting Westerveen")
_FESTIVALS = ("Harvest Food Festival", "Lindenhaven Street Food Fair", "Autumn Lights Festival",
              "Jazz in the Park", "Beer and Brass Festival")
_PARADES = ("Harbour Day Parade", "Autumn Carnival Parade", "Lantern Parade")
_RACES = ("Lindenhaven City Marathon", "Lindenhaven Marathon and Half Marathon")
_HOLIDAY_NAMES = ("Founders' Day", "Harbour Day")


# ============================================================================================= layout
@dataclass
class Corridor:
    """A road through the map: its sites in order along `axis` (the region generator builds its own)."""

    name: str
    orient: str  # "NS", "EW" or "DIAG"
    index: int  # grid column (NS) or row (EW); -1 for the diagonal
    axis: np.ndarray  # unit vector in metres, the corridor's "positive" direction
    arterial: bool
    nodes: list[int] = field(default_factory=list)  # sorted along `axis`
    pos_km: dict[int, float] = field(default_factory=dict)


@dataclass
class Layout:
    """A city map and everything the generator derives from it (the demo city's, or a region's:
    `trafficcore.data.region`). The simulation reads only this, so any map runs the same flow model."""

    sites: pd.DataFrame
    detectors: pd.DataFrame
    adjacency: pd.DataFrame
    grid: list[tuple[float, float]]  # node -> (x, y) in grid units
    xy: np.ndarray  # (S, 2) metres from the centre
    land_use: list[str]
    corridors: list[Corridor]
    node_corridors: list[list[int]]
    # one entry per detector (leg), in detector order
    leg_site: np.ndarray
    leg_corr: np.ndarray
    leg_u: np.ndarray  # (D, 2) unit vector from the site outwards along the leg
    leg_inbound: np.ndarray  # +1 traffic heads to the centre, -1 away
    leg_level: np.ndarray  # demand scale (veh / 15 min at a profile value of 1)
    leg_cap: np.ndarray  # capacity (veh / 15 min)
    leg_series: np.ndarray  # which corridor-direction noise series the leg follows
    leg_lag: np.ndarray  # in intervals, distance from the corridor's upstream end / speed
    legs_at: dict[tuple[int, int], list[int]]
    # the places events use: venue centres in metres, corridors by (orient, grid index) for diversions onto
    # parallel roads, parade routes (two choices), marathon route pairs and start/finish
    venue_xy: dict[str, np.ndarray] = field(default_factory=dict)
    corridor_at: dict[tuple[str, int], int] = field(default_factory=dict)
    parade_routes: tuple[int, int] = (2, 8)
    marathon_routes: tuple[tuple[int, int], ...] = ((3, 9), (1, 7), (2, 10))
    marathon_xy: np.ndarray | None = None
    #: roadworks, lane closures and crashes per week scale with this (1 for the 40-site demo city)
    incident_scale: float = 1.0
    _regexes: dict | None = field(default=None, repr=False)


def _to_latlon(xm: float, ym: float) -> tuple[float, float]:
    lat = CENTRE_LAT + ym / 111_320.0
    lon = CENTRE_LON + xm / (111_320.0 * math.cos(math.radians(CENTRE_LAT)))
    return lat, lon


def _metres(x: float, y: float) -> np.ndarray:
    return np.array([(x - _XC) * _DX, (y - _YC) * _DY])


@lru_cache(maxsize=1)
def _layout() -> Layout:
    """The fixed map: intersections, approaches, corridors and what is near each site."""
    rng = np.random.default_rng(20250901)  # the map is the same for every seed
    diag_axis = np.array([_DX, _DY]) / math.hypot(_DX, _DY)
    corridors = [Corridor(r, "NS", c, np.array([0.0, 1.0]), c in _ARTERIAL_NS) for c, r in enumerate(NS_ROADS)]
    corridors += [Corridor(r, "EW", i, np.array([1.0, 0.0]), i in _ARTERIAL_EW) for i, r in enumerate(EW_ROADS)]
    corridors.append(Corridor(DIAGONAL_ROAD, "DIAG", -1, diag_axis, True))
    diag = len(corridors) - 1

    grid = [(float(x), float(y)) for y in range(5, -1, -1) for x in range(6)] + list(_DIAGONAL_NODES)
    grid.sort(key=lambda p: (-p[1], p[0]))  # number sites north to south, west to east
    xy = np.array([_metres(x, y) for x, y in grid])
    node_corridors: list[list[int]] = []
    legs: list[dict] = []
    for s, (x, y) in enumerate(grid):
        on = []
        if x == int(x):
            on.append(int(x))
        if y == int(y):
            on.append(6 + int(y))
        if (x, y) in _DIAGONAL_NODES:
            on.append(diag)
        node_corridors.append(on)
        for c in on:
            corridors[c].nodes.append(s)
        legs.extend(_legs_of(s, x, y, on, corridors, diag_axis))

    for cor in corridors:
        cor.nodes.sort(key=lambda s: float(xy[s] @ cor.axis))
        cor.pos_km = {s: float(xy[s] @ cor.axis) / 1000.0 for s in cor.nodes}

    land_use = [_LAND_USE.get((x, y), "residential") for x, y in grid]
    venue_xy = {k: _metres(v.x, v.y) for k, v in VENUES.items()}
    site_ids = [f"S{s + 1:02d}" for s in range(len(grid))]
    sites, site_ll = sites_frame(grid, xy, land_use, node_corridors, corridors, legs, rng, site_ids, venue_xy)
    corridor_at = {(c.orient, c.index): i for i, c in enumerate(corridors) if c.orient != "DIAG"}
    return finish_layout(grid, xy, land_use, corridors, node_corridors, legs, sites, site_ll, rng,
                          venue_xy=venue_xy, corridor_at=corridor_at, marathon_xy=venue_xy["park"])


def _legs_of(s: int, x: float, y: float, on: list[int], corridors: list[Corridor], diag_axis) -> list[dict]:
    """The approaches of one node: N/E/S/W legs, outward legs at the edge only where the road goes on."""
    out = []
    if (x, y) in _DIAGONAL_NODES:
        grid_c, diag_c = on[0], on[1]
        if corridors[grid_c].orient == "NS":
            spec = [("N", (0, 1), grid_c), ("E", diag_axis, diag_c), ("S", (0, -1), grid_c), ("W", -diag_axis, diag_c)]
            side = {"E": "NE", "W": "SW"}
        else:
            spec = [("N", diag_axis, diag_c), ("E", (1, 0), grid_c), ("S", -diag_axis, diag_c), ("W", (-1, 0), grid_c)]
            side = {"N": "NE", "S": "SW"}
        for a, u, c in spec:
            out.append({"site": s, "approach": a, "u": np.asarray(u, float), "corr": c, "from": side.get(a, a)})
        return out
    xi, yi = int(x), int(y)
    ns, ew = on[0], on[1]
    spec = [("N", (0, 1), ns, yi == 5), ("E", (1, 0), ew, xi == 5), ("S", (0, -1), ns, yi == 0),
            ("W", (-1, 0), ew, xi == 0)]
    keep = []
    for a, u, c, outward in spec:
        goes_on = corridors[c].arterial or (xi + yi) % 2 == 0
        keep.append((a, u, c, (not outward) or goes_on))
    if sum(k[3] for k in keep) < 3:  # a corner: let the first outward road continue out of town
        i = next(i for i, k in enumerate(keep) if not k[3])
        keep[i] = keep[i][:3] + (True,)
    for a, u, c, present in keep:
        if present:
            out.append({"site": s, "approach": a, "u": np.asarray(u, float), "corr": c, "from": a})
    return out


def sites_frame(grid, xy, land_use, node_corridors, corridors, legs, rng, site_ids: list[str],
                 venue_xy: dict[str, np.ndarray], label: str = f"demo city {CITY}") -> tuple[pd.DataFrame, np.ndarray]:
    """One row per site: jittered position, name from its two roads, junction type, land use and venues nearby."""
    rows = []
    site_ll = np.empty((len(grid), 2))
    legs_per_site = np.bincount([leg["site"] for leg in legs], minlength=len(grid))
    for s in range(len(grid)):
        jitter = rng.uniform(-25, 25, size=2)
        lat, lon = _to_latlon(*(xy[s] + jitter))
        site_ll[s] = lat, lon
        roads = [corridors[c].name for c in node_corridors[s]]
        kind = "crossroads" if legs_per_site[s] == 4 else "T-junction"
        use = land_use[s]
        text = _USE_TEXT[use] if use in _USE_TEXT else _RESIDENTIAL_TEXT[int(rng.integers(len(_RESIDENTIAL_TEXT)))]
        near = [v.near for k, v in VENUES.items() if np.linalg.norm(xy[s] - venue_xy[k]) < 700]
        near_txt = (" " + "; ".join(n[0].upper() + n[1:] for n in near) + ".") if near else ""
        rows.append({
            "site_id": site_ids[s],
            "name": f"{roads[0]} / {roads[1]}",
            "lat": round(lat, 6),
            "lon": round(lon, 6),
            "description": f"Signalised {kind} of {roads[0]} and {roads[1]}. {text}{near_txt} "
                           f"(Synthetic {label}.)",
            "geometry_wkt": None,
        })
    return pd.DataFrame(rows), site_ll


def finish_layout(grid, xy, land_use, corridors, node_corridors, legs, sites, site_ll, rng, **extra) -> Layout:
    """Per-leg arrays (demand level, capacity, commute direction, noise series, lag) and the frames;
    `extra` sets the Layout's event fields (venues, parallel corridors, routes)."""
    det_rows = []
    site_ids = sites["site_id"].tolist()
    n = len(legs)
    leg_site = np.array([g["site"] for g in legs])
    leg_corr = np.array([g["corr"] for g in legs])
    leg_u = np.array([g["u"] for g in legs])
    r = xy[leg_site]
    leg_inbound = np.einsum("ij,ij->i", leg_u, r) / (np.linalg.norm(r, axis=1) + 300.0)
    level = np.empty(n)
    cap = np.empty(n)
    series = np.empty(n, dtype=int)
    lag = np.empty(n)
    legs_at: dict[tuple[int, int], list[int]] = {}
    for j, g in enumerate(legs):
        cor = corridors[g["corr"]]
        s = g["site"]
        legs_at.setdefault((s, g["corr"]), []).append(j)
        if cor.arterial:
            lanes = 3 if np.linalg.norm(xy[s]) < 900 and cor.orient != "DIAG" else 2
            per_lane, green = rng.uniform(105, 135), 0.5
        else:
            lanes = 2 if rng.random() < 0.25 else 1
            per_lane, green = rng.uniform(80, 110), 0.4
        central = 1.15 - 0.25 * min(np.linalg.norm(xy[s]) / 2500.0, 1.0)
        level[j] = lanes * per_lane * central * rng.lognormal(0, 0.1)
        cap[j] = lanes * green * 1800 / 4
        travel = -g["u"] @ cor.axis  # > 0: the traffic on this leg moves in the corridor's positive direction
        pos = cor.pos_km[s]
        upstream_km = pos - min(cor.pos_km.values()) if travel > 0 else max(cor.pos_km.values()) - pos
        series[j] = 2 * g["corr"] + (1 if travel > 0 else 0)
        lag[j] = upstream_km / 20.0 * 4  # 20 km/h through signals, in 15-minute intervals
        lat, lon = _to_latlon(*(xy[s] + 30 * g["u"]))
        frm = g["from"]
        det_rows.append({
            "detector_id": f"{site_ids[s]}:{g['approach']}",
            "site_id": site_ids[s],
            "approach": g["approach"],
            "description": f"{cor.name}, {_BOUND[frm]} traffic entering from the {_COMPASS[frm]}, "
                           f"{lanes} lane{'s' if lanes > 1 else ''} (synthetic)",
            "road": cor.name,
            "lanes": lanes,
            "measure": "volume",
            "interval_s": INTERVAL_S,
            "lat": round(lat, 6),
            "lon": round(lon, 6),
        })
    detectors = pd.DataFrame(det_rows)
    detectors["lanes"] = detectors["lanes"].astype("Int64")
    adjacency = _adjacency(corridors, xy, site_ids)
    return Layout(sites, detectors, adjacency, grid, xy, land_use, corridors, node_corridors, leg_site, leg_corr,
                  leg_u, leg_inbound, level, cap, series, lag, legs_at, **extra)


def _adjacency(corridors: list[Corridor], xy: np.ndarray, site_ids: list[str]) -> pd.DataFrame:
    """Consecutive intersections along each road, both ways; weight = distance in metres (a cost)."""
    rows = []
    for cor in corridors:
        for a, b in zip(cor.nodes[:-1], cor.nodes[1:], strict=True):
            d = round(float(np.linalg.norm(xy[a] - xy[b])), 1)
            rows.append((site_ids[a], site_ids[b], d, "road"))
            rows.append((site_ids[b], site_ids[a], d, "road"))
    return pd.DataFrame(rows, columns=["src", "dst", "weight", "kind"]).drop_duplicates(["src", "dst", "kind"])


# ============================================================================================ calendar
def splits(start: str = "2025-09-01", weeks: int = 8) -> tuple[pd.Timestamp, pd.Timestamp]:
    """(train_end, val_end): validation starts at train_end, the test period at val_end."""
    t0 = pd.Timestamp(start).normalize()
    end = t0 + pd.Timedelta(days=7 * weeks)
    val_end = end - pd.Timedelta(days=7 * TEST_WEEKS)
    return val_end - pd.Timedelta(days=7 * VALIDATION_WEEKS), val_end


def split_days(start: str = "2025-09-01", weeks: int = 8) -> dict[str, tuple[str, str]]:
    """First and last day (inclusive, ISO dates) of train, val and test, the shape evaluation reads."""
    t0 = pd.Timestamp(start).normalize()
    train_end, val_end = splits(start, weeks)
    end = t0 + pd.Timedelta(days=7 * weeks)
    day = pd.Timedelta(days=1)
    bounds = {"train": (t0, train_end), "val": (train_end, val_end), "test": (val_end, end)}
    return {k: (str(a.date()), str((b - day).date())) for k, (a, b) in bounds.items()}


def split_dates(tables: CanonicalTables) -> tuple[pd.Timestamp, pd.Timestamp]:
    """(train_end, val_end) of a generated demo city, read from its observation range (whole weeks)."""
    ts = tables.observations["ts"]
    t0 = ts.min().normalize()
    days = (ts.max().normalize() - t0).days + 1
    return splits(str(t0.date()), int(math.ceil(days / 7)))


#: The split of the default city (start 2025-09-01, 8 weeks); other arguments: `split_days(start, weeks)`.
SPLIT = split_days()


def holidays(start: str = "2025-09-01", weeks: int = 8) -> dict[pd.Timestamp, str]:
    """The fictional public holidays in the window: a Monday in week 3 and a Thursday in the test period."""
    t0 = pd.Timestamp(start).normalize()
    end = t0 + pd.Timedelta(days=7 * weeks)
    first = t0 + pd.Timedelta(days=14)
    first += pd.Timedelta(days=(0 - first.day_of_week) % 7)
    second = splits(start, weeks)[1] + pd.Timedelta(days=2)
    second += pd.Timedelta(days=(3 - second.day_of_week) % 7)
    out = {}
    for day, name in ((first, _HOLIDAY_NAMES[0]), (second, _HOLIDAY_NAMES[1])):
        if day < end:
            out[day] = name
    return out


# ================================================================================= phrasing helpers
def _slot_patterns(lay: Layout) -> dict[str, str]:
    """Each template slot compiled to the exact vocabulary it takes in this city (its roads, sites, venues)."""
    roads = [c.name for c in lay.corridors]

    def alt(words) -> str:
        return "(?:" + "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True)) + ")"

    impacts = [w for per in _IMPACT.values() for ws in per.values() for w in ws]
    return {
        "venue": alt(v.name for v in VENUES.values()), "road": alt(roads), "road2": alt(roads),
        "site": alt(lay.sites["name"]), "size": r"\d{1,3}(?:,\d{3})*", "start": r"\d{2}:\d{2}",
        "end": r"\d{2}:\d{2}", "day": alt(_DAY_NAMES), "start_date": r"[A-Z][a-z]{2} \d{1,2} [A-Z][a-z]{2}",
        "end_date": r"[A-Z][a-z]{2} \d{1,2} [A-Z][a-z]{2}", "impact": alt(impacts),
        "hours": alt(w for ws in _HOURS.values() for w in ws), "artist": alt(_ARTISTS), "home": alt([_HOME_TEAM]),
        "away": alt(_AWAY_TEAMS), "festival": alt(_FESTIVALS), "parade": alt(_PARADES), "race": alt(_RACES),
        "name": alt(_HOLIDAY_NAMES),
    }


def _phrasing_regexes(lay: Layout | None = None) -> dict[str, list[re.Pattern]]:
    lay = lay if lay is not None else _layout()
    if lay._regexes is not None:
        return lay._regexes
    slots = _slot_patterns(lay)
    out = {}
    for kind, templates in PHRASINGS.items():
        pats = []
        for tpl in templates:
            parts = []
            for literal, name, _spec, _conv in string.Formatter().parse(tpl):
                parts.append(re.escape(literal))
                if name is not None:
                    parts.append(slots[name])
            pats.append(re.compile("^" + "".join(parts) + "$", re.IGNORECASE))
        out[kind] = pats
    lay._regexes = out
    return out


def phrasing_index(kind: str, text: str, layout: Layout | None = None) -> int | None:
    """Which template of PHRASINGS[kind] produced `text` (None when none or several match); `layout` is the
    city whose roads and sites the text names (default: the demo city; a region: `region.layout(n)`)."""
    hits = [i for i, p in enumerate(_phrasing_regexes(layout).get(kind, [])) if p.match(text)]
    return hits[0] if len(hits) == 1 else None


def is_held_out(kind: str, text: str, layout: Layout | None = None) -> bool:
    """True when the text uses a held-out phrasing or belongs to a held-out kind."""
    if kind in HELD_OUT_KINDS:
        return True
    i = phrasing_index(kind, text, layout)
    return i is not None and i in HELD_OUT.get(kind, [])


def held_out_mask(events: pd.DataFrame, layout: Layout | None = None) -> pd.Series:
    """Per event row: does its text use a held-out phrasing (derived from PHRASINGS/HELD_OUT, not stored)?"""
    return pd.Series([is_held_out(k, t, layout) for k, t in zip(events["kind"], events["text"], strict=True)],
                     index=events.index, dtype=bool)


# ============================================================================================ generator
@dataclass
class DemoTruth:
    """What the generator knows and a model must infer: injected faults and the noise-free expected counts."""

    faults: pd.DataFrame  # detector_id, start_ts, end_ts (exclusive), fault in {zero, stuck, gap, outage}
    expected: np.ndarray  # (T, D) float32, the Poisson mean of every interval before faults
    times: pd.DatetimeIndex
    detector_ids: list[str]
    # (T, D) float32: the same Poisson mean had no event, incident, roadworks or closure happened (same weather and
    # noise); expected - without_events is exactly what the planted events did to each interval
    without_events: np.ndarray | None = None


def generate(seed: int = 0, weeks: int = 8, start: str = "2025-09-01") -> CanonicalTables:
    """The synthetic demo city: deterministic for (seed, weeks, start)."""
    return generate_with_truth(seed=seed, weeks=weeks, start=start)[0]


def generate_with_truth(seed: int = 0, weeks: int = 8, start: str = "2025-09-01") -> tuple[CanonicalTables, DemoTruth]:
    """`generate`, plus the ground truth (faults, expected counts) for testing cleaning and models."""
    tables, counts, truth = simulate(_layout(), seed, weeks, start, title=f"demo city '{CITY}'",
                                     source=f"trafficcore demo city (synthetic) seed={seed}")
    tables.observations = _long(counts, truth.times, truth.detector_ids)
    return tables, truth


#: Rows of the (time x detector) arrays processed at a time in the final stage (noise, saturation, counts):
#: bounds the temporaries of a region's arrays without changing a single draw (numpy's streams are sequential).
_ROW_CHUNK = 512


def simulate(lay: Layout, seed: int, weeks: int, start: str, *, title: str, source: str,
             dtype=np.float64) -> tuple[CanonicalTables, np.ndarray, DemoTruth]:
    """Run the flow model on a map: the tables without observations, the (T, D) counts (NaN = missing row) and
    the truth. `dtype` float32 halves the memory of a region's arrays; the demo city keeps float64 (its data,
    and the shipped model's fingerprint of them, stay exactly as they were)."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if weeks < MIN_WEEKS:
        raise ValueError(f"weeks must be at least {MIN_WEEKS} (training, validation and a 2-week test), got {weeks}")
    t0 = pd.Timestamp(start)
    if t0 != t0.normalize():
        raise ValueError(f"start must be a date (midnight), got {start!r}")
    rng_w, rng_e, rng_p, rng_n, rng_f = (np.random.default_rng(s) for s in np.random.SeedSequence([seed, 7]).spawn(5))
    n_days = 7 * weeks
    times = pd.date_range(t0, periods=n_days * SLOTS_PER_DAY, freq=_STEP)
    hol = holidays(start, weeks)
    day_cat = np.array([_day_category(t0 + pd.Timedelta(days=d), hol) for d in range(n_days)])

    weather = _weather(rng_w, t0, n_days)
    demand = _base_demand(lay, day_cat, dtype)
    _corridor_noise(lay, rng_n, n_days, demand)
    precip = np.repeat(weather["precip_mm"].to_numpy(), 4)[:, None]
    demand *= (1 - 0.07 * np.minimum(precip, 4) / 4 - 0.015 * (precip > 0.05)).astype(dtype)
    capf = np.repeat((1 - 0.08 * np.minimum(precip, 4) / 4).astype(dtype), len(lay.leg_site), axis=1)

    events = _schedule_events(rng_e, t0, weeks, hol, day_cat, lay)
    capf_calm = capf.copy()  # weather only: for the no-event counterfactual
    surge = np.zeros_like(demand)
    div = np.ones_like(demand)
    for ev in events:
        _apply_event(ev, lay, t0, demand, surge, div, capf)
    cap = lay.leg_cap[None, :].astype(dtype)

    def saturate(w: np.ndarray, cf: np.ndarray) -> np.ndarray:
        c = cap * cf
        return w / (1 + (w / c) ** 6) ** (1 / 6)

    n_t = len(times)
    chunks = [slice(i, min(i + _ROW_CHUNK, n_t)) for i in range(0, n_t, _ROW_CHUNK)]
    noise = np.empty_like(demand)
    for sl in chunks:  # drawn first, all of it: the Poisson draws below follow in the same stream order
        noise[sl] = rng_n.lognormal(0, 0.035, size=(sl.stop - sl.start, demand.shape[1]))
    expected = np.empty_like(demand)
    without_events = np.empty_like(demand)
    for sl in chunks:
        expected[sl] = saturate(demand[sl] * div[sl] + surge[sl], capf[sl]) * noise[sl]
        without_events[sl] = saturate(demand[sl], capf_calm[sl]) * noise[sl]
    del demand, surge, div, capf, capf_calm, noise
    counts = np.empty_like(expected)
    for sl in chunks:
        counts[sl] = rng_n.poisson(expected[sl])
    faults = _inject_faults(counts, expected, rng_f, times, lay)

    info = DatasetInfo(
        synthetic=True,
        source=source,
        timezone=TIMEZONE,
        interval_s=INTERVAL_S,
        measure="volume",
        description=(
            f"SYNTHETIC {title} (fictional), generated by trafficcore with seed {seed}: "
            f"{len(lay.sites)} signalised intersections, {len(lay.detectors)} approach detectors, {weeks} weeks of "
            "15-minute volumes with commuting, land use, corridor effects, weather, holidays, events, incidents, "
            "roadworks and detector faults. Not real traffic data."
        ),
    )
    det_ids = lay.detectors["detector_id"].tolist()
    tables = CanonicalTables(
        info=info,
        sites=lay.sites.copy(),
        detectors=lay.detectors.copy(),
        events=_events_frame(events, rng_p, t0, weeks, lay),
        weather=weather,
        adjacency=lay.adjacency.copy(),
    )
    truth = DemoTruth(faults=faults, expected=expected.astype(np.float32, copy=False), times=times,
                      detector_ids=det_ids, without_events=without_events.astype(np.float32, copy=False))
    return tables, counts, truth


def _day_category(day: pd.Timestamp, hol: dict) -> int:
    """0 working/school day, 1 Saturday, 2 Sunday, 3 public holiday."""
    if day in hol:
        return 3
    return {5: 1, 6: 2}.get(day.day_of_week, 0)


def _g(h: np.ndarray, mu: float, sd: float) -> np.ndarray:
    return np.exp(-0.5 * ((h - mu) / sd) ** 2)


def _base_demand(lay: Layout, day_cat: np.ndarray, dtype=np.float64) -> np.ndarray:
    """(T, D) expected demand from day type, time of day, commute direction and land use."""
    h = (np.arange(SLOTS_PER_DAY) + 0.5) / 4
    prof = np.empty((4, SLOTS_PER_DAY, len(lay.leg_site)))
    for j, s in enumerate(lay.leg_site):
        use = lay.land_use[s]
        inb = lay.leg_inbound[j]
        alpha = 0.38 * (1.2 if use == "residential" else 1.0)
        peak = 1.15 if use == "centre" else 1.0
        am = peak * 0.85 * _g(h, 7.9, 1.05) * (1 + alpha * inb)
        pm = peak * 0.85 * _g(h, 17.1, 1.15) * (1 - 0.85 * alpha * inb)
        wd = 0.05 + 0.55 * _g(h, 12.8, 2.6) + 0.30 * _g(h, 20.0, 1.8) + am + pm
        sat = 0.04 + 0.72 * _g(h, 13.3, 3.0) + 0.2 * _g(h, 20.5, 2.0)
        sun = 0.035 + 0.6 * _g(h, 14.3, 3.0) + 0.12 * _g(h, 19.5, 2.0)
        hol = 1.05 * sun + 0.05 * _g(h, 11.0, 2.0)
        if use == "centre":
            sat, sun, hol = 0.85 * sat, 0.7 * sun, 0.7 * hol
        elif use == "school":
            wd = wd + 0.30 * _g(h, 8.2, 0.3) + 0.18 * _g(h, 15.2, 0.45)
        elif use == "retail":
            wd = wd + 0.15 * _g(h, 18.5, 1.5) + 0.1 * _g(h, 12.5, 2.0)
            sat, sun = 1.35 * sat, 1.15 * sun
        elif use == "industrial":
            wd = 0.85 * wd + 0.35 * _g(h, 6.6, 0.6) + 0.25 * _g(h, 15.6, 0.6)
            sat, sun, hol = 0.5 * sat, 0.45 * sun, 0.45 * hol
        elif use == "hospital":
            extra = 0.06 + 0.15 * _g(h, 6.8, 0.5) + 0.15 * _g(h, 15.2, 0.5) + 0.1 * _g(h, 23.2, 0.5)
            wd, sat, sun, hol = wd + extra, sat + extra, sun + extra, hol + extra
        prof[:, :, j] = np.stack([wd, sat, sun, hol]) * lay.leg_level[j]
    return prof.astype(dtype, copy=False)[day_cat].reshape(-1, len(lay.leg_site))


def _corridor_noise(lay: Layout, rng: np.random.Generator, n_days: int, out: np.ndarray) -> None:
    """Multiply `out` (T, D) by the noise: city and corridor day factors, lagged corridor AR(1) shocks, detector
    days. Applied a block of rows at a time, so a region's (T, D) temporaries never exist whole."""
    n_t = n_days * SLOTS_PER_DAY
    n_corr = len(lay.corridors)
    city = rng.lognormal(0, 0.03, n_days)
    corr_day = rng.lognormal(0, 0.05, (n_days, n_corr))
    det_day = rng.lognormal(0, 0.03, (n_days, len(lay.leg_site)))
    daily = city[:, None] * corr_day[:, lay.leg_corr] * det_day
    pad = max(8, math.ceil(float(lay.leg_lag.max())) + 2)  # a region's long corridors lag further
    phi, sd = 0.92, 0.06
    eps = rng.normal(0, sd * math.sqrt(1 - phi**2), (n_t + pad + 1, 2 * n_corr))
    ar = np.empty_like(eps)
    ar[0] = rng.normal(0, sd, 2 * n_corr)
    for t in range(1, n_t + pad + 1):
        ar[t] = phi * ar[t - 1] + eps[t]
    # a leg sees its corridor-direction shock `lag` intervals after the corridor's upstream end does
    for i0 in range(0, n_t, _ROW_CHUNK):
        rows = np.arange(i0, min(i0 + _ROW_CHUNK, n_t))
        pos = rows[:, None] + pad - lay.leg_lag[None, :]
        lo = np.floor(pos).astype(int)
        frac = pos - lo
        shock = ar[lo, lay.leg_series] * (1 - frac) + ar[lo + 1, lay.leg_series] * frac
        out[rows] *= daily[rows // SLOTS_PER_DAY] * np.exp(shock)


def _weather(rng: np.random.Generator, t0: pd.Timestamp, n_days: int) -> pd.DataFrame:
    """Hourly weather: seasonal and diurnal temperature, Markov rain spells, humidity, wind, a condition word."""
    n = n_days * 24
    ts = pd.date_range(t0, periods=n, freq="1h")
    doy = ts.day_of_year.to_numpy() + ts.hour.to_numpy() / 24
    mid = np.array([15 + 30.4 * m for m in range(-1, 13)])
    clim = np.interp(doy, mid, np.r_[_MONTH_TEMP[-1], _MONTH_TEMP, _MONTH_TEMP[0]])
    wet = np.zeros(n, bool)
    synoptic = np.empty(n)
    cloud = np.empty(n)
    wind = np.empty(n)
    synoptic[0], cloud[0], wind[0] = rng.normal(0, 2.5), rng.uniform(0.2, 0.8), rng.uniform(8, 20)
    u = rng.random(n)
    for i in range(1, n):
        wet[i] = u[i] < (0.75 if wet[i - 1] else 0.022)
        synoptic[i] = 0.995 * synoptic[i - 1] + rng.normal(0, 2.5 * math.sqrt(1 - 0.995**2))
        cloud[i] = np.clip(0.97 * cloud[i - 1] + 0.03 * 0.55 + rng.normal(0, 0.08) + (0.1 if wet[i] else 0), 0, 1)
        wind[i] = max(0.0, 0.95 * wind[i - 1] + 0.05 * 14 + rng.normal(0, 1.6))
    precip = np.where(wet, np.round(rng.gamma(0.8, 1.3, n), 1), 0.0)
    hour = ts.hour.to_numpy()
    diurnal = -np.cos((hour - 3) / 24 * 2 * np.pi) * 3.5 * (1.2 - 0.6 * cloud)
    temp = np.round(clim + synoptic + diurnal - 1.5 * (precip > 0), 1)
    humidity = np.clip(np.round(78 - 1.2 * diurnal + 12 * (precip > 0) + 8 * cloud - 10 + rng.normal(0, 3, n)), 35, 100)
    wind = np.round(wind + 6 * (precip > 1), 1)
    condition = np.select(
        [precip >= 2.5, precip >= 0.5, precip > 0, (humidity >= 97) & (wind < 8), cloud > 0.7, cloud > 0.35],
        ["heavy rain", "rain", "light rain", "fog", "overcast", "partly cloudy"],
        "clear",
    )
    return pd.DataFrame({"ts": ts, "temp_c": temp, "precip_mm": precip, "humidity_pct": humidity.astype(float),
                         "wind_kmh": wind, "condition": condition})


# ================================================================================================ events
@dataclass
class _Event:
    kind: str
    start: pd.Timestamp
    end: pd.Timestamp
    slots: dict
    venue: str | None = None  # planned events at a venue
    size: int = 0
    site: int = -1  # incidents: the site and the road (corridor) they block
    corr: int = -1
    sev: float = 0.0
    route: list[int] = field(default_factory=list)  # parades and marathons: closed corridors
    daytime_only: bool = False


def _at(day: pd.Timestamp, hhmm: str) -> pd.Timestamp:
    h, m = hhmm.split(":")
    return day + pd.Timedelta(hours=int(h), minutes=int(m))


def _schedule_events(rng, t0: pd.Timestamp, weeks: int, hol: dict, day_cat: np.ndarray, lay: Layout) -> list[_Event]:
    """Planned events at venues, parades, a test-period marathon, roadworks, lane closures and crashes."""
    n_days = 7 * weeks
    day = [t0 + pd.Timedelta(days=d) for d in range(n_days)]
    train_end, test_start = splits(str(t0.date()), weeks)
    test_d0 = (test_start - t0).days
    busy: set[tuple[str, int]] = set()  # (venue, day index)
    ev: list[_Event] = []

    def free(venue: str, d: int) -> bool:
        return (venue, d) not in busy and 0 <= d < n_days

    def weekend_days(dow: int) -> list[int]:
        return [d for d in range(n_days) if day[d].day_of_week == dow]

    def rounded(lo: int, hi: int, step: int = 100) -> int:
        return int(round(rng.integers(lo, hi) / step) * step)

    # football: home games every other weekend plus midweek cup games
    parity = int(rng.integers(2))
    for w in range(weeks):
        if (w + parity) % 2:
            continue
        sat = weekend_days(5)[w]
        d = min(sat + int(rng.random() < 0.4), n_days - 1)
        ko = str(rng.choice(["14:30", "16:45", "20:00"] if d == sat else ["12:15", "14:30", "16:45"]))
        ev.append(_football(rng, day[d], ko, rounded(14000, 26000)))
        busy.add(("stadium", d))
    for w in sorted(rng.choice(weeks, size=2, replace=False)):
        d = 7 * int(w) + (2 - day[0].day_of_week) % 7
        if free("stadium", d) and day_cat[d] == 0:
            ev.append(_football(rng, day[d], "20:00", rounded(9000, 18000)))
            busy.add(("stadium", d))
    # concerts: the arena most weeks, the park and the stadium now and then
    for w in range(weeks):
        for _ in range(int(rng.poisson(1.3))):
            d = int(rng.choice([x for x in range(7 * w, 7 * w + 7) if day[x].day_of_week >= 3]))
            if not free("arena", d):
                continue
            st = str(rng.choice(["19:30", "20:00", "20:30"]))
            ev.append(_concert(rng, day[d], st, int(rng.choice([135, 150, 165, 180])), "arena", rounded(2500, 9000)))
            busy.add(("arena", d))
    park_sats = weekend_days(5)[: max(1, weeks - 3)]
    for d in rng.choice(park_sats, size=min(2, len(park_sats)), replace=False):
        if free("park", int(d)):
            ev.append(_concert(rng, day[int(d)], "19:00", 240, "park", rounded(8000, 22000, 500)))
            busy.add(("park", int(d)))
    stadium_free = [d for d in weekend_days(5) if free("stadium", d)]
    if stadium_free and rng.random() < 0.8:
        d = int(rng.choice(stadium_free))
        ev.append(_concert(rng, day[d], "20:00", 180, "stadium", rounded(25000, 38000, 500)))
        busy.add(("stadium", d))
    # festivals in the park
    for _ in range(max(2, round(0.4 * weeks))):
        d = int(rng.choice(weekend_days(5) + weekend_days(6)))
        if not free("park", d):
            continue
        st, en = (("11:00", "22:00") if rng.random() < 0.5 else ("12:00", "20:00"))
        ev.append(_Event("festival", _at(day[d], st), _at(day[d], en), {"festival": str(rng.choice(_FESTIVALS))},
                         venue="park", size=rounded(4000, 30000, 500)))
        busy.add(("park", d))
    # parades: one before the validation period, one in the test period; a marathon in the test period
    sats_train = [d for d in weekend_days(5) if 7 <= d < (train_end - t0).days]
    sundays_test = [d for d in weekend_days(6) if d >= test_d0]
    marathon_day = sundays_test[int(rng.integers(len(sundays_test)))]
    test_parade = [d for d in weekend_days(5) + weekend_days(6) if d >= test_d0 and d != marathon_day]
    for d in ([int(rng.choice(sats_train))] if sats_train else []) + [int(rng.choice(test_parade))]:
        road = lay.parade_routes[0 if rng.random() < 0.5 else 1]  # demo city: Station Rd or 3rd Ave
        ev.append(_Event("parade", _at(day[d], "14:00"), _at(day[d], "16:30"), {"parade": str(rng.choice(_PARADES))},
                         size=rounded(8000, 35000, 500), route=[road]))
    pair = lay.marathon_routes[int(rng.integers(len(lay.marathon_routes)))]  # demo: (Canal St, 4th Ave), ...
    ev.append(_Event("marathon", _at(day[marathon_day], "08:30"), _at(day[marathon_day], "14:00"),
                     {"race": str(rng.choice(_RACES))}, size=rounded(3000, 12000), route=list(pair)))
    ev.extend(_incidents(rng, lay, day, weeks, test_d0, day_cat))
    ev.sort(key=lambda e: (e.start, e.kind))
    return ev


def _football(rng, day: pd.Timestamp, ko: str, size: int) -> _Event:
    start = _at(day, ko)
    return _Event("football match", start, start + pd.Timedelta(minutes=110),
                  {"home": _HOME_TEAM, "away": str(rng.choice(_AWAY_TEAMS))}, venue="stadium", size=size)


def _concert(rng, day: pd.Timestamp, st: str, minutes: int, venue: str, size: int) -> _Event:
    start = _at(day, st)
    return _Event("concert", start, start + pd.Timedelta(minutes=minutes), {"artist": str(rng.choice(_ARTISTS))},
                  venue=venue, size=size)


def _incidents(rng, lay: Layout, day: list, weeks: int, test_d0: int, day_cat: np.ndarray) -> list[_Event]:
    """Roadworks (one forced into the test period), lane closures and crashes timed like the traffic; a bigger
    map has proportionally more of them (`Layout.incident_scale`)."""
    n_days = len(day)
    n_sites = len(lay.sites)
    out = []

    def where() -> tuple[int, int]:
        s = int(rng.integers(n_sites))
        return s, int(rng.choice(lay.node_corridors[s]))

    def severity(kind: str, probs: list[float]) -> tuple[float, str]:
        sevs = list(_IMPACT[kind])
        sev = sevs[int(rng.choice(len(sevs), p=probs))]
        return sev, str(rng.choice(_IMPACT[kind][sev]))

    k = lay.incident_scale
    n_works = max(2, round(0.75 * weeks * k))
    starts = [int(rng.integers(0, test_d0)) for _ in range(n_works - 1)] + [int(rng.integers(test_d0, n_days - 2))]
    for d in starts:
        s, c = where()
        sev, impact = severity("road works", [0.5, 0.35, 0.15])
        daytime = bool(rng.random() < 0.6)
        length = int(rng.integers(2, 13))
        out.append(_Event("road works", _at(day[d], "06:00"), _at(day[d] + pd.Timedelta(days=length - 1), "18:00"),
                          {"impact": impact, "hours": str(rng.choice(_HOURS["day" if daytime else "full"]))},
                          site=s, corr=c, sev=sev, daytime_only=daytime))
    for _ in range(int(rng.poisson(2 * weeks * k))):
        d = int(rng.integers(n_days - 1))
        s, c = where()
        sev, impact = severity("lane closure", [0.6, 0.4])
        if rng.random() < 0.4:
            start, end = _at(day[d], "20:00"), _at(day[d], "20:00") + pd.Timedelta(hours=9)
        else:
            start = _at(day[d], str(rng.choice(["09:30", "10:00"])))
            end = start + pd.Timedelta(minutes=int(rng.choice([240, 300, 330])))
        out.append(_Event("lane closure", start, end, {"impact": impact}, site=s, corr=c, sev=sev))
    weights = np.array([1.0 if c == 0 else 0.6 for c in day_cat])
    h = (np.arange(SLOTS_PER_DAY) + 0.5) / 4
    tod = 0.05 + _g(h, 8, 1.2) + 0.6 * _g(h, 13, 2.5) + _g(h, 17, 1.4)
    for _ in range(int(rng.poisson(3 * weeks * k))):
        d = int(rng.choice(n_days, p=weights / weights.sum()))
        slot = int(rng.choice(SLOTS_PER_DAY, p=tod / tod.sum()))
        start = day[d] + pd.Timedelta(minutes=15 * slot + 5 * int(rng.integers(3)))
        s, c = where()
        sev, impact = severity("crash", [0.55, 0.35, 0.10])
        end = start + pd.Timedelta(minutes=5 * int(rng.integers(6, 31)))
        out.append(_Event("crash", start, end, {"impact": impact}, site=s, corr=c, sev=sev))
    return out


def _ranges(ev: _Event, t0: pd.Timestamp, n_t: int) -> list[tuple[int, int]]:
    """Interval index ranges [i0, i1) during which an event is active (roadworks by day: weekdays 09:00-15:30)."""
    def idx(ts: pd.Timestamp, up: bool) -> int:
        x = (ts - t0) / _STEP
        return int(np.clip(math.ceil(x) if up else math.floor(x), 0, n_t))

    if not ev.daytime_only:
        return [(idx(ev.start, False), idx(ev.end, True))]
    out = []
    d = ev.start.normalize()
    while d < ev.end:
        if d.day_of_week < 5:
            out.append((idx(_at(d, "09:00"), False), idx(_at(d, "15:30"), True)))
        d += pd.Timedelta(days=1)
    return [r for r in out if r[1] > r[0]]


def _apply_event(ev: _Event, lay: Layout, t0, demand, surge, div, capf) -> None:
    """Write one event's effect into the surge (added vehicles), diversion and capacity arrays."""
    n_t = demand.shape[0]
    if ev.kind in ("road works", "lane closure", "crash"):
        for i0, i1 in _ranges(ev, t0, n_t):
            _block(lay, ev.site, ev.corr, ev.sev, slice(i0, i1), div, capf)
        return
    if ev.kind in ("parade", "marathon"):
        i0, i1 = _ranges(ev, t0, n_t)[0]
        sl = slice(max(0, i0 - 2), i1 + 2)  # closed from 30 minutes before to 30 minutes after
        for c in ev.route:
            for s in lay.corridors[c].nodes:
                if ev.kind == "parade" and abs(lay.xy[s] @ lay.corridors[c].axis) > 1100:
                    continue  # parades close the central stretch only
                for oc in lay.node_corridors[s]:
                    idx = lay.legs_at.get((s, oc), [])
                    capf[sl, idx] *= 0.06 if oc == c else 0.5
                _divert(lay, s, c, 1.3, sl, div)
        centre = np.mean([lay.xy[s] for c in ev.route for s in lay.corridors[c].nodes], axis=0)
        if ev.kind == "marathon":
            centre = lay.marathon_xy
        veh = ev.size * (0.15 if ev.kind == "parade" else 0.08) / 2.3
        _surge(lay, centre, veh, ev.start - pd.Timedelta(minutes=60), 45, ev.end + pd.Timedelta(minutes=20), 30,
               t0, surge)
        return
    vxy = lay.venue_xy[ev.venue]
    if ev.kind == "football match":
        veh = ev.size * 0.35 / 2.3
        arr, arr_sd, dep, dep_sd = ev.start - pd.Timedelta(minutes=60), 45, ev.end + pd.Timedelta(minutes=15), 18
    elif ev.kind == "concert":
        veh = ev.size * (0.45 if ev.venue == "arena" else 0.35) / 2.3
        arr, arr_sd, dep, dep_sd = ev.start - pd.Timedelta(minutes=40), 40, ev.end + pd.Timedelta(minutes=15), 18
    else:  # festival: arrivals and departures spread over the day
        veh = ev.size * 0.3 / 2.3
        length = ev.end - ev.start
        arr, arr_sd = ev.start + length * 0.3, length.total_seconds() / 60 / 4
        dep, dep_sd = ev.start + length * 0.8, length.total_seconds() / 60 / 5
    _surge(lay, vxy, veh, arr, arr_sd, dep, dep_sd, t0, surge)


def _block(lay: Layout, s: int, c: int, sev: float, sl: slice, div, capf) -> None:
    """A capacity cut at site s on corridor c: fewer vehicles there and next door, more on parallel roads."""
    own = lay.legs_at.get((s, c), [])
    capf[sl, own] *= 1 - sev
    div[sl, own] *= 1 - 0.5 * sev
    nodes = lay.corridors[c].nodes
    k = nodes.index(s)
    for off, f in ((1, 0.35), (2, 0.15)):
        for nb in (k - off, k + off):
            if 0 <= nb < len(nodes):
                div[sl, lay.legs_at.get((nodes[nb], c), [])] *= 1 - f * sev
    _divert(lay, s, c, 1 + 0.25 * sev, sl, div)


def _divert(lay: Layout, s: int, c: int, factor: float, sl: slice, div) -> None:
    """Traffic avoiding corridor c near site s takes the parallel roads on either side (grid corridors only)."""
    cor = lay.corridors[c]
    if cor.orient == "DIAG":
        return
    coord = 1 if cor.orient == "NS" else 0  # position along the corridor, in grid units
    here = lay.grid[s][coord]
    for pc in (cor.index - 1, cor.index + 1):
        pci = lay.corridor_at.get((cor.orient, pc))
        if pci is None:
            continue
        for ps in lay.corridors[pci].nodes:
            if abs(lay.grid[ps][coord] - here) <= 1.01:
                div[sl, lay.legs_at.get((ps, pci), [])] *= factor


def _surge(lay: Layout, centre: np.ndarray, veh: float, arr: pd.Timestamp, arr_sd: float, dep: pd.Timestamp,
           dep_sd: float, t0: pd.Timestamp, surge: np.ndarray) -> None:
    """Add `veh` arriving and `veh` departing vehicles around `centre`; each passes about 3 detectors."""
    rel = centre[None, :] - lay.xy[lay.leg_site]
    dist = np.linalg.norm(rel, axis=1)
    w_site = np.exp(-dist / 350.0) * (dist < 1600)
    towards = -np.einsum("ij,ij->i", lay.leg_u, rel / np.maximum(dist, 1.0)[:, None])  # far-side legs feed the venue
    n_t = surge.shape[0]
    mid = (np.arange(n_t) + 0.5) * 15.0  # interval midpoints, minutes from t0
    for centre_ts, sd, w_dir in ((arr, arr_sd, np.clip(towards, 0, None)), (dep, dep_sd, np.clip(-towards, 0, None))):
        w = w_site * (0.35 + 0.65 * w_dir)
        w = 3.0 * w / w.sum()
        mu = (centre_ts - t0).total_seconds() / 60
        i0, i1 = max(0, int((mu - 3 * sd) // 15)), min(n_t, int((mu + 3 * sd) // 15) + 1)
        if i1 <= i0:
            continue
        share = np.exp(-0.5 * ((mid[i0:i1] - mu) / sd) ** 2)
        share /= share.sum()
        cols = np.flatnonzero(w > 1e-4)
        surge[i0:i1, cols] += veh * share[:, None] * w[None, cols]


def _events_frame(events: list[_Event], rng, t0: pd.Timestamp, weeks: int, lay: Layout) -> pd.DataFrame:
    """One row per event; the text is one phrasing filled in (held-out phrasings only in the test period)."""
    test_start = splits(str(t0.date()), weeks)[1]
    site_names = lay.sites["name"].tolist()
    site_ll = lay.sites[["lat", "lon"]].to_numpy()
    rows = []
    for ev in events:
        slots = dict(ev.slots)
        slots.update({"start": f"{ev.start:%H:%M}", "end": f"{ev.end:%H:%M}", "day": _DAY_NAMES[ev.start.day_of_week],
                      "start_date": _date(ev.start), "end_date": _date(ev.end - pd.Timedelta(seconds=1)),
                      "size": f"{ev.size:,}"})
        if ev.venue:
            slots["venue"] = VENUES[ev.venue].name
            lat, lon = _to_latlon(*lay.venue_xy[ev.venue])
        elif ev.route:
            roads = [lay.corridors[c].name for c in ev.route]
            slots["road"], slots["road2"] = roads[0], roads[-1]
            pts = [lay.xy[s] for c in ev.route for s in lay.corridors[c].nodes]
            lat, lon = _to_latlon(*(np.mean(pts, axis=0) if ev.kind == "parade" else lay.marathon_xy))
        else:
            slots["road"], slots["site"] = lay.corridors[ev.corr].name, site_names[ev.site]
            legs = lay.legs_at[(ev.site, ev.corr)]
            lat, lon = _to_latlon(*(lay.xy[ev.site] + 60 * lay.leg_u[legs[0]]))
        rows.append(_event_row(ev, slots, lat, lon, ev.start >= test_start, rng, site_ll, lay))
    hol = holidays(str(t0.date()), weeks)
    for d, name in hol.items():
        ev = _Event("public holiday", d, _at(d, "23:59"), {})  # ends on its own day under any reading of end_ts
        slots = {"name": name, "day": _DAY_NAMES[d.day_of_week]}
        row = _event_row(ev, slots, CENTRE_LAT, CENTRE_LON, d >= test_start, rng, site_ll, lay)
        row["site_id"] = None  # city-wide: no nearest site
        rows.append(row)
    df = pd.DataFrame(rows).sort_values(["start_ts", "kind", "text"], kind="stable").reset_index(drop=True)
    df.insert(0, "event_id", [f"E{i + 1:04d}" for i in range(len(df))])
    return df


def _event_row(ev: _Event, slots: dict, lat: float, lon: float, in_test: bool, rng, site_ll, lay) -> dict:
    n = len(PHRASINGS[ev.kind])
    held = set(HELD_OUT.get(ev.kind, []))
    if ev.kind in HELD_OUT_KINDS:
        pool = sorted(held)
    elif in_test and held and rng.random() < HELD_OUT_SHARE:
        pool = sorted(held)
    else:
        pool = [i for i in range(n) if i not in held]
    text = PHRASINGS[ev.kind][int(rng.choice(pool))].format(**slots)
    text = text[0].upper() + text[1:]
    nearest = int(np.argmin((site_ll[:, 0] - lat) ** 2 + ((site_ll[:, 1] - lon) * 0.62) ** 2))
    return {"start_ts": ev.start, "end_ts": ev.end, "lat": round(lat, 6), "lon": round(lon, 6),
            "site_id": lay.sites["site_id"].iloc[nearest], "kind": ev.kind, "text": text, "source": SOURCE}


def _date(ts: pd.Timestamp) -> str:
    return f"{_DAY_ABBR[ts.day_of_week]} {ts.day} {_MONTH_ABBR[ts.month - 1]}"


# ================================================================================================ faults
def _inject_faults(counts: np.ndarray, expected: np.ndarray, rng, times: pd.DatetimeIndex, lay: Layout
                   ) -> pd.DataFrame:
    """Zero runs, stuck values and missing rows (NaN), in place; returns what was injected."""
    n_t, n_d = counts.shape
    det = lay.detectors["detector_id"].to_numpy()
    rec = []

    taken: dict[int, list[tuple[int, int]]] = {}  # zero and stuck runs of one detector never overlap

    def run(lo: int, hi: int, d: int | None = None) -> tuple[int, int]:
        length = int(rng.integers(lo, hi + 1))
        while True:
            i0 = int(rng.integers(0, n_t - length))
            if d is None or all(i0 + length <= a or i0 >= b for a, b in taken.get(d, [])):
                taken.setdefault(d, []).append((i0, i0 + length))
                return i0, i0 + length

    dead = int(rng.integers(n_d))  # one detector dead for days
    i0, i1 = run(2 * SLOTS_PER_DAY, 5 * SLOTS_PER_DAY, dead)
    counts[i0:i1, dead] = 0
    rec.append((dead, i0, i1, "zero"))
    for d in np.flatnonzero(rng.random(n_d) < 0.2):
        i0, i1 = run(8, 144, int(d))
        counts[i0:i1, d] = 0
        rec.append((d, i0, i1, "zero"))
    for d in np.flatnonzero(rng.random(n_d) < 0.12):
        i0, i1 = run(12, 96, int(d))
        counts[i0:i1, d] = max(1.0, round(float(expected[i0, d])))
        rec.append((d, i0, i1, "stuck"))
    for d in np.flatnonzero(rng.random(n_d) < 0.3):
        for _ in range(int(rng.integers(1, 4))):
            i0, i1 = run(4, 48)
            counts[i0:i1, d] = np.nan
            rec.append((d, i0, i1, "gap"))
    i0, i1 = run(4, 8)  # a city-wide communications outage
    counts[i0:i1, :] = np.nan
    rec.extend((d, i0, i1, "outage") for d in range(n_d))
    lone = rng.random(counts.shape) < 0.0005
    counts[lone] = np.nan
    rec.extend((int(d), int(t), int(t) + 1, "gap") for t, d in zip(*np.nonzero(lone), strict=True))
    step = times[1] - times[0]
    return pd.DataFrame({
        "detector_id": [det[r[0]] for r in rec],
        "start_ts": [times[r[1]] for r in rec],
        "end_ts": [times[0] + r[2] * step for r in rec],
        "fault": [r[3] for r in rec],
    })


def _long(counts: np.ndarray, times: pd.DatetimeIndex, det_ids: list[str]) -> pd.DataFrame:
    """(T, D) counts with NaN for missing rows -> long observations sorted by detector then time."""
    vals = counts.T.reshape(-1)
    keep = ~np.isnan(vals)
    n_t = len(times)
    return pd.DataFrame({
        "detector_id": np.repeat(np.array(det_ids, dtype=object), n_t)[keep],
        "ts": np.tile(times.to_numpy(), len(det_ids))[keep],
        "value": vals[keep],
    })
