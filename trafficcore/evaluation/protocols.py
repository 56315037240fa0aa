"""Evaluation protocols: which issue times a model learns from, is tuned on and is scored on.

- ``standard``: chronological split by whole days. SCATS (Boroondara, October 2006) uses fixed
  dates: train Oct 1-21, validation Oct 22-24, test Oct 25-31 (one full week, every weekday
  once). Other datasets split their days 70/10/20, unless the dataset's generator documents its
  own split (the demo city: `trafficcore.data.demo.split_days`, read when present: whole weeks,
  the last ones for validation and test).
- ``tgcn``: the protocol of the T-GCN reference code (Zhao et al.), so that results sit beside
  its published tables: the wide matrix, max-normalised over the whole series, first 80% of time
  steps for training and last 20% for test, 12 input steps, and for each reported horizon a
  window of 1..k predicted steps whose errors are pooled.
- ``cold-start``: about 20% of whole sites are held out of training (chosen by seed); their
  readings are blanked in the panel the models see, so neither their history nor their targets
  can leak into training, and at test time they are forecast from description, neighbours and
  the cross-site profile only.

Per-dataset evaluation settings (Aarhus CityPulse: 5-minute counts summed to 15 minutes) live in
`trafficcore.evaluation.datasets` and shape the panel before ``standard`` or ``cold-start`` splits it.

Purging: an issue time belongs to a period only if all the targets of its longest horizon lie in
that period too, so no training target falls in a validation or test day. Histories may reach
back into the previous period; that is data a forecaster would have at that moment.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from trafficcore.data.panel import Panel
from trafficcore.data.windows import WindowSpec
from trafficcore.errors import TrafficCoreError

PROTOCOLS = ("standard", "tgcn", "cold-start")

SCATS_PERIODS = {
    "train": ("2006-10-01", "2006-10-21"),
    "val": ("2006-10-22", "2006-10-24"),
    "test": ("2006-10-25", "2006-10-31"),
}
DAY_FRACTIONS = (0.7, 0.1, 0.2)

TGCN_TRAIN_RATE = 0.8
TGCN_SEQ_LEN = 12
TGCN_HORIZONS_MIN = (15, 30, 45, 60)
#: Share of the series (inside T-GCN's training 80%) kept back for validation: the last eighth.
TGCN_VAL_START = 0.7

COLD_START_FRACTION = 0.2


class ProtocolError(TrafficCoreError):
    """The dataset cannot be evaluated under the requested protocol (a user error, exit code 2)."""


@dataclass
class Split:
    """Issue rows (indices into panel.times) for training, validation and test, and a summary."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    info: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------ standard
def is_scats(panel: Panel) -> bool:
    """SCATS-named datasets: the source mentions SCATS or the dataset is called 'scats'."""
    return "scats" in str(panel.info.get("source", "")).lower() or panel.dataset.lower() == "scats"


def is_demo(panel: Panel) -> bool:
    """The project's own synthetic demo city, or a region built by the same generator (`trafficcore.data.region`,
    which keeps the city's split); the source names the generator."""
    source = str(panel.info.get("source", "")).lower()
    return panel.synthetic and ("demo city" in source or "trafficcore synthetic region" in source)


def _demo_split(panel: Panel) -> dict | None:
    """The demo city's documented split for the weeks this panel covers (trafficcore.data.demo)."""
    try:
        demo = importlib.import_module("trafficcore.data.demo")
    except ImportError:
        return None
    if hasattr(demo, "split_days"):
        t0 = panel.times[0].normalize()
        days = (panel.times[-1].normalize() - t0).days + 1
        return dict(demo.split_days(str(t0.date()), math.ceil(days / 7)))
    split = getattr(demo, "SPLIT", None)
    return dict(split) if split else None


