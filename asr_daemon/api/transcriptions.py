"""OpenAI-compatible `/v1/audio/transcriptions` and `/v1/audio/translations`.

Each request becomes a durable job like any other; the handler waits for it and renders the
transcript from the database (or streams its segments as server-sent events with `stream=true`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from litestar import Controller, Request, Response, post
from litestar.response import ServerSentEvent

from asr_daemon import errors, jobs, queries
from asr_daemon.api.auth import principal
from asr_daemon.api.deps import HubDep, IntakeDep, PoolDep, SettingsDep
from asr_daemon.api.schemas import UPLOAD_ERRORS, error_responses, operation_class, transcript_response
from asr_daemon.diarization import render
from asr_daemon.pipeline import events
from asr_daemon.pipeline.intake import Accepted


async def _submit(
    request: Request[Any, Any, Any],
    intake: IntakeDep,
    pool: PoolDep,
    hub: HubDep,
    settings: SettingsDep,
    task: jobs.Task,
) -> Response[Any] | ServerSentEvent:
    accepted: Accepted = await intake.submit(
        request.stream(),
        request.headers.get("content-type", ""),
        task,
        allow_task_field=False,
        api_key_id=principal(request).key_id,
    )
    assert accepted.request is not None
    job_id = accepted.job.id
    headers = {"X-Job-Id": str(job_id)}
    if accepted.deduplicated:
        headers["X-Deduplicated"] = "true"
    if accepted.request.stream:
        return ServerSentEvent(_stream(pool, hub, job_id), headers=headers)
    job = await events.wait_finished(pool, hub, job_id, settings.sync_timeout)
    if job is None or job.status == jobs.Status.CANCELLED:
        raise errors.Conflict("the job was cancelled before it finished", job_id=str(job_id))
    if job.status == jobs.Status.FAILED:
        raise events.failure(job, "transcription")
    if job.status != jobs.Status.COMPLETED:
        running = errors.StillRunning("the transcription is still running; follow the job", job_id=str(job_id))
        return Response(
            running.body(),
            status_code=running.status,
            headers={**headers, "Location": f"/v1/jobs/{job_id}"},
        )
    segs = await queries.segments(pool, job_id)
    body, media_type = await render.render(pool, accepted.request.response_format, job, segs)
    return Response(body, media_type=media_type, headers=headers)


async def _stream(pool: PoolDep, hub: HubDep, job_id: uuid.UUID) -> AsyncIterator[str]:
    """OpenAI's streaming transcription events: one `transcript.text.delta` per segment, then `done`."""
    texts: list[str] = []
    async for ev in events.follow(pool, hub, job_id):
        if ev is None:
            continue
        if ev.type == "segment":
            texts.append(ev.data["text"])
            yield json.dumps({"type": "transcript.text.delta", "delta": ev.data["text"], "segment": ev.data})
        elif ev.type in jobs.TERMINAL:
            if ev.type == jobs.Status.COMPLETED:
                yield json.dumps({"type": "transcript.text.done", "text": "".join(texts).strip()})
            else:
                yield json.dumps({"type": "error", "status": ev.type, **ev.data})


class TranscriptionsController(Controller):
    """Speech to text, the OpenAI way: upload, wait, get the transcript."""

    path = "/v1/audio"
    tags = ["audio"]

    @post(
        "/transcriptions",
        operation_class=operation_class(form=False, transcript=True, stream=True),
        request_max_body_size=None,
        summary="Transcribe audio",
        status_code=200,
        responses={**transcript_response(), **error_responses(*UPLOAD_ERRORS, 504)},
    )
    async def transcriptions(
        self,
        request: Request[Any, Any, Any],
        intake: IntakeDep,
        pool: PoolDep,
        hub: HubDep,
        settings: SettingsDep,
    ) -> Response[Any] | ServerSentEvent:
        """Transcribe an uploaded file in its own language (multipart, like OpenAI's endpoint)."""
        return await _submit(request, intake, pool, hub, settings, jobs.Task.TRANSCRIBE)

    @post(
        "/translations",
        operation_class=operation_class(form=False, transcript=True, stream=True),
        request_max_body_size=None,
        summary="Translate audio to English",
        status_code=200,
        responses={**transcript_response(), **error_responses(*UPLOAD_ERRORS, 504)},
    )
    async def translations(
        self,
        request: Request[Any, Any, Any],
        intake: IntakeDep,
        pool: PoolDep,
        hub: HubDep,
        settings: SettingsDep,
    ) -> Response[Any] | ServerSentEvent:
        """Transcribe an uploaded file and translate it to English."""
        return await _submit(request, intake, pool, hub, settings, jobs.Task.TRANSLATE)
