"""`/v1/jobs`: submit, list, inspect, cancel, follow (SSE) and fetch transcriptions asynchronously."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import ResponseHeader
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from asr_daemon import errors, jobs, queries
from asr_daemon.api.auth import principal
from asr_daemon.api.deps import HubDep, IntakeDep, PoolDep, SettingsDep
from asr_daemon.api.schemas import (
    DEDUP_200,
    SUBMIT_HEADERS,
    UPLOAD_ERRORS,
    Job,
    JobList,
    WebhookDelivery,
    error_responses,
    job_view,
    operation_class,
    transcript_response,
)
from asr_daemon.diarization import events as diarization_events
from asr_daemon.diarization import render
from asr_daemon.pipeline import cancels, events, webhooks

#: a job id in the path: documented as a UUID, checked by `parse_id` (400 with a clear message otherwise)
JobId = Annotated[str, Parameter(description="The job's id (a UUID).", schema_extra={"format": "uuid"})]


def parse_id(raw: str) -> uuid.UUID:
    """A job id from the path, or a 400 that says it is not one."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise errors.BadRequest(f"{raw[:60]!r} is not a job id (a UUID)") from None


async def _job(request: Request[Any, Any, Any], pool: PoolDep, raw: str) -> jobs.Job:
    """The job, or 404 when it does not exist or belongs to another key (the same answer for both)."""
    job = await queries.get_job(pool, parse_id(raw))
    if job is None or not principal(request).may_see(job):
        raise errors.NotFound(f"no job {raw}")
    return job


def _cursor(raw: str | None) -> tuple[datetime, uuid.UUID] | None:
    if not raw:
        return None
    try:
        ts, jid = base64.urlsafe_b64decode(raw.encode() + b"==").decode().split("|")
        when = datetime.fromisoformat(ts)
        if when.tzinfo is None or not 1970 <= when.astimezone(UTC).year <= 9999:  # as `_make_cursor` makes them
            raise ValueError(ts)
        return when, uuid.UUID(jid)
    except (ValueError, UnicodeDecodeError, OverflowError):
        raise errors.BadRequest("cursor is not one this server returned") from None


def _make_cursor(job: jobs.Job) -> str:
    return base64.urlsafe_b64encode(f"{job.created_at.isoformat()}|{job.id}".encode()).decode().rstrip("=")


ALL_SENT = ResponseSpec(
    data_container=None,
    description="The job ended and Last-Event-ID is its final event: nothing is left to send (an EventSource stops).",
)


