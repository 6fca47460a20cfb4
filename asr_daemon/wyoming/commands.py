"""A voice command's way through the job system: it is a job like any other (kind `wyoming`).

The recorded WAV goes through `Intake.submit_recorded` (the same probe, limits, content-addressed
store and committed job row as an upload), the in-process worker runs it, and the answer is read
back from PostgreSQL while the worker stores segments (`events.follow`). So a command is durable,
listed and searchable in the archive, and its audio follows ASR_AUDIO_RETENTION_DAYS. With
ASR_WYOMING_KEEP=false the finished job is deleted once answered, and its audio with it unless
another job holds the same audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from asr_daemon import errors, formats, jobs, queries
from asr_daemon.accesslog import AccessLog
from asr_daemon.config import Settings
from asr_daemon.pipeline import cancels, events, uploads
from asr_daemon.pipeline.intake import Intake
from asr_daemon.pipeline.queue import Hub
from asr_daemon.wyoming.recording import Recording

log = logging.getLogger(__name__)

KIND = jobs.Kind.WYOMING
FILENAME = "voice-command.wav"
GONE_POLL_S = 0.25
"""How often a command waiting for its job looks whether its client has closed the connection."""
PRIORITY = 100
"""The API's highest: someone is waiting for the light to come on, so a voice command is claimed before
queued uploads (a slot still has to free up: a running job is not interrupted)."""


class ClientGone(Exception):
    """The client left before its answer was written; its job was asked to cancel."""


class _ModelGone(errors.NotFound):
    """The command's model left this host before the worker ran it."""

    code = "model_not_found"


#: a failed job's error code → the error its client gets, and what the text says first
FAILURES: dict[str, tuple[type[errors.AsrError], str]] = {
    jobs.ErrorCode.TRANSCRIPTION_FAILED: (errors.BadAudio, "the audio could not be transcribed"),
    jobs.ErrorCode.MODEL_NOT_FOUND: (_ModelGone, "the model is not on this host any more"),
    jobs.ErrorCode.AUDIO_MISSING: (errors.Unavailable, "the command's audio was removed before it ran; retry"),
    jobs.ErrorCode.DIARIZATION_UNAVAILABLE: (errors.Unavailable, "diarization cannot run here"),
}


def failure(code: jobs.ErrorCode | str | None, error: str | None) -> errors.AsrError:
    """The error a failed job's client gets: bad audio is the client's fault (`invalid_audio`), a missing
    model or audio is said so, anything else (the worker's own failure, a lost worker) is `internal_error`."""
    cls, text = FAILURES.get(str(code), (errors.AsrError, "the server failed to transcribe the command"))
    return cls(f"{text}: {error or code or 'no reason recorded'}")


@dataclass
class Services:
    """What the Wyoming server uses of the daemon (the same objects the HTTP side uses)."""

    settings: Settings
    pool: asyncpg.Pool
    hub: Hub
    intake: Intake
    locks: uploads.AudioLocks
    access_log: AccessLog | None = None


@dataclass
class Answer:
    """A finished command: its job, text and language."""

    job_id: uuid.UUID
    text: str
    language: str | None


