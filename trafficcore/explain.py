"""SHAP attributions over context words and numeric feature groups, for any forecaster.

Two explainers, one answer shape (`Explanation`):

- **Permutation Shapley over one joint player set** (any model; the language model included).
  Players are the words of the context text and numeric groups (each recent lag or patch, the
  neighbours, the same time last week, the calendar). A masked word is removed from the text; a
  masked numeric group is replaced by the detector's *typical* values at those times (its
  historical average for that weekday/weekend and time of day, from readings before the issue
  time), so the base value is "a typical day with no context". Each sampled permutation adds
  the players one by one, and its marginal contributions sum exactly to f(all) - f(none), so
  additivity holds to rounding whatever the number of permutations (antithetic pairs halve the
  variance). Why not `shap.maskers.Composite`: current shap cannot combine a Text masker with a
  tabular one without work-arounds, and a custom player set lets all (n_perm x (P + 1))
  coalitions go through the model in one batch. Cost: one batched forward pass of
  n_perm x (P + 1) samples (about 8 x 45 for a typical context).
- **TreeExplainer** for the gradient-boosting baseline: exact TreeSHAP per feature on the
  booster of the asked horizon, with features also summed into the same groups, so a
  stakeholder can compare how the two models reason.

Event text comes from users: `tokens_html` escapes every token.
"""

from __future__ import annotations

import html
import re
import warnings
import weakref
from collections import OrderedDict
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from trafficcore.data.panel import Panel
from trafficcore.data.profile import daytype_slot, slot_means
from trafficcore.data.windows import Samples, build_samples
from trafficcore.models.base import ReadsText, TreeEnsemble, note_language, reads_text
from trafficcore.notes import normalise_note

#: numeric groups of the permutation explainer: name -> history positions counted from the newest (1 = last 15 min)
LAG_GROUPS = {
    "last interval": (1, 1),
    "previous interval": (2, 2),
    "2-4 intervals ago": (3, 4),
    "5-16 intervals ago": (5, 16),
}
OTHER_GROUPS = ("neighbours", "same time last week", "calendar")


@dataclass
class Explanation:
    """Attributions for one forecast (P50 at one horizon); base_value + sum(values) == prediction."""

    model: str
    detector_id: str
    issued_at: str
    horizon_min: int
    prediction: float
    base_value: float
    typical: float
    text: str
    tokens: list[dict] = field(default_factory=list)  # [{token, value}] in text order
    features: list[dict] = field(default_factory=list)  # [{name, value}]
    summary: str = ""
    phrase_lengths: list[int] = field(default_factory=list)  # words per phrase of `text` (empty: split sentences)
    note: str = ""  # the scenario note as typed
    note_read: str = ""  # the note as the model read it (`trafficcore.notes`); "" when the model did not read it
    note_unread: str = ""  # why a model that reads text was not given the note (outside its event window)
    note_recognised: list[dict] = field(default_factory=list)  # [{kind, words, meaning}]: what was understood
    without_note: float | None = None  # the same forecast without the note (None: no note, or not read)

    def to_dict(self) -> dict:
        return asdict(self)

    def total(self) -> float:
        return self.base_value + sum(t["value"] for t in self.tokens) + sum(f["value"] for f in self.features)


class _ObjectCache:
    """A bounded LRU cache keyed by objects' ids plus plain values.

    Why not a dict keyed by `id(...)`: a long-running server reloads panels and models, so the
    cache would grow without end, and a new object can reuse a dead one's id and hit a stale entry.
    Entries hold weak references to their objects and only count while those are the same, alive.
    """

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[tuple, tuple[tuple, object]] = OrderedDict()

    def get(self, objects: tuple, rest: tuple):
        key = tuple(id(o) for o in objects) + rest
        hit = self._items.get(key)
        if hit is None or any(r() is not o for r, o in zip(hit[0], objects, strict=True)):
            return None
        self._items.move_to_end(key)
        return hit[1]

    def put(self, objects: tuple, rest: tuple, value) -> None:
        key = tuple(id(o) for o in objects) + rest
        self._items[key] = (tuple(weakref.ref(o) for o in objects), value)
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)


_CACHE = _ObjectCache(512)


