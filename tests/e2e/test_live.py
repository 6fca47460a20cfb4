"""Live transcription over WebSocket (issue 21) with the official openai SDK and a raw client, against
the real daemon under Granian: protocol, partial text, durable jobs, auth."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI

from tests import live
from tests.conftest import Daemon

SENTENCE = "The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step."
SECOND = "Fresh bread and warm soup wait on the kitchen table."


@pytest.fixture(scope="module")
def shared(make_module_daemon: Callable[..., Daemon]) -> Daemon:
    """One daemon for this module's short checks."""
    return make_module_daemon()


def words(text: str) -> str:
    """Lower-case, punctuation stripped, spaces collapsed."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


async def sdk_session(url: str, audio: bytes, api_key: str = "none", **update: Any) -> list[Any]:
    """Stream `audio` (24 kHz PCM) through the SDK in real time-ish pieces; every event until two
    seconds of quiet after the last `completed`."""
    client = AsyncOpenAI(base_url=url + "/v1", api_key=api_key)
    events: list[Any] = []
    async with client.realtime.connect(model="gpt-4o-transcribe", extra_query={"intent": "transcription"}) as conn:
        await conn.session.update(session=live.session_update(**update)["session"])  # type: ignore[arg-type]
        async for ev in conn:  # the model is loaded once configured: then stream in real time
            events.append(ev)
            if ev.type == "session.updated":
                break
        for piece in live.chunks(audio):
            await conn.input_audio_buffer.append(audio=piece)
            await asyncio.sleep(0.1)  # real time: 100 ms of audio per append
        while True:
            try:
                ev = await asyncio.wait_for(conn.recv(), 20 if not events or events[-1].type != "x" else 2)
            except TimeoutError:
                break
            events.append(ev)
            if ev.type == "conversation.item.input_audio_transcription.completed" and _all_done(events):
                break
    return events


def _all_done(events: list[Any]) -> bool:
    committed = {e.item_id for e in events if e.type == "input_audio_buffer.committed"}
    done = {e.item_id for e in events if e.type.startswith("conversation.item.input_audio_transcription.")
            and e.type != "conversation.item.input_audio_transcription.delta"}  # fmt: skip
    return bool(committed) and committed <= done


def job_of(daemon: Daemon, job_id: str, status: str = "completed", timeout: float = 30) -> dict[str, Any]:
    """The job once it reached `status`."""
    deadline = time.monotonic() + timeout
    with daemon.client() as c:
        while True:
            job = c.get(f"/v1/jobs/{job_id}").json()
            if job["status"] == status or time.monotonic() > deadline:
                return job  # type: ignore[no-any-return]
            time.sleep(0.2)


def test_openai_sdk_transcribes_live_and_the_session_is_a_job(daemon: Daemon, speech: Callable[..., Path]) -> None:
    """The official SDK streams speech: VAD events, stable deltas, completed text; the session is a live job."""
    audio = live.pcm(speech(SENTENCE)) + live.silence(live.SILENCE_S)
    events = asyncio.run(sdk_session(daemon.url, audio))
    kinds = [e.type for e in events]
    assert kinds[0] == "session.created"
    assert "session.updated" in kinds
    for kind in ("input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                 "input_audio_buffer.committed"):  # fmt: skip
        assert kind in kinds, kinds
    completed = [e for e in events if e.type == "conversation.item.input_audio_transcription.completed"]
    text = " ".join(e.transcript for e in completed)
    assert "the quick" in words(text) and "thousand miles begins with a single step" in words(text)
    deltas = [e for e in events if e.type == "conversation.item.input_audio_transcription.delta"]
    assert deltas, "no partial text while speaking"
    for c in completed:  # the deltas of an item add up to its final text
        assert "".join(d.delta for d in deltas if d.item_id == c.item_id) == c.transcript
    job_id = next(e for e in events if e.type == "session.updated").session.model_extra["job_id"]
    job = job_of(daemon, job_id)
    assert job["status"] == "completed" and job["kind"] == "live"
    assert abs(job["audio"]["duration_s"] - len(audio) / 48000) < 0.2
    with daemon.client() as c:
        stored = c.get(f"/v1/jobs/{job_id}/transcript", params={"format": "text"}).text
        srt = c.get(f"/v1/jobs/{job_id}/transcript", params={"format": "srt"})
    assert words(stored) == words(text)
    assert srt.status_code == 200 and "-->" in srt.text


def test_manual_commits_without_vad_keep_times_from_the_session_start(
    daemon: Daemon, speech: Callable[..., Path]
) -> None:
    """turn_detection null: each commit is one utterance; stored segments are timed from the session's start."""
    first, second = live.pcm(speech(SENTENCE)), live.pcm(speech(SECOND))
    with live.ws(daemon.url) as conn:
        live.until(conn, "session.created")
        live.send(conn, live.session_update(vad=None))
        updated, _ = live.until(conn, "session.updated")
        assert updated["session"]["audio"]["input"]["turn_detection"] is None
        for audio in (first, second):
            for piece in live.chunks(audio, 48000):
                live.send(conn, {"type": "input_audio_buffer.append", "audio": piece})
            live.send(conn, {"type": "input_audio_buffer.commit"})
            done, seen = live.until(conn, "conversation.item.input_audio_transcription.completed")
            assert any(e["type"] == "input_audio_buffer.committed" for e in seen)
            assert done["content_index"] == 0 and done["transcript"]
        live.send(conn, {"type": "input_audio_buffer.commit"})  # nothing left: refused, the session goes on
        err, _ = live.until(conn, "error")
        assert err["error"]["code"] == "input_audio_buffer_commit_empty"
    job = job_of(daemon, updated["session"]["job_id"])
    with daemon.client() as c:
        segs = c.get(f"/v1/jobs/{job['id']}/transcript", params={"format": "verbose_json"}).json()["segments"]
    later = [s for s in segs if "bread" in words(s["text"]) or "soup" in words(s["text"])]
    assert later and later[0]["start"] >= len(first) / 48000 - 0.5, segs


