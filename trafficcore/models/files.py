"""Model folders: the one reader and writer every model saves through; nothing is ever pickled.

A saved model is a folder with
- `config.json`: `model_class` (a key of `trafficcore.models.registry.MODEL_CLASSES`), `format_version`, and
  whatever else the model needs to rebuild itself (settings, detector ids, metrics);
- `model.safetensors`: its arrays (profiles, network weights, interval tables);
- optionally further JSON documents named by the model (gradient boosting keeps LightGBM's own text format
  inside one), and sub-folders that are model folders themselves (a blend keeps its members there).

Files are written to temporary names and renamed, config.json last, so a crash mid-save never leaves a
folder that looks complete. Arrays cross this boundary as numpy (torch models convert), so the baselines
save and load without importing torch.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

CONFIG = "config.json"
TENSORS = "model.safetensors"
FORMAT_VERSION = 2


def to_jsonable(obj):
    """numpy/pandas scalars, timestamps and paths -> plain JSON types (recursively); non-finite floats -> None.
    Imports neither pandas nor torch, so that a web process can record a model run cheaply."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, (Path, dt.datetime, dt.date)):  # pandas Timestamps are datetimes
        return str(obj)
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o644)  # a model folder is meant to be shared and committed
    os.replace(tmp, path)


def save_folder(directory: str | os.PathLike, config: dict, tensors: dict[str, np.ndarray],
                documents: dict[str, object] | None = None) -> Path:
    """Write a model folder: `documents` are extra JSON files by name, then the tensors, then config.json."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, doc in (documents or {}).items():
        _write_text(directory / name, json.dumps(to_jsonable(doc)))
    tmp = directory / (TENSORS + ".tmp")
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp),
              metadata={"format": "trafficcore", "version": str(FORMAT_VERSION)})
    os.chmod(tmp, 0o644)
    os.replace(tmp, directory / TENSORS)
    cfg = {"format_version": FORMAT_VERSION, **to_jsonable(config)}
    _write_text(directory / CONFIG, json.dumps(cfg, indent=2) + "\n")
    return directory


def read_config(directory: str | os.PathLike) -> dict:
    """config.json of a model folder, with a clear error for a folder that is not one."""
    path = Path(directory) / CONFIG
    if not path.exists():
        raise FileNotFoundError(f"{directory} is not a saved model: {CONFIG} is missing")
    try:
        cfg = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable model config ({e})") from None
    if not isinstance(cfg, dict) or "model_class" not in cfg:
        raise ValueError(f"{path}: not a model config (no model_class)")
    return cfg


def read_folder(directory: str | os.PathLike, model_class: str | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """(tensors, config) of a model folder; `model_class` checks the folder holds that kind of model."""
    directory = Path(directory)
    cfg = read_config(directory)
    if model_class is not None and cfg.get("model_class") != model_class:
        raise ValueError(f"{directory} holds a {cfg.get('model_class')!r} model, not {model_class!r}")
    if cfg.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{directory} was saved in model format {cfg.get('format_version')}, this version reads "
                         f"format {FORMAT_VERSION}: train it again")
    t_path = directory / TENSORS
    if not t_path.exists():
        raise FileNotFoundError(f"{directory} is not a saved model: {TENSORS} is missing")
    return load_file(str(t_path)), cfg


def read_document(directory: str | os.PathLike, name: str):
    """One of the extra JSON documents a model saved beside its config."""
    return json.loads((Path(directory) / name).read_text())


def data_fingerprint(values: np.ndarray, times, detector_ids, dataset: str) -> str:
    """sha256 over the training readings, their timestamps, detector ids and dataset name.

    Two models with the same fingerprint learned from exactly the same numbers. Built from one digest per
    detector (`column_digests`), so ranks that each hold some detectors (`trafficcore.data.shard`) compute
    the fingerprint of the whole network from their digests (`combine_fingerprint`).
    """
    return combine_fingerprint(dataset, times, detector_ids, column_digests(values))


def column_digests(values: np.ndarray) -> list[bytes]:
    """sha256 of each column's float32 readings (one per detector)."""
    v = np.asarray(values, dtype=np.float32)
    return [hashlib.sha256(np.ascontiguousarray(v[:, j]).tobytes()).digest() for j in range(v.shape[1])]


def combine_fingerprint(dataset: str, times, detector_ids, digests: list[bytes]) -> str:
    """The fingerprint from per-detector digests, in `detector_ids` order."""
    h = hashlib.sha256()
    h.update(dataset.encode())
    h.update("\x00".join(map(str, detector_ids)).encode())
    h.update(np.asarray(times, dtype="datetime64[ns]").astype(np.int64).tobytes())
    for d in digests:
        h.update(d)
    return h.hexdigest()