class JobsController(Controller):
    """Durable transcription jobs."""

    path = "/v1/jobs"
    tags = ["jobs"]

    @post(
        "/",
        operation_class=operation_class(form=True, deduplicated=True),
        request_max_body_size=None,
        status_code=202,
        summary="Submit a transcription job",
        response_description="A new job, queued: the upload is on disk and the job committed.",
        response_headers=[
            ResponseHeader(name=n, description=d, documentation_only=True) for n, d in SUBMIT_HEADERS.items()
        ],
        responses={
            200: ResponseSpec(data_container=Job, description=DEDUP_200, generate_examples=False),
            **error_responses(*UPLOAD_ERRORS),
        },
    )
    async def submit(self, request: Request[Any, Any, Any], intake: IntakeDep) -> Response[Job]:
        """Accept audio for transcription: 202 with a new queued job as soon as the upload is on disk and
        the job committed; 200 with an existing job (`X-Deduplicated: true`) when the same caller already
        has this audio queued, running or transcribed with the same model and options (ASR_DEDUP)."""
        accepted = await intake.submit(
            request.stream(),
            request.headers.get("content-type", ""),
            jobs.Task.TRANSCRIBE,
            allow_task_field=True,
            idempotency_key=request.headers.get("idempotency-key"),
            api_key_id=principal(request).key_id,
        )
        job = accepted.job
        headers = {"Location": f"/v1/jobs/{job.id}", "X-Job-Id": str(job.id)}
        if accepted.deduplicated:
            headers["X-Deduplicated"] = "true"
        if accepted.replayed:
            headers["Idempotent-Replayed"] = "true"
            headers["Connection"] = "close"  # the upload was not read: see api/app.py _error
        return Response(job_view(job), status_code=200 if accepted.deduplicated else 202, headers=headers)

    @get("/", summary="List jobs, newest first", responses=error_responses(400))
    async def list_jobs(
        self,
        request: Request[Any, Any, Any],
        pool: PoolDep,
        status: jobs.Status | None = None,
        limit: int = Parameter(default=20, ge=1, le=200),
        cursor: str | None = None,
    ) -> JobList:
        """Jobs newest first, optionally of one status; `next_cursor` fetches the next page."""
        if status is not None and status not in {s.value for s in jobs.Status}:
            allowed = ", ".join(s.value for s in jobs.Status)
            raise errors.BadRequest(f"status must be one of {allowed}")
        rows = await queries.list_jobs(
            pool,
            status=status,
            limit=limit + 1,
            before=_cursor(cursor),
            everyone=principal(request).admin,
            api_key_id=principal(request).key_id,
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return JobList(
            object="list", data=[job_view(r) for r in rows], next_cursor=_make_cursor(rows[-1]) if more else None
        )

    @get("/{job_id:str}", summary="Get a job", responses=error_responses(400, 404))
    async def get_job(self, request: Request[Any, Any, Any], pool: PoolDep, job_id: JobId) -> Job:
        """One job: status, progress, timings, attempts, error, webhook deliveries."""
        job = await _job(request, pool, job_id)
        view = job_view(job)
        if job.webhook_url:
            view.webhook_deliveries = [
                WebhookDelivery(attempt=d.attempt, status_code=d.status_code, error=d.error, at=d.delivered_at)
                for d in await webhooks.deliveries(pool, job.id)
            ]
        if job.diarized:
            view.speakers = await diarization_events.summary(pool, job)
        return view

    @get(
        "/{job_id:str}/transcript",
        summary="Render a finished job's transcript",
        operation_class=operation_class(transcript=True),
        responses={**transcript_response(), **error_responses(400, 404, 409)},
    )
    async def transcript(
        self,
        request: Request[Any, Any, Any],
        pool: PoolDep,
        job_id: JobId,
        format: jobs.ResponseFormat = jobs.ResponseFormat.JSON,  # the API's parameter name
    ) -> Response[str]:
        """The transcript in json, text, srt, vtt or verbose_json; 409 while the job is not completed."""
        job = await _job(request, pool, job_id)
        if job.status != jobs.Status.COMPLETED:
            raise errors.Conflict(f"the job is {job.status}, not completed: there is no transcript", status=job.status)
        segs = await queries.segments(pool, job.id)
        body, media_type = await render.render(pool, jobs.ResponseFormat(format), job, segs)
        return Response(body, media_type=media_type, headers={"X-Job-Id": str(job.id)})

    @delete("/{job_id:str}", status_code=200, summary="Cancel a job", responses=error_responses(400, 404, 409))
    async def cancel(
        self, request: Request[Any, Any, Any], pool: PoolDep, hub: HubDep, settings: SettingsDep, job_id: JobId
    ) -> Job:
        """Cancel: a queued job at once, a running one within a few seconds; finished jobs are left alone."""
        found = await _job(request, pool, job_id)
        jid = found.id
        outcome = await cancels.request(pool, hub, jid)  # the worker running it hears it (any process)
        if outcome is None:
            raise errors.NotFound(f"no job {job_id}")
        status = outcome.status
        if status == jobs.Status.RUNNING and found.kind != jobs.Kind.LIVE:  # a live session closes on its heartbeat
            await cancels.settle(pool, hub, jid, settings.heartbeat_interval + 1)  # cancelled before we answer
        elif status in (jobs.Status.COMPLETED, jobs.Status.FAILED):
            raise errors.Conflict(f"the job already {status}; nothing to cancel", status=status)
        job = await _job(request, pool, job_id)
        return job_view(job)

    @get(
        "/{job_id:str}/events",
        summary="Follow a job as server-sent events",
        responses={**error_responses(400, 404), 204: ALL_SENT},
    )
    async def job_events(
        self, request: Request[Any, Any, Any], pool: PoolDep, hub: HubDep, job_id: JobId
    ) -> ServerSentEvent | Response[None]:
        """queued, started, one `segment` per segment, then completed | failed | cancelled; resumable
        (204 when the job ended and Last-Event-ID is its last event; `retry:` and the end when the server stops)."""
        job = await _job(request, pool, job_id)
        raw_last = request.headers.get("last-event-id")
        try:
            last = int(raw_last[:20]) if raw_last else -1
        except ValueError:
            last = -2
        if not -1 <= last <= jobs.MAX_SEQ:
            raise errors.BadRequest("Last-Event-ID must be an event id this server sent")
        if job.status in jobs.TERMINAL and last >= await events.final_id(pool, job.id):
            return Response(None, status_code=204)  # all sent: an EventSource stops reconnecting on a 204
        return ServerSentEvent(_sse(pool, hub, job.id, last))


async def _sse(pool: PoolDep, hub: HubDep, job_id: uuid.UUID, last: int) -> AsyncIterator[ServerSentEventMessage]:
    """The stream; on a stop (or a long database outage) `retry:` and the end: the client resumes with Last-Event-ID."""
    try:
        async for ev in events.follow(pool, hub, job_id, last):
            if ev is None:
                yield ServerSentEventMessage(data=None, comment="keep-alive")
            else:
                yield ServerSentEventMessage(data=json.dumps(ev.data), event=ev.type, id=str(ev.id))
    except (events.Stopping, events.Lost) as exc:
        yield ServerSentEventMessage(data=None, comment=exc.message, retry=events.RESUME_AFTER_S * 1000)