def test_partial_text_arrives_while_audio_still_comes(daemon: Daemon, speech: Callable[..., Path]) -> None:
    """Stable deltas come before the utterance is committed, and the final text starts with them."""
    with live.ws(daemon.url) as conn:
        live.send(conn, live.session_update(vad=None))
        live.until(conn, "session.updated")
        for piece in live.chunks(live.pcm(speech(SENTENCE))):
            live.send(conn, {"type": "input_audio_buffer.append", "audio": piece})
            time.sleep(0.1)
        deltas: list[str] = []
        deadline = time.monotonic() + 60
        while not deltas and time.monotonic() < deadline:  # the speaker pauses: silence keeps coming
            live.send(conn, {"type": "input_audio_buffer.append", "audio": next(live.chunks(live.silence(0.1)))})
            with contextlib.suppress(TimeoutError):
                ev = json.loads(conn.recv(timeout=0.1))
                if ev["type"] == "conversation.item.input_audio_transcription.delta":
                    deltas.append(ev["delta"])
        assert deltas, "no partial text before the commit"
        live.send(conn, {"type": "input_audio_buffer.commit"})
        done, seen = live.until(conn, "conversation.item.input_audio_transcription.completed")
    deltas += [e["delta"] for e in seen if e["type"] == "conversation.item.input_audio_transcription.delta"]
    assert "".join(deltas) == done["transcript"]


def trimmed(pcm: bytes) -> bytes:
    """16-bit PCM without the near-silence espeak puts before and after the speech."""
    loud = [i for i in range(0, len(pcm) - 1, 2) if abs(int.from_bytes(pcm[i : i + 2], "little", signed=True)) > 300]
    return pcm[loud[0] : loud[-1] + 2] if loud else pcm


