"""VicRoads SCATS volume workbooks (.xls, .xlsx, or a CSV export) as canonical tables.

The format, as VicRoads supplies it in answer to data requests (see the Boroondara October 2006
README in ../shared/data): one row per approach-day on the sheet `Data`, the header on the sheet's
second row (row 1 carries "Start Time 0:00 ... 23:45"), identity columns `SCATS Number`,
`Location` ("WARRIGAL_RD N of HIGH STREET_RD"), `NB_LATITUDE`, `NB_LONGITUDE`,
`HF VicRoads Internal`, `Date`, then `V00`..`V95`: vehicle counts in the 96 quarter-hours from
00:00. CSV exports carry the same columns with the header on row 1.

Modelling choices, and why:

- One detector per approach: (SCATS Number, Location, HF VicRoads Internal), with id
  ``"{site}:{hf}"``. The HF id is what tells apart the two series site 4335 files under the same
  Location; the Location alone would merge them. Three approaches (2846, 4051, 4821) have HF id
  -1, i.e. none; a negative or blank HF id falls back to the normalised Location, e.g.
  ``"2846:WILLS_ST_NW_OF_HIGH_ST"``, which is just as stable and cannot collide within a site.
- Site ids drop leading zeros ("0970" in the workbook, 970 in exports) so every copy of the data
  lands on the same ids.
- Coordinates are used exactly as given, except 0/0 (one approach of site 4266), which means
  "unknown" and is replaced by the centroid of the site's other approaches. Student projects report
  that the points sit about 150 m south-west of the intersections (+0.0013..0.0015 lat,
  +0.0013 lon); that correction is NOT applied because nobody has verified it against a basemap.
- The xlsx stores dates as "YYYY-MM-DD 00:15"; only the date part is kept, and ``Vk`` starts at
  date + k x 15 min, in Melbourne wall-clock time as the data gives it. On 2006-10-29 (daylight
  saving began at 02:00) the workbook still has 96 intervals, so 02:00-02:45 appear although that
  wall time did not exist. The intervals the clocks skipped read 0: 109-110 of the day's 137 approach
  rows are 0 in each of V07..V10, against at most 4 in any other quarter-hour of that day. Those
  zeros are not counts, so on a day when the zone's clocks go forward the loader drops the zero
  readings of the skipped hour's intervals, labelled one interval early (`clock_change_gap`);
  a model would otherwise learn, and be scored on, a traffic collapse that never happened. The
  zeros sit one interval early (01:45-02:30, not 02:00-02:45), which agrees with the "00:15" date
  stamps: the labels may be 15 minutes early. Nothing is shifted: the file's labels are kept, and
  rows that kept counting through the change (28 of 137) keep their readings.
- Adjacency (kind "road") links sites that share a normalised road name, either as the approach
  road or as the cross road of a Location. Among the sites on one road, only the shortest links
  that join them all are kept (a minimum spanning tree, which for sites strung along a road is the
  chain of consecutive sites), in both directions: Warrigal Rd becomes 3126-3682-2000-3685-970, as
  student projects drew it, not a clique. A link longer than `MAX_LINK_M` is dropped, since two
  far-apart sites with the same road name (High St Kew and High St Glen Iris) are not neighbours.
  ``weight`` is the great-circle distance between the site centroids in metres (a cost, like the
  matrix loader's adjacency).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from trafficcore.data.schema import CanonicalTables, DatasetInfo
from trafficcore.data.validate import (
    EARLIEST,
    LATEST,
    check_columns,
    check_file,
    check_time_bounds,
    check_time_window,
    check_values,
    read_csv,
    to_numbers,
)
from trafficcore.errors import DataError, shown

TIMEZONE = "Australia/Melbourne"
INTERVAL_S = 900
COUNT_COLUMNS = [f"V{k:02d}" for k in range(96)]
ID_COLUMNS = ["SCATS Number", "Location", "NB_LATITUDE", "NB_LONGITUDE", "HF VicRoads Internal", "Date"]
REQUIRED = ID_COLUMNS + COUNT_COLUMNS
LISTING_REQUIRED = ["Site Number", "Location Description"]
#: Sites on the same road farther apart than this are not linked (metres).
MAX_LINK_M = 3000.0

_LOCATION = re.compile(r"^\s*(?P<road>.+?)\s+(?P<dir>NE|NW|SE|SW|N|S|E|W)\s+OF\s+(?P<cross>.+?)\s*$", re.IGNORECASE)
_INTEGER = re.compile(r"^\s*(-?)0*(\d+)(?:\.0*)?\s*$")
_ISO_DATE = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?$")
_DMY_DATE = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})(?:\s+\d{1,2}:\d{2}(?::\d{2})?)?$")
_XLRD_LOCK = threading.Lock()


# --------------------------------------------------------------------------- public API
def load(path: str | Path, sites_listing: str | Path | None = None) -> CanonicalTables:
    """Read one SCATS volume file (optionally with the VicRoads site listing) into canonical tables."""
    p = check_file(path)
    raw, rows = _read_records(p)
    if raw.empty:
        raise DataError(str(p), "no records below the header")
    names = _read_listing(sites_listing) if sites_listing is not None else {}
    recs = _parse_records(raw, rows, p)
    recs = _drop_duplicate_days(recs, p)
    with _rows_as_seen(recs["row"].to_numpy()):
        check_time_window(recs["date"].reset_index(drop=True), p, "Date", 0)
    detectors = _detectors(recs, p)
    sites = _sites(detectors, recs, names)
    observations = _observations(recs)
    adjacency = _adjacency(sites, detectors)
    info = DatasetInfo(
        synthetic=False,
        source=f"VicRoads SCATS volumes ({p.name})",
        timezone=TIMEZONE,
        interval_s=INTERVAL_S,
        measure="volume",
        description="Vehicles per 15 minutes per intersection approach, from VicRoads SCATS detectors.",
    )
    return CanonicalTables(
        info=info, sites=sites, detectors=detectors, observations=observations, adjacency=adjacency
    )


def parse_location(location: str) -> tuple[str, str, str] | None:
    """'WARRIGAL_RD N of HIGH STREET_RD' -> ('WARRIGAL RD', 'N', 'HIGH STREET RD'); None if unparsable."""
    m = _LOCATION.match(str(location))
    if not m:
        return None
    return normalise_road(m["road"]), m["dir"].upper(), normalise_road(m["cross"])


def normalise_road(name: str) -> str:
    """One spelling per road: upper case, '_' as space, single spaces ('High Street_rd' -> 'HIGH STREET RD')."""
    return re.sub(r"\s+", " ", str(name).replace("_", " ")).strip().upper()


# --------------------------------------------------------------------------- reading
def _kind(p: Path) -> str:
    """Sniff the container from its first bytes, so a misnamed file is still read correctly."""
    with open(p, "rb") as f:
        head = f.read(8)
    if head.startswith(b"PK\x03\x04"):
        return "xlsx"
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        return "xls"
    return "csv"


def _read_records(p: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """The data records as an object frame, and each record's row number as the user sees it."""
    kind = _kind(p)
    if kind == "csv":
        df = read_csv(p, required=REQUIRED, skip_blank_lines=False)
        rows = np.arange(2, len(df) + 2)
        keep = ~(df == "").all(axis=1).to_numpy()
        return df[keep].reset_index(drop=True), rows[keep]
    grid = _sheet_rows_xlsx(p) if kind == "xlsx" else _sheet_rows_xls(p)
    header_i = _find_header(grid, ["SCATS Number", "Location"], p)
    header = [_cell_text(c) for c in grid[header_i]]
    body = grid[header_i + 1 :]
    width = len(header)
    data = [list(r[:width]) + [None] * (width - len(r)) for r in body]
    df = pd.DataFrame(data, columns=header, dtype=object)
    check_columns(df, REQUIRED, p, header_row=header_i + 1)
    df = df.loc[:, ~df.columns.duplicated()]
    rows = np.arange(header_i + 2, header_i + 2 + len(df))
    blank = df.map(lambda v: v is None or (isinstance(v, str) and not v.strip())).all(axis=1).to_numpy()
    return df[~blank].reset_index(drop=True), rows[~blank]


