"""Structured logs: one JSON object per line, from the standard library's `logging`.

Why JSON lines: the service runs unattended, and whoever operates it feeds its logs to a collector
(journald, Loki, Elasticsearch, a cloud log service) that indexes fields, not prose. Each event is
logged with a short name as its message and its facts as `extra` fields, e.g.
``log.info("ingest_batch", extra={"dataset": "scats", "written": 137})``, and becomes
``{"ts": "...", "level": "info", "logger": "trafficcore.live.ingest", "event": "ingest_batch",
"dataset": "scats", "written": 137}``. Code that logs never formats JSON itself; only `setup` decides
the format, so tests and libraries embedding trafficcore keep their own logging.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from datetime import UTC, datetime

#: Attributes every LogRecord has; anything else on a record came in through `extra`.
_STANDARD = set(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))) | {"message", "asctime",
                                                                                       "taskName"}
FORMATS = ("json", "text")


def _plain(v):
    """A JSON-safe value: numbers, strings, booleans and None as they are (non-finite floats as null), the rest as
    text (timestamps become ISO 8601 through str)."""
    if isinstance(v, bool) or v is None or isinstance(v, (int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if hasattr(v, "isoformat"):
        return v.isoformat()
    if hasattr(v, "item"):
        try:
            return _plain(v.item())
        except (TypeError, ValueError):
            pass
    return str(v)


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON: ts (UTC, ISO 8601), level, logger, event (the message), the record's
    `extra` fields, and `exc` (the traceback) when an exception was logged."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
               "level": record.levelname.lower(), "logger": record.name, "event": record.getMessage()}
        for k, v in vars(record).items():
            if k not in _STANDARD and not k.startswith("_") and k not in out:
                out[k] = _plain(v)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, separators=(",", ":"))


def setup(fmt: str = "json", level: str | int = "INFO", stream=None) -> logging.Handler:
    """Send the `trafficcore` loggers' records to `stream` (stderr) in `fmt` ("json" or "text"), at `level`.

    Idempotent: a second call replaces the handler it installed. Returns the handler.
    """
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    logger = logging.getLogger("trafficcore")
    for h in list(logger.handlers):
        if getattr(h, "_trafficcore", False):
            logger.removeHandler(h)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler._trafficcore = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level if isinstance(level, int) else str(level).upper())
    logger.propagate = False
    return handler
