"""The job worker: claim → transcribe in a thread → store each segment → finish, retry or fail.

Runs inside the daemon process, `Settings.workers` jobs at once sharing one loaded model. Side
loops heartbeat the running jobs (and notice cancellations), reap jobs whose worker died, delete
expired audio, and sweep what a crash left in uploads/. PostgreSQL holds all state; a crash at any
point loses at most the segment being computed, and the job resumes from its last stored segment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import asyncpg
from redis.exceptions import RedisError

from asr_daemon import device, errors, formats, jobs, models, orphans, queries, queue, transcriber, uploads, webhooks
from asr_daemon.config import Settings
from asr_daemon.diarization import engine as diarization_engine
from asr_daemon.diarization import holder_from_settings
from asr_daemon.diarization import step as diarization_step
from asr_daemon.metrics import Metrics

log = logging.getLogger(__name__)

# InternalClientError: a pooled connection PostgreSQL closed while idle (server stop); without it here a
# database restart could kill the claim or heartbeat loop for good
DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)


@dataclass
class Running:
    """A job this process is running."""

    row: Any
    task: asyncio.Task[None] | None = None
    progress: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)
    stop_reason: str = ""  # "cancel" | "drain" | "lost"
    cancelling: asyncio.Task[None] | None = None


class Worker:
    """Runs queued jobs until drained."""

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        hub: queue.Hub,
        cache: models.ModelCache,
        locks: uploads.AudioLocks,
        metrics: Metrics | None = None,
        diarizer: diarization_engine.Holder | None = None,
    ) -> None:
        self.settings = settings
        self.diarizer = diarizer or holder_from_settings(settings)
        self.metrics = metrics or Metrics()
        self.locks = locks
        self.pool = pool
        self.hub = hub
        self.cache = cache
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.jobs: dict[uuid.UUID, Running] = {}
        self.accepting = True
        self.last_progress = time.monotonic()
        self.completed = 0
        self._loops: list[asyncio.Task[None]] = []
        self._slots = asyncio.Semaphore(settings.workers)
        self._webhooks: set[asyncio.Task[bool]] = set()

    def draining(self) -> bool:
        """True once `drain` was called: no new job is claimed."""
        return not self.accepting

    @property
    def running(self) -> int:
        """Jobs running now."""
        return len(self.jobs)

    def start(self) -> None:
        """Start the claim loop and the side loops."""
        for coro in (
            self._claim_loop(),
            self._heartbeat_loop(),
            self._reaper_loop(),
            self._uploads_loop(),
            self._redeliver_webhooks(),
        ):
            self._loops.append(asyncio.create_task(coro))

    async def _redeliver_webhooks(self) -> None:
        """Webhooks interrupted by a stop or crash are delivered after the next start."""
        try:
            pending = await webhooks.undelivered(self.pool, self.settings.webhook_attempts)
        except DB_ERRORS as exc:
            log.warning("webhook_scan_failed", extra={"error": type(exc).__name__})
            return
        for job_id in pending:
            self._spawn_webhook(job_id)

    # --- claiming ----------------------------------------------------------------------------
    async def _claim_loop(self) -> None:
        while self.accepting:
            await self._slots.acquire()
            if self.draining():
                self._slots.release()
                break
            try:
                row = await queries.claim(self.pool, self.name)
            except DB_ERRORS as exc:
                self._slots.release()
                log.warning("claim_failed", extra={"error": type(exc).__name__})
                await asyncio.sleep(self.settings.poll_interval)
                continue
            if row is None:
                self._slots.release()
                await self.hub.wait_bell(self.settings.poll_interval)
                continue
            run = Running(row=row, progress=row["progress_s"])
            self.metrics.job_started(row)
            self.jobs[row["id"]] = run
            self.last_progress = time.monotonic()
            run.task = asyncio.create_task(self._run(run))

    async def _run(self, run: Running) -> None:
        job_id = run.row["id"]
        try:
            await self.hub.notify(job_id)
            await self._execute(run)
        except Exception:
            log.exception("job_crashed", extra={"job_id": str(job_id)})
            with contextlib.suppress(*DB_ERRORS):
                status = await queries.retry_or_fail(
                    self.pool, job_id, self.name, "internal error", self.settings.retry_backoff
                )
                if status == jobs.Status.FAILED and run.row["webhook_url"]:
                    self._spawn_webhook(job_id)
        finally:
            self.jobs.pop(job_id, None)
            self._slots.release()
            self.hub.bell.set()
            with contextlib.suppress(*DB_ERRORS, RedisError):
                await self.hub.notify(job_id)

    async def _execute(self, run: Running) -> None:
        row = run.row
        job_id, s = row["id"], self.settings
        options = jobs.Options.from_json(row["options"])
        path = s.uploads_dir / row["audio_sha256"]
        if not path.is_file():
            await self._fail(run, "the uploaded audio is no longer on disk", "audio_missing")
            return
        try:
            name, model_dir = models.resolve(s.models_dir, row["model"], s.model)
        except errors.ModelNotFound as exc:
            await self._fail(run, exc.message, exc.code)
            return
        diarize_s = await self._diarize(run, path, options) if options.diarization is not None else 0.0
        if diarize_s is None or (options.diarization or {}).get("only"):
            return
        resume = await queries.resume_point(self.pool, job_id, transcriber.PROMPT_TOKENS)
        t0 = time.perf_counter()
        entry = await self.cache.acquire(name, model_dir)
        load_s = time.perf_counter() - t0
        log.info(
            "job_started",
            extra={
                "job_id": str(job_id),
                "model": name,
                "attempt": row["attempts"],
                "resume_from": resume["resume_from"],
            },
        )
        try:
            result = await self._transcribe(run, entry, options, resume)
        except transcriber.Stopped:
            await self._stopped(run)
            return
        except errors.JobFailed as exc:
            await self._fail(run, str(exc), "transcription_failed")
            return
        except Exception as exc:
            if entry.device != "cpu" and device.is_cuda_failure(exc) and self.cache.fallback_to_cpu(name, exc):
                # back to the queue without spending an attempt; it resumes on the CPU copy
                await queries.checkpoint(self.pool, job_id, self.name)
                self.hub.bell.set()
                return
            raise
        finally:
            self.cache.release(entry)
        timings = {
            "model_load_s": round(load_s, 4),
            "transcribe_s": round(result.timings.get("transcribe_s", 0), 4),
            "windows": result.windows,
            "first_segment_s": round(result.timings.get("first_segment_s", 0), 4),
            **({"diarize_s": round(diarize_s, 4)} if options.diarization is not None else {}),
        }
        if await queries.complete(self.pool, job_id, self.name, timings, entry.device):
            self.completed += 1
            self.metrics.job_completed(
                name,
                entry.device,
                row["duration_s"] - resume["resume_from"],
                timings["transcribe_s"],
                time.perf_counter() - t0,
            )
            log.info("job_completed", extra={"job_id": str(job_id), "segments": result.segments, **timings})
            if s.log_transcripts:
                await self._log_transcript(job_id)
            if row["webhook_url"]:
                self._spawn_webhook(job_id)

    async def _diarize(self, run: Running, path: Any, options: jobs.Options) -> float | None:
        """The stored diarization step (issue 19); its seconds, or None when the job ended or stopped here.

        A diarization-only job (`/v1/audio/diarization`) completes here."""
        job_id = run.row["id"]

        def tick() -> None:
            self.last_progress = time.monotonic()

        try:
            took = await diarization_step.run(
                self.pool, self.hub, self.diarizer, self.name, run.row, path, options.diarization or {}, run.stop, tick
            )
        except diarization_engine.Stopped:
            run.stop_reason = run.stop_reason or "lost"
            await self._stopped(run)
            return None
        except diarization_engine.Unavailable as exc:
            await self._fail(run, str(exc), "diarization_unavailable")
            return None
        only = (options.diarization or {}).get("only")
        if only and await queries.complete(self.pool, job_id, self.name, {"diarize_s": round(took, 4)}, "cpu"):
            self.completed += 1
            log.info("job_completed", extra={"job_id": str(job_id), "diarize_s": round(took, 4)})
            if run.row["webhook_url"]:
                self._spawn_webhook(job_id)
        return took

    async def _log_transcript(self, job_id: uuid.UUID) -> None:
        """ASR_LOG_TRANSCRIPTS (debug only): a finished job's text at its own event, `job_transcript`."""
        try:
            text = formats.text_of(await queries.segments(self.pool, job_id))
        except DB_ERRORS as exc:
            log.warning("job_transcript_unavailable", extra={"job_id": str(job_id), "error": type(exc).__name__})
            return
        log.info("job_transcript", extra={"job_id": str(job_id), "text": text})

    async def _fail(self, run: Running, message: str, code: str) -> None:
        """running → failed for a reason retrying cannot fix; the webhook (if any) is told."""
        job_id = run.row["id"]
        if await queries.fail(self.pool, job_id, self.name, message, code):
            log.warning("job_failed", extra={"job_id": str(job_id), "code": code})
            if run.row["webhook_url"]:
                self._spawn_webhook(job_id)

    async def _transcribe(
        self, run: Running, entry: models.Loaded, options: jobs.Options, resume: Any
    ) -> transcriber.Result:
        loop = asyncio.get_running_loop()
        job_id, s = run.row["id"], self.settings

        def on_segment(seg: transcriber.Segment) -> None:
            fut = asyncio.run_coroutine_threadsafe(self._store(run, seg), loop)
            if not fut.result():
                run.stop_reason = run.stop_reason or "lost"
                run.stop.set()

        def on_info(language: str, probability: float) -> None:
            asyncio.run_coroutine_threadsafe(
                queries.set_language(self.pool, job_id, self.name, language, probability), loop
            ).result()

        return await asyncio.to_thread(
            transcriber.transcribe,
            entry.model,
            s.uploads_dir / run.row["audio_sha256"],
            options,
            beam_size=s.beam_size,
            window_s=s.window_seconds,
            batch_size=transcriber.batch_for(options, s.batch_size, s.batch_min_seconds, run.row["duration_s"]),
            resume_from=resume["resume_from"],
            first_seq=resume["next_seq"],
            # the probe measured the file's own claim; what decodes may exceed it only by rounding
            max_audio_s=run.row["duration_s"] * 1.05 + 30,
            language=run.row["language"] if resume["next_seq"] else None,
            prompt_tokens=resume["prompt_tokens"],
            on_info=on_info,
            on_segment=on_segment,
            should_stop=run.stop.is_set,
        )

    async def _store(self, run: Running, seg: transcriber.Segment) -> bool:
        ok = await queries.insert_segment(self.pool, run.row["id"], self.name, asdict(seg))
        run.progress = seg.end
        self.last_progress = time.monotonic()
        await self.hub.notify(run.row["id"])
        return ok

    async def _stopped(self, run: Running) -> None:
        job_id = run.row["id"]
        if run.stop_reason == "cancel":
            if run.cancelling is not None:
                await run.cancelling  # it has usually marked the job already: the update below is then a no-op
            if await queries.mark_cancelled(self.pool, job_id, self.name):
                log.info("job_cancelled", extra={"job_id": str(job_id)})
        elif run.stop_reason == "drain":
            await queries.checkpoint(self.pool, job_id, self.name)
            log.info("job_checkpointed", extra={"job_id": str(job_id), "progress_s": run.progress})
        else:
            log.warning("job_lost", extra={"job_id": str(job_id)})

    def stop_local(self, job_id: uuid.UUID, reason: str) -> bool:
        """Ask a job running here to stop between segments; False if it does not run here."""
        run = self.jobs.get(job_id)
        if run is None:
            return False
        run.stop_reason = run.stop_reason or reason
        run.stop.set()
        if run.stop_reason == "cancel" and run.cancelling is None:
            run.cancelling = asyncio.create_task(self._cancel_now(job_id))
        return True

    async def cancel(self, job_id: uuid.UUID) -> bool:
        """Stop a job running here and mark it cancelled before returning; False if it does not run here."""
        run = self.jobs.get(job_id)
        if run is None or not self.stop_local(job_id, "cancel"):
            return False
        if run.cancelling is not None:
            await asyncio.shield(run.cancelling)  # the caller going away must not undo the mark
        return True

    async def _cancel_now(self, job_id: uuid.UUID) -> None:
        """Mark a running job cancelled now, not when its thread reaches the next segment (up to one
        30-s chunk of decoding away); the guarded update turns away any segment it still produces."""
        with contextlib.suppress(*DB_ERRORS):
            if await queries.mark_cancelled(self.pool, job_id, self.name):
                log.info("job_cancelled", extra={"job_id": str(job_id)})
                await self.hub.notify(job_id)

    def _spawn_webhook(self, job_id: uuid.UUID) -> None:
        task = asyncio.create_task(webhooks.deliver(self.settings, self.pool, job_id))
        self._webhooks.add(task)
        task.add_done_callback(self._webhooks.discard)

    def wedged(self, after: float) -> bool:
        """True when a job runs but nothing progressed for `after` seconds (for the watchdog)."""
        return bool(self.jobs) and time.monotonic() - self.last_progress > after

    # --- side loops --------------------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval)
            if not self.jobs:
                continue
            try:
                alive = await queries.heartbeat(self.pool, self.name, {k: r.progress for k, r in self.jobs.items()})
            except DB_ERRORS as exc:
                log.warning("heartbeat_failed", extra={"error": type(exc).__name__})
                continue
            for job_id in list(self.jobs):
                if job_id not in alive:
                    self.stop_local(job_id, "lost")
                elif alive[job_id]:
                    self.stop_local(job_id, "cancel")

    async def _reaper_loop(self) -> None:
        s = self.settings
        while True:
            try:
                rows = await queries.reap(self.pool, s.stale_after, s.retry_backoff)
                for r in rows:
                    if r["status"] == jobs.Status.FAILED:
                        self._spawn_webhook(r["id"])
                    log.warning(
                        "job_reaped", extra={"job_id": str(r["id"]), "status": r["status"], "attempts": r["attempts"]}
                    )
                if rows:
                    await self.hub.ring()
            except DB_ERRORS as exc:
                log.warning("reap_failed", extra={"error": type(exc).__name__})
            await asyncio.sleep(max(0.5, s.stale_after / 3))

    async def _uploads_loop(self) -> None:
        """At start and every hour: expire old audio, then delete what a crash left in uploads/."""
        while True:
            if self.settings.audio_retention_days > 0:
                await self._expire_audio()
            try:
                await orphans.sweep(self.settings, self.pool, self.locks)
            except DB_ERRORS as exc:
                log.warning("orphan_sweep_failed", extra={"error": type(exc).__name__})
            await asyncio.sleep(orphans.INTERVAL_S)

    async def _expire_audio(self) -> None:
        """Delete audio older than ASR_AUDIO_RETENTION_DAYS that no unfinished job needs (transcripts stay)."""
        s = self.settings
        try:
            for sha in await queries.audio_expired(self.pool, s.audio_retention_days):
                async with self.locks.get(sha):
                    if await queries.audio_needed(self.pool, sha):
                        continue
                    await queries.mark_audio_deleted(self.pool, sha)
                    with contextlib.suppress(FileNotFoundError):
                        (s.uploads_dir / sha).unlink()
                log.info("audio_expired", extra={"sha256": sha[:12]})
        except DB_ERRORS as exc:
            log.warning("retention_failed", extra={"error": type(exc).__name__})

    # --- shutdown ----------------------------------------------------------------------------
    async def drain(self, timeout: float) -> None:
        """Stop claiming; let running jobs finish within `timeout`, then checkpoint them back to the queue."""
        self.accepting = False
        self.hub.bell.set()
        tasks = [r.task for r in self.jobs.values() if r.task]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            if pending:
                for job_id in list(self.jobs):
                    self.stop_local(job_id, "drain")
                await asyncio.wait(pending)
        for t in self._loops:
            t.cancel()
        rest: list[asyncio.Task[Any]] = [*self._loops, *self._webhooks]
        for t in rest:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(t, 5)
