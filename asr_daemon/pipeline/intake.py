"""Accepting a transcription: upload (each field validated as it arrives) → validate → probe → store → job
row → doorbell.

Shared by `/v1/audio/*` (which then waits for the job) and `/v1/jobs` (which returns at once).
Either the job row is committed with its audio on disk, or nothing is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg

from asr_daemon import errors, jobs, queries
from asr_daemon.config import Settings
from asr_daemon.diarization import engine as diarization_engine
from asr_daemon.diarization import holder_from_settings
from asr_daemon.diarization import request as diarization_request
from asr_daemon.engine import audio, modelchoice
from asr_daemon.pipeline import formcheck, limits, uploads
from asr_daemon.pipeline.queue import Hub

log = logging.getLogger(__name__)

MAX_IDEMPOTENCY_KEY = 255


@dataclass
class Accepted:
    """The outcome of a submission."""

    job: jobs.Job
    request: jobs.Request | None
    deduplicated: bool = False
    replayed: bool = False


class Intake:
    """Turns uploads into queued jobs. One per process; holds the per-audio locks."""

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        hub: Hub,
        locks: uploads.AudioLocks,
        diarizer: diarization_engine.Holder | None = None,
    ) -> None:
        self.settings = settings
        self.diarizer = diarizer or holder_from_settings(settings)
        self.pool = pool
        self.hub = hub
        self.locks = locks
        self.slots = limits.UploadSlots(settings.max_uploads_per_key)

    async def submit(
        self,
        body: AsyncIterator[bytes],
        content_type: str,
        task: jobs.Task,
        *,
        allow_task_field: bool,
        idempotency_key: str | None = None,
        api_key_id: int | None = None,
        diarize_only: bool = False,
    ) -> Accepted:
        """Accept one multipart submission; raises a domain error (and keeps nothing) when it is bad.

        `api_key_id` owns the job (None: anonymous); it also scopes deduplication and
        Idempotency-Key replays, and bounds the uploads streaming at once per key.
        """
        s = self.settings
        if idempotency_key is not None:
            if not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
                raise errors.BadRequest(f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters")
            existing = await queries.get_by_idempotency_key(self.pool, idempotency_key)
            if existing is not None:
                return _replay(existing, api_key_id)
        if await queries.count_queued(self.pool) >= s.max_queued_jobs:  # before the upload: cheap refusal
            raise errors.QueueFull(_queue_full(s.max_queued_jobs))
        with self.slots.hold(api_key_id):
            upload = await uploads.receive(
                body,
                content_type,
                s.uploads_dir / "tmp",
                s.max_upload_bytes,
                idle_timeout=s.upload_idle_timeout,
                total_timeout=s.upload_timeout,
                on_field=formcheck.FieldCheck(
                    s, task, allow_task_field=allow_task_field, diarize_only=diarize_only
                ),  # refuse before storing
            )
        try:
            return await self._accept(
                upload, task, allow_task_field, idempotency_key, api_key_id, diarize_only=diarize_only
            )
        finally:
            upload.discard()

    async def submit_recorded(self, upload: uploads.Upload, *, kind: jobs.Kind) -> Accepted:
        """Accept audio already on disk (a Wyoming voice command): the same checks, probe and job row as
        an upload, never deduplicated (each is its own job); the file is moved or removed either way."""
        try:
            return await self._accept(upload, jobs.Task.TRANSCRIBE, False, None, None, kind=kind)
        finally:
            upload.discard()

    async def _accept(
        self,
        upload: uploads.Upload,
        task: jobs.Task,
        allow_task_field: bool,
        idempotency_key: str | None,
        api_key_id: int | None,
        kind: jobs.Kind = jobs.Kind.FILE,
        diarize_only: bool = False,
    ) -> Accepted:
        s = self.settings
        try:
            req = jobs.parse_request(upload.fields, task, allow_task_field=allow_task_field)
            req = diarization_request.parse(upload.fields, req, only=diarize_only)  # issue 19
        except jobs.Invalid as exc:
            raise errors.BadRequest(str(exc)) from None
        if upload.path is None:
            raise errors.BadRequest("no 'file' field: send the audio as a multipart field named 'file'")
        if req.webhook_url and s.webhook_secret is None:
            raise errors.BadRequest(formcheck.WEBHOOK_NEEDS_SECRET)
        if upload.size == 0:
            raise errors.BadAudio("the uploaded file is empty")
        req = await diarization_request.prepare(req, self.diarizer, s.uploads_dir / "tmp")  # known speakers
        # a diarization-only job uses no Whisper model: the default's name is stored, none is needed here
        model_name = (
            s.model
            if diarize_only
            else modelchoice.for_language(s.models_dir, req.model, s.model, req.options.language)
        )
        limits = audio.Limits(s.max_audio_seconds, s.max_channels, s.max_sample_rate, s.max_tag_bytes)
        info = await asyncio.to_thread(audio.probe, upload.path, limits)
        fingerprint = req.options.fingerprint(model_name, upload.sha256)
        dedup = s.dedup and not req.webhook_url and kind == jobs.Kind.FILE
        async with self.locks.get(upload.sha256):
            created = False
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    if dedup:  # join the same job queued, running or completed (an SDK's retry, a double click)
                        await queries.lock_fingerprint(conn, fingerprint, api_key_id)
                        same = await queries.find_same(conn, fingerprint, api_key_id)
                        if same is not None:
                            log.info("job_deduplicated", extra={"job_id": str(same.id), "status": same.status})
                            return Accepted(job=same, request=req, deduplicated=True)
                    # before the file is stored: a purge in another process must not delete it meanwhile
                    await queries.lock_audio(conn, upload.sha256)
                    _, created = await asyncio.to_thread(uploads.commit, upload, s.uploads_dir)
                    await queries.lock_queue(conn)
                    if await queries.count_queued(conn) >= s.max_queued_jobs:  # others filled it meanwhile
                        raise errors.QueueFull(_queue_full(s.max_queued_jobs))
                    job = await queries.insert_job(
                        conn,
                        job_id=uuid.uuid4(),
                        model=model_name,
                        options=req.options.to_json(),
                        fingerprint=fingerprint,
                        priority=req.priority,
                        audio_sha256=upload.sha256,
                        audio_bytes=upload.size,
                        filename=upload.filename,
                        duration_s=info.duration,
                        max_attempts=s.max_attempts,
                        idempotency_key=idempotency_key,
                        webhook_url=req.webhook_url,
                        api_key_id=api_key_id,
                        kind=kind,
                    )
            except BaseException as exc:
                if created:
                    with contextlib.suppress(FileNotFoundError):
                        (s.uploads_dir / upload.sha256).unlink()
                if isinstance(exc, asyncpg.UniqueViolationError) and idempotency_key:
                    existing = await queries.get_by_idempotency_key(self.pool, idempotency_key)
                    if existing is not None:
                        return _replay(existing, api_key_id)
                raise
        log.info(
            "job_queued",
            extra={
                "job_id": str(job.id),
                "model": model_name,
                "duration_s": round(info.duration, 2),
                "bytes": upload.size,
            },
        )
        await self.hub.ring()
        await self.hub.notify(job.id)
        return Accepted(job=job, request=req)


def _queue_full(limit: int) -> str:
    return f"the queue holds {limit} jobs, its limit (ASR_MAX_QUEUED_JOBS)"


def _replay(existing: jobs.Job, api_key_id: int | None) -> Accepted:
    """The job an Idempotency-Key already created, if it belongs to the same key (409 otherwise)."""
    if existing.api_key_id != api_key_id:
        raise errors.Conflict("this Idempotency-Key was already used by another client: pick a fresh one")
    return Accepted(job=existing, request=None, replayed=True)