def explain(
    model,
    panel: Panel,
    detector_id: str,
    issued_at,
    horizon_min: int = 30,
    note: str | None = None,
    n_permutations: int = 8,
    seed: int = 0,
) -> Explanation:
    """Explain the P50 forecast of `model` for one detector, issue time and horizon (cached)."""
    rest = (panel.dataset, detector_id, str(issued_at), int(horizon_min), note, n_permutations, seed)
    cached = _CACHE.get((model, panel), rest)
    if cached is not None:
        return cached
    if horizon_min not in model.spec.horizons_min:
        raise ValueError(f"horizon {horizon_min} min not offered; choose from {list(model.spec.horizons_min)}")
    d = panel.column(detector_id)
    row = panel.index_of(issued_at)
    j = list(model.spec.horizons_min).index(int(horizon_min))
    samples = build_samples(panel, np.array([row]), np.array([d]), model.spec)
    typical = float(_typical(panel, d, row, model.spec)[1][j])
    lengths: list[int] = []
    typed = " ".join(note.split()) if note else ""
    # the note as the model reads it: times relative to the issue time, places as distances, and not at all when
    # it lies outside the events the model was shown (trafficcore.notes)
    read_note = (normalise_note(panel, detector_id, issued_at, typed, note_language(model))
                 if typed and reads_text(model) else None)
    given = read_note.text if read_note is not None and read_note.unread is None else None
    without = None
    if isinstance(model, TreeEnsemble):
        out = _explain_tree(model, panel, samples, j)
        text = ""
    else:
        text, lengths = _context_of(model, panel, samples, given) if reads_text(model) else ("", [])
        out = _explain_permutation(model, panel, samples, j, text, n_permutations, seed)
        if given is not None:  # the same forecast without the note: what the note itself changes
            plain = " ".join(model.text_parts(panel, samples, note=None)[0])
            without = float(np.asarray(model.predict_with_texts(panel, samples, [plain]))[0, j, 1])
    base, pred, tokens, features = out
    expl = Explanation(
        model=getattr(model, "name", type(model).__name__),
        detector_id=detector_id,
        issued_at=pd.Timestamp(panel.time_at([row])[0]).isoformat(),
        horizon_min=int(horizon_min),
        prediction=float(pred),
        base_value=float(base),
        typical=typical,
        text=text,
        tokens=tokens,
        features=features,
        phrase_lengths=lengths,
        note=typed,
        note_read=given or "",
        note_unread=(read_note.unread or "") if read_note is not None else "",
        note_recognised=[asdict(r) for r in read_note.recognised] if read_note is not None else [],
        without_note=without,
    )
    expl.summary = summarise(expl, panel)
    _CACHE.put((model, panel), rest, expl)
    return expl


def _context_of(model: ReadsText, panel: Panel, samples: Samples, note: str | None) -> tuple[str, list[int]]:
    """The text the model itself reads for this sample, with the note where the model puts it, and the number
    of words of each of its phrases (an event text may hold several sentences, so splitting at full stops would
    cut the event's phrase in pieces)."""
    parts = model.text_parts(panel, samples, note=note.strip() if note and note.strip() else None)[0]
    return " ".join(parts), [len(p.split()) for p in parts]


# --------------------------------------------------------------------------- reference values
def _typical(panel: Panel, d: int, row: int, spec) -> tuple[np.ndarray, np.ndarray]:
    """Typical values (same day type and time of day, readings before `row`) for the history
    positions and for each horizon's target of detector `d`."""
    hist_rows = row + np.arange(-spec.history_steps, 0)
    target_rows = row + spec.horizon_steps(panel.interval) - 1
    prof = profile_before(panel, row)
    return prof(d, hist_rows), prof(d, target_rows)


_PROFILE_CACHE = _ObjectCache(1024)


def profile_before(panel: Panel, row: int):
    """A lookup (detector, rows) -> typical value, fit on readings before the issue day.

    Fit per detector when first asked (an explanation reads its detector and its neighbours): a table of every
    detector would cost a pass over the whole panel per issue day, seconds for a region of 8,000 detectors.
    """
    day_start = int(row - row % int(pd.Timedelta(days=1) / panel.interval))

    def lookup(d: int, rows: np.ndarray) -> np.ndarray:
        d = int(d)
        entry = _PROFILE_CACHE.get((panel,), (day_start, d))
        if entry is None:
            col = panel.values[:, d:d + 1]
            table = slot_means(panel, np.arange(day_start), values=col)[0]  # (2, slots)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a detector without readings: 0, as before
                overall = float(np.nan_to_num(np.nanmean(col[:day_start], axis=0)[0])) if day_start else 0.0
            entry = (table, overall)
            _PROFILE_CACHE.put((panel,), (day_start, d), entry)
        table, overall = entry
        k, s = daytype_slot(panel, rows)
        out = table[k, s].astype(float)
        return np.where(np.isfinite(out), out, overall)

    return lookup


