"""Wyoming in the access log, so that the idle watcher sees voice commands as it sees HTTP requests.

An open connection counts as a request in flight (the busy marker stays fresh while one is open),
and each `describe` or command leaves one line, `"method": "WYOMING"`, `"path": "wyoming/<what>"`,
with an HTTP-like status (200 answered, 4xx refused, 5xx our failure, 499 the client left).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime

from asr_daemon.accesslog import AccessLog

log = logging.getLogger(__name__)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


class Activity:
    """Reports Wyoming traffic to the daemon's access log (None: nowhere)."""

    def __init__(self, access_log: AccessLog | None) -> None:
        self.access_log = access_log
        self.connections = 0
        self.changed = asyncio.Event()
        """Set whenever a request ends or a client leaves (a stop waits on it for commands under way)."""

    def opened(self) -> None:
        """A client connected: activity until it leaves."""
        self.connections += 1
        if self.access_log is not None:
            self.access_log.begin()

    def closed(self) -> None:
        """A client left."""
        self.connections -= 1
        self.changed.set()
        if self.access_log is not None:
            self.access_log.end()

    def request(
        self,
        what: str,
        status: int,
        t0: float,
        job_id: uuid.UUID | None = None,
        *,
        bytes_in: int = 0,
        error: str | None = None,
    ) -> None:
        """One answered (or refused) request; `t0` is its start on the monotonic clock."""
        self.changed.set()
        if self.access_log is None:
            return
        now, took = time.time(), time.monotonic() - t0
        record: dict[str, object] = {
            "start": _iso(now - took),
            "end": _iso(now),
            "method": "WYOMING",
            "path": f"wyoming/{what}",
            "status": status,
            "duration_ms": round(took * 1000, 3),
            "bytes": 0,
            "bytes_in": bytes_in,
            "job_id": str(job_id) if job_id else None,
            "probe": False,
        }
        if error:
            record["error"] = error
        try:
            self.access_log.write(record)
        except OSError as exc:  # a full disk must not fail the command
            log.warning("access_log.write_failed", extra={"event": "access_log.write_failed", "error": str(exc)})
