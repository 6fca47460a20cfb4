"""The job worker: claim → transcribe in a thread → store each segment → finish, retry or fail.

Runs `Settings.workers` jobs at once sharing one loaded model, in the daemon's process or alone
(`asrctl worker`). Beside the claim loop, a heartbeat keeps its running jobs' rows fresh and reads
back cancel requests, and a `cancels.Listener` hears them at once (PostgreSQL NOTIFY). The reaper,
retention and the uploads sweep are housekeeping (`asr_daemon.pipeline.housekeeping`); what follows a job's
end (its webhook) is the outbox's (`webhooks.Outbox`). PostgreSQL holds all state; a crash at any
point loses at most the segment being computed, and the job resumes from its last stored segment.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import asyncpg
from redis.exceptions import RedisError

from asr_daemon import errors, jobs, queries
from asr_daemon.config import Settings
from asr_daemon.db import ERRORS as DB_ERRORS
from asr_daemon.diarization import engine as diarization_engine
from asr_daemon.diarization import holder_from_settings
from asr_daemon.diarization import step as diarization_step
from asr_daemon.engine import device, modelchoice, models, transcriber
from asr_daemon.ops.metrics import Metrics
from asr_daemon.pipeline import cancels, queue, webhooks

log = logging.getLogger(__name__)


@dataclass
class Running:
    """A job this process is running."""

    job: jobs.Job
    #: this claim's name in the `worker` column (`Worker.name` and a count): every statement of the run
    #: is guarded by it, so a run whose job was handed back and claimed again here writes nothing more
    owner: str
    task: asyncio.Task[None] | None = None
    progress: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)
    stop_reason: str = ""  # "cancel" | "drain" | "lost"
    cancelling: asyncio.Task[None] | None = None


def process_name() -> str:
    """This process's name in the job table's `worker` column: host, pid and a random tail."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    """Runs queued jobs until drained."""

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        hub: queue.Hub,
        cache: models.ModelCache,
        outbox: webhooks.Outbox,
        metrics: Metrics | None = None,
        diarizer: diarization_engine.Holder | None = None,
    ) -> None:
        self.settings = settings
        self.diarizer = diarizer or holder_from_settings(settings)
        self.metrics = metrics or Metrics()
        self.outbox = outbox
        self.pool = pool
        self.hub = hub
        self.cache = cache
        self.name = process_name()
        self._claims = itertools.count(1)
        self.jobs: dict[uuid.UUID, Running] = {}
        self.accepting = True
        self.only_kinds: tuple[str, ...] | None = None  # a stop began: claim only these (`claim_only`)
        self.last_progress = time.monotonic()
        self._loops: list[asyncio.Task[None]] = []
        self._slots = asyncio.Semaphore(settings.workers)
        self.cancels = cancels.Listener(settings, lambda job_id: self.stop_local(job_id, "cancel"))

    def draining(self) -> bool:
        """True once `drain` was called: no new job is claimed."""
        return not self.accepting

    @property
    def running(self) -> int:
        """Jobs running now."""
        return len(self.jobs)

    def start(self) -> None:
        """Start the claim loop, the heartbeat and the cancel listener."""
        for coro in (self._claim_loop(), self._heartbeat_loop(), self.cancels.run()):
            self._loops.append(asyncio.create_task(coro))

    # --- claiming ----------------------------------------------------------------------------
    async def _claim_loop(self) -> None:
        while self.accepting:
            await self._slots.acquire()
            if self.draining():
                self._slots.release()
                break
            owner = f"{self.name}/{next(self._claims)}"
            try:
                job = await queries.claim(self.pool, owner, self.only_kinds)
            except DB_ERRORS as exc:
                self._slots.release()
                log.warning("claim_failed", extra={"error": type(exc).__name__})
                await asyncio.sleep(self.settings.poll_interval)
                continue
            if job is None:
                self._slots.release()
                await self.hub.wait_bell(self.settings.poll_interval)
                continue
            # shutdown began while the claim was in flight: hand it back untouched
            if self.draining() or (self.only_kinds is not None and job.kind not in self.only_kinds):
                with contextlib.suppress(*DB_ERRORS):
                    await queries.checkpoint(self.pool, job.id, owner)
                self._slots.release()
                continue
            run = Running(job=job, owner=owner, progress=job.progress_s)
            self.metrics.job_started(job)
            self.jobs[job.id] = run
            self.last_progress = time.monotonic()
            run.task = asyncio.create_task(self._run(run))

    async def _run(self, run: Running) -> None:
        job_id = run.job.id
        try:
            await self.hub.notify(job_id)
            await self._execute(run)
        except Exception:
            log.exception("job_crashed", extra={"job_id": str(job_id)})
            with contextlib.suppress(*DB_ERRORS):
                status = await queries.retry_or_fail(
                    self.pool, job_id, run.owner, "internal error", self.settings.retry_backoff
                )
                if status == jobs.Status.FAILED:
                    self.outbox.ended(job_id, run.job.webhook_url)
        finally:
            if self.jobs.get(job_id) is run:  # not a later run of the same job (retried at once) claimed here
                del self.jobs[job_id]
            self._slots.release()
            self.hub.bell.set()
            with contextlib.suppress(*DB_ERRORS, RedisError):
                await self.hub.notify(job_id)

    async def _execute(self, run: Running) -> None:
        job = run.job
        job_id, s, options = job.id, self.settings, job.options
        path = s.uploads_dir / job.audio_sha256
        if not path.is_file():
            await self._fail(run, "the uploaded audio is no longer on disk", jobs.ErrorCode.AUDIO_MISSING)
            return
        spk = options.diarization
        if spk is not None and spk.only:  # /v1/audio/diarization: no Whisper model takes part
            await self._diarize(run, path, spk)
            return
        try:
            name, model_dir = modelchoice.resolve(s.models_dir, job.model, s.model)
        except errors.ModelNotFound as exc:
            await self._fail(run, exc.message, jobs.ErrorCode.MODEL_NOT_FOUND)
            return
        diarize_s = await self._diarize(run, path, spk) if spk is not None else 0.0
        if diarize_s is None:
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
                "attempt": job.attempts,
                "resume_from": resume.resume_from,
            },
        )
        try:
            result = await self._transcribe(run, entry, options, resume)
        except transcriber.Stopped:
            await self._stopped(run)
            return
        except errors.JobFailed as exc:
            await self._fail(run, str(exc), jobs.ErrorCode.TRANSCRIPTION_FAILED)
            return
        except Exception as exc:
            if entry.device != "cpu" and device.is_cuda_failure(exc) and self.cache.fallback_to_cpu(name, exc):
                # back to the queue without spending an attempt; it resumes on the CPU copy
                await queries.checkpoint(self.pool, job_id, run.owner)
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
            **({"diarize_s": round(diarize_s, 4)} if spk is not None else {}),
        }
        if await queries.complete(self.pool, job_id, run.owner, timings, entry.device):
            self.metrics.job_completed(
                name,
                entry.device,
                job.duration_s - resume.resume_from,
                timings["transcribe_s"],
                time.perf_counter() - t0,
            )
            log.info("job_completed", extra={"job_id": str(job_id), "segments": result.segments, **timings})
            self.outbox.ended(job_id, job.webhook_url, completed=True)

    async def _diarize(self, run: Running, path: Path, spec: jobs.DiarizationOptions) -> float | None:
        """The stored diarization step (issue 19); its seconds, or None when the job ended or stopped here.

        A diarization-only job (`/v1/audio/diarization`) completes here."""
        job_id = run.job.id

        def tick() -> None:
            self.last_progress = time.monotonic()

        try:
            took = await diarization_step.run(
                self.pool, self.hub, self.diarizer, run.owner, run.job, path, spec, run.stop, tick
            )
        except diarization_engine.Stopped:
            run.stop_reason = run.stop_reason or "lost"
            await self._stopped(run)
            return None
        except diarization_engine.Unavailable as exc:
            await self._fail(run, str(exc), jobs.ErrorCode.DIARIZATION_UNAVAILABLE)
            return None
        except errors.JobFailed as exc:  # the audio decodes to more than its file declared
            await self._fail(run, str(exc), jobs.ErrorCode.TRANSCRIPTION_FAILED)
            return None
        if spec.only and await queries.complete(self.pool, job_id, run.owner, {"diarize_s": round(took, 4)}, "cpu"):
            log.info("job_completed", extra={"job_id": str(job_id), "diarize_s": round(took, 4)})
            self.outbox.ended(job_id, run.job.webhook_url)
        return took

    async def _fail(self, run: Running, message: str, code: jobs.ErrorCode) -> None:
        """running → failed for a reason retrying cannot fix; the webhook (if any) is told."""
        job_id = run.job.id
        if await queries.fail(self.pool, job_id, run.owner, message, code):
            log.warning("job_failed", extra={"job_id": str(job_id), "code": code})
            self.outbox.ended(job_id, run.job.webhook_url)

    async def _transcribe(
        self, run: Running, entry: models.Loaded, options: jobs.Options, resume: queries.ResumePoint
    ) -> transcriber.Result:
        loop = asyncio.get_running_loop()
        job_id, s = run.job.id, self.settings

        def on_segment(seg: transcriber.Segment) -> None:
            fut = asyncio.run_coroutine_threadsafe(self._store(run, seg), loop)
            if not fut.result():
                run.stop_reason = run.stop_reason or "lost"
                run.stop.set()

        def on_info(language: str, probability: float) -> None:
            asyncio.run_coroutine_threadsafe(
                queries.set_language(self.pool, job_id, run.owner, language, probability), loop
            ).result()

        return await asyncio.to_thread(
            transcriber.transcribe,
            entry.model,
            s.uploads_dir / run.job.audio_sha256,
            options,
            beam_size=s.beam_size,
            window_s=s.window_seconds,
            batch_size=transcriber.batch_for(options, s.batch_size, s.batch_min_seconds, run.job.duration_s),
            resume_from=resume.resume_from,
            first_seq=resume.next_seq,
            # the probe measured the file's own claim; what decodes may exceed it only by rounding
            max_audio_s=run.job.duration_s * 1.05 + 30,
            language=run.job.language if resume.next_seq else None,
            prompt_tokens=resume.prompt_tokens,
            on_info=on_info,
            on_segment=on_segment,
            should_stop=run.stop.is_set,
        )

    async def _store(self, run: Running, seg: transcriber.Segment) -> bool:
        ok = await queries.insert_segment(self.pool, run.job.id, run.owner, asdict(seg))
        run.progress = seg.end
        self.last_progress = time.monotonic()
        await self.hub.notify(run.job.id)
        return ok

    async def _stopped(self, run: Running) -> None:
        job_id = run.job.id
        if run.stop_reason == "cancel":
            if run.cancelling is not None:
                await run.cancelling  # it has usually marked the job already: the update below is then a no-op
            if await queries.mark_cancelled(self.pool, job_id, run.owner):
                log.info("job_cancelled", extra={"job_id": str(job_id)})
        elif run.stop_reason == "drain":
            await queries.checkpoint(self.pool, job_id, run.owner)
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
            run.cancelling = asyncio.create_task(self._cancel_now(job_id, run.owner))
        return True

    async def _cancel_now(self, job_id: uuid.UUID, owner: str) -> None:
        """Mark a running job cancelled now, not when its thread reaches the next segment (up to one
        30-s chunk of decoding away); the guarded update turns away any segment it still produces."""
        with contextlib.suppress(*DB_ERRORS):
            if await queries.mark_cancelled(self.pool, job_id, owner):
                log.info("job_cancelled", extra={"job_id": str(job_id)})
                await self.hub.notify(job_id)

    # --- side loops --------------------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval)
            if not self.jobs:
                continue
            sent = {k: (r.owner, r.progress) for k, r in self.jobs.items()}
            try:
                alive = await queries.heartbeat(self.pool, sent)
            except DB_ERRORS as exc:
                log.warning("heartbeat_failed", extra={"error": type(exc).__name__})
                continue
            for job_id, (owner, _) in sent.items():
                if (run := self.jobs.get(job_id)) is None or run.owner != owner:
                    continue  # ended, or claimed again, while the heartbeat ran: not this run's answer
                if job_id not in alive:
                    self.stop_local(job_id, "lost")
                elif alive[job_id]:
                    self.stop_local(job_id, "cancel")

    # --- shutdown ----------------------------------------------------------------------------
    def claim_only(self, kinds: tuple[str, ...]) -> None:
        """A stop began: claim only jobs of these kinds (voice commands a client here waits on) from now on."""
        self.only_kinds = kinds
        self.hub.bell.set()

    def stop_claiming(self) -> None:
        """Claim no new job (shutdown began; running ones go on until `drain`)."""
        self.accepting = False
        self.hub.bell.set()

    async def drain(self, timeout: float) -> None:
        """Stop claiming; let running jobs finish within `timeout`, then checkpoint them back to the queue."""
        self.stop_claiming()
        tasks = [r.task for r in self.jobs.values() if r.task]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            if pending:
                for job_id in list(self.jobs):
                    self.stop_local(job_id, "drain")
                await asyncio.wait(pending)
        for t in self._loops:
            t.cancel()
        for t in self._loops:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(t, 5)
