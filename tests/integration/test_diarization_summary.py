"""A diarized job's speakers as people, webhooks and the API see them, typed, from the stored step (real
PostgreSQL; the API in process with its lifespan, as in test_upload_http)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from asr_daemon import db, jobs, queries
from asr_daemon.cli.jobs import _speakers_line
from asr_daemon.config import Settings
from asr_daemon.diarization import events, store
from asr_daemon.diarization.engine import Turn
from asr_daemon.jobs import Status
from tests import services
from tests.integration.test_upload_http import serving

#: the app is built here under pytest's warnings-as-errors (see test_upload_http)
pytestmark = pytest.mark.filterwarnings("ignore::litestar.exceptions.base_exceptions.LitestarDeprecationWarning")

WORKER = "w-test"


@pytest.fixture
async def pool(tmp_path: Path, database: str) -> AsyncIterator[asyncpg.Pool]:
    """The daemon's pool (JSON codecs) on a fresh database."""
    p = await db.create_pool(Settings(state_dir=tmp_path, database_url=database))
    yield p
    await p.close()


async def _running_diarized_job(pool: asyncpg.Pool) -> jobs.Job:
    """A diarized job (two to three speakers asked for), claimed by WORKER."""
    job_id = uuid.uuid4()
    options = jobs.Options(diarization=jobs.DiarizationOptions(min_speakers=2, max_speakers=3))
    await queries.insert_job(
        pool,
        job_id=job_id,
        model="tiny.en",
        options=options.to_json(),
        fingerprint=job_id.hex,
        priority=0,
        audio_sha256="0" * 64,
        audio_bytes=1,
        filename=None,
        duration_s=10.0,
        max_attempts=3,
        idempotency_key=None,
        webhook_url=None,
    )
    job = await queries.claim(pool, WORKER)
    assert job is not None and job.id == job_id and job.options.diarization == options.diarization
    return job


async def test_speaker_summary_is_typed_and_the_webhook_keeps_its_keys(pool: asyncpg.Pool) -> None:
    """The job view's and `asrctl jobs show`'s speakers come as `SpeakerSummary` (running, then done with
    each speaker's seconds and name); the webhook's `speakers` keep the keys label, name, seconds."""
    job = await _running_diarized_job(pool)
    assert await events.summary(pool, job) is None  # the step never started
    assert await store.begin(pool, job.id, WORKER, "offline")
    assert await store.progress(pool, job.id, WORKER, 4.0)
    running = await events.summary(pool, job)
    assert running is not None and (running.status, running.progress_s, running.speakers) == ("running", 4.0, ())
    assert _speakers_line(running) == "diarizing (4 s done)"
    # the job cancelled (or failed, or handed back) mid-step: its step is no longer said to run
    for status in (Status.CANCELLED, Status.FAILED, Status.QUEUED):
        stopped = await events.summary(pool, dataclasses.replace(job, status=status))
        assert stopped is not None and stopped.status == "stopped", status
        assert _speakers_line(stopped) == "stopped after 4 s"
    turns = [Turn(0.0, 4.0, 0), Turn(4.0, 7.5, 1), Turn(7.5, 9.0, 0)]
    assert await store.finish(pool, job.id, WORKER, turns, {"A": "Ann"}, 1.0, job.duration_s)
    done = await events.summary(pool, job)
    assert done == events.SpeakerSummary(
        status="done",
        engine="offline",
        progress_s=done.progress_s if done else 0.0,
        num_speakers=2,
        speakers=(events.SpeakerTime("A", "Ann", 5.5), events.SpeakerTime("B", "B", 3.5)),
    )
    assert _speakers_line(done) == "2: A (Ann) 5.5 s, B 3.5 s"
    assert await events.webhook_fields(pool, job) == {
        "speakers": [{"label": "A", "name": "Ann", "seconds": 5.5}, {"label": "B", "name": "B", "seconds": 3.5}]
    }


async def test_the_job_view_and_a_rename_answer_typed_speakers(
    tmp_path: Path, database: str, redis_server: services.Redis, pool: asyncpg.Pool
) -> None:
    """GET /v1/jobs/{id} shows the speakers summary (status, engine, num_speakers, each label/name/seconds);
    PATCH /v1/jobs/{id}/speakers names one and answers every label's name; an unknown label is a 400."""
    settings = Settings(
        state_dir=tmp_path, database_url=database, redis_url=redis_server.url, run_worker=False, wyoming_port=0
    )
    job = await _running_diarized_job(pool)
    assert await store.begin(pool, job.id, WORKER, "offline")
    assert await store.finish(pool, job.id, WORKER, [Turn(0.0, 6.0, 0), Turn(6.0, 9.0, 1)], {}, 1.0, 10.0)
    async with serving(settings) as c:
        view = (await c.get(f"/v1/jobs/{job.id}")).json()
        assert view["options"]["diarization"] == {
            "num_speakers": None,
            "min_speakers": 2,
            "max_speakers": 3,
            "only": False,
        }
        assert view["speakers"] == {
            "status": "done",
            "engine": "offline",
            "progress_s": view["speakers"]["progress_s"],
            "num_speakers": 2,
            "speakers": [{"label": "A", "name": "A", "seconds": 6.0}, {"label": "B", "name": "B", "seconds": 3.0}],
        }
        r = await c.patch(f"/v1/jobs/{job.id}/speakers", json={"B": " Bea "})
        assert r.status_code == 200, r.text
        assert r.json() == {"id": str(job.id), "speakers": {"A": "A", "B": "Bea"}}
        assert (await c.patch(f"/v1/jobs/{job.id}/speakers", json={"Z": "Zed"})).status_code == 400
        assert (await c.get(f"/v1/jobs/{job.id}")).json()["speakers"]["speakers"][1]["name"] == "Bea"