def _cell_text(v) -> str:
    return "" if v is None else str(v).strip()


def _find_header(grid: list[list], needed: list[str], p: Path, look: int = 50) -> int:
    """Index of the first row (of the first `look`) that holds every `needed` header."""
    for i, row in enumerate(grid[:look]):
        cells = {_cell_text(c) for c in row}
        if all(n in cells for n in needed):
            return i
    raise DataError(str(p), f"no header row with columns {needed} in the first {look} rows", column=needed[0])


def _sheet_rows_xlsx(p: Path) -> list[list]:
    """All rows of sheet `Data` (or the only sheet) of an .xlsx, streamed in read-only mode."""
    with _open_xlsx(p) as wb:
        ws = wb[_pick_sheet(wb.sheetnames, p)]
        return [list(r) for r in ws.iter_rows(values_only=True)]


#: What openpyxl and xlrd raise on a file that is not the workbook it claims to be (a zip of
#: something else, random bytes behind a workbook signature, a cut-off file).
def _workbook_faults() -> tuple[type[BaseException], ...]:
    import struct
    import zipfile

    import xlrd
    from openpyxl.utils.exceptions import InvalidFileException
    from xlrd.compdoc import CompDocError

    return (zipfile.BadZipFile, InvalidFileException, xlrd.XLRDError, CompDocError, struct.error, AssertionError,
            KeyError, IndexError, ValueError, TypeError, OSError, EOFError, UnicodeDecodeError)


