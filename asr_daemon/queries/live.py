"""A live session's job (kind `live`, issue 21): inserted running and owned by the session's manager,
heartbeaten with the audio stored so far, finished when the session closes (or queued for a worker to
transcribe the rest of its audio when the session could not)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from asr_daemon.jobs import Job, Options
from asr_daemon.queries.conn import Conn, Row


async def create_job(
    conn: Conn, *, job_id: uuid.UUID, owner: str, model: str, options: Options, api_key_id: int | None,
    max_attempts: int, audio_name: str,
) -> Job:  # fmt: skip
    """Insert the session's job, running and owned by `owner`, its audio in uploads/`audio_name`."""
    row: Row | None = await conn.fetchrow(
        """
        INSERT INTO jobs (id, kind, status, model, options, fingerprint, audio_sha256, audio_bytes, filename,
                          duration_s, attempts, max_attempts, worker, heartbeat_at, started_at, api_key_id)
        VALUES ($1, 'live', 'running', $2, $3, $4, $5, 0, NULL, 0, 1, $6, $7, now(), now(), $8)
        RETURNING *
        """,
        job_id,
        model,
        options.to_json(),
        f"live:{job_id}",  # never equal to a file job's: live jobs are not deduplicated
        audio_name,
        max_attempts,
        owner,
        api_key_id,
    )
    assert row is not None  # the statement always returns one row
    return Job.from_row(row)


async def heartbeat(conn: Conn, owner: str, sizes: dict[uuid.UUID, tuple[float, int]]) -> dict[uuid.UUID, bool]:
    """Heartbeat the live jobs of `owner` with their stored duration and bytes; {id still ours: cancel requested}."""
    if not sizes:
        return {}
    ids = list(sizes)
    rows = await conn.fetch(
        """
        UPDATE jobs j SET heartbeat_at = now(), duration_s = p.duration, audio_bytes = p.bytes,
                          progress_s = least(j.progress_s, p.duration), updated_at = now()
        FROM unnest($2::uuid[], $3::float8[], $4::int8[]) AS p(id, duration, bytes)
        WHERE j.id = p.id AND j.status = 'running' AND j.worker = $1
        RETURNING j.id, j.cancel_requested
        """,
        owner,
        ids,
        [sizes[i][0] for i in ids],
        [sizes[i][1] for i in ids],
    )
    return {r["id"]: r["cancel_requested"] for r in rows}


async def set_model(conn: Conn, job_id: uuid.UUID, owner: str, model: str) -> None:
    """The session chose another model before sending audio."""
    await conn.execute("UPDATE jobs SET model = $3 WHERE id = $1 AND worker = $2", job_id, owner, model)


async def finish(
    conn: Conn, job_id: uuid.UUID, owner: str, *, duration: float, audio_bytes: int, language: str | None,
    timings: Mapping[str, float], device: str,
) -> bool:  # fmt: skip
    """running → completed once the session closed and its last utterance is stored (→ cancelled when a
    client cancelled the job through the API: the session was closed for it; its segments stay)."""
    row = await conn.fetchrow(
        """
        UPDATE jobs SET finished_at = now(), updated_at = now(), duration_s = $3,
                        audio_bytes = $4, progress_s = $3, language = coalesce($5, language),
                        timings = timings || $6, device = $7, worker = NULL, heartbeat_at = NULL,
        status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'completed' END
        WHERE id = $1 AND status = 'running' AND worker = $2
        RETURNING id
        """,
        job_id,
        owner,
        duration,
        audio_bytes,
        language,
        timings,
        device,
    )
    return row is not None


async def requeue(conn: Conn, job_id: uuid.UUID, owner: str, *, duration: float, audio_bytes: int) -> bool:
    """running → queued when the session closed before its utterances were all transcribed (the client
    outran the decoder, or a drain ran out of time): a worker transcribes the rest from the stored audio,
    after the last stored segment, as it resumes a file job (→ cancelled when a client cancelled it)."""
    row = await conn.fetchrow(
        """
        UPDATE jobs SET status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'queued' END,
                        finished_at = CASE WHEN cancel_requested THEN now() END,
                        duration_s = $3, audio_bytes = $4, attempts = greatest(attempts - 1, 0), run_after = now(),
                        worker = NULL, heartbeat_at = NULL, updated_at = now()
        WHERE id = $1 AND status = 'running' AND worker = $2
        RETURNING id
        """,
        job_id,
        owner,
        duration,
        audio_bytes,
    )
    return row is not None


async def discard(conn: Conn, job_id: uuid.UUID, owner: str) -> None:
    """Delete a session's job whose audio file could not be made (before any audio: nothing is lost)."""
    await conn.execute(
        "DELETE FROM jobs WHERE id = $1 AND status = 'running' AND worker = $2 AND audio_bytes = 0", job_id, owner
    )
