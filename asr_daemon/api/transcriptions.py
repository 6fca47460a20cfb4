"""OpenAI-compatible `/v1/audio/transcriptions` and `/v1/audio/translations`.

Each request becomes a durable job like any other; the handler waits for it and renders the
transcript from the database (or streams its segments as server-sent events with `stream=true`).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

from litestar import Controller, Request, Response, post
from litestar.response import ServerSentEvent, ServerSentEventMessage

from asr_daemon import db, errors, jobs, queries
from asr_daemon.api.auth import principal
from asr_daemon.api.deps import HubDep, IntakeDep, PoolDep, SettingsDep
from asr_daemon.api.schemas import UPLOAD_ERRORS, error_responses, operation_class, transcript_response
from asr_daemon.diarization import render
from asr_daemon.pipeline import events
from asr_daemon.pipeline.intake import Accepted

log = logging.getLogger(__name__)

#: the comment /v1/jobs/{id}/events sends too: proxies and clients' read timeouts see a live stream
KEEP_ALIVE = ServerSentEventMessage(data=None, comment="keep-alive")


#: on an answer the official `openai` SDK must not retry: a retry would run the job again or undo a cancel
NO_RETRY = {"x-should-retry": "false"}


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
    try:
        job = await events.wait_finished(pool, hub, job_id, settings.sync_timeout)
        if job is None or job.status == jobs.Status.CANCELLED:
            return _final(errors.Conflict("the job was cancelled before it finished", job_id=str(job_id)), headers)
        if job.status == jobs.Status.FAILED:
            return _final(events.failure(job, "transcription"), headers)
        if job.status != jobs.Status.COMPLETED:
            return _final(
                errors.StillRunning("the transcription is still running; follow the job", job_id=str(job_id)), headers
            )
        segs = await queries.segments(pool, job_id)
        body, media_type = await render.render(pool, accepted.request.response_format, job, segs)
    except events.Lost as exc:  # the database stayed away past the wait: the job is stored, do not resend
        return _final(exc, headers)
    except events.Stopping as exc:  # a retry is wanted: it joins the same job on the next process
        retry = {"Retry-After": str(exc.retry_after)} if exc.retry_after else {}
        return Response(
            exc.body(),
            status_code=exc.status,
            media_type="application/json",
            headers={**headers, **retry, "Location": f"/v1/jobs/{job_id}"},
        )
    except db.UNAVAILABLE as exc:
        if isinstance(exc, OSError) and exc.filename is not None:
            raise  # the server's own disk, not the database (app.on_db_down)
        log.warning("database_unavailable_after_accept", extra={"job_id": str(job_id), "error": type(exc).__name__})
        return _final(errors.Unavailable(_db_down(job_id), job_id=str(job_id)), headers)
    return Response(body, media_type=media_type, headers=headers)


def _db_down(job_id: uuid.UUID) -> str:
    return (
        "the database became unavailable while waiting for the job; the job is stored and goes on: "
        f"follow /v1/jobs/{job_id} (do not send the audio again)"
    )


def _final(exc: errors.AsrError, headers: dict[str, str]) -> Response[Any]:
    """The error answer of an accepted job: its id, where to follow it, and no retry by the SDK."""
    job_id = headers["X-Job-Id"]
    return Response(
        exc.body(),
        status_code=exc.status,
        media_type="application/json",
        headers={**headers, **NO_RETRY, "Location": f"/v1/jobs/{job_id}"},
    )


async def _stream(pool: PoolDep, hub: HubDep, job_id: uuid.UUID) -> AsyncIterator[str | ServerSentEventMessage]:
    """OpenAI's streaming transcription events: one `transcript.text.delta` per segment, then `done`; a
    keep-alive comment while the job waits; an event with `error` (the SDK raises) when it does not complete."""
    texts: list[str] = []
    try:
        async for ev in events.follow(pool, hub, job_id):
            if ev is None:
                yield KEEP_ALIVE
            elif ev.type == "segment":
                texts.append(ev.data["text"])
                yield json.dumps({"type": "transcript.text.delta", "delta": ev.data["text"], "segment": ev.data})
            elif ev.type == jobs.Status.COMPLETED:
                yield json.dumps({"type": "transcript.text.done", "text": "".join(texts).strip()})
                return
            elif ev.type in jobs.TERMINAL:
                error = ev.data.get("error") or {"message": "the job was cancelled", "code": "cancelled"}
                yield json.dumps({"type": "error", "status": ev.type, **ev.data, "error": error})
                return
    except (events.Stopping, events.Lost) as exc:  # the server stops, or the database stayed away: resume there
        yield _error_event(job_id, exc.message, exc.code)
        return
    except db.UNAVAILABLE as exc:
        log.warning("database_unavailable_after_accept", extra={"job_id": str(job_id), "error": type(exc).__name__})
        yield _error_event(job_id, _db_down(job_id), "unavailable")
        return
    # the job was deleted, or the server is shutting down: say so rather than end as if nothing happened
    yield _error_event(job_id, f"the stream ended before the job finished; follow /v1/jobs/{job_id}", "interrupted")


def _error_event(job_id: uuid.UUID, message: str, code: str) -> str:
    return json.dumps({"type": "error", "id": str(job_id), "error": {"message": message, "code": code}})


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
