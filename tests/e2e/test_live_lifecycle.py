"""Live sessions across the daemon's life (issue 21): a crash keeps what was told and resumes the rest
from the stored audio, SIGTERM finishes the utterance and closes with a reason, a session is activity."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from websockets.exceptions import ConnectionClosed

from tests import live
from tests.conftest import Daemon
from tests.e2e.test_live import SECOND, SENTENCE, job_of, words


def stream(conn: Any, audio: bytes, realtime: bool = False) -> None:
    """Append `audio` in 100 ms pieces."""
    for piece in live.chunks(audio):
        live.send(conn, {"type": "input_audio_buffer.append", "audio": piece})
        if realtime:
            time.sleep(0.1)


@pytest.mark.slow
def test_crash_keeps_committed_utterances_and_resumes_the_rest(
    make_daemon: Callable[..., Daemon], speech: Callable[..., Path]
) -> None:
    """SIGKILL mid-session: the utterance the client got is kept as told; the next start finishes the job
    from the stored audio (the uncommitted sentence is transcribed too)."""
    d = make_daemon()
    with live.ws(d.url) as conn:
        live.send(conn, live.session_update(vad=None))
        updated, _ = live.until(conn, "session.updated")
        job_id = updated["session"]["job_id"]
        stream(conn, live.pcm(speech(SENTENCE)))
        live.send(conn, {"type": "input_audio_buffer.commit"})
        told, _ = live.until(conn, "conversation.item.input_audio_transcription.completed")
        stream(conn, live.pcm(speech(SECOND)) + live.silence(0.5))
        time.sleep(1.5)  # flushed to the file (not committed)
        d.stop(signal.SIGKILL)
    wav = d.state_dir / "uploads" / f"live-{job_id.replace('-', '')}"
    assert wav.stat().st_size > 44 + 2 * 16000 * 6
    d.start()
    job = job_of(d, job_id, timeout=60)
    assert job["status"] == "completed" and job["kind"] == "live", job
    with d.client() as c:
        segs = c.get(f"/v1/jobs/{job_id}/transcript", params={"format": "verbose_json"}).json()["segments"]
    text = " ".join(s["text"] for s in segs)
    assert words(text).startswith(words(told["transcript"]))  # nothing told was lost or changed
    assert "bread" in words(text) or "kitchen" in words(text), text  # resumed from the stored audio


@pytest.mark.slow
def test_a_late_heartbeat_does_not_hand_an_open_session_to_a_worker(
    make_daemon: Callable[..., Daemon], speech: Callable[..., Path]
) -> None:
    """Live heartbeats held back far past ASR_STALE_AFTER (as a loaded machine does): the reaper leaves
    the open session's job alone, so no worker finishes it from the stored audio meanwhile; every
    utterance is stored once and the session completes its own job."""
    d = make_daemon(ASR_HEARTBEAT_INTERVAL="120", ASR_STALE_AFTER="1")  # the reaper looks every 0.5 s
    with live.ws(d.url) as conn:
        live.send(conn, live.session_update(vad=None))
        updated, _ = live.until(conn, "session.updated")
        job_id = updated["session"]["job_id"]
        stream(conn, live.pcm(speech(SENTENCE)))
        live.send(conn, {"type": "input_audio_buffer.commit"})
        first, _ = live.until(conn, "conversation.item.input_audio_transcription.completed")
        time.sleep(4)  # the heartbeat (last moved by the stored segment) is now stale, several reaps passed
        with d.client() as c:
            job = c.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "running", job
        stream(conn, live.pcm(speech(SECOND)))
        live.send(conn, {"type": "input_audio_buffer.commit"})
        second, seen = live.until(conn, "conversation.item.input_audio_transcription.completed")
        assert not [e for e in seen if e["type"].endswith(".failed")], seen
    job = job_of(d, job_id, timeout=60)
    assert job["status"] == "completed" and job["kind"] == "live" and job["attempts"] == 1, job
    with d.client() as c:
        segs = c.get(f"/v1/jobs/{job_id}/transcript", params={"format": "verbose_json"}).json()["segments"]
    assert words(" ".join(s["text"] for s in segs)) == words(first["transcript"] + " " + second["transcript"])
    assert "job_reaped" not in d.logs()


def test_sigterm_finishes_the_utterance_and_closes_with_a_reason(
    make_daemon: Callable[..., Daemon], speech: Callable[..., Path], database: str
) -> None:
    """On SIGTERM the pending utterance is transcribed and sent, the socket closes with 1001 and a
    reason, and the job is completed with it."""
    d = make_daemon(ASR_DRAIN_TIMEOUT="30")
    with live.ws(d.url) as conn:
        live.send(conn, live.session_update(vad=None))
        updated, _ = live.until(conn, "session.updated")
        stream(conn, live.pcm(speech(SENTENCE)))
        time.sleep(0.5)
        assert d.proc is not None
        d.proc.send_signal(signal.SIGTERM)
        done, _ = live.until(conn, "conversation.item.input_audio_transcription.completed")
        assert "thousand miles" in words(done["transcript"])
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                conn.recv(timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert "shutting down" in closed.value.rcvd.reason
    assert d.proc is not None and d.proc.wait(30) == 0

    async def row() -> Any:
        conn = await asyncpg.connect(database)
        try:
            return await conn.fetchrow(
                "SELECT status, kind FROM jobs WHERE id = $1::uuid", updated["session"]["job_id"]
            )
        finally:
            await conn.close()

    job = asyncio.run(row())
    assert (job["status"], job["kind"]) == ("completed", "live")


@pytest.mark.slow
def test_utterances_left_undecoded_at_shutdown_are_finished_by_a_worker(
    make_daemon: Callable[..., Daemon], speech: Callable[..., Path]
) -> None:
    """A client that outran the decoder (many utterances committed at once) and a SIGTERM whose drain time
    runs out: the job is not marked completed with utterances missing; it is queued, and the next start's
    worker transcribes the utterances left, from the stored audio."""
    d = make_daemon(ASR_DRAIN_TIMEOUT="0.5")
    with live.ws(d.url) as conn:
        live.send(conn, live.session_update(vad=None))
        updated, _ = live.until(conn, "session.updated")
        job_id = updated["session"]["job_id"]
        for _ in range(4):
            stream(conn, live.pcm(speech(SENTENCE)))
            live.send(conn, {"type": "input_audio_buffer.commit"})
            stream(conn, live.pcm(speech(SECOND)))
            live.send(conn, {"type": "input_audio_buffer.commit"})
        for _ in range(8):  # every utterance accepted
            live.until(conn, "input_audio_buffer.committed")
        assert d.proc is not None
        d.proc.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed):
            while True:
                conn.recv(timeout=30)
    assert d.proc.wait(30) == 0
    assert '"live_session_left_to_a_worker"' in d.logs()
    d.start()
    job = job_of(d, job_id, timeout=120)
    assert job["status"] == "completed" and job["kind"] == "live", job
    with d.client() as c:
        segs = c.get(f"/v1/jobs/{job_id}/transcript", params={"format": "verbose_json"}).json()["segments"]
    # transcribed to the end of the stored audio (before: completed with the first utterances' text only);
    # the words themselves are tiny.en's on espeak, which a dithered copy of the speech can send astray
    assert segs[-1]["end"] >= job["audio"]["duration_s"] - 4, segs
    assert "kitchen" in words(segs[-1]["text"]) or "kitchen" in words(segs[-2]["text"]), segs


def test_an_open_session_is_activity_for_the_idle_watcher(daemon: Daemon) -> None:
    """While a session is open the access log's busy marker stays fresh; its line is written at the close."""
    log_dir = daemon.state_dir / "log"
    marker = log_dir / "access.busy"
    with live.ws(daemon.url) as conn:
        live.until(conn, "session.created")
        t0 = marker.stat().st_mtime
        time.sleep(6)  # longer than the marker's touch interval (5 s)
        assert marker.stat().st_mtime > t0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = [json.loads(x) for x in (log_dir / "access.log").read_text().splitlines()]
        ws = [x for x in lines if x["path"] == "/v1/realtime"]
        if ws:
            break
        time.sleep(0.1)
    assert ws and ws[0]["status"] == 101 and ws[0]["probe"] is False and ws[0]["duration_ms"] > 6000


def test_cancelling_the_job_closes_the_session_and_keeps_its_text(daemon: Daemon, speech: Callable[..., Path]) -> None:
    """DELETE /v1/jobs/{id} of a live session closes it with a reason; the job ends cancelled, segments kept."""
    with live.ws(daemon.url) as conn:
        live.send(conn, live.session_update(vad=None))
        updated, _ = live.until(conn, "session.updated")
        job_id = updated["session"]["job_id"]
        stream(conn, live.pcm(speech(SENTENCE)))
        live.send(conn, {"type": "input_audio_buffer.commit"})
        live.until(conn, "conversation.item.input_audio_transcription.completed")
        with daemon.client() as c:
            assert c.delete(f"/v1/jobs/{job_id}").status_code == 200
        with pytest.raises(ConnectionClosed):
            while True:
                conn.recv(timeout=30)
        assert conn.close_code == 1000 and "cancelled" in (conn.close_reason or "")
    job = job_of(daemon, job_id, status="cancelled")
    assert job["status"] == "cancelled"
    with daemon.client() as c:
        segs = c.get(f"/v1/jobs/{job_id}/events", headers={"Accept": "text/event-stream"}, timeout=10)
    assert "thousand" in segs.text
