"""The live manager's heartbeat against real PostgreSQL (a real LiveManager and real LiveSessions; their
readers are idle tasks, no socket is read): sessions of a revoked key and of a cancelled job are ended, and
a job its session finished while the heartbeat ran is not reported lost."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from asr_daemon import keys
from asr_daemon.config import Settings
from asr_daemon.engine import models
from asr_daemon.live import store
from asr_daemon.live.manager import POLICY, Cancelled, LiveManager
from asr_daemon.live.session import LiveSession
from asr_daemon.pipeline.queue import Hub
from tests.integration.test_live_reaper import live_job, pool

__all__ = ["pool"]  # a fixture, imported for pytest


def manager(pool: asyncpg.Pool, tmp_path: Path) -> LiveManager:
    """A live manager on the test database (no model is loaded: nothing decodes here)."""
    s = Settings(database_url="postgresql://unused", state_dir=tmp_path, workers=1, model="tiny.en")
    return LiveManager(s, pool, models.cache_from_settings(s), Hub(aioredis.Redis(port=1), 1.0), "host:1:live")


async def open_session(m: LiveManager, tmp_path: Path, key_id: int | None = None) -> LiveSession:
    """A session with a running job and an audio file, its reader waiting for the client."""
    s = LiveSession(None, m, key_id, None)
    s.job_id = await live_job(m.pool, m.owner)
    s.audio = store.AudioFile(tmp_path / f"{s.id}.wav")
    s.reader = asyncio.create_task(asyncio.sleep(3600))  # type: ignore[arg-type]  # an idle reader
    m.sessions[s.id] = s
    return s


async def test_sessions_of_a_revoked_key_and_of_a_cancelled_job_are_ended(pool: asyncpg.Pool, tmp_path: Path) -> None:
    """One heartbeat ends the sessions of a revoked key (invalid_api_key, 1008) and forgets its client
    secrets, ends a cancelled job's session as a cancel (its backlog is not transcribed), and leaves others."""
    m = manager(pool, tmp_path)
    alice, _ = await keys.create(pool, "alice")
    bob, _ = await keys.create(pool, "bob")
    revoked, cancelled, other, anonymous = (
        await open_session(m, tmp_path, alice.id),
        await open_session(m, tmp_path),
        await open_session(m, tmp_path, bob.id),
        await open_session(m, tmp_path),
    )
    secret, _ = m.secrets.create(alice.id, "alice", False, 600, None)
    kept, _ = m.secrets.create(bob.id, "bob", False, 600, None)
    await m.beat()
    assert all(s.stop_reason is None for s in m.sessions.values())
    async with pool.acquire() as conn:
        await keys.revoke(conn, "alice")
    await pool.execute("UPDATE jobs SET cancel_requested = true WHERE id = $1", cancelled.job_id)
    await m.beat()
    assert revoked.stop_reason is not None and revoked.stop_reason.code == POLICY
    assert revoked.stop_reason.error is not None and revoked.stop_reason.error["error"]["code"] == "invalid_api_key"
    assert isinstance(cancelled.stop_reason, Cancelled)
    assert other.stop_reason is None and anonymous.stop_reason is None
    await asyncio.sleep(0)
    assert revoked.reader is not None and revoked.reader.cancelled()
    assert m.secrets.lookup(secret) is None and m.secrets.lookup(kept) is not None
    for s in m.sessions.values():
        assert s.reader is not None
        s.reader.cancel()


@pytest.mark.parametrize("closed_meanwhile", [True, False])
async def test_a_job_finished_while_the_heartbeat_ran_is_not_lost(
    pool: asyncpg.Pool, tmp_path: Path, database: str, caplog: pytest.LogCaptureFixture, closed_meanwhile: bool
) -> None:
    """The heartbeat's update waits on the row while the session finishes its job: no `live_job_lost`
    then; a job that left this process while its session stays open is still reported."""
    m = manager(pool, tmp_path)
    s = await open_session(m, tmp_path)
    other = await asyncpg.connect(database)
    try:
        tx = other.transaction()
        await tx.start()  # the session's close, holding the row while the heartbeat comes
        await other.execute("UPDATE jobs SET status = 'completed', worker = NULL WHERE id = $1", s.job_id)
        beat = asyncio.create_task(m.beat())
        for _ in range(200):  # until the heartbeat's update waits for the row
            waiting = await pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
            if waiting:
                break
            await asyncio.sleep(0.02)
        assert waiting, "the heartbeat did not wait for the row"
        s.job_closed = closed_meanwhile
        await tx.commit()
        with caplog.at_level(logging.WARNING):
            await beat
    finally:
        await other.close()
        assert s.reader is not None
        s.reader.cancel()
    lost = [r for r in caplog.records if r.getMessage() == "live_job_lost"]
    assert len(lost) == (0 if closed_meanwhile else 1)
