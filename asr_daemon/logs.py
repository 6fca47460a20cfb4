"""Structured logs: one JSON object per line on stderr, an event name plus bound fields.

Call sites log an event name as the message and fields as `extra=` (`log.info("job_started",
extra={"job_id": ...})`). Never pass transcripts, audio or secrets as fields.
"""

from __future__ import annotations

import json
import logging
import sys
import time

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Render a record as `{"ts", "level", "logger", "event", ...extra fields}`."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure(level: str = "INFO") -> None:
    """Send the package's logs to stderr as JSON lines (idempotent)."""
    root = logging.getLogger("asr_daemon")
    root.setLevel(level.upper())
    if not any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
    root.propagate = False
    # faster-whisper logs durations and languages in its own format: keep its warnings only.
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
