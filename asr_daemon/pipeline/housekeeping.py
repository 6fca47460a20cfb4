"""Housekeeping: the loops that keep the job table and `uploads/` tidy, beside (not inside) the worker.

- the reaper hands running jobs whose heartbeat went stale (their worker died) back to the queue, or
  fails them once their attempts are spent (their webhook is then sent);
- the uploads sweep, at start and every hour, deletes audio past `ASR_AUDIO_RETENTION_DAYS` that no
  unfinished job needs (transcripts stay), then what a crash left in `uploads/` (`orphans.sweep`);
- webhook redelivery, once at start, sends the webhooks a stop or crash interrupted.

Started by the lifespan of every process kind, each part where it belongs: the reaper everywhere (one
guarded statement, safe to run in many processes at once); the uploads sweep where uploads are
accepted (the full daemon and `--no-worker`), because it must hold the same per-process audio locks
as the intake that writes them; redelivery where jobs run (the full daemon and `asrctl worker`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from asr_daemon import jobs, queries
from asr_daemon.config import Settings
from asr_daemon.db import ERRORS as DB_ERRORS
from asr_daemon.pipeline import orphans, queue, uploads, webhooks

log = logging.getLogger(__name__)

# InternalClientError: a pooled connection PostgreSQL closed while idle (server stop)


class Housekeeping:
    """The housekeeping loops of one process; `start` them, `stop` them on shutdown."""

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        hub: queue.Hub,
        outbox: webhooks.Outbox,
        *,
        locks: uploads.AudioLocks | None = None,
        redeliver: bool = True,
    ) -> None:
        """`locks`: the intake's audio locks, in a process that accepts uploads (then it sweeps them);
        `redeliver`: send interrupted webhooks at start (a process that runs jobs)."""
        self.settings = settings
        self.pool = pool
        self.hub = hub
        self.outbox = outbox
        self.locks = locks
        self.redeliver = redeliver
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start the loops this process runs."""
        self._tasks.append(asyncio.create_task(self._reaper_loop()))
        if self.locks is not None:
            self._tasks.append(asyncio.create_task(self._uploads_loop(self.locks)))
        if self.redeliver:
            self._tasks.append(asyncio.create_task(self.outbox.redeliver()))

    async def stop(self) -> None:
        """End the loops."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(t, 5)
        self._tasks.clear()

    async def reap_once(self) -> int:
        """One pass of the reaper; how many jobs it moved."""
        s = self.settings
        rows = await queries.reap(self.pool, s.stale_after, s.retry_backoff)
        for r in rows:
            if r.status == jobs.Status.FAILED:
                self.outbox.send(r.id)
            log.warning("job_reaped", extra={"job_id": str(r.id), "status": r.status, "attempts": r.attempts})
        if rows:
            await self.hub.ring()
        return len(rows)

    async def _reaper_loop(self) -> None:
        while True:
            try:
                await self.reap_once()
            except DB_ERRORS as exc:
                log.warning("reap_failed", extra={"error": type(exc).__name__})
            await asyncio.sleep(max(0.5, self.settings.stale_after / 3))

    async def _uploads_loop(self, locks: uploads.AudioLocks) -> None:
        """At start and every hour: expire old audio, then delete what a crash left in uploads/."""
        while True:
            if self.settings.audio_retention_days > 0:
                await self._expire_audio(locks)
            try:
                await orphans.sweep(self.settings, self.pool, locks)
            except DB_ERRORS as exc:
                log.warning("orphan_sweep_failed", extra={"error": type(exc).__name__})
            await asyncio.sleep(orphans.INTERVAL_S)

    async def _expire_audio(self, locks: uploads.AudioLocks) -> None:
        """Delete audio older than ASR_AUDIO_RETENTION_DAYS that no unfinished job needs (transcripts stay)."""
        s = self.settings
        try:
            for sha in await queries.audio_expired(self.pool, s.audio_retention_days):
                async with locks.get(sha):
                    if await queries.audio_needed(self.pool, sha):
                        continue
                    await queries.mark_audio_deleted(self.pool, sha)
                    with contextlib.suppress(FileNotFoundError):
                        (s.uploads_dir / sha).unlink()
                log.info("audio_expired", extra={"sha256": sha[:12]})
        except DB_ERRORS as exc:
            log.warning("retention_failed", extra={"error": type(exc).__name__})
