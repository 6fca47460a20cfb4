"""Intake in process against real PostgreSQL and Redis: early refusals, nothing left behind, the queue bound."""

from __future__ import annotations

import asyncio
import io
import math
import struct
import time
import wave
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path

import asyncpg
import pytest

from asr_daemon import db, errors, jobs, queries
from asr_daemon.config import Settings
from asr_daemon.pipeline import queue, uploads
from asr_daemon.pipeline.intake import Intake
from tests import services

BOUNDARY = "asrIntakeBoundary"
CTYPE = f"multipart/form-data; boundary={BOUNDARY}"
CHUNK = 64 << 10


def tone(freq: float, seconds: float = 1.0) -> bytes:
    """A 16 kHz mono WAV of a sine: real audio the probe accepts, distinct per frequency."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        n = int(16000 * seconds)
        w.writeframes(
            b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * freq * i / 16000))) for i in range(n))
        )
    return buf.getvalue()


def field(name: str, value: str) -> bytes:
    """One form field part."""
    return f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()


def file_head(filename: str = "a.wav") -> bytes:
    """The headers of the file part (its bytes follow)."""
    return f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n\r\n'.encode()


END = f"\r\n--{BOUNDARY}--\r\n".encode()


async def stream(parts: Iterable[bytes], read: list[int] | None = None) -> AsyncIterator[bytes]:
    """A request body in chunks of at most 64 KiB; `read` collects the sizes handed out."""
    for p in parts:
        for i in range(0, len(p), CHUNK):
            if read is not None:
                read.append(len(p[i : i + CHUNK]))
            yield p[i : i + CHUNK]
            await asyncio.sleep(0)


def zeros(total: int) -> Iterator[bytes]:
    """`total` bytes of file data, made as they are read (never held whole)."""
    block = bytes(CHUNK)
    for _ in range(total // CHUNK):
        yield block


def stored(settings: Settings) -> list[Path]:
    """Every file under uploads/ (the store and its tmp spool)."""
    return sorted(p for p in settings.uploads_dir.rglob("*") if p.is_file())


@pytest.fixture
def settings(tmp_path: Path, database: str, redis_server: services.Redis, models_dir: Path) -> Settings:
    """Settings on this test's database and state directory (tiny.en installed, no webhook secret)."""
    (tmp_path / "models").symlink_to(models_dir)
    s = Settings(
        state_dir=tmp_path, database_url=database, redis_url=redis_server.url, model="tiny.en", max_queued_jobs=3
    )
    s.uploads_dir.mkdir(parents=True)
    return s


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """The daemon's own pool (JSON codecs) on the test database."""
    p = await db.create_pool(settings, max_size=12)
    yield p
    await p.close()


@pytest.fixture
async def intake(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[Intake]:
    """An Intake as the lifespan builds it, with a Hub on the test Redis."""
    client = queue.connect(settings.redis_url.get_secret_value())
    yield Intake(settings, pool, queue.Hub(client, settings.poll_interval), uploads.AudioLocks())
    await client.aclose()


async def submit(intake: Intake, body: AsyncIterator[bytes]) -> object:
    """POST /v1/audio/transcriptions' call of the intake."""
    return await intake.submit(body, CTYPE, jobs.Task.TRANSCRIBE, allow_task_field=False)


async def test_a_bad_model_with_a_200_mb_upload_is_refused_before_the_body_is_stored(
    intake: Intake, settings: Settings, pool: asyncpg.Pool
) -> None:
    """model=no-such-model sent before a 200 MB file: 404 within a second or two, after reading under
    1 MiB of the body; no file in the store or its spool, no job row."""
    read: list[int] = []
    t0 = time.monotonic()
    body = stream([field("model", "no-such-model"), file_head(), *zeros(200 << 20), END], read)
    with pytest.raises(errors.ModelNotFound):
        await submit(intake, body)
    elapsed = time.monotonic() - t0
    assert sum(read) < 1 << 20, f"read {sum(read)} bytes of the body before refusing"
    assert elapsed < 3, elapsed  # storing 200 MB (hash, write, fsync) takes far longer on this machine
    assert stored(settings) == []
    assert await pool.fetchval("SELECT count(*) FROM jobs") == 0


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        ("language", "klingon", errors.BadRequest),
        ("response_format", "pdf", errors.BadRequest),
        ("webhook_url", "https://example.com/hook", errors.BadRequest),  # no ASR_WEBHOOK_SECRET here
        ("task", "translate", errors.BadRequest),
    ],
)
async def test_each_bad_field_sent_first_is_refused_before_the_file(
    intake: Intake, settings: Settings, name: str, value: str, error: type[errors.AsrError]
) -> None:
    """Any field that is bad on its own ends the upload when it arrives, before the file's bytes."""
    read: list[int] = []
    with pytest.raises(error):
        await submit(intake, stream([field(name, value), file_head(), *zeros(20 << 20), END], read))
    assert sum(read) < 1 << 20
    assert stored(settings) == []