# --------------------------------------------------------------------------- permutation explainer
def _players(words: list[str], spec) -> list[tuple[str, str]]:
    numeric = [("numeric", g) for g, (lo, _) in LAG_GROUPS.items() if lo <= spec.history_steps]
    numeric += [("numeric", g) for g in OTHER_GROUPS]
    return [("word", w) for w in words] + numeric


def _masked_samples(panel: Panel, base: Samples, coalitions: np.ndarray, n_words: int, names: list[str]) -> Samples:
    """One sample per coalition row: absent numeric groups set to their typical values."""
    spec = base.spec
    d, row = int(base.detector_idx[0]), int(base.issue_idx[0])
    hist_typ, target_typ = _typical(panel, d, row, spec)
    lw_typ = profile_before(panel, row)(
        d, row + spec.horizon_steps(panel.interval) - 1 - 7 * int(pd.Timedelta(days=1) / panel.interval)
    )
    s = base.subset(np.zeros(len(coalitions), dtype=np.int64))
    s.history, s.neighbours = s.history.copy(), s.neighbours.copy()
    s.last_week, s.calendar = s.last_week.copy(), s.calendar.copy()
    H = spec.history_steps
    nb_typ = _neighbour_typical(panel, base, row)
    mean_cal = np.array([0, 0, 0, 0, 2 / 7, 0], np.float32)
    for p, name in enumerate(names):
        off = ~coalitions[:, n_words + p]
        if not off.any():
            continue
        if name in LAG_GROUPS:
            lo, hi = LAG_GROUPS[name]
            cols = [H - k for k in range(lo, min(hi, H) + 1)]
            s.history[np.ix_(off, cols)] = hist_typ[cols]
        elif name == "neighbours":
            s.neighbours[off] = nb_typ
        elif name == "same time last week":
            s.last_week[off] = lw_typ
        elif name == "calendar":
            s.calendar[off] = mean_cal
    return s


def _neighbour_typical(panel: Panel, base: Samples, row: int) -> np.ndarray:
    from trafficcore.models.baselines import neighbour_index

    nb = neighbour_index(panel, base.spec)[int(base.detector_idx[0])]
    prof = profile_before(panel, row)
    rows = row + np.arange(-base.spec.history_steps, 0)
    return np.stack([prof(int(k), rows) if k >= 0 else np.full(len(rows), np.nan) for k in nb])


