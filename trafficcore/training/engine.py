"""The engine that trains the language model: it runs a recipe's phases (`trafficcore.models.lm.recipes`) on
an `LMForecaster` and owns the loss, the samplers, the early-stopping subsets, band calibration and metrics.

The model supplies data preparation and the network; the generic loop (`loop.train`) supplies AdamW,
schedules, early stopping, mixed precision, FGM, DDP and resumable state. A phase decides which tensors
train; its length is steps or epochs, and its clock guard only stops an overrun (recorded in
`metrics["clock_cut"]` and warned about). `fit_recipe` runs a whole recipe; `update` runs one continual
update phase from the current weights, through the same code.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from trafficcore.data.panel import Panel
from trafficcore.data.profile import DetectorProfile
from trafficcore.data.shard import owned_columns, owned_shards, quota, shard_columns, shard_rng
from trafficcore.data.windows import Samples
from trafficcore.models import files
from trafficcore.models.lm.forecaster import LMForecaster
from trafficcore.models.lm.inputs import Prepared, numeric_inputs
from trafficcore.models.lm.net import pinball, quantiles_from_raw
from trafficcore.models.lm.recipes import Phase, update_phase
from trafficcore.training import ddp, loop
from trafficcore.training.loop import TrainConfig, TrainResult, cpu_threads, seed_everything

BAND_LEVEL = 0.8  # P10-P90


class SampleTask:
    """The loop's view of prepared samples: deterministic, length-bucketed batches, the scale-weighted pinball
    loss (so that the loss optimises MAE in vehicles, not in scale units) and validation MAE.

    Detector shards (`trafficcore.data.shard`): `train` holds this rank's shards' samples one after another
    (`sizes[i]` of shard `shards[i]`), and every global batch takes `batch_size / n_shards` samples from each
    of the `n_shards` shards, each shard batching its own samples with its own seed. Each rank's loss is its
    share of the global batch's loss (divided by the global count of known targets, times the number of ranks,
    which DDP's gradient averaging divides out again), so W ranks take the same steps as one process holding
    every shard. With one shard this is the single-process sampler, unchanged. Validation: `val` holds this
    rank's shards' early-stopping samples; the loop adds the ranks' error sums.
    """

    def __init__(self, model: LMForecaster, train: Prepared, val: Prepared, seed: int,
                 sizes: list[int] | None = None, shards: list[int] | None = None, n_shards: int = 1):
        self.m, self.train, self.val, self.seed = model, train, val, seed
        self.sizes = [len(train)] if sizes is None else [int(n) for n in sizes]
        self.shards = [0] if shards is None else [int(k) for k in shards]
        self.n_shards = int(n_shards)
        if sum(self.sizes) != len(train) or len(self.sizes) != len(self.shards):
            raise ValueError("SampleTask: the shard sizes do not add up to the training samples")
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        self.ctx = ddp.current()
        self._cache: dict[int, tuple[int, int, list[np.ndarray]]] = {}  # shard position -> (epoch, bs, batches)
        self._n: dict[int, int] = {}
        scale = train.inputs.scale
        if self.n_shards == 1:
            self.mean_scale = float(np.mean(scale))
        else:  # over every shard's training samples, on every rank
            total, n = ddp.all_reduce_sum([float(np.sum(scale, dtype=np.float64)), float(len(scale))], self.ctx)
            self.mean_scale = total / max(n, 1.0)

    def _epoch_batches(self, g: int, epoch: int, bs: int) -> list[np.ndarray]:
        """Shard position g's batches of one epoch over its own samples (indices into `train`)."""
        hit = self._cache.get(g)
        if hit is None or hit[0] != epoch or hit[1] != bs:
            rng = shard_rng(self.seed * 1_000_003 + epoch, self.shards[g], self.n_shards)
            perm = rng.permutation(self.sizes[g]) + self.offsets[g]
            lengths = self.train.text_lengths()
            chunk = bs * 32
            batches = []
            for c in range(0, len(perm), chunk):
                part = perm[c:c + chunk]
                part = part[np.argsort(lengths[part], kind="stable")]  # similar lengths pad less
                batches += [part[i:i + bs] for i in range(0, len(part) - bs + 1, bs)] or [part]
            order = rng.permutation(len(batches))
            hit = (epoch, bs, [batches[i] for i in order])
            self._cache[g] = hit
        return hit[2]

    def indices(self, index: int, batch_size: int) -> np.ndarray:
        """This rank's samples (indices into `train`) of global micro-batch `index`."""
        if batch_size % self.n_shards:
            raise ValueError(f"batch size {batch_size} cannot be shared by {self.n_shards} detector shards: "
                             f"use a multiple of {self.n_shards}")
        bs = batch_size // self.n_shards
        out = []
        for g in range(len(self.shards)):
            if g not in self._n:
                self._n[g] = len(self._epoch_batches(g, 0, bs))
            n = self._n[g]
            out.append(self._epoch_batches(g, index // n, bs)[index % n])
        return out[0] if len(out) == 1 else np.concatenate(out)

    def batch(self, index: int, batch_size: int, device: torch.device) -> dict:
        idx = self.indices(index, batch_size)
        b = self.m.batch(self.train, idx, device, with_targets=True)
        if self.n_shards > 1:  # the global batch's count of known targets normalises every rank's share
            b["known_total"] = ddp.all_reduce_sum([float(torch.isfinite(b["y"]).sum())], self.ctx)[0]
        return b

    def loss(self, model: nn.Module, batch: dict, embed_delta: torch.Tensor | None = None) -> torch.Tensor:
        q = quantiles_from_raw(model(batch, embed_delta=embed_delta).float())
        w = batch["scale"] / self.mean_scale
        total = batch.get("known_total")
        share = None if total is None else total / self.ctx.world_size  # DDP's averaging over ranks undoes it
        if q.dim() == 4:  # skip-path members: the mean of their own losses
            return torch.stack([pinball(qk, batch["y"], w, share) for qk in q]).mean()
        return pinball(q, batch["y"], w, share)

    def val_error(self, model: nn.Module, device: torch.device, rank: int, world: int) -> tuple[float, float]:
        """Over every early-stopping sample this task holds (its shards' share: `rank` and `world` are not
        needed, the ranks hold different samples)."""
        q = self.m.predict_prepared(self.val, device, calibrated=False, net=model)
        y = self.val.targets
        ok = np.isfinite(y)
        return float(np.abs(q[..., 1] - y)[ok].sum()), float(ok.sum())


# ------------------------------------------------------------------------------ bands and metrics
def calibrate_bands(q: np.ndarray, y: np.ndarray, level: float = BAND_LEVEL) -> np.ndarray:
    """Per horizon, stretch factors for the P10 and P90 offsets so that each tail holds (1-level)/2 on `y`."""
    tail = (1 - level) / 2
    out = np.ones((q.shape[1], 2))
    for j in range(q.shape[1]):
        ok = np.isfinite(y[:, j])
        if ok.sum() < 50:
            continue
        mid = q[ok, j, 1]
        w_lo = np.maximum(mid - q[ok, j, 0], 1e-6)
        w_hi = np.maximum(q[ok, j, 2] - mid, 1e-6)
        out[j, 0] = max(np.quantile((mid - y[ok, j]) / w_lo, 1 - tail), 0.05)
        out[j, 1] = max(np.quantile((y[ok, j] - mid) / w_hi, 1 - tail), 0.05)
    return out


def horizon_metrics(q: np.ndarray, y: np.ndarray, horizons) -> dict:
    """Per-horizon MAE and P10-P90 coverage (data units) over known targets."""
    out = {}
    for j, h in enumerate(horizons):
        ok = np.isfinite(y[:, j])
        if not ok.any():
            continue
        yy = y[ok, j]
        out[str(h)] = {
            "mae": float(np.abs(q[ok, j, 1] - yy).mean()),
            "coverage_p10_p90": float(((yy >= q[ok, j, 0]) & (yy <= q[ok, j, 2])).mean()),
            "n": int(ok.sum()),
        }
    return out


# ------------------------------------------------------------------------------ phases
@contextlib.contextmanager
def _training(net: nn.Module, trains: str):
    """Within the block only the phase's tensors train (`numeric`: the skip path, with the transformer not
    computed; `text`: all but the skip path; `all`: every tensor the architecture lets train)."""
    flags = {n: p.requires_grad for n, p in net.named_parameters()}
    try:
        for n, p in net.named_parameters():
            is_skip = n.startswith("skip.")
            if trains == "numeric":
                p.requires_grad_(is_skip)
            elif trains == "text":
                p.requires_grad_(flags[n] and not is_skip)
            else:
                p.requires_grad_(flags[n] or is_skip)
        net.skip_only = trains == "numeric"
        yield
    finally:
        net.skip_only = False
        for n, p in net.named_parameters():
            p.requires_grad_(flags[n])


def run_phase(model: LMForecaster, phase: Phase, samples: Prepared, stop: Prepared, device: torch.device,
              state_dir: str | Path | None = None, resume: str | Path | None = None, n_samples: int | None = None,
              sizes: list[int] | None = None, shards: list[int] | None = None, n_shards: int = 1) -> TrainResult:
    """Train `model.net` in place for one phase; on return it holds the phase's best validation weights.

    With detector shards, `samples` holds this rank's shards' samples (`sizes` of `shards`, see `SampleTask`)
    and `n_samples` counts every shard's, which sets the phase's length in epochs."""
    steps = phase.n_steps(len(samples) if n_samples is None else n_samples)
    tc = TrainConfig(lr=phase.lr, encoder_lr=phase.encoder_lr, warmup_frac=phase.warmup_frac,
                     schedule=phase.schedule, max_steps=steps, batch_size=phase.batch_size,
                     eval_every=max(1, steps // max(1, phase.evals)), patience=phase.patience,
                     max_minutes=phase.guard_minutes, amp=phase.amp, fgm_eps=phase.fgm_eps,
                     eval_at_start=phase.keep_start, seed=model.seed, progress=model.progress)
    task = SampleTask(model, samples, stop, model.seed + len(phase.name), sizes=sizes, shards=shards,
                      n_shards=n_shards)
    with _training(model.net, phase.trains):
        res = loop.train(model.net, task, tc, device, state_dir=state_dir, resume=resume)
    model.net.eval()
    model.reset_inference()
    if res.stopped == "time_limit":
        warnings.warn(f"lm phase {phase.name!r} was cut by its {phase.guard_minutes}-minute clock guard after "
                      f"{res.steps} of {steps} steps: this model depends on the machine's speed", stacklevel=2)
    return res


def draw_samples(model: LMForecaster, panel: Panel, tr: Samples, phase: Phase, rng: np.random.Generator,
                 want: int | None = None) -> np.ndarray:
    """The phase's training samples: all of them, a random draw, or a draw with `event_share` of samples whose
    text mentions an upcoming or just-started event (each repeated as often as the share needs). `want`:
    how many to draw (default `phase.samples`; a shard draws its `quota` of them).

    Why the event sampler: such samples are ~1% of training samples, so at a CPU's few thousand steps a random
    draw shows the text head a few hundred of them and their signal drowns in ordinary samples."""
    n = len(tr)
    if phase.sampler == "all":
        return np.arange(n)
    want = phase.samples if want is None else int(want)
    size = min(want, n)
    random_draw = np.arange(n) if n <= want else np.sort(rng.choice(n, want, replace=False))
    if phase.sampler == "random" or phase.event_share <= 0 or not model.cfg.reads_text:
        return random_draw
    flag = model.context(panel).recent_event_mask(tr.detector_idx, tr.issue_idx)
    ev, rest = np.flatnonzero(flag), np.flatnonzero(~flag)
    if not len(ev):
        return random_draw
    n_ev = int(round(phase.event_share * size))
    reps, extra = divmod(n_ev, len(ev))
    ev_pick = np.concatenate([np.tile(ev, reps), rng.choice(ev, extra, replace=False)])
    return np.sort(np.concatenate([ev_pick, rng.choice(rest, min(len(rest), size - n_ev), replace=False)]))


def stop_subset(model: LMForecaster, panel: Panel, phase: Phase, va: Samples, p_val: Prepared,
                val_rows: np.ndarray, detectors: np.ndarray | None = None,
                shard: tuple[int, int] = (0, 1)) -> Prepared:
    """The samples that early-stop a phase: the first `eval_samples` of validation, or for an event sampler
    that share of event samples drawn from the whole validation period (the subset alone holds too few to
    tell a head that reads event text from noise). With detector shards, shard k's `quota` of them, from
    its own detectors (`detectors`) with its own seed."""
    k, n_shards = shard
    n = min(quota(model.recipe.eval_samples, n_shards, k), len(p_val))
    if phase.sampler != "events" or phase.event_share <= 0 or not model.cfg.reads_text:
        return p_val.head(n)
    fc = model.context(panel)
    rest = np.flatnonzero(~fc.recent_event_mask(va.detector_idx, va.issue_idx))
    full = model.samples(panel, val_rows, detectors)
    ev = np.flatnonzero(fc.recent_event_mask(full.detector_idx, full.issue_idx))
    n_ev = min(len(ev), int(round(phase.event_share * n)))
    ev = np.sort(shard_rng(model.seed + 2, k, n_shards).choice(ev, n_ev, replace=False))
    idx = rest[: n - n_ev]  # `va` is already in a seeded random order
    return model.prepare(panel, full.subset(ev)).concat(
        Prepared(p_val.inputs.take(idx), p_val.targets[idx], p_val.text_ids, p_val.text_index[idx]))


def _read_rows(model: LMForecaster, panel: Panel, issue_rows: np.ndarray) -> np.ndarray:
    """Panel rows that samples issued at these rows read (history and targets)."""
    hmax = int(model.spec.horizon_steps(panel.interval).max())
    rows = np.unique((issue_rows[:, None] + np.arange(-model.spec.history_steps, hmax)[None, :]).ravel())
    return rows[(rows >= 0) & (rows < len(panel.times))]


def _concat(parts: list[Prepared]) -> Prepared:
    out = parts[0]
    for p in parts[1:]:
        out = out.concat(p)
    return out


def _fit_profile(model: LMForecaster, panel: Panel, read: np.ndarray, ctx: ddp.DistContext) -> DetectorProfile:
    """The detectors' profile over the whole network: fit here when this panel holds every detector, else
    each rank fits its own detectors and the parts are put together on every rank."""
    local = DetectorProfile.fit(panel, read, exclude=model.held_out)
    if panel.shard is None:
        return local
    parts = ddp.all_gather_object(local.part(panel.shard.owned), ctx)
    return DetectorProfile.combine(parts, list(panel.shard.detector_ids))


def _nonnegative(panel: Panel, read: np.ndarray, ctx: ddp.DistContext) -> bool:
    """No negative training reading on any rank (counts stay counts: forecasts are clipped at 0)."""
    v = panel.values[read][:, owned_columns(panel)]
    negative = float(np.any(np.isfinite(v) & (v < 0)))
    return ddp.all_reduce_sum([negative], ctx)[0] == 0


def _fingerprint(panel: Panel, read: np.ndarray, ctx: ddp.DistContext) -> str:
    """sha256 of the training readings of the whole network (the same on one rank as on several)."""
    if panel.shard is None:
        return files.data_fingerprint(panel.values[read], panel.times[read], panel.detectors["detector_id"],
                                      panel.dataset)
    own = owned_columns(panel)
    mine = dict(zip(panel.shard.owned, files.column_digests(panel.values[read][:, own]), strict=True))
    digests = {k: v for part in ddp.all_gather_object(mine, ctx) for k, v in part.items()}
    ids = panel.shard.detector_ids
    return files.combine_fingerprint(panel.dataset, panel.times[read], ids, [digests[d] for d in ids])


def _finish(model: LMForecaster, panel: Panel, p_val: Prepared, device: torch.device, read: np.ndarray,
            seen_to: int, ctx: ddp.DistContext = ddp.SINGLE) -> tuple[np.ndarray, np.ndarray]:
    """Calibrate the bands on validation (every rank's share of it) and record the training data's fingerprint;
    returns the calibrated validation quantiles and their targets, over all ranks."""
    q = model.predict_prepared(p_val, device, calibrated=False)  # every rank: same weights
    y = p_val.targets
    if ctx.enabled:
        got = ddp.all_gather_object((q, y), ctx)
        q, y = np.concatenate([g[0] for g in got]), np.concatenate([g[1] for g in got])
    model.interval_scale = calibrate_bands(q, y)
    model.fingerprint = _fingerprint(panel, read, ctx)
    model.train_end = str(panel.times[min(seen_to, len(panel.times) - 1)])
    return model.apply_bands(q), y


def _phase_record(phase: Phase, res: TrainResult, n_train: int) -> dict:
    return {"phase": phase.name, "trains": phase.trains, "train_samples": n_train, "steps": res.steps,
            "best_step": res.best_step, "best_val_mae": res.best_val_mae, "stopped": res.stopped,
            "wall_s": round(res.wall_s, 1), "samples_per_s": round(res.samples_per_s, 1), "history": res.history}


def _setup(model: LMForecaster) -> tuple[torch.device, ddp.DistContext]:
    seed_everything(model.seed)
    device = model.device()
    ctx = ddp.init_from_env(device)
    device = ddp.device_for(device, ctx)
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(device, ctx.world_size))
    return device, ctx


def _global_count(n: int, ctx: ddp.DistContext) -> int:
    return int(ddp.all_reduce_sum([float(n)], ctx)[0])


#: Most samples a continual update prepares for its numeric path (training pool, validation): numeric inputs take
#: about 3 KB a sample, and a region of 8,000 detectors has millions of samples in a fortnight of new readings.
UPDATE_POOL = 200_000


def capped_samples(model: LMForecaster, panel: Panel, rows: np.ndarray, cap: int, seed: int) -> Samples:
    """`model.samples` at these issue rows, at most `cap` of them drawn at random (seeded).

    Where rows x detectors is far beyond the cap, a random share of the rows is built first (then the pairs
    drawn among them), so that the samples never exist in full: each (row, detector) pair stays equally likely.
    """
    rng = np.random.default_rng(seed)
    n_det = panel.values.shape[1]
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) * n_det > 4 * cap:
        keep = max(1, -(-4 * cap // max(n_det, 1)))
        rows = np.sort(rng.choice(rows, min(keep, len(rows)), replace=False))
    s = model.samples(panel, rows)
    if len(s) > cap:
        s = s.subset(np.sort(rng.choice(len(s), cap, replace=False)))
    return s


# ------------------------------------------------------------------------------ whole recipes
def fit_recipe(model: LMForecaster, panel: Panel, train_rows: np.ndarray, val_rows: np.ndarray,
               state_dir: str | Path | None = None, resume: str | Path | None = None,
               shards: int | None = None) -> LMForecaster:
    """Fit the profile on the rows training samples read, build the network, run every phase, calibrate.

    `state_dir`: each phase writes its resumable state to `state_dir/<phase>`; `resume`: a folder written so,
    from which the last phase that has a state continues (earlier phases are not rerun: its state holds
    their weights).

    `shards`: the detector shards the sampler draws from (`trafficcore.data.shard`; default: one per rank,
    so one shard in a single process). Under `torchrun` each rank trains on its shards' samples: `panel` is
    either the whole network (every rank then ignores the others' detectors) or the rank's shard panel
    (`load_shard`, reading only its detectors). A run over S shards gives the same model on any number of
    ranks that divides S (up to float rounding, and dropout, whose masks each rank draws itself)."""
    t_start = time.perf_counter()
    device, ctx = _setup(model)
    n_shards = int(shards or ctx.world_size)
    mine = owned_shards(ctx.rank, ctx.world_size, n_shards)
    cols = shard_columns(panel, n_shards, mine)
    train_rows = np.asarray(train_rows, dtype=np.int64)
    val_rows = np.asarray(val_rows, dtype=np.int64)
    if train_rows.size == 0:
        raise ValueError("lm: no training issue times")
    read = _read_rows(model, panel, train_rows)
    model.profile = _fit_profile(model, panel, read, ctx)
    model.nonnegative = _nonnegative(panel, read, ctx)
    model.dataset = panel.dataset
    tr = [model.samples(panel, train_rows, c if n_shards > 1 else None) for c in cols]
    va = [model.validation_samples(panel, val_rows, c if n_shards > 1 else None, shard=(k, n_shards))
          for k, c in zip(mine, cols, strict=True)]
    t_prep = time.perf_counter()
    first = next((t for t in tr if len(t)), None)
    if first is None:
        raise ValueError(f"lm: shards {mine} of {n_shards} have no training samples")
    dims = numeric_inputs(panel, first.subset(np.arange(1)), model.profile, model.neighbours(panel),
                          patch=model.cfg.patch, extra=model.cfg.extra_tokens).token_dims()
    model.build(dims)
    model.net.to(device)
    p_vals = [model.prepare(panel, v) for v in va]
    p_val = _concat(p_vals)
    prep_s = time.perf_counter() - t_prep
    phases = model.recipe.phases if model.cfg.transformer else tuple(p for p in model.recipe.phases
                                                                     if p.trains == "numeric")
    if not phases:
        raise ValueError(f"recipe {model.recipe.name!r} has no phase that trains the numeric path alone")
    start_at = 0
    if resume is not None:
        have = [i for i, p in enumerate(phases) if (Path(resume) / p.name).exists()]
        if not have:
            raise FileNotFoundError(f"{resume} holds no phase state of recipe {model.recipe.name!r} to resume")
        start_at = have[-1]
    records, clock_cut = [], []
    rngs = [shard_rng(model.seed, k, n_shards) for k in mine]
    for i, phase in enumerate(phases):
        if i < start_at:
            continue
        picks = [draw_samples(model, panel, t, phase, rng, want=quota(phase.samples, n_shards, k)
                              if phase.samples else None) for t, rng, k in zip(tr, rngs, mine, strict=True)]
        p_train = _concat([model.prepare(panel, t.subset(pick), numeric_only=phase.trains == "numeric",
                                         training=True) for t, pick in zip(tr, picks, strict=True)])
        stop = _concat([stop_subset(model, panel, phase, v, pv, val_rows, c if n_shards > 1 else None,
                                    shard=(k, n_shards)) for v, pv, c, k in zip(va, p_vals, cols, mine, strict=True)])
        n_train = _global_count(len(p_train), ctx)
        sub = None if state_dir is None else Path(state_dir) / phase.name
        res = run_phase(model, phase, p_train, stop, device, state_dir=sub,
                        resume=Path(resume) / phase.name if resume is not None and i == start_at else None,
                        n_samples=n_train, sizes=[len(p) for p in picks], shards=mine, n_shards=n_shards)
        records.append(_phase_record(phase, res, n_train))
        if res.stopped == "time_limit":
            clock_cut.append(phase.name)
    hmax = int(model.spec.horizon_steps(panel.interval).max())
    seen = max(int(read.max()), int(val_rows.max()) + hmax - 1 if val_rows.size else 0)
    qc, y = _finish(model, panel, p_val, device, read, seen, ctx)
    ok = np.isfinite(y)
    model.metrics = {
        "val": horizon_metrics(qc, y, model.spec.horizons_min),
        "val_samples": len(y),
        "recipe": model.recipe.name,
        "phases": records,
        "clock_cut": clock_cut,
        "transformer_used": not model.transformer_off if model.cfg.transformer else False,
        "prepare_s": round(prep_s, 1),
        "fit_wall_s": round(time.perf_counter() - t_start, 1),
        "device": str(device), "world_size": ctx.world_size, "shards": n_shards,
        # == validation_check(panel, val_rows), without predicting twice (one shard)
        "reproduce": {"n": int(ok.sum()), "mae": float(np.abs(qc[..., 1] - y)[ok].mean())},
    }
    return model


def update(model: LMForecaster, panel: Panel, train_rows: np.ndarray, val_rows: np.ndarray, steps: int, lr: float,
           max_minutes: float | None = None) -> dict:
    """Continual update of a fitted model from its current weights: one `update_phase`, early-stopped on
    `val_rows` with the starting weights scored first, then the bands recalibrated; returns a summary."""
    t0 = time.perf_counter()
    device = next(model.net.parameters()).device
    seed_everything(model.seed)
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(device))
    numeric_only = model.net.encoder is None and model.net.late is None or model.transformer_off
    phase = update_phase(steps, lr, numeric_only=numeric_only, guard_minutes=max_minutes)
    train_rows = np.asarray(train_rows, dtype=np.int64)
    val_rows = np.asarray(val_rows, dtype=np.int64)
    budget = phase.n_steps(0) * phase.batch_size
    # tokenising costs, so the text path takes what the loop sees (steps x batch samples); the numeric path a
    # pool of at least UPDATE_POOL samples (every sample of a city, a random share of a region's millions)
    tr = capped_samples(model, panel, train_rows, max(budget, UPDATE_POOL) if numeric_only else budget, model.seed)
    # scoring the numeric path is cheap: early-stop and calibrate on every validation sample (less noise), up to
    # UPDATE_POOL of them
    va = capped_samples(model, panel, val_rows, UPDATE_POOL, model.seed + 1) if numeric_only else \
        model.validation_samples(panel, val_rows)
    p_tr = model.prepare(panel, tr, numeric_only=numeric_only)
    p_va = model.prepare(panel, va, numeric_only=numeric_only)
    res = run_phase(model, phase, p_tr, p_va if numeric_only else p_va.head(model.recipe.eval_samples), device)
    read = _read_rows(model, panel, np.concatenate([train_rows, val_rows]))
    qc, _ = _finish(model, panel, p_va, device, read, int(read.max()))
    summary = {**_phase_record(phase, res, len(p_tr)), "val_samples": len(p_va), "batch_size": phase.batch_size,
               "lr": lr, "wall_s": round(time.perf_counter() - t0, 1)}
    model.metrics = {**{k: v for k, v in model.metrics.items() if k == "val"},
                     "val_after_update": horizon_metrics(qc, p_va.targets, model.spec.horizons_min),
                     "update": summary}
    return summary