@contextmanager
def _open_xlsx(p: Path):
    """An .xlsx (read-only) whose faults, on opening or while reading, end as one DataError naming the file.

    It is opened from a handle so that openpyxl judges the content, not the name (a listing saved
    as `.zip` is then refused for what is inside it).
    """
    import warnings

    import openpyxl

    try:
        with open(p, "rb") as f, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Cannot parse header or footer": page furniture only
            wb = openpyxl.load_workbook(f, read_only=True, data_only=True)
            try:
                yield wb
            finally:
                wb.close()
    except DataError:
        raise
    except _workbook_faults() as e:
        raise DataError(str(p), f"cannot read the workbook: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def _sheet_rows_xls(p: Path) -> list[list]:
    """All rows of sheet `Data` (or the only sheet) of a legacy .xls; dates become datetimes."""
    import xlrd

    with _open_xls(p) as book:
        sheet = book.sheet_by_name(_pick_sheet(book.sheet_names(), p))
        out = []
        for i in range(sheet.nrows):
            row = []
            for c in sheet.row(i):
                if c.ctype == xlrd.XL_CELL_DATE:
                    row.append(xlrd.xldate_as_datetime(c.value, book.datemode))
                elif c.ctype in (xlrd.XL_CELL_EMPTY, xlrd.XL_CELL_BLANK):
                    row.append(None)
                elif c.ctype == xlrd.XL_CELL_ERROR:
                    row.append(f"#ERROR{c.value}")
                else:
                    row.append(c.value)
            out.append(row)
        return out


def _pick_sheet(names: list[str], p: Path) -> str:
    for n in names:
        if n.strip().lower() == "data":
            return n
    if len(names) == 1:
        return names[0]
    raise DataError(str(p), f"no sheet named 'Data' among {names}")


@contextmanager
def _open_xls(p: Path):
    """Open an .xls with xlrd, tolerating defined names xlrd cannot evaluate.

    The VicRoads site listing carries a defined name (LOCAL_MYSQL_DATE_FORMAT) whose formula trips
    an assertion in xlrd 2.0's name evaluator; `on_demand=True` does not help because names are
    evaluated while the workbook globals are parsed. Names are irrelevant to us, so for the
    duration of the open we swap in an evaluator that marks such a name as unevaluable instead of
    failing. The swap is under a lock and always undone.
    """
    import xlrd
    import xlrd.book

    original = xlrd.book.evaluate_name_formula

    def tolerant(bk, nobj, namex, blah=0, level=0):
        try:
            original(bk, nobj, namex, blah=blah, level=level)
        except (AssertionError, IndexError, KeyError, ValueError):
            nobj.evaluated, nobj.result, nobj.stack = 1, None, []

    with open(os.devnull, "w") as devnull, _XLRD_LOCK:
        xlrd.book.evaluate_name_formula = tolerant
        try:
            book = xlrd.open_workbook(str(p), logfile=devnull, on_demand=True)
        except _workbook_faults() as e:
            raise DataError(str(p), f"cannot read the workbook: {_first_line(e)}") from None
        finally:
            xlrd.book.evaluate_name_formula = original
    try:
        yield book
    except DataError:
        raise
    except _workbook_faults() as e:  # sheets load on demand, so a corrupt one is met while reading
        raise DataError(str(p), f"cannot read the workbook: {_first_line(e)}") from None
    finally:
        book.release_resources()


def _read_listing(path: str | Path) -> dict[str, str]:
    """Site number -> intersection name from the VicRoads site listing (.xls, .xlsx or CSV).

    The listing repeats some sites on several identical rows; the first row of a site wins.
    """
    p = check_file(path)
    kind = _kind(p)
    if kind == "csv":
        df = read_csv(p, required=LISTING_REQUIRED)
        numbers, descs, rows = list(df["Site Number"]), list(df["Location Description"]), range(2, len(df) + 2)
    else:
        if kind == "xls":
            with _open_xls(p) as book:
                sheets = [book.sheet_by_index(i) for i in range(book.nsheets)]
                grids = [[sh.row_values(i) for i in range(sh.nrows)] for sh in sheets]
        else:
            with _open_xlsx(p) as wb:
                grids = [[list(r) for r in ws.iter_rows(values_only=True)] for ws in wb.worksheets]
        # The listing is on the second sheet of VicRoads' file; search every sheet for its header.
        for grid in grids:
            try:
                h = _find_header(grid, LISTING_REQUIRED, p)
            except DataError:
                continue
            header = [_cell_text(c) for c in grid[h]]
            num_i, desc_i = header.index("Site Number"), header.index("Location Description")
            body = grid[h + 1 :]
            numbers = [r[num_i] if num_i < len(r) else None for r in body]
            descs = [r[desc_i] if desc_i < len(r) else None for r in body]
            rows = range(h + 2, h + 2 + len(body))
            break
        else:
            raise DataError(str(p), f"no sheet has a header row with columns {LISTING_REQUIRED}", column="Site Number")
    names: dict[str, str] = {}
    for number, desc, row in zip(numbers, descs, rows, strict=True):
        text = _cell_text(number)
        if not text:
            continue
        m = _INTEGER.match(text)
        if not m:
            raise DataError(str(p), f"not a site number: {shown(number)}", row=row, column="Site Number")
        if m[1]:
            raise DataError(str(p), f"negative site number: {shown(number)}", row=row, column="Site Number")
        names.setdefault(str(int(m[2])), _cell_text(desc))
    return names


# --------------------------------------------------------------------------- parsing
def _parse_records(raw: pd.DataFrame, rows: np.ndarray, p: Path) -> pd.DataFrame:
    """Typed records: site, hf, location, road, approach, cross, lat, lon, date, row, V00..V95."""
    out = pd.DataFrame({"row": rows})
    with _rows_as_seen(rows):
        out["site_id"] = _integers(raw["SCATS Number"], p, "SCATS Number")
        out["hf"] = _integers(raw["HF VicRoads Internal"], p, "HF VicRoads Internal", signed=True, blank="-1")
        out["lat"] = to_numbers(raw["NB_LATITUDE"], p, "NB_LATITUDE", 0, allow_missing=True).to_numpy()
        out["lon"] = to_numbers(raw["NB_LONGITUDE"], p, "NB_LONGITUDE", 0, allow_missing=True).to_numpy()
        out["date"] = _dates(raw["Date"], p)
        check_time_bounds(out["date"], raw["Date"], p, "Date", 0)
        counts = np.empty((len(raw), 96), dtype=float)
        for k, c in enumerate(COUNT_COLUMNS):
            counts[:, k] = to_numbers(raw[c], p, c, 0, non_negative=True).to_numpy()
            check_values(pd.Series(counts[:, k]), "volume", INTERVAL_S, p, c, 0)
    frac = counts != np.floor(counts)
    if frac.any():
        i, k = np.argwhere(frac)[0]
        msg = f"count is not a whole number: {counts[i, k]:g}"
        raise DataError(str(p), msg, row=int(rows[i]), column=COUNT_COLUMNS[k])
    _check_coordinates(out, p)
    locations = [_cell_text(v) for v in raw["Location"]]
    parsed = []
    for i, loc in enumerate(locations):
        res = parse_location(loc)
        if res is None:
            raise DataError(
                str(p),
                f"cannot read the approach from Location {shown(loc)} "
                "(expected 'ROAD <N|S|E|W|NE|NW|SE|SW> of CROSS ROAD')",
                row=int(rows[i]),
                column="Location",
            )
        parsed.append(res)
    out["location"] = locations
    out["road"], out["approach"], out["cross"] = (list(x) for x in zip(*parsed, strict=True))
    slug = out["location"].map(lambda loc: normalise_road(loc).replace(" ", "_"))
    no_hf = out["hf"].str.startswith("-")
    out["detector_id"] = out["site_id"] + ":" + out["hf"].where(~no_hf, slug)
    return pd.concat([out, pd.DataFrame(counts, columns=COUNT_COLUMNS)], axis=1)


@contextmanager
def _rows_as_seen(rows: np.ndarray):
    """Translate a validator's record index (first_row=0) into the row the user sees."""
    try:
        yield
    except DataError as e:
        if e.row is None:
            raise
        raise DataError(e.file, e.message, row=int(rows[e.row]), column=e.column) from None


def _integers(s: pd.Series, p: Path, column: str, signed: bool = False, blank: str | None = None) -> np.ndarray:
    """Whole-number ids as strings without leading zeros ('0970', 970, 970.0 -> '970').

    `blank` is what an empty cell becomes (None: an empty cell is an error).
    """
    text = s.map(_cell_text)
    if blank is not None:
        text = text.mask(text == "", blank)
    m = text.str.extract(_INTEGER.pattern)
    bad = (m[1].isna() | ((m[0] == "-") & (not signed))).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        if not text.iloc[i]:
            what = "value is missing"
        elif m[0].iloc[i] == "-":
            what = f"must not be negative: {shown(s.iloc[i])}"
        else:
            what = f"not a whole number: {shown(s.iloc[i])}"
        raise DataError(str(p), what, row=i, column=column)
    return (m[0] + m[1].map(lambda x: str(int(x)))).to_numpy()


def _dates(s: pd.Series, p: Path) -> np.ndarray:
    """Calendar dates (time of day dropped) from datetimes, ISO text or D/M/Y text."""
    text = s.map(lambda v: v.isoformat(sep=" ") if isinstance(v, (dt.datetime, dt.date)) else _cell_text(v))
    iso = text.str.extract(_ISO_DATE.pattern)
    dmy = text.str.extract(_DMY_DATE.pattern)
    parts = pd.DataFrame(
        {
            "year": iso[0].fillna(dmy[2]),
            "month": iso[1].fillna(dmy[1]),
            "day": iso[2].fillna(dmy[0]),
        }
    )
    ok = parts.notna().all(axis=1)
    years = pd.to_numeric(parts["year"], errors="coerce")
    far = (ok & ((years < EARLIEST.year) | (years >= LATEST.year))).to_numpy()
    if far.any():  # refused before parsing: pandas cannot even hold a date like 2300-01-01 in nanoseconds
        i = int(np.flatnonzero(far)[0])
        raise DataError(str(p), f"date/time out of range ({EARLIEST.year}-{LATEST.year - 1}): {s.iloc[i]!r}",
                        row=i, column="Date")
    dates = pd.to_datetime(parts[ok].astype(int), errors="coerce") if ok.any() else pd.Series(dtype="datetime64[ns]")
    full = pd.Series(pd.NaT, index=s.index, dtype="datetime64[ns]")
    full[ok] = dates
    bad = full.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(str(p), f"not a date (expected YYYY-MM-DD or D/M/YYYY): {shown(s.iloc[i])}", row=i,
                        column="Date")
    return full.to_numpy(dtype="datetime64[ns]")


def _check_coordinates(recs: pd.DataFrame, p: Path) -> None:
    for col, lim in (("lat", 90.0), ("lon", 180.0)):
        bad = (recs[col].abs() > lim).to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            name = "NB_LATITUDE" if col == "lat" else "NB_LONGITUDE"
            msg = f"{name} {recs[col].iloc[i]:g} is out of range"
            raise DataError(str(p), msg, row=int(recs["row"].iloc[i]), column=name)


def _drop_duplicate_days(recs: pd.DataFrame, p: Path) -> pd.DataFrame:
    """Exact repeats of an approach-day are dropped; repeats with other counts are an error."""
    keys = ["detector_id", "date"]
    if not recs.duplicated(keys).any():
        return recs
    exact = recs.duplicated(keys + COUNT_COLUMNS)
    recs = recs[~exact]
    conflict = recs.duplicated(keys, keep="first").to_numpy()
    if conflict.any():
        second = recs.iloc[int(np.flatnonzero(conflict)[0])]
        first = recs[(recs["detector_id"] == second["detector_id"]) & (recs["date"] == second["date"])].iloc[0]
        differ = [c for c in COUNT_COLUMNS if first[c] != second[c]]
        raise DataError(
            str(p),
            f"conflicting duplicate: site {second['site_id']} '{second['location']}' (HF {second['hf']}) on "
            f"{pd.Timestamp(second['date']).date()} already appears on row {first['row']} with other counts",
            row=int(second["row"]),
            column=differ[0],
        )
    return recs.reset_index(drop=True)


# --------------------------------------------------------------------------- tables
def _detectors(recs: pd.DataFrame, p: Path) -> pd.DataFrame:
    """One row per approach; coordinates 0/0 (or missing) borrow the site's other approaches' centroid."""
    first = recs.drop_duplicates("detector_id")
    norm = recs["location"].map(normalise_road)
    clash = norm != norm.groupby(recs["detector_id"]).transform("first")
    if clash.any():
        r = recs[clash].iloc[0]
        raise DataError(
            str(p),
            f"HF VicRoads Internal {r['hf']} at site {r['site_id']} appears with two Locations: "
            f"'{first.set_index('detector_id').loc[r['detector_id'], 'location']}' and '{r['location']}'",
            row=int(r["row"]),
            column="Location",
        )
    det = first[["detector_id", "site_id", "approach", "location", "road", "lat", "lon"]].rename(
        columns={"location": "description"}
    )
    det = det.reset_index(drop=True)
    unknown = (det["lat"].isna() | det["lon"].isna() | ((det["lat"] == 0) & (det["lon"] == 0))).to_numpy()
    det.loc[unknown, ["lat", "lon"]] = np.nan
    if unknown.any():
        centroid = det.groupby("site_id")[["lat", "lon"]].mean()
        det.loc[unknown, "lat"] = det.loc[unknown, "site_id"].map(centroid["lat"]).to_numpy()
        det.loc[unknown, "lon"] = det.loc[unknown, "site_id"].map(centroid["lon"]).to_numpy()
    det["lanes"] = pd.array([pd.NA] * len(det), dtype="Int64")
    det["measure"] = "volume"
    det["interval_s"] = INTERVAL_S
    return det.sort_values(["site_id", "detector_id"], key=_natural).reset_index(drop=True)


def _natural(s: pd.Series) -> pd.Series:
    """Sort '970' before '2000' (numeric site part), ids stay strings."""
    if s.name == "site_id":
        return s.astype(int)
    return s.map(lambda x: (int(x.split(":")[0]), *((0, int(t)) if t.isdigit() else (1, t) for t in x.split(":")[1:])))


def _sites(detectors: pd.DataFrame, recs: pd.DataFrame, listing: dict[str, str]) -> pd.DataFrame:
    """Sites at the centroid of their approaches, named from the listing or else from their roads."""
    roads = _site_roads(recs)
    g = detectors.groupby("site_id", sort=False)
    out = g[["lat", "lon"]].mean().reset_index()
    n = g.size()
    out["name"] = [listing.get(s) or " / ".join(roads[s]) for s in out["site_id"]]
    out["description"] = [
        f"VicRoads SCATS site {s}: {n[s]} approach{'es' if n[s] != 1 else ''} on {', '.join(roads[s])}"
        for s in out["site_id"]
    ]
    out["geometry_wkt"] = None
    return out.sort_values("site_id", key=lambda s: s.astype(int)).reset_index(drop=True)


def _site_roads(recs: pd.DataFrame) -> dict[str, list[str]]:
    """Roads meeting at each site, in order of first mention (approach road, then cross road)."""
    out: dict[str, list[str]] = {}
    first = recs.drop_duplicates("detector_id")
    for site, road, cross in zip(first["site_id"], first["road"], first["cross"], strict=True):
        lst = out.setdefault(site, [])
        for r in (road, cross):
            if r not in lst:
                lst.append(r)
    return out


def clock_change_gap(dates: np.ndarray, timezone: str = TIMEZONE) -> np.ndarray:
    """The wall-clock interval starts, on `dates`, whose zero readings are the clocks' skipped hour.

    For a day when `timezone`'s clocks go forward: the starts of the intervals that do not exist on the
    wall clock, each one interval earlier (the module docstring says why). SCATS, 2006-10-29:
    01:45, 02:00, 02:15, 02:30.
    Other days contribute nothing. Returns sorted naive datetime64[ns] values.
    """
    step = pd.Timedelta(seconds=INTERVAL_S)
    out: list[pd.Timestamp] = []
    for day in pd.DatetimeIndex(pd.unique(pd.DatetimeIndex(dates).normalize())):
        wall = pd.date_range(day, periods=96, freq=step)
        skipped = wall[pd.isna(wall.tz_localize(timezone, nonexistent="NaT", ambiguous=True))]
        if len(skipped):
            out.extend(pd.date_range(skipped[0] - step, skipped[-1] - step, freq=step))
    return np.array(sorted(out), dtype="datetime64[ns]")


def _observations(recs: pd.DataFrame) -> pd.DataFrame:
    """Long rows: ts = date + k x 15 min for column Vk, without the clock change's zeros (see the docstring)."""
    counts = recs[COUNT_COLUMNS].to_numpy(dtype=float)
    offsets = (np.arange(96) * INTERVAL_S).astype("timedelta64[s]").astype("timedelta64[ns]")
    ts = recs["date"].to_numpy(dtype="datetime64[ns]")[:, None] + offsets[None, :]
    obs = pd.DataFrame(
        {
            "detector_id": np.repeat(recs["detector_id"].to_numpy(dtype=object), 96),
            "ts": ts.ravel(),
            "value": counts.ravel(),
        }
    )
    skipped = obs["ts"].isin(clock_change_gap(recs["date"].to_numpy())) & (obs["value"] == 0)
    obs = obs[~skipped.to_numpy()]
    return obs.sort_values(["detector_id", "ts"], kind="stable").reset_index(drop=True)


def _adjacency(sites: pd.DataFrame, detectors: pd.DataFrame) -> pd.DataFrame:
    """Sites linked along each shared road name, both directions, weight = distance in metres."""
    from scipy.sparse.csgraph import minimum_spanning_tree

    from trafficcore.data.panel import haversine_km

    pos = sites.set_index("site_id")[["lat", "lon"]].dropna()
    on_road: dict[str, set[str]] = {}
    for site, desc in zip(detectors["site_id"], detectors["description"], strict=True):
        road, _, cross = parse_location(desc)
        for r in (road, cross):
            if site in pos.index:
                on_road.setdefault(r, set()).add(site)
    edges: dict[tuple[str, str], float] = {}
    for members in on_road.values():
        if len(members) < 2:
            continue
        ids = sorted(members, key=int)
        lat, lon = pos.loc[ids, "lat"].to_numpy(), pos.loc[ids, "lon"].to_numpy()
        dist_m = haversine_km(lat[:, None], lon[:, None], lat[None, :], lon[None, :]) * 1000.0
        # csgraph reads 0 as "no edge"; two sites at the very same point are still neighbours.
        tree = minimum_spanning_tree(np.maximum(dist_m, 1e-3)).tocoo()
        for i, j in zip(tree.row, tree.col, strict=True):
            if dist_m[i, j] <= MAX_LINK_M:
                edges[(ids[i], ids[j])] = edges[(ids[j], ids[i])] = float(dist_m[i, j])
    adj = pd.DataFrame(
        [(a, b, w) for (a, b), w in edges.items()], columns=["src", "dst", "weight"]
    ).astype({"src": object, "dst": object, "weight": float})
    adj["kind"] = "road"
    return adj.sort_values(["src", "dst"], key=lambda s: s.astype(int)).reset_index(drop=True)
