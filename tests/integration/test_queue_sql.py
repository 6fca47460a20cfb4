"""The job state machine in SQL, against real PostgreSQL: claims, guards, reaping, fairness, migrations."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from asr_daemon import jobs, queries
from asr_daemon.ops import migrate
from tests import services


@pytest.fixture
async def conn(database: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a fresh migrated database, with JSON codecs."""
    c = await asyncpg.connect(database)
    for typ in ("json", "jsonb"):
        await c.set_type_codec(typ, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    yield c
    await c.close()


async def add(conn: asyncpg.Connection, *, duration: float = 10, priority: int = 0, **kw: Any) -> uuid.UUID:
    """Insert a queued job."""
    job_id = uuid.uuid4()
    await queries.insert_job(
        conn,
        job_id=job_id,
        model="tiny.en",
        options=jobs.Options().to_json(),
        fingerprint=job_id.hex,
        priority=priority,
        audio_sha256="0" * 64,
        audio_bytes=1,
        filename=None,
        duration_s=duration,
        max_attempts=kw.get("max_attempts", 3),
        idempotency_key=kw.get("key"),
        webhook_url=None,
    )
    return job_id


async def test_claim_takes_priority_then_shortest_audio(conn: asyncpg.Connection) -> None:
    """Higher priority first; within a priority the shortest audio first."""
    long_job = await add(conn, duration=3600)
    short = await add(conn, duration=5)
    urgent = await add(conn, duration=7200, priority=5)
    order = [(await queries.claim(conn, "w")).id for _ in range(3)]  # type: ignore[union-attr]
    assert order == [urgent, short, long_job]
    assert await queries.claim(conn, "w") is None


async def test_a_claim_limited_to_kinds_leaves_the_others_queued(conn: asyncpg.Connection) -> None:
    """During a stop the worker claims only voice commands: a file job, first in line, stays queued."""
    upload = await add(conn, duration=1)
    voice = await add(conn, duration=60)
    await conn.execute("UPDATE jobs SET kind = 'wyoming' WHERE id = $1", voice)
    assert (await queries.claim(conn, "w", ["wyoming"])).id == voice  # type: ignore[union-attr]
    assert await queries.claim(conn, "w", ["wyoming"]) is None
    assert (await queries.claim(conn, "w")).id == upload  # type: ignore[union-attr]


async def test_a_long_wait_ages_a_long_job_ahead_of_new_short_ones(conn: asyncpg.Connection) -> None:
    """A long file that waited long enough overtakes short ones (no starvation)."""
    long_job = await add(conn, duration=600)
    await conn.execute("UPDATE jobs SET created_at = now() - interval '2 minutes' WHERE id = $1", long_job)
    await add(conn, duration=5)
    assert (await queries.claim(conn, "w")).id == long_job  # type: ignore[union-attr]


async def test_concurrent_claims_never_hand_out_a_job_twice(database: str, conn: asyncpg.Connection) -> None:
    """FOR UPDATE SKIP LOCKED: 20 claimers on 10 jobs get each job exactly once."""
    ids = {await add(conn) for _ in range(10)}
    pool = await asyncpg.create_pool(database, min_size=10, max_size=20)
    try:
        got = await asyncio.gather(*(queries.claim(pool, f"w{i}") for i in range(20)))
    finally:
        await pool.close()
    claimed = [r.id for r in got if r is not None]
    assert sorted(claimed) == sorted(ids)


async def test_state_changes_are_guarded_by_worker_and_state(conn: asyncpg.Connection) -> None:
    """Only the worker holding a running job may finish it, and only once."""
    job_id = await add(conn)
    await queries.claim(conn, "me")
    assert not await queries.complete(conn, job_id, "someone-else", {}, "cpu")
    assert await queries.complete(conn, job_id, "me", {"transcribe_s": 1}, "cpu")
    assert not await queries.complete(conn, job_id, "me", {}, "cpu")
    assert not await queries.fail(conn, job_id, "me", "late", jobs.ErrorCode.INTERNAL_ERROR)
    row = await queries.get_job(conn, job_id)
    assert row is not None and row.status == jobs.Status.COMPLETED


async def test_segments_are_idempotent_and_only_for_the_owner(conn: asyncpg.Connection) -> None:
    """A segment stored twice is kept once; a worker that lost the job cannot add segments."""
    job_id = await add(conn)
    await queries.claim(conn, "me")
    seg = {
        "seq": 0,
        "start": 0.0,
        "end": 2.0,
        "text": " hi",
        "avg_logprob": -0.1,
        "no_speech_prob": 0.0,
        "compression_ratio": 1.0,
        "temperature": 0.0,
        "tokens": [1, 2],
        "words": None,
    }
    assert await queries.insert_segment(conn, job_id, "me", seg)
    assert not await queries.insert_segment(conn, job_id, "me", seg)
    assert not await queries.insert_segment(conn, job_id, "other", {**seg, "seq": 1})
    point = await queries.resume_point(conn, job_id)
    assert (point.next_seq, point.resume_from, point.prompt_tokens) == (1, 2.0, [])


async def test_resume_point_carries_the_last_tokens_in_order(conn: asyncpg.Connection) -> None:
    """A resumed job's prompt is the last N tokens of its segments, in their spoken order, none from
    before a segment decoded hotter than 0.5 (nor its own)."""
    job_id = await add(conn)
    await queries.claim(conn, "me")
    for seq, (tokens, temperature) in enumerate((([1, 2, 3], 0.0), ([4, 5], 0.0), ([6, 7, 8], 0.2))):
        seg = {
            "seq": seq,
            "start": seq,
            "end": seq + 1.0,
            "text": "x",
            "avg_logprob": 0.0,
            "no_speech_prob": 0.0,
            "compression_ratio": 1.0,
            "temperature": temperature,
            "tokens": tokens,
            "words": None,
        }
        assert await queries.insert_segment(conn, job_id, "me", seg)
    point = await queries.resume_point(conn, job_id, 6)
    assert (point.next_seq, point.resume_from, point.prompt_tokens) == (3, 3.0, [3, 4, 5, 6, 7, 8])
    await conn.execute("UPDATE segments SET temperature = 0.8 WHERE job_id = $1 AND seq = 1", job_id)
    assert (await queries.resume_point(conn, job_id, 6)).prompt_tokens == [6, 7, 8]


async def test_reaper_requeues_stale_jobs_and_fails_them_after_max_attempts(conn: asyncpg.Connection) -> None:
    """A stale heartbeat sends the job back with backoff; the last attempt fails it."""
    job_id = await add(conn, max_attempts=2)
    for attempt, expected in ((1, "queued"), (2, "failed")):
        await conn.execute("UPDATE jobs SET run_after = now() WHERE id = $1", job_id)
        row = await queries.claim(conn, "dead")
        assert row is not None and row.attempts == attempt
        await conn.execute("UPDATE jobs SET heartbeat_at = now() - interval '1 minute' WHERE id = $1", job_id)
        reaped = await queries.reap(conn, stale_after=30, backoff=10)
        assert [(r.id, r.status) for r in reaped] == [(job_id, expected)]
    row = await queries.get_job(conn, job_id)
    assert row is not None and row.error_code == jobs.ErrorCode.WORKER_LOST


async def test_reaped_job_waits_for_its_backoff(conn: asyncpg.Connection) -> None:
    """A requeued job is not claimable before its backoff passes."""
    job_id = await add(conn)
    await queries.claim(conn, "dead")
    await conn.execute("UPDATE jobs SET heartbeat_at = now() - interval '1 minute' WHERE id = $1", job_id)
    await queries.reap(conn, stale_after=30, backoff=60)
    assert await queries.claim(conn, "w") is None


async def test_cancel_queued_at_once_running_by_request(conn: asyncpg.Connection) -> None:
    """Cancelling a queued job finishes it; a running one is flagged for its worker; a finished one is
    left exactly as it was (updated_at included), and said to be unchanged."""
    queued, running = await add(conn, duration=1), await add(conn, duration=2)
    await queries.claim(conn, "w")
    await queries.claim(conn, "w")
    await conn.execute("UPDATE jobs SET status = 'queued', worker = NULL WHERE id = $1", queued)
    assert await queries.request_cancel(conn, queued) == (jobs.Status.CANCELLED, True)
    assert await queries.request_cancel(conn, running) == (jobs.Status.RUNNING, True)
    assert await queries.heartbeat(conn, {running: ("w", 1.0)}) == {running: True}
    assert await queries.heartbeat(conn, {running: ("w/2", 1.0)}) == {}  # another claim's name: not its job
    assert await queries.mark_cancelled(conn, running, "w")
    assert await queries.request_cancel(conn, uuid.uuid4()) is None
    done = await add(conn)
    await queries.claim(conn, "w")
    assert await queries.complete(conn, done, "w", {}, "cpu")
    before = await queries.get_job(conn, done)
    assert await queries.request_cancel(conn, done) == (jobs.Status.COMPLETED, False)
    assert await queries.request_cancel(conn, running) == (jobs.Status.CANCELLED, False)
    after = await queries.get_job(conn, done)
    assert before is not None and after is not None
    assert (after.updated_at, after.cancel_requested, after.status) == (before.updated_at, False, before.status)


async def test_checkpoint_requeues_without_spending_an_attempt(conn: asyncpg.Connection) -> None:
    """A drained job goes back to the queue with its attempt count restored."""
    job_id = await add(conn)
    await queries.claim(conn, "w")
    assert await queries.checkpoint(conn, job_id, "w")
    row = await queries.get_job(conn, job_id)
    assert row is not None and (row.status, row.attempts) == (jobs.Status.QUEUED, 0)


async def test_a_cancel_asked_of_a_running_job_is_kept_however_its_run_ends(conn: asyncpg.Connection) -> None:
    """A running job flagged for cancel whose worker died (reaped, even on its last attempt), crashed
    (retry_or_fail) or drained (checkpoint) ends cancelled — never queued to run again nor failed."""
    ends = {
        "reap": lambda j: queries.reap(conn, stale_after=30, backoff=0),
        "retry_or_fail": lambda j: queries.retry_or_fail(conn, j, "w", "boom", 0),
        "checkpoint": lambda j: queries.checkpoint(conn, j, "w"),
    }
    for name, end in ends.items():
        for max_attempts in (1, 3):
            job_id = await add(conn, max_attempts=max_attempts)
            assert (await queries.claim(conn, "w")) is not None
            assert await queries.request_cancel(conn, job_id) == (jobs.Status.RUNNING, True)
            await conn.execute("UPDATE jobs SET heartbeat_at = now() - interval '1 minute' WHERE id = $1", job_id)
            await end(job_id)
            row = await queries.get_job(conn, job_id)
            assert row is not None and row.status == jobs.Status.CANCELLED, (name, max_attempts, row)
            assert row.finished_at is not None and row.error_code is None, (name, row)
            assert await queries.claim(conn, "w") is None, name


async def test_a_diarized_row_stored_by_the_dict_based_code_reads_back_typed(conn: asyncpg.Connection) -> None:
    """A jsonb `options` as the old code wrote it loads as `DiarizationOptions`; writing it back stores the same."""
    old = {
        "task": "transcribe",
        "diarization": {"num_speakers": 2, "min_speakers": None, "max_speakers": None, "only": True,
                        "known": [{"name": "Ann", "embedding": "AAA="}]},
    }  # fmt: skip
    job_id = await add(conn)
    await conn.execute("UPDATE jobs SET options = $2 WHERE id = $1", job_id, old)
    job = await queries.get_job(conn, job_id)
    assert job is not None and job.options.diarization is not None
    assert job.options.diarization.num_speakers == 2 and job.options.diarization.only
    assert job.options.diarization.known == (jobs.KnownSpeaker("Ann", embedding="AAA="),)
    await conn.execute("UPDATE jobs SET options = $2 WHERE id = $1", job_id, job.options.to_json())
    stored = await conn.fetchval("SELECT options -> 'diarization' FROM jobs WHERE id = $1", job_id)
    assert stored == old["diarization"]


async def test_migrations_apply_to_empty_db_and_rerun_is_a_noop(pg: services.Postgres) -> None:
    """All migrations apply in order to an empty database; running again applies nothing."""
    name = "m_" + uuid.uuid4().hex[:8]
    pg.psql(f"CREATE DATABASE {name}")
    c = await asyncpg.connect(pg.url(name))
    try:
        first = await migrate.migrate(c)
        assert first == [m.name for m in migrate.load()]
        assert await migrate.migrate(c) == []
        assert await migrate.pending(c) == []
        assert await c.fetchval("SELECT to_regclass('jobs') IS NOT NULL")
    finally:
        await c.close()


async def test_two_processes_migrating_at_once_apply_each_file_once(pg: services.Postgres) -> None:
    """Concurrent migrators serialise on the advisory lock: each migration is applied exactly once."""
    name = "m_" + uuid.uuid4().hex[:8]
    pg.psql(f"CREATE DATABASE {name}")
    conns = [await asyncpg.connect(pg.url(name)) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate.migrate(c) for c in conns))
        applied = [n for r in results for n in r]
        assert sorted(applied) == sorted(m.name for m in migrate.load())
        assert await conns[0].fetchval("SELECT count(*) FROM schema_migrations") == len(migrate.load())
    finally:
        for c in conns:
            await c.close()


def test_migration_files_are_named_and_numbered(tmp_path: Path) -> None:
    """Badly named or duplicated migration files are refused."""
    assert [m.version for m in migrate.load()] == sorted({m.version for m in migrate.load()})
    (tmp_path / "0001_a.sql").write_text("SELECT 1")
    (tmp_path / "0001_b.sql").write_text("SELECT 1")
    with pytest.raises(ValueError, match="share version"):
        migrate.load(tmp_path)
    (tmp_path / "0001_b.sql").unlink()
    (tmp_path / "2-bad.sql").write_text("SELECT 1")
    with pytest.raises(ValueError, match="not named"):
        migrate.load(tmp_path)
