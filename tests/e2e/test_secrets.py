"""What the daemon logs: never the database password, an API key, a transcript or audio."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Daemon
from tests.e2e.test_keys import bearer, create_key

SENTENCE = "Purple elephants negotiate quietly with submarine librarians on Thursday."
PASSWORD = "Zq8-hunter2-NeverLogMe"


def test_logs_hold_no_password_key_transcript_or_audio(
    make_daemon: Callable[..., Daemon], database: str, speech: Callable[..., Path]
) -> None:
    """At DEBUG, with a password in the DSN, a key in use, a bad key and a transcription: none of it is logged."""
    token = create_key(database, "logger-test")
    wrong = "asr_" + "W" * 43
    dsn = database.replace("postgres@", f"postgres:{PASSWORD}@")
    d = make_daemon(ASR_DATABASE_URL=dsn, ASR_AUTH="on", ASR_LOG_LEVEL="DEBUG")
    clip = speech(SENTENCE)
    with d.client() as c:
        r = c.post(
            "/v1/audio/transcriptions",
            files={"file": clip.open("rb")},
            headers=bearer(token),
            data={"response_format": "verbose_json"},
        )
        assert r.status_code == 200, r.text
        assert "librarians" in r.json()["text"].lower()
        assert c.get("/v1/jobs", headers=bearer(wrong)).status_code == 401
    d.stop(signal.SIGTERM)
    logged = d.logs()
    for extra in (d.state_dir / "log").glob("*"):
        logged += extra.read_text(errors="replace")
    assert "auth_rejected" in logged and "job_completed" in logged, "the test did not exercise the logs"
    assert '"job_transcript"' not in logged
    for secret in (PASSWORD, token, token[12:], wrong):
        assert secret not in logged
    for word in ("elephant", "negotiate", "librarian", "submarine"):
        assert word not in logged.lower()
    assert clip.read_bytes()[:64].hex() not in logged


def test_log_transcripts_logs_each_finished_jobs_text_at_its_own_event(
    make_daemon: Callable[..., Daemon], speech: Callable[..., Path]
) -> None:
    """ASR_LOG_TRANSCRIPTS=true: one `job_transcript` line per completed job, holding exactly its text."""
    d = make_daemon(ASR_LOG_TRANSCRIPTS="true")
    clip = speech(SENTENCE)
    with d.client() as c:
        r = c.post("/v1/audio/transcriptions", files={"file": clip.open("rb")}, data={"response_format": "json"})
        assert r.status_code == 200, r.text
    d.stop(signal.SIGTERM)
    events = [json.loads(line) for line in d.logs().splitlines() if line.startswith("{")]
    logged = [e for e in events if e.get("event") == "job_transcript"]
    assert len(logged) == 1, logged
    assert logged[0]["job_id"] == r.headers["x-job-id"]
    assert logged[0]["text"] == r.json()["text"] and "librarian" in logged[0]["text"].lower()
    assert clip.read_bytes()[:64].hex() not in d.logs()
