"""Per-dataset evaluation settings, kept in one place: how a dataset is shaped before the protocol splits it.

Most datasets are evaluated on their own grid. Aarhus CityPulse (449 road segments, 17,474 five-minute
steps, Bluetooth vehicle counts with a median of 1 per 5 minutes) is evaluated the way studies of data
that size do: counts summed to 15 minutes. That cuts the issue times threefold (a default three-seed run of
gbt and the LM has to fit in two hours on a 2-core CPU), makes the 15/30/45/60-minute horizons whole steps,
and gives counts that are less dominated by zeros. A 15-minute value is the sum of the three 5-minute
counts and is missing unless all three are present: a partial sum would read as a drop in traffic.

The settings apply under the ``standard`` and ``cold-start`` protocols; ``tgcn`` reproduces the reference
code and uses the data as they are.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from trafficcore.data.panel import Panel

#: Protocols the settings apply under.
APPLIES_TO = ("standard", "cold-start")


@dataclass(frozen=True)
class EvalSettings:
    """How a dataset is prepared for evaluation.

    `aggregate_min`: sum readings into intervals of this many minutes (None: keep the dataset's grid).
    `why`: one sentence for the report, saying why.
    """

    aggregate_min: int | None = None
    why: str = ""

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


#: Settings by dataset name; `match` in `settings_for` also recognises a dataset by its source.
DATASET_SETTINGS: dict[str, EvalSettings] = {
    "aarhus": EvalSettings(
        aggregate_min=15,
        why="CityPulse Aarhus: 5-minute Bluetooth counts summed to 15 minutes (all three present, else missing)",
    ),
}
#: Words in a dataset's source that identify it when it was imported under another name.
SOURCE_KEYS = {"citypulse aarhus": "aarhus"}


def settings_for(panel: Panel) -> EvalSettings:
    """The evaluation settings of `panel`'s dataset (by name, else by its source); defaults when none."""
    if panel.dataset in DATASET_SETTINGS:
        return DATASET_SETTINGS[panel.dataset]
    source = str(panel.info.get("source", "")).lower()
    for words, name in SOURCE_KEYS.items():
        if words in source:
            return DATASET_SETTINGS[name]
    return EvalSettings()


def aggregate(panel: Panel, minutes: int) -> Panel:
    """`panel` summed into `minutes`-long intervals aligned to the clock (e.g. :00, :15, :30, :45).

    A leading or trailing partial interval is dropped; an interval with any reading missing is missing.
    """
    step = panel.interval
    width = pd.Timedelta(minutes=minutes)
    if width % step != pd.Timedelta(0) or width < step:
        raise ValueError(f"cannot sum {step} readings into {minutes}-minute intervals")
    k = int(width / step)
    if k == 1 or len(panel.times) == 0:
        return panel
    first = panel.times[0].ceil(width)
    lead = int((first - panel.times[0]) / step)
    n = (len(panel.times) - lead) // k
    vals = panel.values[lead:lead + n * k].reshape(n, k, -1)
    summed = vals.sum(axis=1, dtype=np.float64)  # NaN as soon as one reading is missing
    times = pd.date_range(first, periods=n, freq=width)
    info = {**panel.info, "interval_s": int(width.total_seconds()), "aggregated_from_s": int(step.total_seconds())}
    detectors = panel.detectors
    if "interval_s" in detectors:
        detectors = detectors.assign(interval_s=info["interval_s"])
    return Panel(dataset=panel.dataset, info=info, times=times, detectors=detectors,
                 values=summed.astype(np.float32), sites=panel.sites, events=panel.events, weather=panel.weather,
                 adjacency=panel.adjacency)


def prepare(panel: Panel, protocol: str) -> tuple[Panel, dict]:
    """`panel` shaped by its dataset's settings under `protocol`, and what was done (for the report)."""
    s = settings_for(panel)
    if protocol not in APPLIES_TO or s == EvalSettings():
        return panel, {}
    out = panel
    if s.aggregate_min is not None:
        out = aggregate(out, s.aggregate_min)
    return out, {**s.as_dict(), "source_interval_s": int(panel.interval.total_seconds()),
                 "interval_s": int(out.interval.total_seconds()), "time_steps": len(out.times)}