async def transcribe(
    svc: Services,
    rec: Recording,
    model: str,
    language: str | None,
    on_job: Callable[[uuid.UUID], Awaitable[bool]],
    on_segment: Callable[[str], Awaitable[bool]],
    gone: Callable[[], bool] = lambda: False,
) -> Answer:
    """Store the recording as a job, wait for the worker, return the transcript.

    `on_job` is awaited once the job is committed, `on_segment` with each segment's text as it is
    stored; each returns False when the client is gone, and the job is then cancelled (`ClientGone`).
    `gone()` says the client closed its connection: looked at while the job waits or runs, so a job
    still queued is cancelled at once, not when its first segment cannot be written.
    Raises a domain error when the audio is refused, the job fails or outlives ASR_SYNC_TIMEOUT.
    """
    size, sha = await asyncio.to_thread(rec.finish)
    fields = {"model": [model], "response_format": ["json"], "priority": [str(PRIORITY)]}
    if language:
        fields["language"] = [language]
    upload = uploads.Upload(fields=fields, path=rec.path, filename=FILENAME, size=size, sha256=sha)
    accepted = await svc.intake.submit_recorded(upload, kind=KIND)
    job_id = accepted.job.id
    try:
        if not await on_job(job_id):
            await _abandon(svc, job_id)
        job = await _follow(svc, job_id, on_segment, gone)
        if job is None or job.status == jobs.Status.CANCELLED:
            raise errors.Conflict("the voice command's job was cancelled before it finished")
        if job.status == jobs.Status.FAILED:
            raise failure(job.error_code, job.error)
        text = formats.text_of(await queries.segments(svc.pool, job_id))
        return Answer(job_id, text, job.language)
    finally:
        if not svc.settings.wyoming_keep:
            await forget(svc, job_id)


async def _follow(
    svc: Services, job_id: uuid.UUID, on_segment: Callable[[str], Awaitable[bool]], gone: Callable[[], bool]
) -> jobs.Job | None:
    """Pass each stored segment on until the job is final (or ASR_SYNC_TIMEOUT); the job row then.

    The client closing its connection meanwhile (`gone`) abandons the job (`ClientGone`)."""

    async def segments() -> None:
        async for ev in events.follow(svc.pool, svc.hub, job_id, through_stop=True):  # bounded by the server's stop
            if ev is not None and ev.type == "segment" and not await on_segment(ev.data["text"]):
                await _abandon(svc, job_id)

    async def watch() -> None:
        while not gone():  # noqa: ASYNC110  # a StreamReader's EOF is a state (`at_eof`), never awaitable
            await asyncio.sleep(GONE_POLL_S)

    follower = asyncio.create_task(segments(), name=f"wyoming follow {job_id}")
    watcher = asyncio.create_task(watch(), name=f"wyoming watch {job_id}")
    try:
        await asyncio.wait((follower, watcher), timeout=svc.settings.sync_timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (follower, watcher):
            task.cancel()
        await asyncio.gather(follower, watcher, return_exceptions=True)
    if follower.done() and not follower.cancelled():
        follower.result()  # raises ClientGone, or what reading the events raised
    elif watcher.done() and not watcher.cancelled():
        await _abandon(svc, job_id)
    else:
        raise errors.StillRunning("the voice command is still being transcribed (ASR_SYNC_TIMEOUT)")
    return await queries.get_job(svc.pool, job_id)


async def _abandon(svc: Services, job_id: uuid.UUID) -> None:
    """The client left: cancel its job as `DELETE /v1/jobs/{id}` does (a queued job at once, a running one
    told to its worker, which stops between segments) so the next command does not wait behind it."""
    log.info("wyoming_client_gone", extra={"job_id": str(job_id)})
    await cancels.request(svc.pool, svc.hub, job_id)
    raise ClientGone


async def forget(svc: Services, job_id: uuid.UUID) -> None:
    """ASR_WYOMING_KEEP=false: delete the answered job (segments cascade) and its audio if unshared.

    An unfinished job (the wait timed out) is cancelled first; the worker finishes the cancellation
    between segments, and such a job stays in the archive until purged.
    """
    try:
        sha = await queries.delete_finished(svc.pool, job_id)
        if sha is None:
            await queries.request_cancel(svc.pool, job_id)
            return
        async with svc.locks.get(sha):
            # another job (an upload of the same bytes, a command still queued) may hold the same file
            if not await queries.audio_in_use(svc.pool, sha):
                with contextlib.suppress(FileNotFoundError):
                    await asyncio.to_thread((svc.settings.uploads_dir / sha).unlink)
        log.info("wyoming_command_forgotten", extra={"job_id": str(job_id)})
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # the row stays: retention and `asrctl jobs purge` remove it later
        log.warning("wyoming_forget_failed", extra={"job_id": str(job_id), "error": type(exc).__name__})
