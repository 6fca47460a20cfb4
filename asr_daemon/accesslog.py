"""The JSON access log the idle watcher reads: one line per HTTP request, rotated by size.

Each line: `start`/`end` (UTC, ISO 8601), `method`, `path` (no query string: it may carry secrets),
`status`, `duration_ms`, `bytes` (response body), `bytes_in` (request body), `job_id` (from the
`X-Job-Id` response header) and `probe`.

A WebSocket (live transcription, issue 21) is one request from its upgrade (status 101) to its
close: it is in flight, so the busy marker stays fresh, for as long as the session is open.

Activity rule: every request counts as activity except the probes (`/healthz`, `/readyz`,
`/metrics`), which are logged with `"probe": true` and ignored by the watcher, so monitoring never
keeps the daemon alive. A line is written when its request ends; while non-probe requests are in
flight the middleware touches a marker file next to the log (`access.busy`) every few seconds, so a
long request is activity too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import logging.handlers
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asr_daemon.config import Settings

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[..., Awaitable[None]]

PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
"""Requests to these paths (probes, scrapes) are logged but are not activity; they need no API key either."""
BUSY_TOUCH_EVERY = 5.0
"""Seconds between two touches of the busy marker while requests are in flight."""


def busy_marker(log_path: Path) -> Path:
    """The marker file touched while requests are in flight (`access.log` → `access.busy`)."""
    return log_path.with_suffix(".busy")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


class AccessLog:
    """Writes access-log lines to a size-rotated file and keeps the busy marker fresh."""

    def __init__(
        self, path: Path, max_bytes: int = 10 << 20, backups: int = 5, touch_every: float = BUSY_TOUCH_EVERY
    ) -> None:
        self.path = path
        self.busy_path = busy_marker(path)
        self.touch_every = touch_every
        self.in_flight = 0
        self._max_bytes = max_bytes
        self._backups = backups
        self._handler: logging.handlers.RotatingFileHandler | None = None
        self._toucher: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> AccessLog:
        """The access log at `settings.access_log_path`, rotated as configured."""
        return cls(settings.access_log_path, settings.access_log_max_bytes, settings.access_log_backups)

    def write(self, record: dict[str, Any]) -> None:
        """Append one JSON line (rotating first if the file grew past the limit)."""
        if self._handler is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handler = logging.handlers.RotatingFileHandler(
                self.path, maxBytes=self._max_bytes, backupCount=self._backups, encoding="utf-8"
            )
        line = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
        self._handler.emit(logging.makeLogRecord({"msg": line, "levelno": logging.INFO}))

    def close(self) -> None:
        """Close the file (it is reopened on the next write)."""
        if self._handler is not None:
            self._handler.close()
            self._handler = None

    def touch(self) -> None:
        """Mark "a request is in flight now" for the idle watcher."""
        try:
            self.busy_path.parent.mkdir(parents=True, exist_ok=True)
            self.busy_path.touch()
        except OSError as exc:
            log.warning("access_log.touch_failed", extra={"event": "access_log.touch_failed", "error": str(exc)})

    def begin(self) -> None:
        """A non-probe request started: count it and keep the busy marker fresh while any runs."""
        self.in_flight += 1
        self.touch()
        if self._toucher is None or self._toucher.done():
            self._toucher = asyncio.get_running_loop().create_task(self._touch_while_busy())

    def end(self) -> None:
        """A non-probe request ended (its line is written by the caller)."""
        self.in_flight -= 1
        self.touch()

    async def _touch_while_busy(self) -> None:
        while self.in_flight > 0:
            await asyncio.sleep(self.touch_every)
            if self.in_flight > 0:
                self.touch()


def _count_sent(state: dict[str, Any], message: Message) -> None:
    """Note a sent ASGI message's status, job id and body bytes in the request's `state`."""
    kind = message["type"]
    if kind == "http.response.start":
        state["status"] = int(message["status"])
        for name, value in message.get("headers", ()):
            if name.lower() == b"x-job-id":
                state["job_id"] = value.decode("latin-1")
    elif kind == "http.response.body":
        state["bytes"] += len(message.get("body", b""))
    elif kind == "websocket.accept":
        state["status"] = 101
    elif kind == "websocket.close" and not state["status"]:
        state["status"] = 403  # refused before the upgrade
    elif kind == "websocket.send":
        state["bytes"] += len(message.get("bytes") or b"") + len(message.get("text") or "")


class AccessLogMiddleware:
    """Pure ASGI middleware writing one access-log line per HTTP request (or WebSocket session).

    Wrap the whole application with it (outermost), so 404s and errors are logged too; the lifespan
    scope passes through untouched.
    """

    def __init__(self, app: ASGIApp, access_log: AccessLog) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request through the wrapped app and log it when it ends."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        probe = path in PROBE_PATHS
        start, t0 = time.time(), time.monotonic()
        state: dict[str, Any] = {"status": 0, "bytes": 0, "bytes_in": 0, "job_id": None}

        async def receive_counted() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["bytes_in"] += len(message.get("body", b""))
            elif message["type"] == "websocket.receive":
                state["bytes_in"] += len(message.get("bytes") or b"") + len(message.get("text") or "")
            return message

        async def send_counted(message: Message) -> None:
            _count_sent(state, message)
            await send(message)

        if not probe:
            self.access_log.begin()
        try:
            await self.app(scope, receive_counted, send_counted)
        except BaseException:
            if not state["status"]:
                state["status"] = 500
            raise
        finally:
            if not probe:
                self.access_log.end()
            end = time.time()
            record = {
                "start": _iso(start),
                "end": _iso(end),
                "method": scope.get("method", "GET"),  # a WebSocket scope has none: it began as a GET
                "path": path,
                "status": state["status"],
                "duration_ms": round((time.monotonic() - t0) * 1000, 3),
                "bytes": state["bytes"],
                "bytes_in": state["bytes_in"],
                "job_id": state["job_id"],
                "probe": probe,
            }
            try:
                self.access_log.write(record)
            except OSError as exc:  # a full disk must not fail the request
                log.warning("access_log.write_failed", extra={"event": "access_log.write_failed", "error": str(exc)})


def with_access_log(app: ASGIApp, settings: Settings) -> AccessLogMiddleware:
    """`app` wrapped with the access log at `settings.access_log_path`."""
    return AccessLogMiddleware(app, AccessLog.from_settings(settings))


def last_activity(log_path: Path, tail_bytes: int = 256 << 10) -> float | None:
    """Epoch seconds of the latest activity: the newest non-probe line's end, or the busy marker.

    Reads only the end of the current file (rotation happens before a write, so the newest line is
    always in it). None when there was no activity at all.
    """
    found: float | None = None
    with contextlib.suppress(FileNotFoundError):
        found = busy_marker(log_path).stat().st_mtime
    try:
        with log_path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - tail_bytes))
            chunk = f.read()
    except FileNotFoundError:
        return found
    for raw in reversed(chunk.splitlines()):
        try:
            rec = json.loads(raw)
            if rec.get("probe"):
                continue
            end = datetime.fromisoformat(rec["end"]).timestamp()
        except (ValueError, KeyError, TypeError, AttributeError):
            continue  # a partial first line of the tail, or a line not ours
        return end if found is None else max(found, end)
    return found
