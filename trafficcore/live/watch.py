"""`trafficcore ingest`: long-format observation files taken in one by one, from a list or a watched folder.

A traffic centre's export job drops one CSV per interval (or per hour) into a folder. The watcher:

- takes files **in order**: by name, then modification time, because exports are named by time
  (`obs_20250317_0800.csv`) and a later file may correct an earlier one; a file still being written
  holds back the files after it;
- **skips files still being written**: a file is taken only once its size and mtime are the same on
  two looks `settle` seconds apart, and names starting with `.` or ending in `.part`/`.tmp` are ignored;
- takes **each file once**: the sha256 of its bytes is recorded with the batch in the store's
  ingest log, so after a restart (or if the same file is dropped again) it is recognised and set aside;
- moves good files to `DIR/done/` and bad ones to `DIR/rejected/`, with `NAME.error.txt` beside a
  rejected file giving the message (file, row, column) so whoever produced it can fix it;
- re-issues forecasts for the detectors each file touched.

Files are parsed by the long loader's observation reader (`trafficcore.data.loaders.long`), so the
format and its error messages are exactly those of `trafficcore import long` (docs/FORMATS.md).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from trafficcore.data.store import Store
from trafficcore.errors import DataError, TrafficCoreError

IGNORED_SUFFIXES = (".part", ".tmp", ".error.txt")
SUFFIXES = (".csv", ".csv.gz")


@dataclass
class FileOutcome:
    """What happened to one file: `status` is ingested, duplicate or rejected."""

    path: Path
    status: str
    message: str
    result: dict | None = None
    moved_to: Path | None = None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def source_tag(path: Path, digest: str) -> str:
    """The ingest log's `source` for a file: its name and content hash, for people reading the log."""
    return f"file:{path.name} sha256={digest}"


def already_ingested(store: Store, dataset: str, digest: str) -> bool:
    """True when a file with these bytes was ingested before.

    Looked up in the log's own `file_sha256` column, never in `source`: a client of the API chooses
    its `source` text and could otherwise write any file's digest there and make the watcher skip it.
    """
    found = store.query("SELECT count(*) AS n FROM ingest_log WHERE dataset = ? AND file_sha256 = ?",
                        [dataset, digest])
    return int(found["n"].iloc[0]) > 0


def read_observation_file(store: Store, dataset: str, path: Path) -> pd.DataFrame:
    """The file's readings (detector_id, ts, value, row) through the long loader's observation reader."""
    from trafficcore.data.loaders.long import load_observations
    from trafficcore.data.validate import check_file

    check_file(path)
    known = set(store.query("SELECT detector_id FROM detectors WHERE dataset = ?", [dataset])["detector_id"])
    if not known:
        raise DataError(str(path), f"dataset {dataset!r} has no detectors (import it first)")
    return load_observations(path, known)


def ingest_file(store: Store, dataset: str, path: Path, refresh: bool = True) -> FileOutcome:
    """Ingest one file (all or nothing) and re-issue forecasts for its detectors; never raises a DataError."""
    from trafficcore.live.ingest import ingest_observations, refresh_forecasts

    path = Path(path)
    t0 = time.perf_counter()
    try:
        digest = file_sha256(path)
        if already_ingested(store, dataset, digest):
            msg = f"{path.name}: already ingested (same content), skipped"
            if refresh:
                dets = read_observation_file(store, dataset, path)["detector_id"].astype(str).unique().tolist()
                msg += _reissued(store, dataset, dets)
            return FileOutcome(path, "duplicate", msg)
        frame = read_observation_file(store, dataset, path)
        try:
            res = ingest_observations(store, dataset, frame, source=source_tag(path, digest), file_sha256=digest)
        except DataError as e:  # name the file and its own column, as the loader's messages do
            column = "timestamp" if e.column == "ts" else e.column
            raise DataError(str(path), e.message, row=e.row, column=column) from None
    except DataError as e:
        return FileOutcome(path, "rejected", str(e))
    if res.duplicate_batch:
        msg = f"{path.name}: the same readings were ingested before, skipped"
        return FileOutcome(path, "duplicate", msg + (_reissued(store, dataset, res.detectors) if refresh else ""),
                           res.to_dict())
    msg = (f"{path.name}: {res.received} readings, {res.written} new or changed ({res.late} late), "
           f"{res.first_ts:%Y-%m-%d %H:%M}..{res.last_ts:%H:%M}")
    if refresh and res.written:
        try:
            fc = refresh_forecasts(store, dataset, res.detectors)
            msg += (f"; forecasts re-issued for {fc['detector_id'].nunique()} detectors at "
                    f"{pd.Timestamp(fc['issued_at'].iloc[0]):%Y-%m-%d %H:%M}")
        except (TrafficCoreError, KeyError, ValueError) as e:
            msg += f"; forecasts not re-issued ({e})"
    return FileOutcome(path, "ingested", f"{msg} ({time.perf_counter() - t0:.2f} s)", res.to_dict())


