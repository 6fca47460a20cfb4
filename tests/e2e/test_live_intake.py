"""A live session's audio intake through a real daemon: the per-session audio cap, semantic_vad from the
openai SDK, a full disk and a PostgreSQL outage each end the session with a clear `error` event and close
code, one log line without a traceback, and a job that ends as a user would expect."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import resource
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from tests import live, services
from tests.conftest import Daemon
from tests.e2e.test_live import SENTENCE, job_of, sdk_session, words

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def capped(make_module_daemon: Callable[..., Daemon]) -> Daemon:
    """A daemon that accepts at most 60 s of audio per job (ASR_MAX_AUDIO_SECONDS)."""
    return make_module_daemon(ASR_MAX_AUDIO_SECONDS="60")


def events_until_closed(conn: Any, timeout: float = 60) -> tuple[list[dict[str, Any]], Any]:
    """Every event the server sends, and its close frame."""
    seen: list[dict[str, Any]] = []
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            seen.append(json.loads(conn.recv(timeout=timeout)))
    return seen, closed.value.rcvd


def error_codes(events: list[dict[str, Any]]) -> list[str]:
    """The codes of the `error` events."""
    return [e["error"]["code"] for e in events if e["type"] == "error"]


def live_lines(d: Daemon) -> list[dict[str, Any]]:
    """The daemon's structured log lines from the live package."""
    out = []
    for line in d.logs().splitlines():
        with contextlib.suppress(ValueError):
            rec = json.loads(line)
            if isinstance(rec, dict) and str(rec.get("logger", "")).startswith("asr_daemon.live"):
                out.append(rec)
    return out


def test_audio_past_max_audio_seconds_closes_the_session(capped: Daemon) -> None:
    """Silence sent 20 s per append as fast as the socket takes it, with server VAD (no decode backlog ever
    slows it): at 60 s stored the client gets `audio_limit_reached` and close 1000, and the job is completed
    with the 60 s accepted (it stored 2460 s, unbounded, before)."""
    conn = live.ws(capped.url)
    live.send(conn, live.session_update())
    updated, _ = live.until(conn, "session.updated")
    piece = base64.b64encode(live.silence(20.0)).decode()
    with contextlib.suppress(ConnectionClosed):
        for _ in range(8):
            live.send(conn, {"type": "input_audio_buffer.append", "audio": piece})
    seen, close = events_until_closed(conn)
    assert error_codes(seen) == ["audio_limit_reached"] and "60 s" in seen[-1]["error"]["message"]
    assert (close.code, close.reason) == (1000, "audio length limit reached")
    job = job_of(capped, updated["session"]["job_id"])
    assert job["status"] == "completed" and job["audio"]["duration_s"] == 60.0


def test_semantic_vad_from_the_openai_sdk_is_served_as_server_vad(capped: Daemon, speech: Callable[..., Path]) -> None:
    """The SDK's turn_detection `semantic_vad` (eagerness high) is accepted, not refused: the session runs
    server VAD with a 250 ms silence and transcribes the sentence."""
    audio = live.pcm(speech(SENTENCE)) + live.silence(live.SILENCE_S)
    events = asyncio.run(sdk_session(capped.url, audio, vad={"type": "semantic_vad", "eagerness": "high"}))
    assert not [e for e in events if e.type == "error"], events
    updated = next(e for e in events if e.type == "session.updated")
    vad = updated.session.audio.input.turn_detection
    assert vad.type == "server_vad" and vad.silence_duration_ms == 250
    text = " ".join(e.transcript for e in events if e.type == "conversation.item.input_audio_transcription.completed")
    assert "the quick" in words(text) and "lazy" in words(text)


def one_utterance(d: Daemon, clip: Path) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """A manual-commit session that said `clip`: (connection, its session.updated, the utterance's completed)."""
    conn = live.ws(d.url)
    live.send(conn, live.session_update(vad=None))
    updated, _ = live.until(conn, "session.updated")
    for piece in live.chunks(live.pcm(clip), 48000):
        live.send(conn, {"type": "input_audio_buffer.append", "audio": piece})
    live.send(conn, {"type": "input_audio_buffer.commit"})
    done, _ = live.until(conn, "conversation.item.input_audio_transcription.completed")
    return conn, updated, done


