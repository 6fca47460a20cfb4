"""The worker in-process, against real PostgreSQL and Redis and the real tiny.en model (no daemon):
claim → execute → store → finish, resume after a crash, cancel by NOTIFY and by the heartbeat."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import asyncpg
import pytest

from asr_daemon import db, jobs, queries
from asr_daemon.config import Settings
from asr_daemon.engine import audio, models, transcriber
from asr_daemon.pipeline import cancels, housekeeping, queue, webhooks
from asr_daemon.pipeline.worker import Worker
from tests import services

pytestmark = pytest.mark.slow


@dataclass
class Rig:
    """A worker and what it runs on."""

    settings: Settings
    pool: asyncpg.Pool
    hub: queue.Hub
    worker: Worker
    outbox: webhooks.Outbox

    async def add(self, path: Path, **kw: object) -> uuid.UUID:
        """Store `path` as uploaded audio and queue a job for it, as the intake would."""
        data = path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        shutil.copyfile(path, self.settings.uploads_dir / sha)
        info = await asyncio.to_thread(audio.probe, path)
        job_id = uuid.uuid4()
        options = jobs.Options(language="en").to_json() if kw.get("language") else jobs.Options().to_json()
        await queries.insert_job(
            self.pool,
            job_id=job_id,
            model="tiny.en",
            options=options,
            fingerprint=job_id.hex,
            priority=0,
            audio_sha256=sha,
            audio_bytes=len(data),
            filename=path.name,
            duration_s=info.duration,
            max_attempts=3,
            idempotency_key=None,
            webhook_url=None,
        )
        await self.hub.ring()
        return job_id

    async def until(self, job_id: uuid.UUID, ok: Callable[[jobs.Job], bool], timeout: float = 120) -> jobs.Job:
        """Poll the job row until `ok(row)`."""
        deadline = time.monotonic() + timeout
        while True:
            row = await queries.get_job(self.pool, job_id)
            assert row is not None
            if ok(row):
                return row
            assert time.monotonic() < deadline, f"job {job_id} stuck at {row.status}"
            await asyncio.sleep(0.05)


@pytest.fixture
async def rig(
    request: pytest.FixtureRequest, database: str, redis_server: services.Redis, models_dir: Path, tmp_path: Path
) -> AsyncIterator[Rig]:
    """A started worker (one slot, tiny.en on the CPU) on a fresh database; drained at the end. Settings
    may be overridden by indirect parametrization."""
    (tmp_path / "models").symlink_to(models_dir)
    given = {
        "poll_interval": 0.2,
        "heartbeat_interval": 0.3,
        "stale_after": 1.0,
        "retry_backoff": 0.01,
        "workers": 1,
        **getattr(request, "param", {}),
    }
    settings = Settings(
        database_url=database,
        redis_url=redis_server.url,
        state_dir=tmp_path,
        model="tiny.en",
        device="cpu",
        cpu_threads=1,
        **given,
    )
    settings.uploads_dir.mkdir(parents=True)
    pool = await db.create_pool(settings)
    hub = queue.Hub(queue.connect(redis_server.url), settings.poll_interval)
    listeners = [asyncio.create_task(hub.listen_bell()), asyncio.create_task(hub.listen_events())]
    outbox = webhooks.Outbox(settings, pool)
    worker = Worker(settings, pool, hub, models.cache_from_settings(settings), outbox)
    worker.start()
    await asyncio.wait_for(worker.cancels.listening.wait(), 10)
    try:
        yield Rig(settings, pool, hub, worker, outbox)
    finally:
        await worker.drain(5)
        for t in listeners:
            t.cancel()
        await outbox.close()
        await hub.client.aclose()
        await pool.close()


async def test_claims_executes_stores_and_finishes_without_logging_the_text(
    rig: Rig, jfk: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A queued job is claimed, transcribed, its segments stored in order and the job completed; nothing
    the speaker said reaches the log (ASR_LOG_TRANSCRIPTS is off)."""
    # an earlier test in this process may have run logs.configure, which sets the package's level and
    # stops its records at its own handler: let every record reach caplog's again for this test
    monkeypatch.setattr(logging.getLogger("asr_daemon"), "propagate", True)
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="asr_daemon")
    job_id = await rig.add(jfk)
    row = await rig.until(job_id, lambda r: r.status in jobs.TERMINAL)
    assert row.status == "completed" and row.attempts == 1 and row.worker is None
    segs = await queries.segments(rig.pool, job_id)
    assert [s.seq for s in segs] == list(range(len(segs))) and segs
    assert "fellow americans" in " ".join(s.text for s in segs).lower()
    assert row.timings["transcribe_s"] > 0 and rig.worker.running == 0
    logged = " ".join(r.getMessage() + " " + str(vars(r)) for r in caplog.records).lower()
    assert "job_completed" in logged and "fellow" not in logged and "country" not in logged