def _reissued(store: Store, dataset: str, detectors: list[str]) -> str:
    """Re-issue the forecasts a duplicate's detectors lack (a crash after the readings were committed);
    returns the words to add to the outcome's message ("" when nothing was missing)."""
    from trafficcore.live.ingest import reissue_missing

    try:
        fc = reissue_missing(store, dataset, detectors)
    except (TrafficCoreError, KeyError, ValueError) as e:
        return f"; missing forecasts not re-issued ({e})"
    if fc is None:
        return ""
    return (f"; forecasts that were missing re-issued for {fc['detector_id'].nunique()} detectors at "
            f"{pd.Timestamp(fc['issued_at'].iloc[0]):%Y-%m-%d %H:%M}")


def _move(path: Path, folder: Path) -> Path:
    """Move into `folder`, never overwriting: a second file of the same name gets a numbered name."""
    folder.mkdir(exist_ok=True)
    dest = folder / path.name
    n = 1
    while dest.exists():
        dest = folder / f"{path.stem}.{n}{path.suffix}"
        n += 1
    os.replace(path, dest)
    return dest


def settle_and_file(outcome: FileOutcome, folder: Path) -> FileOutcome:
    """Move a processed file to done/ or rejected/ (with NAME.error.txt beside a rejected one)."""
    if outcome.status == "rejected":
        outcome.moved_to = _move(outcome.path, folder / "rejected")
        Path(f"{outcome.moved_to}.error.txt").write_text(outcome.message + "\n")
    else:
        outcome.moved_to = _move(outcome.path, folder / "done")
    return outcome


def candidates(folder: Path, suffixes: tuple[str, ...] = SUFFIXES) -> list[Path]:
    """Files waiting in `folder` (not its subfolders), in processing order: name, then mtime."""
    out = []
    for p in folder.iterdir():
        name = p.name.lower()
        if not p.is_file() or name.startswith(".") or name.endswith(IGNORED_SUFFIXES):
            continue
        if name.endswith(suffixes):
            out.append(p)
    return sorted(out, key=lambda p: (p.name, p.stat().st_mtime_ns))


def _signature(p: Path) -> tuple[int, int] | None:
    try:
        st = p.stat()
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


def watch(
    store: Store,
    dataset: str,
    folder: str | os.PathLike,
    once: bool = False,
    poll: float = 1.0,
    settle: float | None = None,
    refresh: bool = True,
    echo: Callable[[str], None] = print,
    should_stop: Callable[[], bool] = lambda: False,
    take: Callable[[Store, str, Path, bool], FileOutcome] | None = None,
    suffixes: tuple[str, ...] = SUFFIXES,
) -> list[FileOutcome]:
    """Process files arriving in `folder` until stopped (or, with `once`, those there now); returns outcomes.

    A file counts as complete when its size and mtime did not change over `settle` seconds (default:
    `poll`, at most 1 s). With `once`, files still being written after that wait are left for next time.
    `take(store, dataset, path, refresh)` processes one file (default: `ingest_file`, readings; event feeds
    pass `trafficcore.live.events.ingest_event_file` and their `suffixes`).
    """
    take = ingest_file if take is None else take
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(str(folder), "not a folder")
    settle = min(poll, 1.0) if settle is None else settle
    outcomes: list[FileOutcome] = []
    seen: dict[Path, tuple[int, int]] = {}
    while not should_stop():
        files = candidates(folder, suffixes)
        if once and files and not seen:
            seen = {p: s for p in files if (s := _signature(p))}
            time.sleep(settle)
            files = candidates(folder, suffixes)
        ready, waiting = [], []
        for p in files:  # in order: a file still being written holds back the files after it
            sig = _signature(p)
            (ready if sig is not None and seen.get(p) == sig and not waiting else waiting).append(p)
            if sig is not None:
                seen[p] = sig
        for p in ready:
            if should_stop():
                break
            out = settle_and_file(take(store, dataset, p, refresh), folder)
            seen.pop(p, None)
            outcomes.append(out)
            echo(f"{out.status}: {out.message}" + (f" -> {out.moved_to.parent.name}/" if out.moved_to else ""))
        if once:
            for p in waiting:
                echo(f"waiting: {p.name} is still being written (or queued behind one that is); left for next run")
            break
        time.sleep(poll if not ready else 0)
    return outcomes
