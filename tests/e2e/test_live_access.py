"""Who may use live transcription, and how it ends, against the real daemon with real clients (raw
WebSocket, httpx, the openai SDK): handshake refusals say why, revoking a key ends its live access,
client secrets are capped per key, a cancel stops the backlog, nested JSON is a plain error."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI
from websockets.exceptions import ConnectionClosed, ConnectionClosedError

from tests import live
from tests.conftest import STORY, Daemon
from tests.e2e.test_keys import asrctl, bearer, create_key
from tests.e2e.test_live import SENTENCE, job_of, words

NESTED = "[" * 100000 + "]" * 100000  # RecursionError in json.loads
NESTED_LARGE = "[" * 600000 + "]" * 600000  # over session.LARGE_APPEND: parsed in a thread


def refusal(conn: Any) -> tuple[dict[str, Any], Any]:
    """The error event a refused handshake sends first, and the close frame after it."""
    err = json.loads(conn.recv(timeout=30))
    with pytest.raises(ConnectionClosed) as closed:
        conn.recv(timeout=30)
    return err, closed.value.rcvd


def appended(conn: Any, audio: bytes, size: int = 48000) -> None:
    """Send `audio` (24 kHz PCM) as appends."""
    for piece in live.chunks(audio, size):
        live.send(conn, {"type": "input_audio_buffer.append", "audio": piece})


@pytest.fixture(scope="module")
def shared(make_module_daemon: Callable[..., Daemon]) -> Daemon:
    """A daemon (keys optional on loopback) whose callers may hold 3 client secrets each."""
    return make_module_daemon(ASR_LIVE_MAX_SECRETS_PER_KEY="3")


def test_nested_json_is_an_error_event_and_the_session_goes_on(shared: Daemon) -> None:
    """JSON nested past the parser's depth (small, and over a megabyte) is answered `invalid_json`; the same
    session then transcribes; nothing crashed; the client-secret endpoint answers such a body with 400."""
    with live.ws(shared.url) as conn:
        live.send(conn, live.session_update(vad=None))
        live.until(conn, "session.updated")
        for text in (NESTED, NESTED_LARGE):
            conn.send(text)
            err, _ = live.until(conn, "error")
            assert err["error"]["code"] == "invalid_json" and err["error"]["type"] == "invalid_request_error"
        appended(conn, live.silence(0.3))
        live.send(conn, {"type": "input_audio_buffer.commit"})
        live.until(conn, "conversation.item.input_audio_transcription.completed")
    with shared.client() as c:
        r = c.post("/v1/realtime/client_secrets", content=NESTED, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"], r.text
    logs = shared.logs()
    assert "live_session_crashed" not in logs and "RecursionError" not in logs and "Traceback" not in logs


def test_client_secrets_are_capped_per_key_without_evicting_others(shared: Daemon) -> None:
    """Anonymous callers share one bucket: past ASR_LIVE_MAX_SECRETS_PER_KEY they get 429 with Retry-After and
    a clear message (the openai SDK raises RateLimitError with it); another key's secret still opens a session."""
    victim_key = create_key(shared.env["ASR_DATABASE_URL"], "victim")
    with shared.client() as c:
        r = c.post("/v1/realtime/client_secrets", headers=bearer(victim_key), json={"expires_after": {"seconds": 7200}})
        assert r.status_code == 200, r.text
        victim = r.json()["value"]
        codes = [c.post("/v1/realtime/client_secrets", json={}).status_code for _ in range(3)]
        assert codes == [200, 200, 200]
        r = c.post("/v1/realtime/client_secrets", json={})
        assert r.status_code == 429, r.text
        assert 1 <= int(r.headers["retry-after"]) <= 601
        assert "ASR_LIVE_MAX_SECRETS_PER_KEY" in r.json()["error"]["message"]
    sdk = openai.OpenAI(base_url=shared.url + "/v1", api_key="none", max_retries=0)
    with pytest.raises(openai.RateLimitError, match="unexpired client secrets"):
        sdk.realtime.client_secrets.create(session={"type": "transcription"})
    with live.ws(shared.url, subprotocols=["realtime", f"openai-insecure-api-key.{victim}"]) as conn:
        live.until(conn, "session.created")
    with shared.client() as c:  # the victim's own bucket still has room
        assert c.post("/v1/realtime/client_secrets", headers=bearer(victim_key), json={}).status_code == 200


async def sdk_first_events(url: str, api_key: str) -> tuple[list[Any], BaseException | None]:
    """What a user of the openai SDK's realtime client sees: the events it iterates, and what it raises."""
    client = AsyncOpenAI(base_url=url + "/v1", api_key=api_key)
    events: list[Any] = []
    try:
        async with client.realtime.connect(model="gpt-4o-transcribe", extra_query={"intent": "transcription"}) as conn:
            async for ev in conn:
                events.append(ev)
    except Exception as exc:  # noqa: BLE001  # what the SDK raises is what the test inspects
        return events, exc
    return events, None