def test_a_pause_shorter_than_the_silence_keeps_one_utterance(daemon: Daemon, speech: Callable[..., Path]) -> None:
    """The final decode starts speculatively in a pause; speech after a 0.3 s pause voids it (the
    completed text has both halves), the silence that ends the utterance uses it; deltas stay a prefix."""
    first, second = trimmed(live.pcm(speech(SENTENCE))), trimmed(live.pcm(speech(SECOND)))
    audio = first + live.silence(0.3) + second + live.silence(live.SILENCE_S)
    with live.ws(daemon.url) as conn:
        live.send(conn, live.session_update(language="en"))
        updated, _ = live.until(conn, "session.updated")
        for piece in live.chunks(audio):
            live.send(conn, {"type": "input_audio_buffer.append", "audio": piece})
            time.sleep(0.1)
        done, seen = live.until(conn, "conversation.item.input_audio_transcription.completed")
    assert [e["type"] for e in seen].count("input_audio_buffer.committed") == 1
    text = words(done["transcript"])
    assert "thousand miles" in text and ("bread" in text or "kitchen" in text), text
    deltas = [e["delta"] for e in seen if e["type"] == "conversation.item.input_audio_transcription.delta"]
    assert "".join(deltas) == done["transcript"]
    job = job_of(daemon, updated["session"]["job_id"])
    assert job["timings"]["speculative"] >= 1 and job["timings"]["speculative_hits"] == 1, job["timings"]


@pytest.mark.parametrize(("fmt", "encoding", "rate", "bits"), [
    ({"type": "audio/pcmu"}, "mu-law", 8000, 8),
    ({"type": "audio/pcma"}, "a-law", 8000, 8),
    ({"type": "audio/pcm", "rate": 16000}, "signed", 16000, 16),
])  # fmt: skip
def test_other_wire_formats_transcribe(
    daemon: Daemon, speech: Callable[..., Path], fmt: dict[str, Any], encoding: str, rate: int, bits: int
) -> None:
    """G.711 μ-law and A-law (8 kHz) and 16 kHz PCM (our extension) are decoded to the same words."""
    audio = live.pcm(speech(SENTENCE), rate=rate, encoding=encoding, bits=bits)
    update = live.session_update(vad=None)
    update["session"]["audio"]["input"]["format"] = fmt
    with live.ws(daemon.url) as conn:
        live.send(conn, update)
        live.until(conn, "session.updated")
        for piece in live.chunks(audio, 8000):
            live.send(conn, {"type": "input_audio_buffer.append", "audio": piece})
        live.send(conn, {"type": "input_audio_buffer.commit"})
        done, _ = live.until(conn, "conversation.item.input_audio_transcription.completed")
    assert "thousand miles" in words(done["transcript"])


def test_beta_alias_and_clear(daemon: Daemon, speech: Callable[..., Path]) -> None:
    """`transcription_session.update` (beta) configures the session; `clear` drops the buffer and says so."""
    with live.ws(daemon.url) as conn:
        live.send(conn, {"type": "transcription_session.update", "session": {
            "input_audio_format": "pcm16", "input_audio_transcription": {"model": "whisper-1", "language": "en"},
            "turn_detection": None}})  # fmt: skip
        updated, _ = live.until(conn, "transcription_session.updated")
        assert updated["session"]["audio"]["input"]["transcription"]["language"] == "en"
        for piece in live.chunks(live.pcm(speech(SECOND))):
            live.send(conn, {"type": "input_audio_buffer.append", "audio": piece})
        live.send(conn, {"type": "input_audio_buffer.clear"})
        live.until(conn, "input_audio_buffer.cleared")
        live.send(conn, {"type": "input_audio_buffer.commit"})
        err, _ = live.until(conn, "error")
        assert err["error"]["code"] == "input_audio_buffer_commit_empty"


