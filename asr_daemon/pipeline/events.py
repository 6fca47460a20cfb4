"""A job's event history, derived from PostgreSQL, followed live.

Events are not stored separately: they are read off the job row and its segments, so the history
is exactly as durable as the transcript and replays identically after a crash. Event ids:
`0` queued, `1` started, `2 + seq` for segment `seq`, and `2 + number of segments` for the final
`completed` / `failed` / `cancelled`. A client resuming with `Last-Event-ID: n` gets every event with
an id above n, once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg

from asr_daemon import errors, formats, jobs, queries
from asr_daemon.diarization import events as diarization_events
from asr_daemon.pipeline.queue import Hub

FIRST_SEGMENT_ID = 2


@dataclass(frozen=True)
class Event:
    """One server-sent event."""

    id: int
    type: str
    data: dict[str, Any]


def segment_event(job: jobs.Job, seg: jobs.Segment, speaker: tuple[str, str] | None = None) -> Event:
    """The `segment` event of one stored segment, with progress (and on a diarized job its speaker:
    (label, display name) as `speaker_label` and `speaker`)."""
    duration = formats.seconds(job.duration_s or 0.0)
    extra = {} if speaker is None else {"speaker": speaker[1], "speaker_label": speaker[0]}
    return Event(
        FIRST_SEGMENT_ID + seg.seq,
        "segment",
        {
            "id": str(job.id),
            "seq": seg.seq,
            "start": round(seg.start_s, 3),
            "end": round(seg.end_s, 3),
            "text": seg.text,
            "progress_s": round(seg.end_s, 3),
            "duration_s": duration,
            "progress": round(min(1.0, seg.end_s / duration), 4) if duration else None,
            **extra,
        },
    )


def final_event(job: jobs.Job, n_segments: int) -> Event:
    """The last event of a finished job."""
    data: dict[str, object] = {"id": str(job.id), "status": job.status, "segments": n_segments}
    if job.status == jobs.Status.FAILED:
        data["error"] = {"message": job.error, "code": job.error_code}
    return Event(FIRST_SEGMENT_ID + n_segments, job.status, data)


async def follow(
    pool: asyncpg.Pool,
    hub: Hub,
    job_id: uuid.UUID,
    last_id: int = -1,
    *,
    heartbeat: float = 15.0,
) -> AsyncIterator[Event | None]:
    """Yield the job's events after `last_id` until its final one; `None` is a keep-alive tick."""
    wake = hub.subscribe(job_id)
    try:
        cursor = last_id
        quiet_since = time.monotonic()
        diarized = diarization_events.Follower(pool, job_id)  # issue 19
        while True:
            job = await queries.get_job(pool, job_id)
            if job is None:
                return
            terminal = job.status in jobs.TERMINAL
            sent = False
            if cursor < 0:
                yield Event(
                    0,
                    "queued",
                    {"id": str(job_id), "status": jobs.Status.QUEUED, "created_at": formats.timestamp(job.created_at)},
                )
                cursor, sent = 0, True
            if cursor < 1 and job.started_at is not None:
                yield Event(
                    1,
                    "started",
                    {"id": str(job_id), "status": jobs.Status.RUNNING, "started_at": formats.timestamp(job.started_at)},
                )
                cursor, sent = 1, True
            if cursor == 1 and (progress := await diarized.progress(job)) is not None:
                yield progress
                sent = True
            segs = await queries.segments(pool, job_id, max(0, cursor - FIRST_SEGMENT_ID + 1))
            speakers = await diarized.speakers(job) if segs else None
            for seg in segs:
                ev = segment_event(job, seg, speakers.who(seg) if speakers else None)
                if ev.id > cursor:
                    yield ev
                    cursor, sent = ev.id, True
            if terminal:
                n = segs[-1].seq + 1 if segs else (await queries.resume_point(pool, job_id)).next_seq
                final = final_event(job, n)
                if final.id > cursor:
                    yield final
                return
            if sent:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= heartbeat:
                quiet_since = time.monotonic()
                yield None
            await hub.wait(wake)
    finally:
        hub.unsubscribe(job_id, wake)


async def wait_finished(
    pool: asyncpg.Pool,
    hub: Hub,
    job_id: uuid.UUID,
    timeout: float,
) -> jobs.Job | None:
    """Wait until the job is finished (or `timeout` passes) and return it (None when it is gone).

    Each wake (a segment, a state change, a poll) reads only the job's status; the row is read once, at the end.
    """
    wake = hub.subscribe(job_id)
    deadline = time.monotonic() + timeout
    try:
        while True:
            status = await queries.job_status(pool, job_id)
            if status is None or status in jobs.TERMINAL or time.monotonic() >= deadline:
                return await queries.get_job(pool, job_id) if status is not None else None
            await hub.wait(wake, min(hub.poll_interval, max(0.01, deadline - time.monotonic())))
    finally:
        hub.unsubscribe(job_id, wake)


def failure(job: jobs.Job, what: str) -> errors.AsrError:
    """The error a synchronous request answers for its failed job: 400 when the audio was at fault,
    503 when diarization cannot run here, else 500; `what` names the work ("transcription")."""
    kinds: dict[str, type[errors.AsrError]] = {
        jobs.ErrorCode.TRANSCRIPTION_FAILED: errors.BadAudio,
        jobs.ErrorCode.DIARIZATION_UNAVAILABLE: errors.Unavailable,
    }
    kind = kinds.get(str(job.error_code), errors.AsrError)
    return kind(f"{what} failed: {job.error}", job_id=str(job.id))
