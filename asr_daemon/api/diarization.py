"""Speaker diarization endpoints (issue 19): `POST /v1/audio/diarization` (turns only, json or rttm) and
`PATCH /v1/jobs/{id}/speakers` (name the speakers of a diarized job; every rendering then uses the names).
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, patch, post

from asr_daemon import errors, jobs, queries
from asr_daemon.api.auth import principal
from asr_daemon.api.deps import HubDep, IntakeDep, PoolDep, SettingsDep
from asr_daemon.api.jobs import JobId, parse_id
from asr_daemon.api.schemas import UPLOAD_ERRORS, SpeakerNames, error_responses, operation_class
from asr_daemon.diarization import render, store
from asr_daemon.jobs import speakers
from asr_daemon.pipeline import events
from asr_daemon.pipeline.intake import Accepted


@post(
    "/v1/audio/diarization",
    operation_class=operation_class(form=False),
    request_max_body_size=None,
    summary="Who spoke when (speaker turns only)",
    status_code=200,
    tags=["audio"],
    responses=error_responses(*UPLOAD_ERRORS, 504),
)
async def diarization(
    request: Request[Any, Any, Any], intake: IntakeDep, pool: PoolDep, hub: HubDep, settings: SettingsDep
) -> Response[Any]:
    """Speaker turns of an uploaded file: `response_format=json` (duration, num_speakers, segments) or `rttm`.

    Accepts `num_speakers`, `min_speakers`, `max_speakers` and known speakers as the transcription does.
    """
    accepted: Accepted = await intake.submit(
        request.stream(),
        request.headers.get("content-type", ""),
        jobs.Task.TRANSCRIBE,
        allow_task_field=False,
        api_key_id=principal(request).key_id,
        diarize_only=True,
    )
    assert accepted.request is not None
    job_id = accepted.job.id
    headers = {"X-Job-Id": str(job_id)}
    job = await events.wait_finished(pool, hub, job_id, settings.sync_timeout)
    if job is None or job.status == jobs.Status.CANCELLED:
        raise errors.Conflict("the job was cancelled before it finished", job_id=str(job_id))
    if job.status == jobs.Status.FAILED:
        raise events.failure(job, "diarization")
    if job.status != jobs.Status.COMPLETED:
        running = errors.StillRunning("the diarization is still running; follow the job", job_id=str(job_id))
        return Response(
            running.body(), status_code=running.status, headers={**headers, "Location": f"/v1/jobs/{job_id}"}
        )
    fmt = accepted.request.response_format
    if fmt not in (jobs.ResponseFormat.JSON, jobs.ResponseFormat.RTTM):
        fmt = jobs.ResponseFormat.JSON
    body, media_type = await render.render(pool, fmt, job, [])
    return Response(body, media_type=media_type, headers=headers)


@patch(
    "/v1/jobs/{job_id:str}/speakers",
    summary="Name the speakers of a diarized job",
    tags=["jobs"],
    status_code=200,
    responses=error_responses(400, 404, 409),
)
async def rename_speakers(request: Request[Any, Any, Any], pool: PoolDep, hub: HubDep, job_id: JobId) -> SpeakerNames:
    """`{"A": "Alice", "B": null}`: give (or, with null, take back) names; answers every speaker's name."""
    job = await queries.get_job(pool, parse_id(job_id))
    if job is None or not principal(request).may_see(job):
        raise errors.NotFound(f"no job {job_id}")
    try:
        body = await request.json()
    except Exception:  # noqa: BLE001 - whatever fails to decode the body is the client's mistake
        raise errors.BadRequest('the body must be a JSON object such as {"A": "Alice"}') from None
    if not isinstance(body, dict) or not body:
        raise errors.BadRequest('the body must be a non-empty JSON object such as {"A": "Alice"}')
    row = await store.state(pool, job.id)
    if row is None or row["status"] != "done":
        raise errors.Conflict("the job has no speakers (not diarized, or its diarization is not done yet)")
    sp = await render.speakers_of(pool, job.id)
    labels = {render.speaker_label(t.speaker) for t in sp.turns}
    given: dict[str, str | None] = {}
    for label, name in body.items():
        if label not in labels:
            raise errors.BadRequest(f"no speaker {str(label)[:20]!r} in this job (it has {', '.join(sorted(labels))})")
        given[label] = None if name is None else speakers.clean_name(name) if isinstance(name, str) else None
        if name is not None and given[label] is None:
            raise errors.BadRequest(
                f"the name for {label} must be 1 to {speakers.MAX_NAME} characters of text on one line, or null"
            )
    shown = {label: label for label in labels} | sp.names | {k: v or k for k, v in given.items()}
    clash = speakers.shared_name(shown)
    if clash is not None:
        first, second, name = clash
        raise errors.BadRequest(f"speakers {first} and {second} would both be shown as {name!r}: names must differ")
    updated = await store.rename(pool, job.id, given)
    await hub.notify(job.id)
    names = store.names_of(updated)
    return SpeakerNames(id=str(job.id), speakers={label: names.get(label, label) for label in sorted(labels)})