async def test_a_job_whose_worker_died_resumes_after_its_last_stored_segment(rig: Rig, jfk: Path) -> None:
    """A job left running by a dead worker, one segment stored, is reaped back to the queue and resumed:
    the stored segment stays as it was and the rest follows it, numbered on, never before its end."""
    await rig.worker.drain(5)  # our worker stops claiming: the "dead" one claims
    job_id = await rig.add(jfk)
    row = await queries.claim(rig.pool, "dead-host:1:abcdef")
    assert row is not None and row.id == job_id
    first = transcriber.Segment(0, 0.0, 2.0, " And so my fellow", -0.2, 0.01, 1.0, 0.0, [], None)
    assert await queries.insert_segment(rig.pool, job_id, "dead-host:1:abcdef", asdict(first))
    await rig.pool.execute("UPDATE jobs SET heartbeat_at = now() - interval '1 hour' WHERE id = $1", job_id)
    chores = housekeeping.Housekeeping(rig.settings, rig.pool, rig.hub, rig.outbox, redeliver=False)
    assert await chores.reap_once() == 1
    assert (await rig.until(job_id, lambda r: True)).status == "queued"

    fresh = Worker(rig.settings, rig.pool, rig.hub, rig.worker.cache, rig.outbox)
    fresh.start()
    try:
        row = await rig.until(job_id, lambda r: r.status in jobs.TERMINAL)
    finally:
        await fresh.drain(5)
    assert row.status == "completed" and row.attempts == 2
    segs = await queries.segments(rig.pool, job_id)
    assert segs[0].text == first.text and len(segs) > 1
    assert [s.seq for s in segs] == list(range(len(segs)))
    assert all(s.start_s >= first.end - 0.01 for s in segs[1:])


@pytest.mark.parametrize("rig", [{"heartbeat_interval": 30.0, "stale_after": 90.0}], indirect=True)
async def test_a_cancel_notification_stops_the_running_job_at_once(rig: Rig, two_minutes: Path, jfk: Path) -> None:
    """cancels.request (what DELETE /v1/jobs/{id} does): the worker hears NOTIFY and marks the job cancelled
    within a second (its heartbeat, 30 s apart here, cannot have), and the slot is free for the next job."""
    job_id = await rig.add(two_minutes, language=True)
    await rig.until(job_id, lambda r: r.status == "running")
    t0 = time.monotonic()
    assert await cancels.request(rig.pool, rig.hub, job_id) == (jobs.Status.RUNNING, True)
    row = await rig.until(job_id, lambda r: r.status in jobs.TERMINAL, timeout=10)
    assert row.status == "cancelled" and time.monotonic() - t0 < 1.0
    after = await rig.add(jfk)
    assert (await rig.until(after, lambda r: r.status in jobs.TERMINAL)).status == "completed"


async def test_without_the_notification_the_heartbeat_finds_the_cancel(rig: Rig, two_minutes: Path) -> None:
    """A cancel whose notification is lost (only the row says so) is still found by the next heartbeat."""
    job_id = await rig.add(two_minutes, language=True)
    await rig.until(job_id, lambda r: r.status == "running")
    assert (await queries.request_cancel(rig.pool, job_id)) == (jobs.Status.RUNNING, True)  # no NOTIFY
    row = await rig.until(job_id, lambda r: r.status in jobs.TERMINAL, timeout=10)
    assert row.status == "cancelled"


