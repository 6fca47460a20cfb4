"""Deduplication of jobs in flight, in process against real PostgreSQL and Redis: a submission joins the same
job while it is queued or running, and identical submissions arriving together (even in two processes) make one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from asr_daemon import jobs, queries
from asr_daemon.config import Settings
from asr_daemon.pipeline import queue, uploads
from asr_daemon.pipeline.intake import Accepted, Intake
from tests.integration.test_intake import CTYPE, END, field, file_head, intake, pool, settings, stream, tone

__all__ = ["intake", "pool", "settings"]  # fixtures shared with test_intake


async def send(intake: Intake, audio: bytes, *extra: bytes, key: int | None = None) -> Accepted:
    """POST /v1/audio/transcriptions' call of the intake with this audio (and extra form fields)."""
    return await intake.submit(
        stream([*extra, file_head(), audio, END]), CTYPE, jobs.Task.TRANSCRIBE, allow_task_field=False, api_key_id=key
    )


async def count_jobs(pool: asyncpg.Pool) -> int:
    """How many job rows exist."""
    n: int = await pool.fetchval("SELECT count(*) FROM jobs")
    return n


async def test_the_same_submission_joins_the_queued_then_the_running_job(intake: Intake, pool: asyncpg.Pool) -> None:
    """An SDK's retry while the first job is queued, then running, gets that job (deduplicated), not a new one."""
    audio = tone(523)
    first = await send(intake, audio)
    again = await send(intake, audio)
    assert (again.job.id, again.deduplicated) == (first.job.id, True)
    await pool.execute("UPDATE jobs SET status = 'running', started_at = now() WHERE id = $1", first.job.id)
    running = await send(intake, audio)
    assert (running.job.id, running.deduplicated, running.job.status) == (first.job.id, True, "running")
    assert await count_jobs(pool) == 1


async def test_what_differs_or_was_cancelled_is_a_new_job(intake: Intake, pool: asyncpg.Pool) -> None:
    """Other options, another key, a job being cancelled or cancelled: each makes a job of its own."""
    audio = tone(587)
    key = await pool.fetchval("INSERT INTO api_keys (name, hash, prefix) VALUES ('k', 'h', 'p') RETURNING id")
    first = await send(intake, audio)
    other_options = await send(intake, audio, field("language", "en"))
    other_key = await send(intake, audio, key=key)
    assert not other_options.deduplicated and not other_key.deduplicated
    await pool.execute("UPDATE jobs SET status = 'running', cancel_requested = true WHERE id = $1", first.job.id)
    after_cancel_asked = await send(intake, audio)
    assert not after_cancel_asked.deduplicated
    await pool.execute(
        "UPDATE jobs SET status = 'cancelled', finished_at = now() WHERE id = $1", after_cancel_asked.job.id
    )
    after_cancelled = await send(intake, audio)
    assert not after_cancelled.deduplicated
    assert await count_jobs(pool) == 5


async def test_dedup_off_makes_a_job_per_submission(settings: Settings, pool: asyncpg.Pool) -> None:
    """ASR_DEDUP=false: the same audio twice while the first is queued is two jobs."""
    client = queue.connect(settings.redis_url.get_secret_value())
    try:
        plain = Intake(settings.model_copy(update={"dedup": False}), pool, queue.Hub(client, 1.0), uploads.AudioLocks())
        audio = tone(659)
        a, b = await send(plain, audio), await send(plain, audio)
    finally:
        await client.aclose()
    assert a.job.id != b.job.id and await count_jobs(pool) == 2


@pytest.fixture
async def two_processes(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[tuple[Intake, Intake]]:
    """Two intakes with their own per-audio locks, as in two daemon processes on one database."""
    client = queue.connect(settings.redis_url.get_secret_value())
    hub = queue.Hub(client, 1.0)
    yield Intake(settings, pool, hub, uploads.AudioLocks()), Intake(settings, pool, hub, uploads.AudioLocks())
    await client.aclose()


async def test_identical_submissions_at_once_in_two_processes_make_one_job(
    two_processes: tuple[Intake, Intake], pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Six identical uploads finishing together across two processes: one job, the five others join it."""
    find = queries.find_same

    async def slow_find(conn: queries.Conn, fingerprint: str, api_key_id: int | None = None) -> jobs.Job | None:
        found = await find(conn, fingerprint, api_key_id)
        await asyncio.sleep(0.1)  # widen the race: without the fingerprint lock every one finds nothing
        return found

    monkeypatch.setattr(queries, "find_same", slow_find)
    audio = tone(698)
    results = await asyncio.gather(*(send(two_processes[n % 2], audio) for n in range(6)))
    assert len({r.job.id for r in results}) == 1
    assert sorted(r.deduplicated for r in results) == [False] + [True] * 5
    assert await count_jobs(pool) == 1