def day_periods(panel: Panel) -> tuple[dict[str, tuple[pd.Timestamp, pd.Timestamp]], str]:
    """First and last day (inclusive) of train, val and test, and which rule chose them."""
    if len(panel.times) == 0:
        raise ProtocolError(f"dataset {panel.dataset!r} has no observations")
    days = pd.DatetimeIndex(sorted(set(panel.times.normalize())))
    if is_scats(panel):
        want = pd.date_range(SCATS_PERIODS["train"][0], SCATS_PERIODS["test"][1], freq="D")
        if set(want) <= set(days):
            return {k: (pd.Timestamp(a), pd.Timestamp(b)) for k, (a, b) in SCATS_PERIODS.items()}, "scats-oct2006"
    demo = _demo_split(panel) if is_demo(panel) else None
    if demo is not None and set(demo) >= {"train", "val", "test"}:
        return {k: (pd.Timestamp(demo[k][0]), pd.Timestamp(demo[k][1])) for k in ("train", "val", "test")}, "demo"
    n = len(days)
    if n < 3:
        raise ProtocolError(f"dataset {panel.dataset!r} spans {n} day(s); the standard protocol needs at least 3")
    n_val = max(1, round(DAY_FRACTIONS[1] * n))
    n_test = max(1, round(DAY_FRACTIONS[2] * n))
    n_train = n - n_val - n_test
    if n_train < 1:
        raise ProtocolError(f"dataset {panel.dataset!r} has too few days ({n}) for a 70/10/20 split")
    cut = [0, n_train, n_train + n_val, n]
    names = ("train", "val", "test")
    return {names[i]: (days[cut[i]], days[cut[i + 1] - 1]) for i in range(3)}, "days-70-10-20"


def period_rows(panel: Panel, first_day, last_day, spec: WindowSpec) -> np.ndarray:
    """Issue rows on days first_day..last_day whose longest-horizon target is still inside them."""
    start = pd.Timestamp(first_day).normalize()
    end = pd.Timestamp(last_day).normalize() + pd.Timedelta(days=1)
    hmax = int(spec.horizon_steps(panel.interval).max())
    times = panel.times
    rows = np.arange(len(times))
    last_target = times + (hmax - 1) * panel.interval
    ok = (times >= start) & (times < end) & (last_target < end) & (rows >= spec.history_steps)
    return rows[np.asarray(ok)]


def standard_split(panel: Panel, spec: WindowSpec = WindowSpec()) -> Split:
    """Chronological split by whole days (see module docstring)."""
    periods, rule = day_periods(panel)
    rows = {k: period_rows(panel, a, b, spec) for k, (a, b) in periods.items()}
    for k, r in rows.items():
        if r.size == 0:
            raise ProtocolError(f"dataset {panel.dataset!r}: the {k} period {periods[k][0].date()}.."
                                f"{periods[k][1].date()} has no usable issue times")
    info = {
        "rule": rule,
        **{k: [str(a.date()), str(b.date())] for k, (a, b) in periods.items()},
        "issue_times": {k: int(r.size) for k, r in rows.items()},
        "history_steps": spec.history_steps,
        "horizons_min": list(spec.horizons_min),
    }
    return Split(rows["train"], rows["val"], rows["test"], info)


# ------------------------------------------------------------------------------ tgcn
@dataclass
class TGCNSetup:
    """Everything the T-GCN protocol fixes: the normalised panel, the windows and the steps.

    `panel` holds values / `max_value`; models are fit and run on it and their forecasts are
    multiplied back by `max_value` before scoring, as the reference code does.
    """

    panel: Panel
    max_value: float
    spec: WindowSpec
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    train_size: int
    pre_lens: dict[int, int]  # reported horizon (min) -> number of predicted steps pooled
    info: dict = field(default_factory=dict)

    def test_rows(self, pre_len: int) -> np.ndarray:
        """Issue rows of the reference code's test windows for `pre_len` output steps."""
        n_test = len(self.panel.times) - self.train_size
        i = np.arange(max(n_test - TGCN_SEQ_LEN - pre_len, 0))
        return self.train_size + TGCN_SEQ_LEN + i


