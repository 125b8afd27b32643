"""Log output: plain lines or one JSON object per line, levels, event fields, worker prefixes.

An event with fields (`log.info("query %s", Fields(...))`) reads as `query {...}` in plain
lines, and as one JSON object with the fields at its top level in `--log-format json`, so a
collector never has to parse JSON inside a string.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

LEVELS = ("debug", "info", "warning", "error")


class Fields(dict[str, Any]):
    """Structured fields of one log event; printed as JSON text in plain lines."""

    def __str__(self) -> str:
        return json.dumps(self)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
                                 "level": record.levelname.lower(), "logger": record.name}
        worker = getattr(record, "worker", None)
        if worker is not None:
            entry["worker"] = worker
        if isinstance(record.args, Fields):  # logging unwraps a lone mapping argument: (Fields,) -> Fields
            # "query %s" -> message "query", the fields beside it
            entry["message"] = str(record.msg).replace("%s", "").strip()
            entry.update((k, v) for k, v in record.args.items() if k not in entry)
        else:
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class PlainFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S%z")

    def formatMessage(self, record: logging.LogRecord) -> str:
        worker = getattr(record, "worker", None)
        if worker is not None:
            record.message = f"worker {worker}: {record.message}"
        return super().formatMessage(record)


class _WorkerTag(logging.Filter):
    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.index
        return True


def setup_logging(fmt: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else PlainFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("Record", "Zone", "_DynamicPool", "asyncio"):  # octoDNS logs its own warnings too
        logging.getLogger(noisy).setLevel(logging.ERROR)


def tag_worker(index: int) -> None:
    """In a forked worker: every line it logs names the worker (`worker 1: ...`, or `"worker": 1`)."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(_WorkerTag(index))