def test_handshake_refusals_are_error_events_with_a_reason(make_daemon: Callable[..., Daemon], database: str) -> None:
    """With keys required: no key, an unknown key and a rate-limited key are accepted, told why in an `error`
    event (invalid_api_key / rate_limit_exceeded) and closed 1008 / 1013, never a bare 403; the openai SDK's
    realtime client yields that error event, then raises the close."""
    slow, good = create_key(database, "slow", "--rate", "2"), create_key(database, "good")
    d = make_daemon(ASR_AUTH="on")
    cases = [(None, None), ("asr_" + "x" * 43, None), (None, ["realtime", "openai-insecure-api-key.ek_unknown"])]
    for token, protocols in cases:
        with live.ws(d.url, token=token, subprotocols=protocols) as conn:
            err, rcvd = refusal(conn)
            assert err["type"] == "error" and err["error"]["code"] == "invalid_api_key", err
            assert err["error"]["message"] and rcvd.code == 1008 and rcvd.reason == "invalid API key"
    for _ in range(2):  # the key's two requests this minute
        with live.ws(d.url, token=slow) as conn:
            live.until(conn, "session.created")
    with live.ws(d.url, token=slow) as conn:
        err, rcvd = refusal(conn)
    assert err["error"]["code"] == "rate_limit_exceeded" and "retry in" in err["error"]["message"]
    assert rcvd.code == 1013
    events, raised = asyncio.run(sdk_first_events(d.url, "asr_" + "y" * 43))
    assert [e.type for e in events] == ["error"] and events[0].error.code == "invalid_api_key"
    assert isinstance(raised, ConnectionClosedError) and raised.rcvd is not None and raised.rcvd.code == 1008
    with live.ws(d.url, token=good) as conn:  # a valid key is served as before
        live.until(conn, "session.created")
    assert "Traceback" not in d.logs()


def test_revoking_a_key_ends_its_sessions_and_voids_its_client_secrets(
    make_daemon: Callable[..., Daemon], database: str, speech: Callable[..., Path]
) -> None:
    """After `asrctl keys revoke`: a client secret the key made before is refused at the handshake
    (invalid_api_key); its open session finishes what was committed, gets `invalid_api_key` and is closed
    1008 within a heartbeat, its job completed with that text; another key's session goes on."""
    alice, bob = create_key(database, "alice"), create_key(database, "bob")
    root = create_key(database, "root", "--admin")
    d = make_daemon(ASR_AUTH="on")
    with httpx.Client(base_url=d.url) as c:
        r = c.post("/v1/realtime/client_secrets", headers=bearer(alice), json={"expires_after": {"seconds": 7200}})
        assert r.status_code == 200, r.text
        secret = r.json()["value"]
    conn, other = live.ws(d.url, token=alice), live.ws(d.url, token=bob)
    for c_ in (conn, other):
        live.send(c_, live.session_update(vad=None))
    updated, _ = live.until(conn, "session.updated")
    live.until(other, "session.updated")
    appended(conn, live.pcm(speech(SENTENCE)))
    live.send(conn, {"type": "input_audio_buffer.commit"})
    live.until(conn, "input_audio_buffer.committed")
    assert asrctl(database, "keys", "revoke", "alice").returncode == 0
    t0 = time.monotonic()
    done, seen = live.until(conn, "error", timeout=30)
    assert done["error"]["code"] == "invalid_api_key" and "revoked" in done["error"]["message"]
    completed = [e for e in seen if e["type"] == "conversation.item.input_audio_transcription.completed"]
    assert completed and "quick brown fox" in words(completed[0]["transcript"])
    with pytest.raises(ConnectionClosed) as closed:
        conn.recv(timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert time.monotonic() - t0 < 15
    with httpx.Client(base_url=d.url, headers=bearer(root)) as c:
        job_id = updated["session"]["job_id"]
        assert c.get(f"/v1/jobs/{job_id}").json()["status"] == "completed"
        text = c.get(f"/v1/jobs/{job_id}/transcript", params={"format": "text"}).text
        assert "quick brown fox" in words(text)
    with live.ws(d.url, subprotocols=["realtime", f"openai-insecure-api-key.{secret}"]) as refused:
        err, rcvd = refusal(refused)
    assert err["error"]["code"] == "invalid_api_key" and rcvd.code == 1008
    appended(other, live.silence(0.3))  # bob's session is untouched
    live.send(other, {"type": "input_audio_buffer.commit"})
    live.until(other, "conversation.item.input_audio_transcription.completed")
    other.close()


def test_cancelling_a_live_job_stops_its_backlog(
    make_daemon: Callable[..., Daemon], speech: Callable[..., Path]
) -> None:
    """DELETE /v1/jobs/{id} of a session with six long utterances waiting for their decode: the session hears
    it at once (not at the next heartbeat, 20 s here) and closes within seconds without transcribing the
    backlog; the job is cancelled and no segment is stored after it closed."""
    daemon = make_daemon(ASR_HEARTBEAT_INTERVAL="20", ASR_STALE_AFTER="60")
    audio = live.pcm(speech(" ".join(STORY[:3])))  # about 18 s
    with live.ws(daemon.url) as conn:
        live.send(conn, live.session_update(vad=None))
        updated, _ = live.until(conn, "session.updated")
        job_id = updated["session"]["job_id"]
        for _ in range(6):
            appended(conn, audio, 96000)
            live.send(conn, {"type": "input_audio_buffer.commit"})
        for _ in range(6):
            live.until(conn, "input_audio_buffer.committed")
        with daemon.client() as c:
            assert c.delete(f"/v1/jobs/{job_id}").status_code == 200
        t0 = time.monotonic()
        after: list[str] = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                after.append(json.loads(conn.recv(timeout=60))["type"])
    took = time.monotonic() - t0
    assert closed.value.rcvd is not None and closed.value.rcvd.reason == "the session's job was cancelled"
    assert after.count("conversation.item.input_audio_transcription.completed") <= 2, after
    assert took < 8, took
    job = job_of(daemon, job_id, status="cancelled")
    assert job["status"] == "cancelled"
    with daemon.client() as c:
        first = c.get(f"/v1/jobs/{job_id}").json()["progress"]
        time.sleep(2)
        assert c.get(f"/v1/jobs/{job_id}").json()["progress"] == first  # nothing written after the close