def _explain_permutation(model, panel, samples, j, text, n_permutations, seed):
    words = text.split()
    players = _players(words, samples.spec)
    n_words = len(words)
    names = [n for kind, n in players if kind == "numeric"]
    P = len(players)
    rng = np.random.default_rng(seed)
    perms = []
    for _ in range(max(1, n_permutations // 2)):
        p = rng.permutation(P)
        perms += [p, p[::-1]]  # antithetic pair
    coalitions = np.zeros((len(perms) * (P + 1), P), dtype=bool)
    for i, p in enumerate(perms):
        for k in range(1, P + 1):
            coalitions[i * (P + 1) + k, p[:k]] = True
    masked = _masked_samples(panel, samples, coalitions, n_words, names)
    if text:
        texts = [" ".join(w for w, on in zip(words, c[:n_words], strict=True) if on) for c in coalitions]
        q = model.predict_with_texts(panel, masked, texts)
    else:
        q = model.predict_samples(panel, masked)
    f = np.asarray(q)[:, j, 1].astype(float).reshape(len(perms), P + 1)
    phi = np.zeros(P)
    for i, p in enumerate(perms):
        phi[p] += np.diff(f[i])
    phi /= len(perms)
    base, pred = float(f[:, 0].mean()), float(f[:, -1].mean())
    tokens = [{"token": w, "value": float(v)} for w, v in zip(words, phi[:n_words], strict=True)]
    features = [{"name": n, "value": float(v)} for n, v in zip(names, phi[n_words:], strict=True)]
    return base, pred, tokens, features


# --------------------------------------------------------------------------- tree explainer
def _tree_group(name: str) -> str:
    if name.startswith("lag_"):
        k = int(name.split("_")[1])
        for g, (lo, hi) in LAG_GROUPS.items():
            if lo <= k <= hi:
                return g
    if name.startswith(("own_", "ratio")):
        return "recent level"
    if name.startswith("nb"):
        return "neighbours"
    if name.startswith("lw"):
        return "same time last week"
    if name in ("issue_tod_min", "issue_dow", "holiday", "target_tod_min", "target_daytype"):
        return "calendar"
    if name.startswith(("ha_", "level")):
        return "typical profile"
    return "site"


def _explain_tree(model, panel, samples, j):
    import shap

    xs, names = model.features(panel, samples)
    booster = model.boosters[j]
    explainer = shap.TreeExplainer(booster)
    sv = np.asarray(explainer.shap_values(xs[j]))[0]
    base = float(np.ravel(explainer.expected_value)[0])
    pred = float(booster.predict(xs[j])[0])
    groups: dict[str, float] = {}
    for n, v in zip(names, sv, strict=True):
        groups[_tree_group(n)] = groups.get(_tree_group(n), 0.0) + float(v)
    features = [{"name": g, "value": v} for g, v in groups.items()]
    return base, pred, [], features


# --------------------------------------------------------------------------- presentation
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def phrases(expl: Explanation) -> list[tuple[str, float]]:
    """Token attributions summed per phrase of the context text (as the model composed it, else per sentence),
    in text order."""
    lengths = list(getattr(expl, "phrase_lengths", None) or [])
    if lengths and sum(lengths) == len(expl.tokens):
        out, i = [], 0
        for n in lengths:
            chunk = expl.tokens[i : i + n]
            out.append((" ".join(t["token"] for t in chunk), float(sum(t["value"] for t in chunk))))
            i += n
        return out
    out, i = [], 0
    for sentence in _SENTENCE.split(expl.text) if expl.text else []:
        n = len(sentence.split())
        out.append((sentence.strip(), float(sum(t["value"] for t in expl.tokens[i : i + n]))))
        i += n
    return out


def _amount(v: float, unit: str) -> str:
    """A signed change as the summary writes it: one decimal below 10 ("+0.6 veh"), whole numbers above."""
    return f"{v:+.1f} {unit}" if abs(v) < 9.95 else f"{v:+.0f} {unit}"


#: a change smaller than this (in the data's units, or this share of the value) is "about the same"
SAME_ABS, SAME_REL = 0.5, 0.005


def _same(a: float, b: float) -> bool:
    return abs(a - b) < max(SAME_ABS, SAME_REL * abs(b))


def summarise(expl: Explanation, panel: Panel) -> str:
    """Plain-language sentences whose every word follows from the numbers.

    The level against a typical day ("12% above", or "about the same as" when it rounds to 0%); the change from
    the base value (a typical day with no context) and the reasons that made it, only those that pushed the
    way the forecast moved ("mostly because of X" only when X is at least half of that push), with the largest
    one that pushed the other way; and what a scenario note changed, measured by forecasting without it.
    """
    t = pd.Timestamp(expl.issued_at) + pd.Timedelta(minutes=expl.horizon_min) - panel.interval
    unit = "veh" if panel.detectors["measure"].iloc[panel.column(expl.detector_id)] == "volume" else "km/h"
    when = f"{t.day_name()} {t:%H:%M}"
    pred = expl.prediction
    if expl.typical > 0 and round(100 * abs(pred - expl.typical) / expl.typical) >= 1:
        pct = 100 * (pred - expl.typical) / expl.typical
        level = f"{abs(pct):.0f}% {'above' if pct > 0 else 'below'} a typical {when} ({expl.typical:.0f} {unit})"
    elif expl.typical > 0:
        level = f"about the same as a typical {when} ({expl.typical:.0f} {unit})"
    else:
        level = f"for {when}"
    out = [f"{pred:.0f} {unit} expected, {level}."]
    change = pred - expl.base_value
    reasons = [(f"'{p}'", v) for p, v in phrases(expl)] + [(f["name"], f["value"]) for f in expl.features]
    if _same(pred, expl.base_value):
        up = max(reasons, key=lambda r: r[1], default=("", 0.0))
        down = min(reasons, key=lambda r: r[1], default=("", 0.0))
        cancel = (f": {up[0]} ({_amount(up[1], unit)}) and {down[0]} ({_amount(down[1], unit)}) roughly cancel"
                  if up[1] >= 1 and down[1] <= -1 else "")
        out.append(f"The context barely moves it from the base value ({expl.base_value:.0f} {unit}, a typical "
                   f"day with no context){cancel}.")
    else:
        sign = 1.0 if change > 0 else -1.0
        push = sorted([r for r in reasons if sign * r[1] >= SAME_ABS], key=lambda r: -abs(r[1]))
        against = sorted([r for r in reasons if -sign * r[1] >= SAME_ABS], key=lambda r: -abs(r[1]))
        total = sum(abs(v) for _, v in push)
        moved = f"{'Up' if sign > 0 else 'Down'} {_amount(change, unit).lstrip('+-')} on the base value " \
                f"({expl.base_value:.0f} {unit}, a typical day with no context)"
        if push and abs(push[0][1]) >= 0.5 * total:
            moved += f", mostly because of {push[0][0]} ({_amount(push[0][1], unit)})"
        elif push:
            moved += ", because of " + " and ".join(f"{n} ({_amount(v, unit)})" for n, v in push[:2])
        if against:
            moved += f"; {against[0][0]} ({_amount(against[0][1], unit)}) pulled the other way"
        out.append(moved + ".")
    if getattr(expl, "note_unread", ""):
        out.append(f"The note is not read: {expl.note_unread}.")
    if expl.without_note is not None:
        moved = pred - expl.without_note
        if abs(moved) < 0.05:
            out.append(f"The note does not change it ({expl.without_note:.1f} {unit} without it).")
        else:
            digits = 0 if abs(moved) >= 9.95 else 1
            out.append(f"The note moves it by {_amount(moved, unit)} ({expl.without_note:.{digits}f} without it, "
                       f"{pred:.{digits}f} with it).")
    return " ".join(out)


def tokens_frame(expl: Explanation) -> pd.DataFrame:
    return pd.DataFrame(expl.tokens, columns=["token", "value"])


def features_frame(expl: Explanation) -> pd.DataFrame:
    df = pd.DataFrame(expl.features, columns=["name", "value"])
    return df.reindex(df["value"].abs().sort_values(ascending=False).index).reset_index(drop=True)


def tokens_html(expl: Explanation) -> str:
    """The context text with each word shaded by its attribution (red up, blue down); escaped."""
    if not expl.tokens:
        return ""
    scale = max(abs(t["value"]) for t in expl.tokens) or 1.0
    spans = []
    for t in expl.tokens:
        a = min(1.0, abs(t["value"]) / scale) * 0.8
        rgb = "229,57,53" if t["value"] >= 0 else "30,136,229"
        spans.append(
            f'<span title="{t["value"]:+.2f}" style="background: rgba({rgb},{a:.2f}); padding: 1px 2px; '
            f'border-radius: 3px">{html.escape(t["token"])}</span>'
        )
    return '<div style="line-height: 2">' + " ".join(spans) + "</div>"


def global_importance(
    model,
    panel: Panel,
    pairs: list[tuple[str, object]],
    horizon_min: int = 30,
    n_permutations: int = 4,
    top_tokens: int = 15,
    progress=None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean |attribution| per feature group and per frequent token over a sample of forecasts.

    `progress(done, total)`, when given, is called after each forecast is explained (a page's progress bar).
    """
    feats: dict[str, list[float]] = {}
    toks: dict[str, list[float]] = {}
    for i, (det, at) in enumerate(pairs):
        e = explain(model, panel, det, at, horizon_min, n_permutations=n_permutations)
        if progress is not None:
            progress(i + 1, len(pairs))
        for f in e.features:
            feats.setdefault(f["name"], []).append(abs(f["value"]))
        for t in e.tokens:
            toks.setdefault(t["token"].lower().strip(".,()"), []).append(abs(t["value"]))
    fdf = pd.DataFrame([(k, float(np.mean(v))) for k, v in feats.items()], columns=["name", "mean_abs"])
    tdf = pd.DataFrame([(k, float(np.mean(v)), len(v)) for k, v in toks.items()], columns=["token", "mean_abs", "n"])
    tdf = tdf[tdf["n"] >= max(2, len(pairs) // 10)] if len(tdf) else tdf
    return (
        fdf.sort_values("mean_abs", ascending=False).reset_index(drop=True),
        tdf.sort_values("mean_abs", ascending=False).head(top_tokens).reset_index(drop=True),
    )
