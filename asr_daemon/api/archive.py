"""A job's audio (`GET /v1/jobs/{id}/audio`, byte ranges for seeking) and deleting a job with its
transcript and audio (`POST /v1/jobs/{id}/delete`; `DELETE /v1/jobs/{id}` only cancels)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIFormat, OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Operation, Schema
from litestar.response import Stream

from asr_daemon import errors, jobs, queries
from asr_daemon.api import media
from asr_daemon.api.deps import IntakeDep, PoolDep, SettingsDep
from asr_daemon.api.jobs import JobId, _job
from asr_daemon.api.schemas import ErrorBody, error_responses

log = logging.getLogger(__name__)

CHUNK = 64 * 1024


class Gone(errors.AsrError):
    """The job's audio was deleted by the retention (ASR_AUDIO_RETENTION_DAYS); its transcript stays."""

    status = 410
    code = "audio_deleted"


class RangeNotSatisfiable(errors.AsrError):
    """The Range header asks for bytes past the end of the audio."""

    status = 416
    code = "range_not_satisfiable"


class JobDeleted(msgspec.Struct):
    """What deleting a job removed: the job with its transcript, and its audio file when no other job
    refers to the same audio."""

    id: str
    object: str
    deleted: bool
    audio_deleted: bool


@dataclass
class AudioOperation(Operation):
    """The audio route's answers are the file's bytes in its own media type, not JSON."""

    def __post_init__(self) -> None:
        binary = {"audio/*": OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY))}
        responses = self.responses or {}
        responses["200"] = OpenAPIResponse(description="The whole audio file, as it was uploaded.", content=binary)
        responses["206"] = OpenAPIResponse(
            description="The bytes the `Range: bytes=first-last` header asked for (see Content-Range).",
            content=binary,
        )
        responses["304"] = OpenAPIResponse(
            description="`If-None-Match` named the ETag: the copy the client holds is current."
        )
        self.responses = responses


def _spec(description: str) -> ResponseSpec:
    return ResponseSpec(data_container=ErrorBody, description=description, generate_examples=False)


async def _chunks(path: Path, first: int, length: int) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as fh:
        await fh.seek(first)
        left = length
        while left > 0:
            data = await fh.read(min(CHUNK, left))
            if not data:
                return
            left -= len(data)
            yield data


def _matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an `If-None-Match` header names `etag` (or is `*`): weak comparison, as RFC 9110 asks."""
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


def _stat(path: Path) -> tuple[int, str]:
    return path.stat().st_size, media.media_type(path)


class ArchiveController(Controller):
    """The audio behind a transcript, and deleting a job for good."""

    path = "/v1/jobs"
    tags = ["jobs"]

    @get(
        "/{job_id:str}/audio",
        summary="Download (or stream) a job's audio",
        operation_class=AudioOperation,
        responses={
            410: _spec("The audio was deleted by the retention; the transcript stays."),
            416: _spec("The Range header asks for bytes past the end of the audio."),
            **error_responses(400, 404),
        },
    )
    async def audio(
        self, request: Request[Any, Any, Any], pool: PoolDep, settings: SettingsDep, job_id: JobId
    ) -> Response[Any]:
        """The uploaded audio as it was sent, with its media type; a `Range: bytes=…` header is
        answered 206 with those bytes (players seek this way); 304 to an `If-None-Match` naming its
        ETag (the audio's SHA-256, and a live session's size too); 410 once the retention deleted it.
        A running live session's audio is not cached (`no-store`): it is still growing."""
        job = await _job(request, pool, job_id)
        if job.audio_deleted_at is not None:
            raise Gone()
        path = settings.uploads_dir / job.audio_sha256
        try:
            size, kind = await asyncio.to_thread(_stat, path)
        except FileNotFoundError:
            raise Gone("the job's audio is no longer stored") from None
        growing = job.kind == jobs.Kind.LIVE and job.status not in jobs.TERMINAL  # a session still appends
        headers = {
            "Accept-Ranges": "bytes",
            # an upload's audio never changes (its name is its SHA-256); a live session's file is named
            # once and grows, so its size is part of what the copy is
            "ETag": f'"{job.audio_sha256}-{size}"' if job.kind == jobs.Kind.LIVE else f'"{job.audio_sha256}"',
            "Cache-Control": "no-store" if growing else "private, max-age=3600",
            "X-Content-Type-Options": "nosniff",
        }
        if _matches(request.headers.get("if-none-match"), headers["ETag"]):
            return Response(b"", status_code=304, headers=headers)  # the copy the client holds is current
        try:
            wanted = media.byte_range(request.headers.get("range"), size)
        except media.Unsatisfiable:
            body = RangeNotSatisfiable(f"the audio has {size} bytes").body()
            return Response(body, status_code=416, headers={"Content-Range": f"bytes */{size}"})
        if wanted is None:
            first, last, status = 0, size - 1, 200
        else:
            first, last = wanted
            status = 206
            headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        length = max(0, last - first + 1)
        headers["Content-Length"] = str(length)
        return Stream(_chunks(path, first, length), media_type=kind, status_code=status, headers=headers)

    @post(
        "/{job_id:str}/delete",
        status_code=200,
        summary="Delete a job with its transcript and audio",
        responses=error_responses(400, 404, 409),
    )
    async def delete_job(
        self,
        request: Request[Any, Any, Any],
        pool: PoolDep,
        intake: IntakeDep,
        settings: SettingsDep,
        job_id: JobId,
    ) -> JobDeleted:
        """Delete a finished job (completed, failed or cancelled) for good: the job, its segments,
        and its audio file unless another job uses the same audio. A queued or running job is 409:
        cancel it first (`DELETE /v1/jobs/{id}`)."""
        job = await _job(request, pool, job_id)
        if job.status not in jobs.TERMINAL:
            raise errors.Conflict(
                f"the job is {job.status}: cancel it first (DELETE /v1/jobs/{job_id}), then delete it",
                status=job.status,
            )
        sha = job.audio_sha256
        async with intake.locks.get(sha):  # no upload of the same audio commits meanwhile
            async with pool.acquire() as conn, conn.transaction():
                gone = await queries.delete_finished(conn, job.id)
                if gone is None:
                    raise errors.Conflict("the job changed while it was being deleted; try again")
                orphan = not await queries.audio_in_use(conn, sha)
            audio_deleted = False
            if orphan:
                with contextlib.suppress(FileNotFoundError):
                    await asyncio.to_thread((settings.uploads_dir / sha).unlink)
                    audio_deleted = True
        log.info("job_deleted", extra={"job_id": str(job.id), "audio_deleted": audio_deleted})
        return JobDeleted(id=str(job.id), object="transcription.job.deleted", deleted=True, audio_deleted=audio_deleted)
