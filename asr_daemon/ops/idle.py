"""`asrctl idle-watch`: hold asr-server up until it has been quiet for `ASR_IDLE_STOP_AFTER` seconds.

Quiet means all of:
- no request in the access log (probes excluded) and no request in flight (the busy marker) for the
  window, counted from the watcher's own start at the earliest (a fresh start gets a full window);
- no job queued or running in PostgreSQL — and the window restarts when the last one goes, so a
  client can still fetch its result;
- neither proxy (`asr-server-proxy.service` for HTTP, `asr-wyoming-proxy.service` for Home
  Assistant's Wyoming port) is active, i.e. no client holds a connection (a proxy exits on its own a
  minute after its last connection closed). Wyoming commands are in the access log and the busy
  marker like HTTP requests (`asr_daemon.wyoming.activity`).

Then the watcher exits, and stops nothing itself. `asr-server.service` has `StopWhenUnneeded=yes` and
is needed by exactly these units: this watcher (`BindsTo=`) and the two proxies (`BindsTo=`). Once all
are gone systemd stops the daemon. The decision is systemd's, made atomically in PID 1: a connection that
starts the proxy at any moment, even while the watcher exits, keeps (or brings back) the daemon, and
the proxy's `Upholds=` restarts the watcher. So no connection is ever cut by an idle stop, and the
watcher needs no privilege (it only reads `systemctl is-active`).
Any doubt (database unreachable, log unreadable, systemctl failing) means "not quiet".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from asr_daemon import accesslog, db, queries
from asr_daemon.config import Settings
from asr_daemon.ops.systemd import PROXY_UNIT, WYOMING_PROXY_UNIT

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    """One look at the daemon: stop it or not, and why."""

    stop: bool
    reason: str
    quiet_s: float = 0.0


class IdleWatcher:
    """Decides when the daemon is quiet; `run` returns then, and the process exits."""

    def __init__(
        self,
        settings: Settings,
        *,
        systemctl: str | None = None,
        window: float | None = None,
        since: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.systemctl = shlex.split(systemctl or settings.idle_systemctl)
        self.window = settings.idle_stop_after if window is None else window
        self.clock = clock
        self.log_path: Path = settings.access_log_path
        self.since = clock() if since is None else since
        """Start of the current quiet period at the earliest (our start, last job seen, last stop)."""
        self._conn: asyncpg.Connection[Any] | None = None

    async def active_jobs(self) -> int:
        """Jobs queued or running now (raises when the database cannot tell)."""
        if self._conn is None or self._conn.is_closed():
            self._conn = await db.connect(self.settings)
        return (await queries.queue_stats(self._conn)).active

    async def _systemctl(self, *args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            *self.systemctl,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        return proc.returncode or 0, out.decode(errors="replace").strip()

    async def check(self) -> Verdict:
        """Look once: access log and busy marker, then jobs, then the proxy."""
        now = self.clock()
        try:
            last = accesslog.last_activity(self.log_path)
        except OSError as exc:
            return Verdict(False, f"access log unreadable: {exc}")
        if last is not None and last > self.since:
            self.since = last
        # jobs are looked at every time (one indexed count), so that the window restarts within one
        # interval of the last job's end, not up to a whole window before it
        try:
            jobs = await self.active_jobs()
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            await self.close()
            return Verdict(False, f"job table unreadable: {exc}", now - self.since)
        if jobs:
            self.since = now
            return Verdict(False, f"{jobs} job(s) queued or running", 0.0)
        quiet = now - self.since
        if quiet < self.window:
            return Verdict(False, "recent request", quiet)
        for unit in (PROXY_UNIT, WYOMING_PROXY_UNIT):
            try:
                _, state = await self._systemctl("is-active", unit)
            except OSError as exc:
                return Verdict(False, f"systemctl failed: {exc}", quiet)
            if state not in ("inactive", "failed"):
                return Verdict(False, f"{unit} {state or 'unknown'}: a client may hold a connection", quiet)
        return Verdict(True, "quiet", quiet)

    async def tick(self) -> Verdict:
        """One check; logs the decision."""
        verdict = await self.check()
        extra = {"reason": verdict.reason, "quiet_s": round(verdict.quiet_s, 1), "window_s": self.window}
        if verdict.stop:
            # the event keeps its name: "the daemon stops now" is what it means to an operator
            log.info("idle.stop", extra={"event": "idle.stop", **extra})
        else:
            log.debug("idle.busy", extra={"event": "idle.busy", **extra})
        return verdict

    async def run(self, interval: float, once: bool = False) -> Verdict:
        """Check every `interval` seconds until quiet (or once); returns the last verdict."""
        extra = {"event": "idle.watch", "window_s": self.window, "log": str(self.log_path)}
        log.info("idle.watch", extra=extra)
        try:
            while True:
                verdict = await self.tick()
                if once or verdict.stop:
                    return verdict
                await asyncio.sleep(interval)
        finally:
            await self.close()

    async def close(self) -> None:
        """Close the database connection, if any."""
        if self._conn is not None:
            with contextlib.suppress(OSError, asyncpg.PostgresError):
                await self._conn.close()
            self._conn = None