@pytest.mark.parametrize("rig", [{"workers": 2}], indirect=True)
async def test_a_job_claimed_while_a_heartbeat_runs_is_not_taken_for_lost(
    rig: Rig, two_minutes: Path, jfk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job claimed while the heartbeat's statement is in flight (so missing from its answer) runs on to
    completed on its first attempt: it is not stopped as lost, left running, reaped and run again."""
    real = queries.heartbeat
    claimed: list[uuid.UUID] = []

    async def heartbeat_during_a_claim(conn: asyncpg.Pool, runs: dict[uuid.UUID, tuple[str, float]]) -> object:
        alive = await real(conn, runs)
        if not claimed:  # the first heartbeat: a job arrives and is claimed before its answer is read
            claimed.append(await rig.add(jfk))
            deadline = time.monotonic() + 10
            while claimed[0] not in rig.worker.jobs:
                assert time.monotonic() < deadline, "the second slot did not claim the job"
                await asyncio.sleep(0.01)
        return alive

    monkeypatch.setattr(queries, "heartbeat", heartbeat_during_a_claim)
    first = await rig.add(two_minutes, language=True)
    await rig.until(first, lambda r: r.status == "running")
    deadline = time.monotonic() + 10
    while not claimed:
        assert time.monotonic() < deadline, "no heartbeat ran"
        await asyncio.sleep(0.05)
    row = await rig.until(claimed[0], lambda r: r.status in jobs.TERMINAL)
    assert (row.status, row.attempts) == ("completed", 1)


# the heartbeat never runs: the old run is stopped by its own guarded writes, not by the heartbeat
@pytest.mark.parametrize("rig", [{"workers": 2, "heartbeat_interval": 600}], indirect=True)
async def test_a_run_whose_job_was_claimed_again_here_writes_nothing_more(rig: Rig, two_minutes: Path) -> None:
    """A job handed back (the reaper judged its run dead) and claimed again by the same process: the
    first run stops at its next write, as lost, and the second run alone finishes the job."""
    job_id = await rig.add(two_minutes, language=True)
    await rig.until(job_id, lambda r: r.status == "running" and r.progress_s > 0)
    first = rig.worker.jobs[job_id]
    # what `queries.reap` does to a running job with a stale heartbeat, its worker being alive after all
    handed_back = "UPDATE jobs SET status = 'queued', worker = NULL, heartbeat_at = NULL WHERE id = $1"
    await rig.pool.execute(handed_back, job_id)
    await rig.hub.ring()
    row = await rig.until(job_id, lambda r: r.status in jobs.TERMINAL)
    assert (row.status, row.attempts) == ("completed", 2)
    assert first.task is not None and first.task.done()
    assert first.stop_reason == "lost", "the first run went on writing after its job was claimed again"
    segs = await queries.segments(rig.pool, job_id)
    assert [s.seq for s in segs] == list(range(len(segs)))
    assert all(a.end_s <= b.start_s + 0.01 for a, b in itertools.pairwise(segs)), "overlapping segments"


async def test_a_job_claimed_as_shutdown_begins_goes_back_to_the_queue(
    rig: Rig, jfk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim in flight when the process starts stopping: the job is handed back queued, its attempt not
    spent, instead of running unwatched after the drain (left to the reaper, an attempt lost)."""
    real = queries.claim

    async def claim_as_shutdown_begins(conn: asyncpg.Pool, worker: str, kinds: list[str] | None = None) -> object:
        job = await real(conn, worker, kinds)
        if job is not None:
            rig.worker.stop_claiming()
        return job

    monkeypatch.setattr(queries, "claim", claim_as_shutdown_begins)
    job_id = await rig.add(jfk)
    row = await rig.until(job_id, lambda r: r.status == "queued" and r.attempts == 0 and r.started_at is not None)
    assert row.worker is None and rig.worker.running == 0 and job_id not in rig.worker.jobs
