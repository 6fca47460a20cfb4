"""What a crash leaves in uploads/ is swept by the daemon; what a job or an upload in progress needs stays."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg

from asr_daemon import queries
from tests.conftest import Daemon

DAY = 86400


def plant(path: Path, data: bytes, age_s: float) -> Path:
    """Write `data` to `path` with a modification time `age_s` seconds in the past."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


async def test_start_sweeps_orphan_parts_and_unreferenced_audio(
    make_daemon: Callable[..., Daemon], jfk: Path, database: str
) -> None:
    """Old temporary files (uploads, Wyoming recordings, reference samples) and old audio without a job
    row are deleted; referenced audio and fresh files stay."""
    daemon = make_daemon(start=False)
    uploads = daemon.state_dir / "uploads"
    old_part = plant(uploads / "tmp" / f"{uuid.uuid4().hex}.part", b"half an upload", 2 * DAY)
    fresh_part = plant(uploads / "tmp" / f"{uuid.uuid4().hex}.part", b"an upload in progress", 60)
    old_recording = plant(uploads / "tmp" / f"wyoming-{uuid.uuid4().hex}.wav", b"RIFF voice command", 2 * DAY)
    old_reference = plant(uploads / "tmp" / "ref-x1y2z3", b"a known speaker's sample", 2 * DAY)
    fresh_recording = plant(uploads / "tmp" / f"wyoming-{uuid.uuid4().hex}.wav", b"RIFF being spoken", 60)
    orphan = plant(uploads / hashlib.sha256(b"orphan").hexdigest(), b"committed, then kill -9", 2 * DAY)
    just_committed = plant(uploads / hashlib.sha256(b"new").hexdigest(), b"its row is being inserted", 60)
    forgotten = plant(uploads / hashlib.sha256(b"gone").hexdigest(), b"retention died before unlink", 2 * DAY)
    data = jfk.read_bytes()
    kept = plant(uploads / hashlib.sha256(data).hexdigest(), data, 2 * DAY)
    conn = await asyncpg.connect(database)
    try:
        for sha, deleted in ((kept.name, None), (forgotten.name, "now()")):
            await conn.execute(
                "INSERT INTO jobs (id, status, model, fingerprint, audio_sha256, audio_bytes, duration_s, finished_at,"
                f" audio_deleted_at) VALUES ($1, 'completed', 'tiny.en', $2, $3, 1, 6, now(), {deleted or 'NULL'})",
                uuid.uuid4(),
                sha,
                sha,
            )
    finally:
        await conn.close()
    daemon.start()
    deadline = time.monotonic() + 30
    while '"orphans_swept"' not in daemon.logs() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert '"orphans_swept"' in daemon.logs()
    assert not old_part.exists() and not orphan.exists() and not forgotten.exists()
    assert not old_recording.exists() and not old_reference.exists()
    assert fresh_part.exists() and just_committed.exists() and kept.exists() and fresh_recording.exists()
    assert '"orphan_audio_removed"' in daemon.logs()


async def test_an_upload_waits_for_a_purge_holding_its_audio(
    make_daemon: Callable[..., Daemon], jfk: Path, database: str
) -> None:
    """An upload whose audio a purge (another process) is deleting waits for the purge's lock, then
    stores the file again: its job finds its audio (the upload takes the lock before reusing the file)."""
    daemon = make_daemon()
    data = jfk.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    purge = await asyncpg.connect(database)
    try:
        tx = purge.transaction()
        await tx.start()
        await purge.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", queries.AUDIO_LOCK_SPACE, sha)
        with daemon.client() as c, ThreadPoolExecutor(1) as pool:
            posted = pool.submit(c.post, "/v1/audio/transcriptions", files={"file": ("jfk.flac", data)})
            await asyncio.sleep(2)
            assert not posted.done(), "the upload did not wait for the purge's lock on its audio"
            await tx.commit()
            assert posted.result(timeout=120).status_code == 200
    finally:
        await purge.close()
    assert (daemon.state_dir / "uploads" / sha).exists()
