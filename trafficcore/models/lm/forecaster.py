"""The language-model forecaster: a pretrained encoder reads a detector's context text and its numbers together.

One transformer, one sequence: `[CLS] context-text tokens [SEP]` followed by numeric tokens projected into
the encoder's embedding space and passed through `inputs_embeds` (each numeric token gets a learned type
embedding, and BERT-style encoders also give them segment id 1): the detector's own last hours in patches,
its neighbours, the same detector a week earlier, the targets' profile and anchor, the calendar, and
optional extra tokens (`inputs.numeric_inputs`). The head reads the [CLS] state and the mean of the numeric
states and emits, per horizon, a median and two positive offsets, trained with the pinball loss on the
residual over a numeric anchor in units of the detector's scale. An MLP over the same numeric features (the
"skip path") is added to the head's output (`net.FusionNet`). With late fusion (`late.py`) a frozen encoder
reads each sentence once and a small head attends over the cached states instead.

This module holds what a trained model does: build the network from its `LMConfig`, prepare inputs,
predict, save and load. How it learns is a recipe (`recipes.py`) run by the training engine
(`trafficcore.training.engine`, imported when `fit` or `update` is called, so predicting needs neither the
loop nor the optimiser). After training the P10/P90 offsets are stretched per horizon so that validation
coverage is 80% (split-conformal; test days are never touched).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from trafficcore.data.panel import Panel
from trafficcore.data.profile import DetectorProfile
from trafficcore.data.windows import Samples, WindowSpec, build_samples
from trafficcore.models import files
from trafficcore.models.lm.config import MODES, LMConfig
from trafficcore.models.lm.inputs import FastContext, Prepared, numeric_inputs
from trafficcore.models.lm.late import SentenceCache, sentences
from trafficcore.models.lm.net import FusionNet, prune_last_layer, quantiles_from_raw
from trafficcore.models.lm.recipes import Recipe, get_recipe
from trafficcore.notes import NoteLanguage
from trafficcore.text import context_parts

#: Token id sequences kept between calls (distinct context texts; a city-day holds a few tens of thousands).
TOKEN_CACHE = 200_000
#: Adversarial perturbation (L2 norm per sample, embedding units) of the `fgm` ablation variant.
FGM_EPS = 0.5


class LMForecaster:
    """Forecaster protocol implementation around `FusionNet` (see module docstring).

    `LMForecaster(spec, recipe="quick", seed=0, **architecture)`: the recipe's architecture, with any
    `LMConfig` field overridden by keyword.
    """

    name = "lm"
    model_class = "lm"

    def __init__(self, spec: WindowSpec | None = None, recipe: str | Recipe = "quick", seed: int = 0,
                 device: str = "auto", progress: bool = True, **architecture):
        self.recipe = get_recipe(recipe)
        self.spec = spec or WindowSpec()
        self.cfg = LMConfig(**{**self.recipe.model, **architecture})
        self.seed = int(seed)
        self.device_name = device
        self.progress = progress
        self.net: FusionNet | None = None
        self.token_dims: dict[str, tuple[int, int]] = {}
        self.tokenizer = None
        self.backbone_info: dict = {}
        self.profile: DetectorProfile | None = None
        self.interval_scale = np.ones((len(self.spec.horizons_min), 2))
        self.nonnegative = True
        self.metrics: dict = {}
        self.fingerprint: str | None = None
        self.train_end: str | None = None  # newest reading fit or model selection looked at (continual updates)
        self.dataset: str | None = None
        self.held_out: set[str] = set()
        self._ctx: tuple[Panel, FastContext] | None = None
        self._infer: nn.Module | None = None
        self._tok_cache: dict[str, np.ndarray] = {}
        self._sentences: SentenceCache | None = None  # late fusion: token states per distinct sentence

    # ------------------------------------------------------------------ capabilities
    @property
    def reads_text(self) -> bool:
        """Whether this model's forecasts can change with the words of their context (a scenario note too).
        False for variants without text and when training kept the transformer's head at exactly zero."""
        if not self.cfg.reads_text:
            return False
        return self.net is None or not self.transformer_off

    def note_language(self) -> NoteLanguage:
        """How this model reads a scenario note: "on this road" if its texts say it, and the event window its
        texts showed (the largest horizon + 1 h ahead, the window spec's event radius)."""
        return NoteLanguage.for_spec(self.spec, on_road=self.cfg.event_road)

    @property
    def transformer_off(self) -> bool:
        """True when training kept the transformer's head at exactly zero (its text phase never beat the numeric
        path on validation): the transformer then adds nothing and is not run."""
        net = self.net
        return net is not None and net.skip is not None and (net.encoder is not None or net.late is not None) \
            and net.head_is_zero()

    @property
    def display_name(self) -> str:
        """What this model is, in words, for reports and the dashboard: a model whose text path training left
        off is named for what it then is."""
        if not self.cfg.transformer:
            return "Numeric network (no language model)"
        if self.net is not None and self.transformer_off:
            return "Language model, numeric path only (its text path added nothing on validation)"
        return "Language model (reads context text)" if self.cfg.use_text else "Language model (no text)"

    def variant(self, **architecture) -> LMForecaster:
        """An unfitted model with the same recipe, seed and spec and these architecture changes."""
        cfg = {**self.cfg.to_dict(), **architecture}
        return LMForecaster(spec=self.spec, recipe=self.recipe, seed=self.seed, device=self.device_name,
                            progress=self.progress, **cfg)

    def ablation_variants(self) -> dict[str, LMForecaster]:
        """Unfitted variants for the benchmark's ablation table (it fits and scores each).

        no_text: numeric tokens only; random_init: same architecture and training, no pretrained weights;
        frozen_encoder / lora / full: the fine-tuning modes (frozen = heads and input projections trained on
        the frozen pretrained encoder); numeric_only: the skip path alone, the model without its transformer;
        fgm / no_fgm: the last phase with adversarial training (FGM on the input embeddings) switched on or off.
        """
        out = {"no_text": self.variant(use_text=False), "random_init": self.variant(random_init=True)}
        for mode in MODES if self.cfg.fusion == "early" else ():  # late fusion needs the frozen encoder
            if mode != self.cfg.mode:
                out[mode if mode != "frozen" else "frozen_encoder"] = self.variant(mode=mode)
        if self.cfg.skip:
            out["numeric_only"] = self.variant(transformer=False)
        if self.cfg.fusion == "early":  # FGM perturbs the transformer's input embeddings; late fusion has none
            last = self.recipe.phases[-1]
            eps = 0.0 if last.fgm_eps > 0 else FGM_EPS
            out["fgm" if eps else "no_fgm"] = LMForecaster(
                spec=self.spec, recipe=self.recipe.with_changes(phases={last.name: {"fgm_eps": eps}}), seed=self.seed,
                device=self.device_name, progress=self.progress, **self.cfg.to_dict())
        return out

    def configure_cold_start(self, held_out_detector_ids) -> None:
        """Cold-start protocol: held-out detectors are treated as never seen, and the text gains the site
        description (the one thing the model knows about a new site)."""
        self.held_out = set(map(str, held_out_detector_ids))
        self.cfg.site_description = True

    # ------------------------------------------------------------------ construction
    def device(self) -> torch.device:
        if self.device_name == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device_name == "cuda" and not torch.cuda.is_available():
            raise ValueError("device cuda requested but torch sees no CUDA device (use auto or cpu)")
        if self.device_name not in ("cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, not {self.device_name!r}")
        return torch.device(self.device_name)

    def build(self, token_dims: dict[str, tuple[int, int]]) -> None:
        """Create the network for numeric tokens of these (count, features) shapes, loading the backbone."""
        from trafficcore.models.backbone import load_backbone

        cfg = self.cfg
        torch.manual_seed(self.seed)
        self.token_dims = {k: (int(n), int(f)) for k, (n, f) in token_dims.items()}
        self._infer = None
        if not cfg.transformer:
            self.net = FusionNet(None, self.token_dims, len(self.spec.horizons_min), cfg)
            return
        bb = load_backbone(cfg.backbone, random_init=cfg.random_init, num_layers=cfg.num_layers,
                           dropout=cfg.dropout, seed=self.seed)
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
        if cfg.fusion == "late":
            encoder.eval()
            self._sentences = SentenceCache(encoder, self.tokenizer, max_tokens=64)
            self.net = FusionNet(None, self.token_dims, len(self.spec.horizons_min), cfg, hidden=bb.hidden_size,
                                 late=True)
        else:
            self.net = FusionNet(encoder, self.token_dims, len(self.spec.horizons_min), cfg)

    # ------------------------------------------------------------------ data
    def neighbours(self, panel: Panel) -> np.ndarray:
        from trafficcore.models.baselines import neighbour_index

        return neighbour_index(panel, self.spec)

    def context(self, panel: Panel) -> FastContext:
        """The panel's precomputed context (cached for the last panel seen)."""
        if self._ctx is None or self._ctx[0] is not panel:
            self._ctx = (panel, FastContext(panel, self.spec, relative_times=self.cfg.event_times == "relative",
                                            roads=self.cfg.event_road))
        return self._ctx[1]

    def samples(self, panel: Panel, rows: np.ndarray, detectors: np.ndarray | None = None) -> Samples:
        """Every detector (or these panel columns) at these issue rows, keeping samples with a known target."""
        s = build_samples(panel, np.asarray(rows, dtype=np.int64), detector_idx=detectors, spec=self.spec,
                          neighbour_idx=self.neighbours(panel))
        return s.subset(np.isfinite(s.targets).any(axis=1))

    def texts(self, panel: Panel, samples: Samples, note: str | None = None) -> list[str]:
        """The context text of each sample, as the model reads it (with a user's scenario note where given)."""
        return [" ".join(p) for p in self.text_parts(panel, samples, note)]

    def text_parts(self, panel: Panel, samples: Samples, note: str | None = None) -> list[list[str]]:
        """The phrases of each sample's context text (`trafficcore.text.context_parts`); explanations use them."""
        fc = self.context(panel)
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
        if len(self._tok_cache) + len(uniq) > TOKEN_CACHE:  # bounded memory; cleared before this call's look-ups
            self._tok_cache.clear()
        todo = [t for t in uniq if t not in self._tok_cache]
        if todo:
            enc = self.tokenizer(todo, truncation=True, max_length=self.cfg.max_text_tokens)["input_ids"]
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
        samples the network learns from (their profile leaves their own readings out, as the recipe says)."""
        inputs = numeric_inputs(panel, samples, self.profile, self.neighbours(panel), patch=self.cfg.patch,
                                extra=self.cfg.extra_tokens, leave_own_out=training and self.recipe.leave_own_out)
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

    def batch(self, prep: Prepared, idx: np.ndarray, device: torch.device, with_targets: bool = False) -> dict:
        """The network's input tensors for samples `idx` of `prep` (and scaled targets for training)."""
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

    def validation_samples(self, panel: Panel, val_rows: np.ndarray, detectors: np.ndarray | None = None,
                           shard: tuple[int, int] = (0, 1)) -> Samples:
        """The validation samples used for early stopping and calibration: a seeded subset, reproducible.
        With detector shards (`shard` = (k, n_shards), `detectors` = its panel columns), shard k's share of
        them, drawn from its own samples with its own seed (`trafficcore.data.shard`)."""
        from trafficcore.data.shard import quota, shard_rng

        va = self.samples(panel, val_rows, detectors) if np.asarray(val_rows).size else None
        if va is None or not len(va):
            raise ValueError("lm: the validation period has no known targets; early stopping needs some")
        # a seeded random order, so that any head of it (the early-stopping subset) spans the whole period
        k, n = shard
        order = shard_rng(self.seed + 1, k, n).permutation(len(va))[: quota(self.recipe.val_samples, n, k)]
        return va.subset(order)

    def validation_check(self, panel: Panel, val_rows: np.ndarray) -> dict:
        """MAE pooled over horizons on `validation_samples` (recorded at fit time; a test reproduces it)."""
        va = self.validation_samples(panel, val_rows)
        q = self.predict_samples(panel, va)
        ok = np.isfinite(va.targets)
        return {"n": int(ok.sum()), "mae": float(np.abs(q[..., 1] - va.targets)[ok].mean())}

    # ------------------------------------------------------------------ training (the engine does it)
    def fit(self, panel: Panel, train_rows: np.ndarray, val_rows: np.ndarray, state_dir: str | Path | None = None,
            resume: str | Path | None = None, shards: int | None = None) -> LMForecaster:
        """Fit the profile on training rows and run the recipe's phases (see `trafficcore.training.engine`;
        `shards`: detector shards of the sampler, by default one per `torchrun` rank)."""
        from trafficcore.training.engine import fit_recipe

        fit_recipe(self, panel, train_rows, val_rows, state_dir=state_dir, resume=resume, shards=shards)
        return self

    def update(self, panel: Panel, train_rows: np.ndarray, val_rows: np.ndarray, steps: int, lr: float,
               max_minutes: float | None = None) -> dict:
        """Continual update: fine-tune from the current weights on new rows (`recipes.update_phase`); returns
        the phase's summary."""
        from trafficcore.training.engine import update

        return update(self, panel, train_rows, val_rows, steps=steps, lr=lr, max_minutes=max_minutes)

    def reset_inference(self) -> None:
        """Forget the derived inference network (after the weights changed)."""
        self._infer = None

    # ------------------------------------------------------------------ prediction
    def apply_bands(self, q: np.ndarray) -> np.ndarray:
        """Stretch the P10/P90 offsets by the calibrated factors (and keep counts non-negative)."""
        mid = q[..., 1]
        lo = mid - (mid - q[..., 0]) * self.interval_scale[None, :, 0]
        hi = mid + (q[..., 2] - mid) * self.interval_scale[None, :, 1]
        out = np.stack([lo, mid, hi], axis=-1)
        return np.maximum(out, 0.0) if self.nonnegative else out

    def _inference_net(self) -> nn.Module:
        """The network that predicts: LoRA merged into the base weights (exact); on CPU the encoder's linear
        layers quantised to int8 (dynamic) and its last layer computing only what the head reads. When the
        transformer's head is exactly zero the transformer is not run at all (same output, ~1 ms). The
        recorded validation metrics and the band calibration are computed with this network, so what is
        reported is what is deployed. Training always runs on the float network."""
        if self._infer is None:
            self.net.last_inputs_embeds = None
            net = copy.deepcopy(self.net).eval()
            if self.transformer_off:
                net.skip_only = True
            elif net.encoder is not None:
                if self.cfg.mode == "lora":
                    net.encoder = net.encoder.merge_and_unload()
                on_cpu = next(net.parameters()).device.type == "cpu"
                quant = getattr(getattr(torch, "ao", None), "quantization", None)
                if on_cpu and hasattr(quant, "quantize_dynamic"):
                    # deprecated upstream in favour of torchao, still shipped by the pinned torch; a torch
                    # without it predicts in float32 instead
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", UserWarning)
                        warnings.simplefilter("ignore", DeprecationWarning)
                        net.encoder = quant.quantize_dynamic(net.encoder, {nn.Linear}, dtype=torch.qint8)
                prune_last_layer(net)
            self._infer = net
        return self._infer

    def predict_prepared(self, prep: Prepared, device: torch.device, idx: np.ndarray | None = None,
                         calibrated: bool = True, net: nn.Module | None = None, batch_size: int = 512) -> np.ndarray:
        """(N, S, 3) quantiles in data units for samples `idx` of `prep`, by `net` (default: the inference net)."""
        net = net if net is not None else self._inference_net()
        idx = np.arange(len(prep)) if idx is None else np.asarray(idx)
        out = np.empty((len(idx), len(self.spec.horizons_min), 3), dtype=np.float32)
        order = np.argsort(prep.text_lengths()[idx], kind="stable")
        was_training = net.training
        net.eval()
        with torch.inference_mode():
            for s in range(0, len(order), batch_size):
                pos = order[s:s + batch_size]
                q = quantiles_from_raw(net(self.batch(prep, idx[pos], device)).float())
                q = (q.mean(dim=0) if q.dim() == 4 else q).cpu().numpy()
                x = prep.inputs
                out[pos] = x.anchor[idx[pos], :, None] + q * x.scale[idx[pos], None, None]
        net.train(was_training)
        return self.apply_bands(out) if calibrated else out

    def _check_ready(self, samples: Samples) -> None:
        if self.net is None or self.profile is None:
            raise RuntimeError("lm: not fitted (call fit or load)")
        if tuple(samples.spec.horizons_min) != tuple(self.spec.horizons_min):
            raise ValueError(f"lm: trained for horizons {self.spec.horizons_min}, "
                             f"asked for {samples.spec.horizons_min}")

    def predict_samples(self, panel: Panel, samples: Samples) -> np.ndarray:
        """(N, S, 3) P10/P50/P90 in the data's units."""
        self._check_ready(samples)
        if len(samples) == 0:
            return np.zeros((0, len(self.spec.horizons_min), 3))
        device = next(self.net.parameters()).device
        # a transformer that training left off adds exactly 0 and is not run: its texts need not be built either
        prep = self.prepare(panel, samples, numeric_only=self.transformer_off)
        return self.predict_prepared(prep, device).astype(np.float64)

    def predict_with_texts(self, panel: Panel, samples: Samples, texts: list[str]) -> np.ndarray:
        """Like `predict_samples`, but reading the given context texts (explanations, scenario notes)."""
        if len(texts) != len(samples):
            raise ValueError(f"lm: {len(texts)} texts for {len(samples)} samples")
        if not self.cfg.reads_text:
            return self.predict_samples(panel, samples)  # this variant ignores text: words get no credit
        self._check_ready(samples)
        device = next(self.net.parameters()).device
        return self.predict_prepared(self.prepare(panel, samples, texts=texts), device).astype(np.float64)

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
    def _saves_whole_encoder(self) -> bool:
        return self.cfg.transformer and (self.cfg.mode == "full" or self.cfg.random_init)

    def config_dict(self) -> dict:
        return {
            "model_class": self.model_class,
            "name": self.name,
            "display_name": self.display_name,
            "spec": {"history_steps": self.spec.history_steps, "horizons_min": list(self.spec.horizons_min),
                     "n_neighbours": self.spec.n_neighbours},
            "model": self.cfg.to_dict(),
            "recipe": self.recipe.to_dict(),
            "seed": self.seed,
            "backbone": self.backbone_info,
            "profile": self.profile.config() if self.profile is not None else None,
            "interval_scale": self.interval_scale.tolist(),
            "nonnegative": self.nonnegative,
            "dataset": self.dataset,
            "training_data_sha256": self.fingerprint,
            "train_end": self.train_end,
            "metrics": self.metrics,
            "saved_tensors": "all" if self._saves_whole_encoder() else "trainable",
            "token_dims": {k: list(v) for k, v in self.token_dims.items()},
        }

    def save(self, directory: str | Path) -> None:
        """config.json + model.safetensors; only adapters and heads when the base stays frozen or LoRA-adapted
        (the base comes back from the package, checked by its sha256)."""
        if self.net is None or self.profile is None:
            raise RuntimeError("lm: nothing to save, the model is not fitted")
        if self._saves_whole_encoder():
            tensors = dict(self.net.state_dict())
        else:
            keep = self.net.saved_parameter_names()
            tensors = {n: p for n, p in self.net.named_parameters() if n in keep}
        arrays = {f"net.{k}": v.detach().to("cpu", torch.float32).numpy() for k, v in tensors.items()}
        arrays.update(self.profile.tensors())
        files.save_folder(directory, self.config_dict(), arrays)

    @classmethod
    def load(cls, directory: str | Path, backbone: str | Path | None = None, device: str = "cpu") -> LMForecaster:
        """Rebuild from a saved folder; the base encoder must have the recorded sha256."""
        arrays, cfg = files.read_folder(directory, cls.model_class)
        spec = WindowSpec(**{**cfg["spec"], "horizons_min": tuple(cfg["spec"]["horizons_min"])})
        arch = LMConfig.from_dict({**cfg["model"], **({"backbone": str(backbone)} if backbone is not None else {})})
        m = cls(spec=spec, recipe=Recipe.from_dict(cfg["recipe"]), seed=cfg["seed"], device=device,
                **arch.to_dict())
        m.profile = DetectorProfile.restore(cfg["profile"], arrays)
        m.build({k: tuple(v) for k, v in cfg["token_dims"].items()})
        want = cfg.get("backbone", {}).get("sha256")
        if want and m.backbone_info.get("sha256") != want:
            raise ValueError(
                f"{directory} was trained on backbone weights with sha256 {want[:12]}..., but "
                f"{m.backbone_info.get('name')} has {m.backbone_info.get('sha256', '')[:12]}...: adapters would not fit"
            )
        net_t = {k[4:]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith("net.")}
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
        m.net.to(m.device()).eval()
        m.interval_scale = np.asarray(cfg["interval_scale"], dtype=np.float64)
        m.nonnegative = bool(cfg["nonnegative"])
        m.metrics = cfg.get("metrics", {})
        m.fingerprint = cfg.get("training_data_sha256")
        m.train_end = cfg.get("train_end")
        m.dataset = cfg.get("dataset")
        return m
