"""Stacking: several forecasters blended per horizon on validation days, with a calibrated band.

Why: gradient boosting and the language model err differently (the trees lean on the daily
profile, the language model on recent readings and context text), so a weighted mean of their
quantiles is often better than either, and costs nothing at forecast time beyond running both.
Which weights, though, is an empirical question per horizon, and the answer must come from days
the members did not train on.

How (`fit(panel, train_rows, val_rows)`):

1. every member not handed in already fitted is created from the registry (tsl-style: name +
   keyword arguments) with the stack's window spec and fitted on the same training and
   validation rows as a stand-alone model would be (members may use validation for early
   stopping and their own intervals, exactly as in the benchmark);
2. weights and band are both chosen on the validation rows. Holding half the validation days out
   for the band was tried: on the test city the weights from the other half were then worse than
   gradient boosting alone on full validation (one day of weighting is too noisy), while the
   weights are few (one per horizon and member) and chosen for the P50's MAE, not for the band,
   so calibrating on the same rows costs little. The benchmark's test days are the check on both;
3. weights, per horizon, on the simplex: start from the member with the lowest P50 MAE on the
   validation, then for each other member grid-search t in [0, 1] for w <- (1 - t) w + t e_j
   (two passes). With two members this is an exhaustive grid over the convex weight w_h, and
   since t = 0 is on the grid the blend's validation MAE is never above the best member's. The same
   weights blend P10 and P90;
4. the blended P10-P90 band is calibrated per horizon by split-conformal quantile regression
   (CQR, Romano et al. 2019) on validation: the score max(P10 - y, y - P90) has its
   ceil((n + 1) * 0.8) / n quantile q_h added to both ends (q_h < 0 narrows a too-wide band), so
   80% of validation readings fall inside it. The band never crosses the P50 nor goes below the
   smallest training value when that is >= 0 (counts).

Saved as a model folder (`trafficcore.models.files`): `config.json` (model_class "stack", spec, member
names, validation scores), the weights and band offsets in `model.safetensors`, and `members/<name>/`,
each written by that member's own `save` and read back with `registry.load_model`: nothing is pickled.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import numpy as np

from trafficcore.data.panel import Panel
from trafficcore.data.windows import Samples, WindowSpec, build_samples
from trafficcore.models import files

MEMBERS_DIR = "members"
#: The members when none are named: the two models that win most often in the benchmark.
DEFAULT_MEMBERS: dict[str, dict] = {"gbt": {}, "lm": {}}
#: Steps of the convex-weight grid (0, 0.05, ..., 1).
GRID = np.linspace(0.0, 1.0, 21)
COVERAGE = 0.8
PASSES = 2


def _spec_dict(spec: WindowSpec) -> dict:
    d = dataclasses.asdict(spec)
    d["horizons_min"] = list(d["horizons_min"])
    return d


def _spec_from(d: dict) -> WindowSpec:
    return WindowSpec(**{**d, "horizons_min": tuple(d["horizons_min"])})


def _mae(y: np.ndarray, yhat: np.ndarray) -> float:
    ok = np.isfinite(y) & np.isfinite(yhat)
    return float(np.abs(y[ok] - yhat[ok]).mean()) if ok.any() else float("nan")


def simplex_weights(preds: np.ndarray, y: np.ndarray, grid: np.ndarray = GRID, passes: int = PASSES) -> np.ndarray:
    """Weights on the simplex for `preds` (M, N) minimising the MAE of their weighted mean against `y` (N,).

    Greedy pairwise grid search from the best single member (see module docstring); never worse
    than the best member on these rows, exhaustive over the grid for two members.
    """
    ok = np.isfinite(y) & np.isfinite(preds).all(axis=0)
    p, t = preds[:, ok], y[ok]
    m = p.shape[0]
    w = np.zeros(m)
    if t.size == 0:
        w[0] = 1.0
        return w
    w[int(np.argmin(np.abs(p - t).mean(axis=1)))] = 1.0
    for _ in range(passes):
        for j in range(m):
            base = w @ p
            losses = [np.abs((1 - g) * base + g * p[j] - t).mean() for g in grid]
            g = float(grid[int(np.argmin(losses))])  # argmin takes the first: t = 0 on ties keeps w
            w = (1 - g) * w
            w[j] += g
    return w / w.sum()


def conformal_offset(lo: np.ndarray, hi: np.ndarray, y: np.ndarray, coverage: float = COVERAGE) -> float:
    """CQR offset: add it to both band ends so that `coverage` of these readings fall inside."""
    ok = np.isfinite(y) & np.isfinite(lo) & np.isfinite(hi)
    scores = np.maximum(lo[ok] - y[ok], y[ok] - hi[ok])
    n = scores.size
    if n == 0:
        return 0.0
    level = min(1.0, np.ceil((n + 1) * coverage) / n)
    return float(np.quantile(scores, level, method="higher"))


def _check_names(names: list[str]) -> None:
    """Members are registry names, which also name their sub-folders: nothing else may reach a path."""
    from trafficcore.models.registry import MODEL_CLASSES

    if not names:
        raise ValueError("a stack needs at least one member")
    bad = [n for n in names if n not in MODEL_CLASSES or n == "stack"]
    if bad:
        raise ValueError(f"unknown stack member(s) {bad}; choose from {sorted(set(MODEL_CLASSES) - {'stack'})}")
    if len(set(names)) != len(names):
        raise ValueError(f"stack members must differ, got {names}")


class StackForecaster:
    """Members blended per horizon with validation weights and a conformal band (see module docstring)."""

    name = "stack"
    model_class = "stack"

    def __init__(self, spec: WindowSpec | None = None, members: dict[str, dict] | None = None,
                 fitted: dict[str, object] | None = None, seed: int | None = None, coverage: float = COVERAGE):
        """`members`: registry name -> constructor keyword arguments; `fitted`: name -> an already fitted
        member (reused as is, e.g. the benchmark's own gbt); `seed` goes to members that take one."""
        fitted = dict(fitted or {})
        names = list(members if members is not None else (fitted or DEFAULT_MEMBERS))
        for n in fitted:
            if n not in names:
                names.append(n)
        if spec is None and fitted:
            spec = next(iter(fitted.values())).spec
        self.spec = spec if spec is not None else WindowSpec()
        for n, m in fitted.items():
            if tuple(m.spec.horizons_min) != tuple(self.spec.horizons_min):
                raise ValueError(f"fitted member {n!r} forecasts horizons {m.spec.horizons_min}, "
                                 f"the stack {self.spec.horizons_min}")
        _check_names(names)
        self.member_names = names
        source = members if members is not None else DEFAULT_MEMBERS
        self.member_kwargs = {n: dict(source.get(n, {})) for n in names}
        self.members: dict[str, object] = fitted
        self.seed = seed
        self.coverage = float(coverage)
        self.weights: np.ndarray | None = None  # (S, M): per horizon, per member
        self.offsets: np.ndarray | None = None  # (S,): added to P90, taken from P10
        self.floor: float | None = None
        self.metrics: dict = {}

    # -- naming
    @property
    def uses_neighbours(self) -> bool:
        return any(getattr(m, "uses_neighbours", True) for m in self.members.values()) if self.members else True

    @property
    def display_name(self) -> str:
        """Members in use joined by '+', each by its own name (a language model whose text path is off says so);
        members with zero weight at every horizon named as not used."""
        from trafficcore.models.registry import display_name, model_display_name

        def named(n: str) -> str:
            text = model_display_name(self.members[n]) if n in self.members else display_name(n)
            return text[:1].lower() + text[1:]

        used = [n for j, n in enumerate(self.member_names) if self.weights is None or self.weights[:, j].max() > 0]
        unused = [n for n in self.member_names if n not in used]
        text = " + ".join(named(n) for n in used)
        if unused:
            text += f" ({' and '.join(named(n) for n in unused)} not used)"
        return text[0].upper() + text[1:]

    # -- the protocol
    def _create(self, name: str):
        from trafficcore.models import registry

        kw = dict(self.member_kwargs.get(name, {}))
        params = inspect.signature(registry.model_class(name)).parameters
        kw.setdefault("spec", self.spec)
        if self.seed is not None and "seed" in params:
            kw.setdefault("seed", self.seed)
        return registry.create(name, **kw)

    def _member_quantiles(self, panel: Panel, samples: Samples) -> np.ndarray:
        """(M, N, S, 3) every member's quantiles, in member order."""
        return np.stack([np.asarray(self.members[n].predict_samples(panel, samples), dtype=float)
                         for n in self.member_names])

    def fit(self, panel: Panel, train_rows: np.ndarray, val_rows: np.ndarray) -> StackForecaster:
        train_rows = np.asarray(train_rows, dtype=np.int64)
        val_rows = np.asarray(val_rows, dtype=np.int64)
        if val_rows.size == 0:
            raise ValueError("stack: weights and band are chosen on validation rows, and none were given")
        for n in self.member_names:
            if n not in self.members:
                self.members[n] = self._create(n).fit(panel, train_rows, val_rows)
        seen = panel.values[train_rows]
        lowest = float(np.nanmin(seen)) if np.isfinite(seen).any() else None
        self.floor = lowest if lowest is not None and lowest >= 0 else None

        nbr = panel.neighbour_matrix(self.spec.n_neighbours, self.spec.neighbour_method)
        val = build_samples(panel, val_rows, spec=self.spec, neighbour_idx=nbr)
        q = self._member_quantiles(panel, val)
        self.weights = np.stack([simplex_weights(q[:, :, h, 1], val.targets[:, h])
                                 for h in range(len(self.spec.horizons_min))])
        raw = self._blend(q)
        self.offsets = np.array([conformal_offset(raw[:, h, 0], raw[:, h, 2], val.targets[:, h], self.coverage)
                                 for h in range(len(self.spec.horizons_min))])
        self.metrics = self._scores(q, val.targets)
        return self

    def _blend(self, q: np.ndarray) -> np.ndarray:
        """(N, S, 3) the weighted mean of member quantiles (M, N, S, 3), before the band offsets."""
        return np.einsum("mnsq,sm->nsq", q, self.weights)

    def _band(self, blended: np.ndarray) -> np.ndarray:
        out = blended.copy()
        p50 = out[..., 1]
        out[..., 0] = np.minimum(out[..., 0] - self.offsets, p50)
        out[..., 2] = np.maximum(out[..., 2] + self.offsets, p50)
        if self.floor is not None:
            out = np.maximum(out, self.floor)
        return out

    def _scores(self, q: np.ndarray, y: np.ndarray) -> dict:
        """Validation scores in the shape every model records (`{"val": {h: {"mae", "coverage_p10_p90", "n"}}}`,
        read by `trafficcore.live.serving` to rank saved models), plus each member's MAE: why these weights."""
        out = self._band(self._blend(q))
        per_h = {}
        for h, minutes in enumerate(self.spec.horizons_min):
            t, ok = y[:, h], np.isfinite(y[:, h])
            inside = (t[ok] >= out[ok, h, 0]) & (t[ok] <= out[ok, h, 2])
            per_h[str(minutes)] = {"mae": _mae(t, out[:, h, 1]),
                                   "coverage_p10_p90": float(inside.mean()) if ok.any() else float("nan"),
                                   "n": int(ok.sum())}
        return {"val": per_h, "val_mae_members": {n: _mae(y, q[j, ..., 1]) for j, n in enumerate(self.member_names)},
                "val_mae_stack": _mae(y, out[..., 1])}

    def predict_samples(self, panel: Panel, samples: Samples) -> np.ndarray:
        if self.weights is None or self.offsets is None:
            raise RuntimeError("stack: call fit() (or load a saved model) before predicting")
        if tuple(samples.spec.horizons_min) != tuple(self.spec.horizons_min):
            raise ValueError(f"stack was fit for horizons {self.spec.horizons_min}, "
                             f"samples ask for {samples.spec.horizons_min}")
        q = self._band(self._blend(self._member_quantiles(panel, samples)))
        return np.sort(q, axis=-1).astype(np.float32)

    # -- persistence
    def save(self, directory: Path) -> None:
        if self.weights is None or self.offsets is None:
            raise RuntimeError("stack: nothing to save, the model is not fitted")
        directory = Path(directory)
        for n in self.member_names:
            self.members[n].save(directory / MEMBERS_DIR / n)
        cfg = {
            "model_class": self.model_class,
            "name": self.name,
            "display_name": self.display_name,
            "spec": _spec_dict(self.spec),
            "members": self.member_names,
            "coverage": self.coverage,
            "floor": self.floor,
            "metrics": self.metrics,
        }
        files.save_folder(directory, cfg, {"weights": self.weights, "band_offsets": self.offsets})

    @classmethod
    def load(cls, directory: Path) -> StackForecaster:
        from trafficcore.models.registry import load_model

        directory = Path(directory)
        _check_names(list(files.read_config(directory).get("members", [])))  # before any path is built from them
        tensors, cfg = files.read_folder(directory, cls.model_class)
        members = {n: load_model(directory / MEMBERS_DIR / n) for n in cfg["members"]}
        model = cls(spec=_spec_from(cfg["spec"]), fitted=members, coverage=cfg["coverage"])
        model.member_names = list(cfg["members"])
        model.weights = np.asarray(tensors["weights"], dtype=float)
        model.offsets = np.asarray(tensors["band_offsets"], dtype=float)
        model.floor = cfg["floor"]
        model.metrics = cfg.get("metrics", {})
        return model
