"""Where a live session's utterances begin and end, and what becomes of one whose decode fails (real
PostgreSQL, real tiny.en and Silero, a real LiveManager and LiveSession; the WebSocket is the in-memory
stand-in of test_live_backpressure). The failures are injected by replacing the token budget with one
that overflows Whisper's context, so faster-whisper itself refuses the decode (the bug fixed, named as such)."""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from asr_daemon.config import Settings
from asr_daemon.engine import budget, models
from asr_daemon.live.manager import LiveManager
from asr_daemon.live.session import LiveSession
from asr_daemon.pipeline.queue import Hub
from tests import live
from tests.conftest import STORY
from tests.integration.test_live_backpressure import Socket
from tests.integration.test_live_reaper import pool
from tests.unit.test_live_budget import GLOSSARY

__all__ = ["pool"]  # a fixture, imported for pytest

A = "The quick brown fox jumps over the lazy dog."
B = "Fresh bread and warm soup wait on the kitchen table."
COMPLETED = "conversation.item.input_audio_transcription.completed"
FAILED = "conversation.item.input_audio_transcription.failed"


class Session:
    """One live session served in-process: its socket, its LiveSession, the task serving it."""

    def __init__(self, pool: asyncpg.Pool, models_dir: Path, tmp_path: Path) -> None:
        (tmp_path / "uploads").mkdir()
        (tmp_path / "models").symlink_to(models_dir)
        s = Settings(database_url="postgresql://unused", state_dir=tmp_path, workers=1, model="tiny.en")
        self.m = LiveManager(s, pool, models.cache_from_settings(s), Hub(aioredis.Redis(port=1), 1.0), "host:1:live")
        self.sock = Socket()
        self.sess = LiveSession(self.sock, self.m, None, None)
        self.m.admit(self.sess)
        self.serve = asyncio.create_task(self.m.serve(self.sess))

    def send(self, pcm16k: bytes) -> None:
        """Append 16 kHz 16-bit audio in 100 ms pieces (all at once: faster than real time)."""
        for i in range(0, len(pcm16k), 3200):
            self.sock.put(
                {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm16k[i : i + 3200]).decode()}
            )

    async def until(self, *kinds: str, count: int = 1, timeout: float = 90) -> list[dict[str, Any]]:
        """The events of the `kinds` sent so far, once there are `count` of them."""
        for _ in range(int(timeout / 0.05)):
            got = [e for e in self.sock.sent if e["type"] in kinds]
            if len(got) >= count:
                return got
            await asyncio.sleep(0.05)
        raise AssertionError(f"fewer than {count} {kinds}: {[e['type'] for e in self.sock.sent]}")

    async def close(self) -> None:
        """The client leaves; the session ends its job."""
        self.sock.inbox.put_nowait({"type": "websocket.disconnect"})
        await asyncio.wait_for(self.serve, 120)

    def edges(self) -> list[tuple[int, int]]:
        """(speech_started ms, speech_stopped ms) of each utterance, in order."""
        starts = [e["audio_start_ms"] for e in self.sock.sent if e["type"] == "input_audio_buffer.speech_started"]
        stops = [e["audio_end_ms"] for e in self.sock.sent if e["type"] == "input_audio_buffer.speech_stopped"]
        return list(zip(starts, stops, strict=True))


def pcm(speech: Callable[..., Path], text: str, silence_s: float = 1.5) -> bytes:
    """`text` spoken, then `silence_s` of silence, as 16 kHz 16-bit PCM."""
    return live.pcm(speech(text), 16000) + live.silence(silence_s, 16000)


async def test_a_session_update_after_audio_keeps_the_vads_place_in_the_stream(
    pool: asyncpg.Pool, models_dir: Path, tmp_path: Path, speech: Callable[..., Path]
) -> None:
    """Updates between utterances (same VAD options; new ones) and within one: every utterance after them is
    found where it is, stops after it starts and is transcribed (a rebuilt VAD counted from 0 lost it)."""
    s = Session(pool, models_dir, tmp_path)
    s.sock.put(live.session_update(rate=16000))
    s.send(pcm(speech, A))
    await s.until(COMPLETED)
    s.sock.put(live.session_update(rate=16000, language="en"))  # the VAD's options stay: the same VAD goes on
    s.send(pcm(speech, B))
    await s.until(COMPLETED, count=2)
    first = live.pcm(speech(A), 16000)
    half = len(first) // 2 // 2 * 2
    s.send(live.silence(0.5, 16000) + first[:half])
    s.sock.put(live.session_update(rate=16000, vad={"type": "server_vad", "silence_duration_ms": 700}))  # mid-speech
    s.send(first[half:] + live.silence(1.5, 16000))
    done = await s.until(COMPLETED, count=3)
    await s.close()
    edges = s.edges()
    assert len(edges) == 3, edges
    for i, (start, stop) in enumerate(edges):
        assert stop > start + 2000, edges
        assert i == 0 or start >= edges[i - 1][1], edges
    texts = [e["transcript"].lower() for e in done]
    assert "lazy" in texts[0] and "kitchen" in texts[1] and "lazy" in texts[2] and "quick" in texts[2], texts
    assert all(e["usage"]["seconds"] > 2 for e in done)
    assert edges[1][0] > edges[0][1] + 1000  # B starts after A's trailing silence, in the stream's time


