"""A live session's audio intake against real PostgreSQL and the real tiny.en (a real LiveManager and
LiveSession; the WebSocket is the in-memory stand-in of test_live_backpressure): one session stores at most
ASR_MAX_AUDIO_SECONDS, and a large append is decoded a piece at a time."""

from __future__ import annotations

import asyncio
import base64
import tracemalloc
from pathlib import Path

import asyncpg
import numpy as np
import pytest
import redis.asyncio as aioredis

from asr_daemon.config import Settings
from asr_daemon.engine import models
from asr_daemon.live import store
from asr_daemon.live.manager import LiveManager
from asr_daemon.live.session import LiveSession
from asr_daemon.pipeline.queue import Hub
from tests import live
from tests.integration.test_live_backpressure import Socket
from tests.integration.test_live_reaper import pool

__all__ = ["pool"]  # a fixture, imported for pytest

pytestmark = pytest.mark.slow


class ClosingSocket(Socket):
    """The stand-in, keeping the close frame's code and reason."""

    closed: tuple[int, str] | None = None

    async def close(self, code: int, reason: str) -> None:
        """Keep the close frame."""
        self.closed = (code, reason)


def manager(pool: asyncpg.Pool, models_dir: Path, tmp_path: Path, **settings: object) -> LiveManager:
    """A LiveManager on `tmp_path` with tiny.en and one decode slot."""
    (tmp_path / "uploads").mkdir()
    (tmp_path / "models").symlink_to(models_dir)
    s = Settings(database_url="postgresql://unused", state_dir=tmp_path, workers=1, model="tiny.en", **settings)  # type: ignore[arg-type]  # test overrides
    return LiveManager(s, pool, models.cache_from_settings(s), Hub(aioredis.Redis(port=1), 1.0), "host:1:live")


async def test_a_session_stores_at_most_max_audio_seconds(pool: asyncpg.Pool, models_dir: Path, tmp_path: Path) -> None:
    """Silence sent far faster than real time with server VAD (no backlog ever builds): the append that
    reaches ASR_MAX_AUDIO_SECONDS (30 s here) is kept up to it, the client gets `audio_limit_reached` and
    close 1000, nothing after it is stored, and the job is completed with exactly 30 s of audio."""
    m = manager(pool, models_dir, tmp_path, max_audio_seconds=30)
    sock = ClosingSocket()
    sess = LiveSession(sock, m, None, None)
    m.admit(sess)
    sock.put(live.session_update(rate=16000))
    for _ in range(5):
        sock.put({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\0\0" * 16000 * 12).decode()})
    await asyncio.wait_for(m.serve(sess), 120)
    errors = [e["error"]["code"] for e in sock.sent if e["type"] == "error"]
    assert errors == ["audio_limit_reached"] and sock.closed == (1000, "audio length limit reached")
    row = await pool.fetchrow("SELECT status, duration_s FROM jobs WHERE id = $1", sess.job_id)
    assert row is not None and (row["status"], row["duration_s"]) == ("completed", 30.0)
    assert sess.job_id is not None
    size = (tmp_path / "uploads" / store.audio_name(sess.job_id)).stat().st_size
    assert size == store.HEADER + 30 * 16000 * 2


async def test_a_large_ulaw_append_is_decoded_a_piece_at_a_time(
    pool: asyncpg.Pool, models_dir: Path, tmp_path: Path
) -> None:
    """One 11 MiB μ-law append (24 min of audio, under the 15 MiB cap) is decoded, stored and fed to the VAD
    5 s at a time: Python's peak allocation while it is handled stays near its own size (decoded at once:
    hundreds of MB), and every sample reaches the file."""
    m = manager(pool, models_dir, tmp_path)
    sock = ClosingSocket()
    sess = LiveSession(sock, m, None, None)
    m.admit(sess)
    ulaw_format = {"audio": {"input": {"format": {"type": "audio/pcmu"}}}}
    sock.put({"type": "session.update", "session": {"type": "transcription", **ulaw_format}})
    serve = asyncio.create_task(m.serve(sess))
    while sess.job_id is None:
        await asyncio.sleep(0.05)
    ulaw = np.random.default_rng(0).integers(0x70, 0x80, 11 << 20, dtype=np.uint8).tobytes()  # quiet noise
    event = {"type": "input_audio_buffer.append", "audio": base64.b64encode(ulaw).decode()}
    del ulaw
    tracemalloc.start()
    try:
        await sess.append(event)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 40 << 20, f"{peak / 2**20:.0f} MiB at the peak"
    sock.inbox.put_nowait({"type": "websocket.disconnect"})
    await asyncio.wait_for(serve, 120)
    assert sess.audio is not None
    assert abs(sess.audio.seconds - (11 << 20) / 8000) < 0.1
