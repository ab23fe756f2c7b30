"""Log lines: one format for the service and its worker processes, text or JSON.

Owns logging set-up, done once per process (worker processes are spawned, so they set it up
again). JSON lines carry the same fields as text ones, for log collectors.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from mstc_worker.settings import Settings

__all__ = ["JsonFormatter", "configure_logging"]

_TEXT = "%(asctime)s %(levelname)-7s %(processName)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, process, logger, message (and the error)."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "process": record.processName,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure_logging(settings: Settings, *, process_name: str | None = None) -> None:
    """Send this process's logs to stderr in the configured format."""
    if process_name is not None:
        import multiprocessing  # noqa: PLC0415 - only to name the process in log lines

        multiprocessing.current_process().name = process_name
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(_TEXT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # Library chatter (connection details at INFO) drowns the lifecycle lines.
    for noisy in ("pika", "kubernetes", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # pika logs every failed connection attempt at ERROR, with tracebacks, eight lines a
    # try; the broker adapter says the same once, as a warning naming the cause.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