def limit_file_size(d: Daemon, size: int) -> None:
    """Set RLIMIT_FSIZE on every process of the daemon (Granian's workers too): a write past `size` bytes
    fails with EFBIG, as one on a full disk fails with ENOSPC (Python ignores SIGXFSZ)."""
    assert d.proc is not None
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            if os.getpgid(int(pid)) == d.proc.pid:
                resource.prlimit(int(pid), resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))


def test_a_full_disk_closes_the_session_with_insufficient_storage(
    make_daemon: Callable[..., Daemon], speech: Callable[..., Path]
) -> None:
    """When the audio file can grow no more (the file-size limit: 3 MB, 93 s), the client gets
    `insufficient_storage` and close 1013, the daemon logs one line without a traceback, and the job is
    completed with the audio stored and the text of the utterance transcribed before (it crashed with 1011
    and left the job running before)."""
    d = make_daemon()
    limit_file_size(d, 3_000_000)
    conn, updated, done = one_utterance(d, speech(SENTENCE))
    piece = base64.b64encode(live.silence(20.0)).decode()
    with contextlib.suppress(ConnectionClosed):
        for _ in range(6):
            live.send(conn, {"type": "input_audio_buffer.append", "audio": piece})
            live.send(conn, {"type": "input_audio_buffer.clear"})
    seen, close = events_until_closed(conn)
    assert error_codes(seen) == ["insufficient_storage"]
    assert close.code == 1013
    job = job_of(d, updated["session"]["job_id"])
    assert job["status"] == "completed" and 30 < job["audio"]["duration_s"] < 94
    with d.client() as c:
        text = c.get(f"/v1/jobs/{job['id']}/transcript", params={"format": "text"}).text
    assert words(text).startswith(words(done["transcript"]))  # then what the silence stored before the refusal gave
    stored = d.state_dir / "uploads" / f"live-{job['id'].replace('-', '')}"
    raw = stored.read_bytes()
    assert struct.unpack("<I", raw[40:44])[0] == len(raw) - 44  # the header tells the audio the file holds
    assert abs((len(raw) - 44) / 32000 - job["audio"]["duration_s"]) < 0.01
    lines = live_lines(d)
    assert [r["error"] for r in lines if r["event"] == "live_audio_not_stored"] == ["EFBIG"]
    assert not [r for r in lines if r["level"] == "error" and r["event"] != "live_audio_not_stored"], lines
    assert "Traceback" not in d.logs()


def test_a_database_outage_closes_the_session_with_server_unavailable(
    daemon: Daemon, pg: services.Postgres, speech: Callable[..., Path]
) -> None:
    """PostgreSQL stopped: a session.update gets `server_unavailable` and close 1013 (not a traceback and
    1011), whether its job exists yet or not; no job is made meanwhile, and once the database is back the
    open session's job is finished by a worker from its stored audio, its text kept."""
    before, updated, _ = one_utterance(daemon, speech(SENTENCE))
    fresh = live.ws(daemon.url)
    live.until(fresh, "session.created")
    pg.stop()
    try:
        live.send(before, live.session_update(vad=None, language="en"))
        live.send(fresh, live.session_update(vad=None))
        for conn in (before, fresh):
            seen, close = events_until_closed(conn)
            assert error_codes(seen) == ["server_unavailable"]
            assert (close.code, close.reason) == (1013, "the database is unavailable")
    finally:
        pg.start()
    lines = live_lines(daemon)
    assert len([r for r in lines if r["event"] == "live_database_unavailable"]) == 2
    assert not [r for r in lines if r["event"] == "live_session_crashed"]
    deadline = time.monotonic() + 90
    job = job_of(daemon, updated["session"]["job_id"], timeout=90)
    assert job["status"] == "completed" and time.monotonic() < deadline
    with daemon.client() as c:
        assert "quick brown fox" in words(c.get(f"/v1/jobs/{job['id']}/transcript", params={"format": "text"}).text)
        assert [j["id"] for j in c.get("/v1/jobs").json()["data"]] == [job["id"]]  # none from the refused one
