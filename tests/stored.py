"""Jobs stored in PostgreSQL as the worker stores them (claimed, segments one by one), for tests that
need transcripts in the database without running a model."""

from __future__ import annotations

import uuid
from typing import Any

from asr_daemon import jobs, queries

WORKER = "w"


async def running_job(
    conn: Any,  # an asyncpg connection with JSON codecs (the test's)
    texts: list[str],
    *,
    options: jobs.Options | None = None,
    language: str | None = "en",
    key: int | None = None,
) -> uuid.UUID:
    """A job claimed by `WORKER` in `language`, with one stored segment per text (2 s each)."""
    job_id = uuid.uuid4()
    await queries.insert_job(
        conn,
        job_id=job_id,
        model="tiny.en",
        options=(options or jobs.Options()).to_json(),
        fingerprint=job_id.hex,
        priority=0,
        audio_sha256="0" * 64,
        audio_bytes=1,
        filename="talk.flac",
        duration_s=2.0 * len(texts),
        max_attempts=3,
        idempotency_key=None,
        webhook_url=None,
        api_key_id=key,
    )
    await queries.claim(conn, WORKER)
    if language:
        await queries.set_language(conn, job_id, WORKER, language, 0.9)
    for i, text in enumerate(texts):
        seg = {
            "seq": i,
            "start": 2.0 * i,
            "end": 2.0 * i + 2,
            "text": text,
            "avg_logprob": None,
            "no_speech_prob": None,
            "compression_ratio": None,
            "temperature": 0.0,
            "tokens": [],
            "words": None,
        }
        assert await queries.insert_segment(conn, job_id, WORKER, seg)
    return job_id
