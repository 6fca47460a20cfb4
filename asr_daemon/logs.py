"""Structured logs: one JSON object per line on stderr, an event name plus bound fields.

Call sites log an event name as the message and fields as `extra=` (`log.info("job_started",
extra={"job_id": ...})`). Never pass transcripts, audio or secrets as fields.

On a terminal (stderr is a TTY: `make run`, `asrctl serve` by hand) the same records are written for
a person instead: `12:04:05.123 info  job_started  job_id=… model=base`, the level coloured. Anything
else (journald, a file, a pipe) gets the JSON lines. `ready_line` is the one sentence a foreground
daemon prints once it serves.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TextIO

from asr_daemon import urls

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


class ConsoleFormatter(logging.Formatter):
    """Render a record for a person: local time to the millisecond, level, event, `key=value` fields."""

    COLORS = {"debug": "2", "info": "36", "warning": "33", "error": "31", "critical": "1;31"}

    def __init__(self, color: bool = True) -> None:
        super().__init__()
        self.color = color

    def format(self, record: logging.LogRecord) -> str:
        level = record.levelname.lower()
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}"
        shown = f"{level:<7}"
        if self.color:
            shown = f"\x1b[{self.COLORS.get(level, '0')}m{shown}\x1b[0m"
        fields = " ".join(
            f"{key}={_plain(value)}"
            for key, value in vars(record).items()
            if key not in _STANDARD and not key.startswith("_")
        )
        line = f"{stamp} {shown} {record.getMessage()}" + (f"  {fields}" if fields else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _plain(value: object) -> str:
    """A field value as a person reads it: floats to the millisecond, strings with spaces quoted."""
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return json.dumps(text) if (not text or " " in text) else text


def configure(level: str = "INFO", stream: TextIO | None = None) -> None:
    """Send the package's logs to stderr (or `stream`): for a person on a terminal, JSON lines
    otherwise (idempotent)."""
    out = stream if stream is not None else sys.stderr
    root = logging.getLogger("asr_daemon")
    root.setLevel(level.upper())
    handler = next((h for h in root.handlers if getattr(h, "asr_handler", False)), None)
    if handler is None:
        handler = logging.StreamHandler(out)
        tty = _isatty(out)
        handler.setFormatter(ConsoleFormatter() if tty else JsonFormatter())
        handler.asr_handler = True  # type: ignore[attr-defined]  # marks the handler this function adds
        root.addHandler(handler)
    root.propagate = False
    # stamina logs every scheduled retry as a WARNING `stamina.retry_scheduled`, outside this format; the
    # daemon's own events already say it (database_wait, notify.not_ready, webhook_failed): only its
    # errors pass, through the same handler
    retries = logging.getLogger("stamina")
    retries.setLevel(logging.ERROR)
    retries.propagate = False
    retries.handlers = [h for h in retries.handlers if not getattr(h, "asr_handler", False)] + [handler]
    # faster-whisper logs durations and languages in its own format: keep its warnings only.
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real file
        return False


def ready_line(host: str, port: int, model: str, device: str, compute_type: str) -> str:
    """`asr-server ready: http://127.0.0.1:8765 · model base on cpu (int8) · docs …/docs · Ctrl-C stops it`."""
    url = urls.daemon_url(host, port)
    where = url + (f" (listening on all interfaces, {host})" if host in urls.WILDCARDS else "")
    return (
        f"asr-server ready: {where} · model {model} on {device} ({compute_type})"
        f" · API docs {url}/docs · Ctrl-C stops it"
    )


def announce(line: str, stream: TextIO | None = None) -> None:
    """Print one line for a person on stderr (outside the structured log), at once."""
    out = stream if stream is not None else sys.stderr
    print(line, file=out, flush=True)