async def test_a_bad_field_after_the_file_is_refused_and_the_file_removed(
    intake: Intake, settings: Settings, pool: asyncpg.Pool
) -> None:
    """A bad model after a 3 MB file (already flushed to the spool) is refused; nothing is left."""
    with pytest.raises(errors.ModelNotFound):
        await submit(intake, stream([file_head(), bytes(3 << 20), b"\r\n", field("model", "nope"), END[2:]]))
    assert stored(settings) == []
    assert await pool.fetchval("SELECT count(*) FROM jobs") == 0


async def test_a_good_submission_queues_a_job_stores_its_audio_and_rings(
    intake: Intake, settings: Settings, pool: asyncpg.Pool
) -> None:
    """Fields before and after the file: one queued job with those options, the audio at uploads/<sha256>,
    the local worker's doorbell rung."""
    audio = tone(440)
    accepted = await submit(
        intake, stream([field("model", "tiny.en"), file_head(), audio, b"\r\n", field("language", "en"), END[2:]])
    )
    row = accepted.job  # type: ignore[attr-defined]  # Accepted
    assert (row.status, row.model, row.options.language) == ("queued", "tiny.en", "en")
    assert stored(settings) == [settings.uploads_dir / row.audio_sha256]
    assert intake.hub.bell.is_set()
    assert await pool.fetchval("SELECT count(*) FROM jobs") == 1


async def test_a_body_without_a_file_is_a_400_and_leaves_nothing(intake: Intake, settings: Settings) -> None:
    """Good fields and no file part: 400 naming the 'file' field."""
    with pytest.raises(errors.BadRequest, match="no 'file' field"):
        await submit(intake, stream([field("model", "tiny.en"), END[2:]]))
    assert stored(settings) == []


async def test_queue_bound_holds_for_submissions_that_finish_together(
    intake: Intake, settings: Settings, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight uploads of different audio racing for a queue bounded at 3, all past the early count: exactly
    3 jobs go in, the others are 429 queue_full, and their audio is not kept (intake's own lock does it)."""
    count = queries.count_queued

    async def slow_count(conn: queries.Conn) -> int:
        n = await count(conn)
        await asyncio.sleep(0.05)  # widen the race: without intake's lock every submission counts 0
        return n

    monkeypatch.setattr(queries, "count_queued", slow_count)
    clips = [tone(300 + 50 * n) for n in range(8)]
    results = await asyncio.gather(
        *(submit(intake, stream([file_head(), clip, END])) for clip in clips), return_exceptions=True
    )
    refused = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(r, errors.QueueFull) for r in refused), refused
    assert len(refused) == 5
    assert await pool.fetchval("SELECT count(*) FROM jobs WHERE status = 'queued'") == 3
    kept = await pool.fetch("SELECT audio_sha256 FROM jobs")
    assert stored(settings) == sorted(settings.uploads_dir / r["audio_sha256"] for r in kept)
