"""Live sessions' limits and bad input (issue 21): each refusal is an `error` event with a clear code or a
close with a reason, the session (or the daemon) goes on, and live and file work do not starve each other."""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests import live
from tests.conftest import Daemon
from tests.e2e.test_live import SENTENCE, job_of, words

APPEND_CAP = 65536


@pytest.fixture(scope="module")
def d(make_module_daemon: Callable[..., Daemon]) -> Daemon:
    """A daemon with small live limits (2 sessions per key, 64 KiB per append, 300 events/s)."""
    return make_module_daemon(
        ASR_LIVE_MAX_SESSIONS_PER_KEY="2",
        ASR_LIVE_MAX_APPEND_BYTES=str(APPEND_CAP),
        ASR_LIVE_MAX_EVENTS_PER_S="300",
    )


def configured(d: Daemon, **kw: Any) -> Any:
    """A session configured for manual commits."""
    conn = live.ws(d.url, **kw)
    live.send(conn, live.session_update(vad=None))
    live.until(conn, "session.updated")
    return conn


def close_of(conn: Any, timeout: float = 30) -> Any:
    """The close frame the server sent (every event before it is read and dropped)."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            conn.recv(timeout=timeout)
    return closed.value.rcvd


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("{not json", "invalid_json"),
        ("[1, 2]", "invalid_event"),
        ('{"type": "response.create"}', "unknown_event"),
        ('{"type": 7}', "unknown_event"),
        ('{"type": "input_audio_buffer.append", "audio": "@@not base64@@"}', "invalid_base64"),
        ('{"type": "input_audio_buffer.append", "audio": 5}', "invalid_type"),
        ('{"type": "session.update", "session": {"type": "realtime"}}', "invalid_value"),
        ('{"type": "session.update", "session": {"audio": {"input": {"format": {"rate": 44100}}}}}', "invalid_value"),
        (
            '{"type": "session.update", "session": {"audio": {"input": {"format": {"type": "audio/ogg"}}}}}',
            "invalid_value",
        ),
        (
            '{"type": "session.update", "session": {"audio": {"input": {"transcription": {"language": "xx"}}}}}',
            "invalid_value",
        ),
        (
            '{"type": "session.update", "session": {"audio": {"input": {"transcription": {"model": "nope"}}}}}',
            "model_not_found",
        ),
        (
            '{"type": "session.update", "session": {"audio": {"input": {"turn_detection": {"threshold": 7}}}}}',
            "invalid_value",
        ),
        ('{"type": "session.update", "session": "x"}', "invalid_type"),
    ],
)
def test_bad_events_get_an_error_and_the_session_goes_on(d: Daemon, message: str, code: str) -> None:
    """Each bad event is answered by an `error` with its code; the session still transcribes afterwards."""
    with configured(d) as conn:
        conn.send(message)
        err, _ = live.until(conn, "error")
        assert err["error"]["code"] == code, err
        assert err["error"]["type"] == "invalid_request_error" and err["error"]["message"]
        live.send(conn, {"type": "input_audio_buffer.append", "audio": next(live.chunks(live.silence(0.2), 9600))})
        live.send(conn, {"type": "input_audio_buffer.commit"})
        live.until(conn, "conversation.item.input_audio_transcription.completed")


def test_binary_frames_and_append_before_configuration_are_refused(d: Daemon) -> None:
    """A binary frame and an append before session.update each get an error; the session stays usable."""
    with live.ws(d.url) as conn:
        conn.send(b"\x00\x01")
        err, _ = live.until(conn, "error")
        assert err["error"]["code"] == "invalid_event"
        live.send(conn, {"type": "input_audio_buffer.append", "audio": "AAAA"})
        err, _ = live.until(conn, "error")
        assert err["error"]["code"] == "session_not_configured"
        live.send(conn, live.session_update(vad=None))
        live.until(conn, "session.updated")


def test_append_over_the_cap_is_refused_and_a_huge_message_closes(d: Daemon) -> None:
    """An append over ASR_LIVE_MAX_APPEND_BYTES gets `audio_too_large`; a message far past it closes with 1009."""
    with configured(d) as conn:
        live.send(
            conn, {"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\0" * (APPEND_CAP + 4096)).decode()}
        )
        err, _ = live.until(conn, "error")
        assert err["error"]["code"] == "audio_too_large"
        conn.send(json.dumps({"type": "input_audio_buffer.append", "audio": "A" * (4 * APPEND_CAP)}))
        rcvd = close_of(conn)
    assert rcvd is not None and rcvd.code == 1009 and "too large" in rcvd.reason


def test_a_flood_of_tiny_appends_is_closed(d: Daemon) -> None:
    """More events per second than allowed: an error, then a close with 1008 and a reason."""
    with configured(d) as conn:
        tiny = json.dumps({"type": "input_audio_buffer.append", "audio": "AAAA"})
        with contextlib.suppress(ConnectionClosed):  # closed while the flood goes on, or just after
            for _ in range(3000):
                conn.send(tiny)
        rcvd = close_of(conn)
    assert rcvd is not None and rcvd.code == 1008 and "too many events" in rcvd.reason


def test_a_client_that_stops_reading_is_closed_and_others_are_unaffected(d: Daemon) -> None:
    """A client that never reads while the server has much to say is closed; another session meanwhile works."""
    with configured(d, max_queue=1) as slow:
        bad = '{"type": "nope", "event_id": "' + "x" * 2000 + '"}'  # each answered with an error event
        with pytest.raises((ConnectionClosed, TimeoutError)):
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                for _ in range(200):
                    slow.send(bad)
                time.sleep(0.8)  # under the events-per-second cap
        with configured(d) as other:
            live.send(other, {"type": "input_audio_buffer.append", "audio": next(live.chunks(live.silence(0.2), 9600))})
            live.send(other, {"type": "input_audio_buffer.commit"})
            live.until(other, "conversation.item.input_audio_transcription.completed")


def test_sessions_per_key_are_capped_and_slots_come_back(d: Daemon) -> None:
    """A third session of one key is refused with `session_limit_reached` and 1013; closing one frees a slot."""
    one, two = configured(d), configured(d)
    assert "asr_live_sessions 2.0" in httpx.get(d.url + "/metrics").text
    with live.ws(d.url) as third:
        err, _ = live.until(third, "error")
        assert err["error"]["code"] == "session_limit_reached"
        rcvd = close_of(third)
        assert rcvd is not None and rcvd.code == 1013
    one.close()
    two.close()
    deadline = time.monotonic() + 30
    while True:  # the server notices the closes
        with live.ws(d.url) as again:
            first, _ = live.until(again, "session.created")
            if first["type"] == "session.created":
                live.send(again, live.session_update(vad=None))
                live.until(again, "session.updated")
                break
        assert time.monotonic() < deadline
    deadline = time.monotonic() + 30
    while "asr_live_sessions 0.0" not in httpx.get(d.url + "/metrics").text:  # nothing left open
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_intent_other_than_transcription_is_refused(d: Daemon) -> None:
    """A conversation session (`intent` other than transcription) is refused with a clear error and a close."""
    with live.ws(d.url, query="intent=conversation") as conn:
        err, _ = live.until(conn, "error")
        assert err["error"]["code"] == "unsupported_intent"
        assert close_of(conn).code == 1008


def test_idle_and_session_length_limits_and_the_total_cap(
    make_daemon: Callable[..., Daemon],
) -> None:
    """No audio for ASR_LIVE_IDLE_TIMEOUT closes a session; so does ASR_LIVE_MAX_SESSION_S; the total cap refuses."""
    d = make_daemon(ASR_LIVE_IDLE_TIMEOUT="2", ASR_LIVE_MAX_SESSION_S="5", ASR_LIVE_MAX_SESSIONS="1")
    with configured(d) as idle:
        with live.ws(d.url) as refused:
            err, _ = live.until(refused, "error")
            assert err["error"]["code"] == "session_limit_reached" and "at most 1" in err["error"]["message"]
        err, _ = live.until(idle, "error", timeout=30)
        assert err["error"]["code"] == "idle_timeout"
        assert close_of(idle).reason == "idle timeout"
    time.sleep(0.5)
    with configured(d) as long:
        t0 = time.monotonic()
        with pytest.raises(ConnectionClosed):
            while time.monotonic() - t0 < 30:
                live.send(long, {"type": "input_audio_buffer.append", "audio": next(live.chunks(live.silence(0.1)))})
                time.sleep(0.3)
        assert long.close_code == 1000 and long.close_reason == "session length limit reached"
        assert 4.5 < time.monotonic() - t0 < 15


@pytest.mark.slow
def test_live_and_file_jobs_do_not_starve_each_other(d: Daemon, speech: Callable[..., Path], two_minutes: Path) -> None:
    """A file job submitted during a live session completes, and the session's utterances complete meanwhile."""
    with d.client() as c:
        r = c.post("/v1/jobs", files={"file": two_minutes.open("rb")})
        assert r.status_code == 202, r.text
        file_job = r.json()["id"]
    audio = live.pcm(speech(SENTENCE))
    with configured(d) as conn:
        for _ in range(2):
            for piece in live.chunks(audio):
                live.send(conn, {"type": "input_audio_buffer.append", "audio": piece})
                time.sleep(0.1)
            live.send(conn, {"type": "input_audio_buffer.commit"})
            done, _ = live.until(conn, "conversation.item.input_audio_transcription.completed", timeout=120)
            assert "thousand miles" in words(done["transcript"])
        with d.client() as c:
            assert c.get(f"/v1/jobs/{file_job}").json()["progress"]["processed_s"] > 0  # it ran meanwhile
    assert job_of(d, file_job, timeout=300)["status"] == "completed"


def test_a_frame_over_granians_limit_drops_only_that_session(daemon: Daemon) -> None:
    """A 17 MiB frame (past Granian's 16 MiB transport limit) cuts that connection; its job is completed
    and the daemon serves the next session."""
    conn = live.ws(daemon.url, max_size=None)
    live.send(conn, live.session_update(vad=None))
    updated, _ = live.until(conn, "session.updated")
    with contextlib.suppress(ConnectionClosed):
        conn.send(json.dumps({"type": "input_audio_buffer.append", "audio": "A" * (17 << 20)}))
    close_of(conn)
    assert job_of(daemon, updated["session"]["job_id"])["status"] == "completed"
    with configured(daemon) as again:
        live.send(again, {"type": "input_audio_buffer.clear"})
        live.until(again, "input_audio_buffer.cleared")
