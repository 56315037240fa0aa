"""Does the language model read the event text? The demo city's event ablation (issue 3, item 6).

On the samples whose context text mentions an event that is upcoming or started within the last
three hours (`FastContext.recent_event_mask`), compare the model's MAE:

- `with text`: the model as deployed, reading its context text;
- `no event words`: the same model and numbers, the event sentences removed from the text;
- `shuffled events`: each sample reads the text of another event sample (same split);
- `numeric path`: the model's numeric skip path alone (no transformer at all).

Rows split by period (validation; test, whose events may use phrasings never seen in training,
`demo.held_out_mask`), by phrasing (seen / held-out) and by timing (upcoming / started). A
sample counts as held-out when any event it mentions uses a held-out phrasing. The same model is
used in every column, so differences are what the words change, not a different training run.

Run: `python -m trafficcore.evaluation.event_ablation --db DB --model DIR [--per-split 1500]`.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from trafficcore.data import demo
from trafficcore.data.panel import Panel
from trafficcore.data.windows import Samples, build_samples
from trafficcore.text import context_parts

VARIANTS = ("with text", "no event words", "shuffled events", "numeric path")


def event_samples(model, panel: Panel, rows: np.ndarray, limit: int, seed: int = 0) -> tuple[Samples, pd.DataFrame]:
    """Up to `limit` seeded-random samples of `rows` that mention a recent or upcoming event, with their labels."""
    from trafficcore.models.lm.inputs import FastContext

    s = build_samples(panel, np.asarray(rows, dtype=np.int64), spec=model.spec, neighbour_idx=model.neighbours(panel))
    s = s.subset(np.isfinite(s.targets).any(axis=1))
    fc = FastContext(panel, model.spec)
    idx = np.flatnonzero(fc.recent_event_mask(s.detector_idx, s.issue_idx))
    idx = np.sort(np.random.default_rng(seed).permutation(idx)[:limit])
    s = s.subset(idx)
    labels = []
    for d, r in zip(s.detector_idx, s.issue_idx, strict=True):
        evs = [e for e in fc.fields(int(d), int(r))["events"] if "holiday" not in str(e["kind"])]
        recent = [e for e in evs if int(e["minutes_from_now"]) >= -180]
        labels.append({
            "held_out": any(demo.is_held_out(str(e["kind"]), str(e["text"])) for e in recent),
            "timing": "upcoming" if any(int(e["minutes_from_now"]) > 0 for e in recent) else "started",
        })
    return s, pd.DataFrame(labels)


def variant_texts(model, panel: Panel, samples: Samples, seed: int = 0) -> dict[str, list[str]]:
    """The texts each variant reads (`numeric path` reads none)."""
    parts = model.text_parts(panel, samples)
    fields_free = []
    fc = model.context(panel)
    for d, r in zip(samples.detector_idx, samples.issue_idx, strict=True):
        f = fc.fields(int(d), int(r))
        if not model.cfg.site_description:
            f["site_description"] = None
        fields_free.append(" ".join(context_parts(f, include_events=False,
                                                  include_static=getattr(model.cfg, "text_scope", "all") == "all")))
    full = [" ".join(p) for p in parts]
    n_ev = [len(fc.fields(int(d), int(r))["events"]) for d, r in zip(samples.detector_idx, samples.issue_idx,
                                                                      strict=True)]
    events_only = [" ".join(p[:k]) for p, k in zip(parts, n_ev, strict=True)]
    perm = np.random.default_rng(seed).permutation(len(samples))
    shuffled = [f"{events_only[j]} {fields_free[i]}".strip() for i, j in enumerate(perm)]
    return {"with text": full, "no event words": fields_free, "shuffled events": shuffled}


def ablate(model, panel: Panel, per_split: int = 1500, seed: int = 0) -> pd.DataFrame:
    """One row per (period, phrasing, timing) and overall per period: n and MAE per variant (horizons pooled)."""
    from trafficcore.evaluation.protocols import standard_split

    split = standard_split(panel, model.spec)
    frames = []
    for period, rows in (("validation", split.val), ("test", split.test)):
        s, lab = event_samples(model, panel, rows, per_split, seed)
        if not len(s):
            continue
        texts = variant_texts(model, panel, s, seed)
        err = {}
        for v in VARIANTS:
            q = model.predict_numeric_path(panel, s) if v == "numeric path" else \
                model.predict_with_texts(panel, s, texts[v])
            err[v] = np.abs(q[..., 1] - s.targets)
        ok = np.isfinite(s.targets)
        lab = lab.assign(period=period)
        for key, sel in [(("all", "all"), np.ones(len(s), bool))] + [
            ((h, t), ((lab["held_out"] == (h == "held-out")) & (lab["timing"] == t)).to_numpy())
            for h in ("seen", "held-out") for t in ("upcoming", "started")
        ] + [((h, "all"), (lab["held_out"] == (h == "held-out")).to_numpy()) for h in ("seen", "held-out")]:
            if not sel.any():
                continue
            m = ok & sel[:, None]
            frames.append({"period": period, "phrasing": key[0], "timing": key[1], "n": int(sel.sum()),
                           **{v: float(err[v][m].mean()) for v in VARIANTS}})
    return pd.DataFrame(frames)


def markdown(df: pd.DataFrame) -> str:
    """The table as markdown (no optional dependency)."""
    def cell(v) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def main() -> None:  # pragma: no cover - a benchmark command, run by hand
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", required=True)
    ap.add_argument("--dataset", default="demo")
    ap.add_argument("--model", required=True)
    ap.add_argument("--per-split", type=int, default=1500, help="event samples per period (seeded random)")
    a = ap.parse_args()
    import torch

    from trafficcore.data.panel import load_panel
    from trafficcore.data.store import Store
    from trafficcore.models import load_model

    torch.set_num_threads(1)
    panel = load_panel(Store(a.db, read_only=True), a.dataset)
    model = load_model(a.model)
    t0 = time.perf_counter()
    df = ablate(model, panel, a.per_split)
    print(markdown(df))
    print(f"MAE pooled over horizons ({', '.join(map(str, model.spec.horizons_min))} min), vehicles per interval; "
          f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":  # pragma: no cover
    main()