def tgcn_setup(panel: Panel) -> TGCNSetup:
    """The T-GCN protocol on a panel (any dataset the matrix loader or another loader reads)."""
    interval_min = panel.interval / pd.Timedelta(minutes=1)
    pre_lens = {h: h / interval_min for h in TGCN_HORIZONS_MIN}
    if any(v != int(v) for v in pre_lens.values()):
        raise ProtocolError(f"the tgcn protocol needs data on a grid that divides 15 minutes "
                            f"(5- or 15-minute data); {panel.dataset!r} is every {interval_min:g} min")
    pre_lens = {h: int(v) for h, v in pre_lens.items()}
    steps = max(pre_lens.values())
    T = len(panel.times)
    train_size = int(T * TGCN_TRAIN_RATE)
    val_start = int(T * TGCN_VAL_START)
    if train_size - val_start < TGCN_SEQ_LEN + steps + 1 or T - train_size < TGCN_SEQ_LEN + steps + 1:
        raise ProtocolError(f"dataset {panel.dataset!r} has {T} time steps, too few for the tgcn protocol")
    vals = panel.values
    if not np.isfinite(vals).any():
        raise ProtocolError(f"dataset {panel.dataset!r} has no readings")
    max_value = float(np.nanmax(vals))
    if max_value <= 0:
        raise ProtocolError(f"dataset {panel.dataset!r}: the largest reading is {max_value}, cannot max-normalise")
    norm = dataclasses.replace(panel, values=(vals / max_value).astype(np.float32))
    horizons = tuple(int(interval_min) * k for k in range(1, steps + 1))
    spec = WindowSpec(history_steps=TGCN_SEQ_LEN, horizons_min=horizons)

    def windows(lo: int, hi: int) -> np.ndarray:
        # the reference code's `for i in range(len(data) - seq_len - pre_len)` over data[lo:hi]
        i = np.arange(max(hi - lo - TGCN_SEQ_LEN - steps, 0))
        return lo + TGCN_SEQ_LEN + i

    setup = TGCNSetup(norm, max_value, spec, windows(0, val_start), windows(val_start, train_size), np.array([]),
                      train_size, pre_lens)
    setup.test = setup.test_rows(min(pre_lens.values()))  # the union over all pre_lens
    setup.info = {
        "rule": "tgcn",
        "train_rate": TGCN_TRAIN_RATE,
        "train_steps": train_size,
        "test_steps": T - train_size,
        "validation": f"last eighth of the training part (steps {val_start}..{train_size - 1}) for early "
                      "stopping and intervals; T-GCN itself has none",
        "train": [str(panel.times[0]), str(panel.times[train_size - 1])],
        "test": [str(panel.times[train_size]), str(panel.times[-1])],
        "seq_len": TGCN_SEQ_LEN,
        "pre_len": {str(h): k for h, k in pre_lens.items()},
        "max_value": max_value,
    }
    return setup


# ------------------------------------------------------------------------------ cold start
@dataclass
class ColdStart:
    """A standard split plus held-out sites, and the panel the models may see (theirs blanked)."""

    split: Split
    panel: Panel
    held_out_sites: list[str]
    held_out_idx: np.ndarray  # panel columns of the held-out detectors


def held_out_sites(panel: Panel, fraction: float = COLD_START_FRACTION, seed: int = 0) -> list[str]:
    """About `fraction` of the sites, drawn by `seed` from the sorted site ids (at least one, never all)."""
    sites = sorted(set(panel.detectors["site_id"].astype(str)))
    if len(sites) < 2:
        raise ProtocolError(f"dataset {panel.dataset!r} has {len(sites)} site(s); cold-start needs at least 2")
    n = min(max(1, round(fraction * len(sites))), len(sites) - 1)
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(sites, size=n, replace=False).tolist())


def cold_start_split(panel: Panel, spec: WindowSpec = WindowSpec(), fraction: float = COLD_START_FRACTION,
                     seed: int = 0) -> ColdStart:
    """Held-out whole sites over the standard day split; their readings are NaN in `panel`."""
    split = standard_split(panel, spec)
    sites = held_out_sites(panel, fraction, seed)
    idx = np.flatnonzero(panel.detectors["site_id"].astype(str).isin(sites).to_numpy())
    values = panel.values.copy()
    values[:, idx] = np.nan
    blanked = dataclasses.replace(panel, values=values)
    split.info = {**split.info, "rule": f"cold-start over {split.info['rule']}", "held_out_sites": sites,
                  "held_out_detectors": int(idx.size), "fraction": fraction, "seed": seed}
    return ColdStart(split, blanked, sites, idx)