def test_keys_bearer_and_client_secret_in_subprotocol(make_daemon: Callable[..., Daemon]) -> None:
    """With keys required: Bearer works, no key is refused (invalid_api_key), a client secret opens a session via
    the subprotocol only (never the HTTP API), and an unknown secret is refused."""
    d = make_daemon(start=False, ASR_AUTH="on")
    key = _create_key(d)
    d.start()
    with live.ws(d.url) as refused:  # told why, then closed (not a bare 403)
        err, _ = live.until(refused, "error")
        assert err["error"]["code"] == "invalid_api_key"
    with live.ws(d.url, token=key) as conn:
        created, _ = live.until(conn, "session.created")
        assert created["session"]["type"] == "transcription"
    with httpx.Client(base_url=d.url) as c:
        assert c.post("/v1/realtime/client_secrets", json={}).status_code == 401
        r = c.post("/v1/realtime/client_secrets", headers={"Authorization": f"Bearer {key}"}, json={
            "expires_after": {"anchor": "created_at", "seconds": 60},
            "session": {"type": "transcription", "audio": {"input": {"turn_detection": None}}}})  # fmt: skip
        assert r.status_code == 200, r.text
        secret = r.json()["value"]
        assert secret.startswith("ek_") and r.json()["expires_at"] > time.time()
        assert c.get("/v1/jobs", headers={"Authorization": f"Bearer {secret}"}).status_code == 401
    with live.ws(d.url, subprotocols=["realtime", f"openai-insecure-api-key.{secret}"]) as conn:
        assert conn.subprotocol == "realtime"
        updated, _ = live.until(conn, "session.updated")  # the secret's configuration applies at once
        assert updated["session"]["audio"]["input"]["turn_detection"] is None
    with live.ws(d.url, subprotocols=["realtime", "openai-insecure-api-key.ek_unknown"]) as refused:
        err, _ = live.until(refused, "error")
        assert err["error"]["code"] == "invalid_api_key" and "unknown or expired" in err["error"]["message"]


def _create_key(d: Daemon) -> str:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "asr_daemon.cli", "keys", "create", "--name", "live"], env=d.env,
                         check=True, capture_output=True, text=True).stdout  # fmt: skip
    return next(t for t in out.split() if t.startswith("asr_"))


def test_events_are_json_objects_with_ids(daemon: Daemon) -> None:
    """Every server event has a type and an event_id; error events carry OpenAI's fields."""
    with live.ws(daemon.url) as conn:
        live.send(conn, {"type": "input_audio_buffer.append", "audio": "AAAA", "event_id": "ev1"})
        err, seen = live.until(conn, "error")
    assert all(isinstance(e.get("event_id"), str) for e in seen)
    assert err["error"]["code"] == "session_not_configured" and err["error"]["event_id"] == "ev1"
    assert set(err["error"]) >= {"type", "code", "message", "param", "event_id"}
    assert json.dumps(err)


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[1]",
        b'{"expires_after": {"seconds": 5}}',
        b'{"expires_after": {"anchor": "now", "seconds": 60}}',
        b'{"expires_after": {"seconds": "60"}}',
        b'{"expires_after": 60}',
        b'{"session": {"type": "realtime"}}',
        b'{"session": {"type": "transcription", "audio": {"input": {"format": {"rate": 1}}}}}',
    ],
)
def test_client_secret_requests_with_bad_bodies_are_400(shared: Daemon, body: bytes) -> None:
    """A malformed client-secret request is a 400 in the API's error shape, never a 500."""
    with shared.client() as c:
        r = c.post("/v1/realtime/client_secrets", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"]


def test_openai_sdk_creates_a_client_secret_that_opens_a_session(shared: Daemon) -> None:
    """The SDK's `client_secrets.create` returns an ek_ secret that opens a session browser-style."""
    from openai import OpenAI

    client = OpenAI(base_url=shared.url + "/v1", api_key="none")
    secret = client.realtime.client_secrets.create(
        expires_after={"anchor": "created_at", "seconds": 120},
        session={"type": "transcription", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}}}},
    )
    assert secret.value.startswith("ek_") and secret.expires_at > time.time() + 100
    assert secret.session.type == "transcription"
    with live.ws(shared.url, subprotocols=["realtime", f"openai-insecure-api-key.{secret.value}"]) as conn:
        live.until(conn, "session.updated")
