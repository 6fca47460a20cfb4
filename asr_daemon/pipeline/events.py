"""A job's event history, derived from PostgreSQL, followed live.

Events are not stored separately: they are read off the job row and its segments, so the history
is exactly as durable as the transcript and replays identically after a crash. Event ids:
`0` queued, `1` started, `2 + seq` for segment `seq`, and `2 + number of segments` for the final
`completed` / `failed` / `cancelled`. A client resuming with `Last-Event-ID: n` gets every event with
an id above n, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg

from asr_daemon import db, errors, formats, jobs, queries
from asr_daemon.diarization import events as diarization_events
from asr_daemon.pipeline.queue import Hub

log = logging.getLogger(__name__)

FIRST_SEGMENT_ID = 2
OUTAGE_S = 120.0
"""How long an event stream rides out a database outage (keep-alives go on) before it ends."""
RETRY_FIRST_S, RETRY_MAX_S = 0.2, 2.0
"""Backoff between two tries of a database read in an outage: from the first, doubling, to the most."""
RESUME_AFTER_S = 2
"""Seconds a client told to come back after a stop waits (`retry:` of an event stream, Retry-After)."""
T = TypeVar("T")


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


class Stopping(errors.Unavailable):
    """This process is stopping and the job goes on after the restart (or elsewhere): resume there."""

    code = "server_stopping"

    def __init__(self, job_id: uuid.UUID) -> None:
        super().__init__(
            f"the server is stopping; job {job_id} was stored and goes on after the restart: "
            f"follow it at /v1/jobs/{job_id}",
            retry_after=RESUME_AFTER_S,
            job_id=str(job_id),
        )


class Lost(errors.Unavailable):
    """The database stayed unreachable while a stored job was followed: it was kept and goes on."""

    def __init__(self, job_id: uuid.UUID) -> None:
        super().__init__(
            f"the database became unreachable while job {job_id} was under way; the job was stored and "
            f"goes on: follow it at /v1/jobs/{job_id}",
            job_id=str(job_id),
        )


def holds(hub: Hub, status: str | None) -> bool:
    """Whether a follower or waiter stays on: not stopping, or its job runs and this process's drain may end it."""
    return not hub.stopping.is_set() or (status == jobs.Status.RUNNING and not hub.drained.is_set())


async def _retrying(hub: Hub, job_id: uuid.UUID, until: float, read: Callable[[], Awaitable[T]]) -> T:
    """`read()`, retried with backoff through a database outage until `until` (monotonic), then `Lost`;
    a stop gives up at once (`Stopping`)."""
    delay = RETRY_FIRST_S
    while True:
        try:
            return await read()
        except db.UNAVAILABLE as exc:
            if hub.stopping.is_set():
                raise Stopping(job_id) from exc
            left = until - time.monotonic()
            if left <= 0:
                raise Lost(job_id) from exc
            log.warning("events_db_retry", extra={"job_id": str(job_id), "error": type(exc).__name__})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(hub.stopping.wait(), min(delay, left))
            delay = min(delay * 2, RETRY_MAX_S)


async def final_id(pool: asyncpg.Pool, job_id: uuid.UUID) -> int:
    """The id of a finished job's final event."""
    return FIRST_SEGMENT_ID + (await queries.resume_point(pool, job_id)).next_seq


async def _pass(
    pool: asyncpg.Pool, job_id: uuid.UUID, cursor: int, diarized: diarization_events.Follower
) -> tuple[jobs.Job | None, list[Event]]:
    """One look at the job: its row and every event after `cursor` (the final one included once it ended)."""
    job = await queries.get_job(pool, job_id)
    if job is None:
        return None, []
    out: list[Event] = []
    if cursor < 0:
        created = formats.timestamp(job.created_at)
        out.append(Event(0, "queued", {"id": str(job_id), "status": jobs.Status.QUEUED, "created_at": created}))
        cursor = 0
    if cursor < 1 and job.started_at is not None:
        started = formats.timestamp(job.started_at)
        out.append(Event(1, "started", {"id": str(job_id), "status": jobs.Status.RUNNING, "started_at": started}))
        cursor = 1
    if cursor == 1 and (progress := await diarized.progress(job)) is not None:
        out.append(progress)
    segs = await queries.segments(pool, job_id, max(0, cursor - FIRST_SEGMENT_ID + 1))
    speakers = await diarized.speakers(job) if segs else None
    for seg in segs:
        ev = segment_event(job, seg, speakers.who(seg) if speakers else None)
        if ev.id > cursor:
            out.append(ev)
            cursor = ev.id
    if job.status in jobs.TERMINAL:
        n = segs[-1].seq + 1 if segs else (await queries.resume_point(pool, job_id)).next_seq
        final = final_event(job, n)
        if final.id > cursor:
            out.append(final)
    return job, out


async def follow(
    pool: asyncpg.Pool,
    hub: Hub,
    job_id: uuid.UUID,
    last_id: int = -1,
    *,
    heartbeat: float = 15.0,
    outage: float = OUTAGE_S,
    through_stop: bool = False,
) -> AsyncIterator[Event | None]:
    """Yield the job's events after `last_id` until its final one; `None` is a keep-alive tick.

    A database outage is ridden out for `outage` seconds (keep-alives go on), then `Lost`; once the
    process stops, `Stopping` as soon as the job will not end here (see `holds`), unless `through_stop`
    (a voice command: the worker still runs those, and the Wyoming server bounds its own stop).
    """
    wake = hub.subscribe(job_id)
    try:
        cursor = last_id
        quiet_since = time.monotonic()
        diarized = diarization_events.Follower(pool, job_id)  # issue 19
        failing_since: float | None = None
        delay = RETRY_FIRST_S
        while True:
            try:
                job, found = await _pass(pool, job_id, cursor, diarized)
                batch: list[Event] | None = found
            except db.UNAVAILABLE as exc:
                now = time.monotonic()
                failing_since = failing_since or now
                if hub.stopping.is_set():
                    raise Stopping(job_id) from exc
                if now - failing_since >= outage:
                    raise Lost(job_id) from exc
                log.warning("events_db_retry", extra={"job_id": str(job_id), "error": type(exc).__name__})
                batch = None
            if batch is None:  # the database is away: keep the client's connection alive meanwhile
                if time.monotonic() - quiet_since >= heartbeat:
                    quiet_since = time.monotonic()
                    yield None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(hub.stopping.wait(), delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            failing_since, delay = None, RETRY_FIRST_S
            if job is None:
                return
            for ev in batch:
                yield ev
                cursor = max(cursor, ev.id)
            if job.status in jobs.TERMINAL:
                return
            if not through_stop and not holds(hub, job.status):
                raise Stopping(job_id)
            if batch:
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

    Each wake (a segment, a state change, a poll) reads only the job's status; the row is read once, at
    the end. Database reads are retried through an outage until the deadline, then `Lost`. Once the
    process stops, `Stopping` unless the job runs and this process's drain may still finish it.
    """
    wake = hub.subscribe(job_id)
    deadline = time.monotonic() + timeout
    try:
        while True:
            status = await _retrying(hub, job_id, deadline, lambda: queries.job_status(pool, job_id))
            if status is None:
                return None
            if status in jobs.TERMINAL or time.monotonic() >= deadline:
                return await _retrying(hub, job_id, deadline + RETRY_MAX_S, lambda: queries.get_job(pool, job_id))
            if not holds(hub, status):
                raise Stopping(job_id)
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
