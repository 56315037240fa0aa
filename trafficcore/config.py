"""Where things live and the few limits a deployment may want to change.

Resolution order for the store: an explicit path (``--db``), then ``TRAFFICCORE_DB``, then
``data/trafficcore.duckdb`` in the project folder.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_ROOT / "data"
DEFAULT_DB = DATA_DIR / "trafficcore.duckdb"
DEMO_MODEL_DIR = DATA_DIR / "demo_model"

#: Largest input file accepted by the loaders (bytes); override with TRAFFICCORE_MAX_FILE_MB.
DEFAULT_MAX_FILE_MB = 200.0


def db_path(explicit: str | os.PathLike | None = None) -> Path:
    """The DuckDB file to use: ``--db`` beats ``TRAFFICCORE_DB`` beats the default."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("TRAFFICCORE_DB")
    if env:
        return Path(env)
    return DEFAULT_DB


def max_file_bytes() -> int:
    """Size limit for one input file, from TRAFFICCORE_MAX_FILE_MB (megabytes) or the default."""
    raw = os.environ.get("TRAFFICCORE_MAX_FILE_MB")
    mb = float(raw) if raw else DEFAULT_MAX_FILE_MB
    return int(mb * 1024 * 1024)
