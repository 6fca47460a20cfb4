"""A transcript's segments: stored one by one as the worker (or a live session) produces them, read in
order, and where an interrupted job resumes."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from asr_daemon.jobs import Segment
from asr_daemon.queries.conn import Conn, Row


async def insert_segment(conn: Conn, job_id: uuid.UUID, worker: str, seg: Mapping[str, object]) -> bool:
    """Store one segment (idempotent on (job, seq)) and advance progress; False if the job is not ours.

    `seg` holds `transcriber.Segment`'s fields: seq, start, end, text, avg_logprob, no_speech_prob,
    compression_ratio, temperature, tokens, words."""
    row = await conn.fetchrow(
        """
        WITH owner AS (
            UPDATE jobs SET progress_s = greatest(progress_s, $5), heartbeat_at = now()
            WHERE id = $1 AND status = 'running' AND worker = $2
            RETURNING id
        )
        INSERT INTO segments (job_id, seq, start_s, end_s, text, avg_logprob, no_speech_prob,
                              compression_ratio, temperature, tokens, words)
        SELECT id, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12 FROM owner
        ON CONFLICT (job_id, seq) DO NOTHING
        RETURNING seq
        """,
        job_id,
        worker,
        seg["seq"],
        seg["start"],
        seg["end"],
        seg["text"],
        seg["avg_logprob"],
        seg["no_speech_prob"],
        seg["compression_ratio"],
        seg["temperature"],
        seg["tokens"],
        seg["words"],
    )
    return row is not None


async def segments(conn: Conn, job_id: uuid.UUID, from_seq: int = 0) -> list[Segment]:
    """Stored segments of a job in order, from `from_seq` on."""
    rows: list[Row] = await conn.fetch(
        "SELECT * FROM segments WHERE job_id = $1 AND seq >= $2 ORDER BY seq", job_id, from_seq
    )
    return [Segment.from_row(r) for r in rows]


async def segment_count(conn: Conn, job_id: uuid.UUID) -> int:
    """How many segments of a job are stored."""
    n: int = await conn.fetchval("SELECT count(*) FROM segments WHERE job_id = $1", job_id)
    return n


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """Where an interrupted job carries on."""

    #: seq of the next segment (= segments stored)
    next_seq: int
    #: end of the last stored segment, in seconds
    resume_from: float
    #: the prompt the resumed run carries on from
    prompt_tokens: list[int]


async def resume_point(conn: Conn, job_id: uuid.UUID, tokens: int = 0) -> ResumePoint:
    """Where an interrupted job resumes: next seq, end of the last segment, and the last `tokens`
    tokens of its segments since the last one decoded hotter than 0.5 (the prompt the resumed run
    carries on from, as `transcriber.transcribe` keeps it)."""
    row: Row | None = await conn.fetchrow(
        """
        SELECT coalesce(max(seq) + 1, 0) AS next_seq,
               coalesce(max(end_s), 0) AS resume_from,
               coalesce((SELECT array_agg(tok ORDER BY seq, ord)
                         FROM (SELECT s.seq, u.tok, u.ord
                               FROM segments s, unnest(s.tokens) WITH ORDINALITY AS u(tok, ord)
                               WHERE s.job_id = $1 AND s.seq > coalesce(
                                   (SELECT max(seq) FROM segments WHERE job_id = $1 AND temperature > 0.5), -1)
                               ORDER BY s.seq DESC, u.ord DESC LIMIT $2) AS t), '{}') AS prompt_tokens
        FROM segments WHERE job_id = $1
        """,
        job_id,
        tokens,
    )
    assert row is not None  # the statement always returns one row
    return ResumePoint(row["next_seq"], row["resume_from"], list(row["prompt_tokens"]))