async def test_prefix_padding_longer_than_the_silence_never_overlaps_the_last_utterance(
    pool: asyncpg.Pool, models_dir: Path, tmp_path: Path, speech: Callable[..., Path]
) -> None:
    """prefix_padding_ms 2000 with silence_duration_ms 200: the second utterance starts where the first ended,
    not inside it, and neither its text nor its stored segments repeat the first's."""
    s = Session(pool, models_dir, tmp_path)
    vad = {"type": "server_vad", "silence_duration_ms": 200, "prefix_padding_ms": 2000}
    s.sock.put(live.session_update(rate=16000, vad=vad))
    s.send(pcm(speech, A, 0.6) + pcm(speech, B))
    done = await s.until(COMPLETED, count=2)
    updated = await s.until("session.updated")
    await s.close()
    (_, stop1), (start2, _) = s.edges()
    assert start2 >= stop1, s.edges()
    assert "lazy" in done[0]["transcript"].lower()
    assert "lazy" not in done[1]["transcript"].lower() and "kitchen" in done[1]["transcript"].lower()
    rows = await pool.fetch("SELECT start_s, end_s FROM segments WHERE job_id = $1 ORDER BY seq",
                            updated[0]["session"]["job_id"])  # fmt: skip
    assert len(rows) >= 2 and all(b["start_s"] >= a["end_s"] for a, b in itertools.pairwise(rows))


def _old_cap(previous: int, fixed: int, audio_s: float) -> tuple[int, int]:
    """The budget before the fix: faster-whisper's whole kept prompt, new tokens blind to it."""
    return min(previous, budget.KEEP), min(440, int(12 * audio_s) + 24)


async def test_a_final_decode_that_raises_is_retried_without_prompt_or_prefix(
    pool: asyncpg.Pool, models_dir: Path, tmp_path: Path, speech: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """With the old budget a long prompt makes faster-whisper refuse the final decode; the session decodes the
    utterance again plainly, so the client still gets its text and the job its segments."""
    monkeypatch.setattr(budget, "plan", _old_cap)
    caplog.set_level(logging.INFO)
    s = Session(pool, models_dir, tmp_path)
    s.sock.put(live.session_update(rate=16000, vad=None, prompt=GLOSSARY))
    s.send(live.pcm(speech(" ".join(STORY[:3])), 16000))
    s.sock.put({"type": "input_audio_buffer.commit"})
    done = await s.until(COMPLETED, FAILED)
    job_id = (await s.until("session.updated"))[0]["session"]["job_id"]
    await s.close()
    assert done[0]["type"] == COMPLETED and "thousand miles" in done[0]["transcript"].lower(), done
    assert any(r.message == "live_final_decode_retried" for r in caplog.records)
    assert await pool.fetchval("SELECT status FROM jobs WHERE id = $1", job_id) == "completed"
    assert await pool.fetchval("SELECT count(*) FROM segments WHERE job_id = $1", job_id) >= 2


async def test_a_failed_utterance_leaves_the_job_to_a_worker_not_completed_without_it(
    pool: asyncpg.Pool, models_dir: Path, tmp_path: Path, speech: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:  # fmt: skip
    """An utterance that cannot be decoded at all: the client gets `failed` for it and its later utterances'
    text live; the job stores only what came before it and is queued, so a worker transcribes the rest."""

    def broken_past_5_s(previous: int, fixed: int, audio_s: float) -> tuple[int, int]:
        return (0, budget.MAX_LENGTH) if audio_s > 5 else real(previous, fixed, audio_s)

    real = budget.plan
    monkeypatch.setattr(budget, "plan", broken_past_5_s)
    s = Session(pool, models_dir, tmp_path)
    s.sock.put(live.session_update(rate=16000, vad=None))
    for text in (B, STORY[1], A):  # 3.3 s, 6.5 s (its decode fails), 3 s
        s.send(live.pcm(speech(text), 16000))
        s.sock.put({"type": "input_audio_buffer.commit"})
    done = await s.until(COMPLETED, FAILED, count=3)
    job_id = (await s.until("session.updated"))[0]["session"]["job_id"]
    await s.close()
    assert [e["type"] for e in done] == [COMPLETED, FAILED, COMPLETED], done
    assert "lazy" in done[2]["transcript"].lower()  # the client still hears what came after
    job = await pool.fetchrow("SELECT status, worker, duration_s FROM jobs WHERE id = $1", job_id)
    assert job["status"] == "queued" and job["worker"] is None and job["duration_s"] > 10
    ends = await pool.fetch("SELECT end_s FROM segments WHERE job_id = $1", job_id)
    first_s = len(live.pcm(speech(B), 16000)) / 32000
    assert ends and all(r["end_s"] <= first_s + 0.5 for r in ends)  # a worker resumes from the end of B
