"""The diarization step's SQL: its state row, its turns, the speakers' names (migration 0005).

Writes from the worker are guarded like segments are (`jobs.status = 'running' AND worker = $2`): a
worker that lost its job changes nothing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence

import asyncpg

from asr_daemon.diarization.engine import Turn
from asr_daemon.queries import Conn, Row


async def state(conn: Conn, job_id: uuid.UUID) -> Row | None:
    """The step's row (status, progress_s, num_speakers, names, engine), or None when it never started."""
    return await conn.fetchrow("SELECT * FROM diarizations WHERE job_id = $1", job_id)


async def begin(conn: Conn, job_id: uuid.UUID, worker: str, engine: str) -> bool:
    """Mark the step running (kept as is when it exists); False when the job is not this worker's."""
    row = await conn.fetchrow(
        """
        WITH owner AS (SELECT id FROM jobs WHERE id = $1 AND status = 'running' AND worker = $2)
        INSERT INTO diarizations (job_id, engine) SELECT id, $3 FROM owner
        ON CONFLICT (job_id) DO UPDATE SET updated_at = now()
        RETURNING job_id
        """,
        job_id,
        worker,
        engine,
    )
    return row is not None


async def progress(conn: Conn, job_id: uuid.UUID, worker: str, seconds: float) -> bool:
    """Record how far the step got (and heartbeat the job); False when the job is not this worker's."""
    row = await conn.fetchrow(
        """
        WITH owner AS (
            UPDATE jobs SET heartbeat_at = now() WHERE id = $1 AND status = 'running' AND worker = $2 RETURNING id
        )
        UPDATE diarizations d SET progress_s = greatest(d.progress_s, $3), updated_at = now()
        FROM owner WHERE d.job_id = owner.id AND d.status = 'running'
        RETURNING d.job_id
        """,
        job_id,
        worker,
        seconds,
    )
    return row is not None


async def finish(
    pool: asyncpg.Pool,
    job_id: uuid.UUID,
    worker: str,
    turns: Sequence[Turn],
    names: Mapping[str, str],
    seconds: float,
    audio_s: float,
) -> bool:
    """Store all turns and mark the step done, in one transaction; False when the job is not ours."""
    async with pool.acquire() as conn, conn.transaction():
        owner = await conn.fetchval(
            "SELECT id FROM jobs WHERE id = $1 AND status = 'running' AND worker = $2 FOR UPDATE", job_id, worker
        )
        if owner is None:
            return False
        await conn.execute("DELETE FROM diarization_turns WHERE job_id = $1", job_id)
        await conn.executemany(
            "INSERT INTO diarization_turns (job_id, seq, start_s, end_s, speaker) VALUES ($1, $2, $3, $4, $5)",
            [(job_id, i, t.start, t.end, t.speaker) for i, t in enumerate(turns)],
        )
        await conn.execute(
            """
            UPDATE diarizations SET status = 'done', num_speakers = $2, names = $3::jsonb, seconds = $4,
                   progress_s = $5, updated_at = now()
            WHERE job_id = $1
            """,
            job_id,
            len({t.speaker for t in turns}),
            dict(names),
            seconds,
            audio_s,
        )
    return True


async def turns(conn: Conn, job_id: uuid.UUID) -> list[Turn]:
    """The stored turns of a job, in time order (empty when the step is not done)."""
    rows = await conn.fetch(
        """
        SELECT t.start_s, t.end_s, t.speaker FROM diarization_turns t
        JOIN diarizations d USING (job_id) WHERE t.job_id = $1 AND d.status = 'done' ORDER BY t.seq
        """,
        job_id,
    )
    return [Turn(r["start_s"], r["end_s"], r["speaker"]) for r in rows]


async def rename(conn: Conn, job_id: uuid.UUID, names: Mapping[str, str | None]) -> Row | None:
    """Merge `names` into the speakers' names (a null value drops a name); the updated row, or None."""
    return await conn.fetchrow(
        """
        UPDATE diarizations SET names = jsonb_strip_nulls(names || $2::jsonb), updated_at = now()
        WHERE job_id = $1 AND status = 'done' RETURNING *
        """,
        job_id,
        dict(names),
    )


def names_of(row: Row | None) -> dict[str, str]:
    """The label → name map of a step row (the pool decodes jsonb; a bare connection gives text)."""
    if row is None:
        return {}
    raw = row["names"]
    value = json.loads(raw) if isinstance(raw, str) else raw
    return {str(k): str(v) for k, v in (value or {}).items()}
