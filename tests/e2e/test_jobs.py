"""Durable jobs through the real daemon: submit, list, follow, cancel, idempotency, dedup, bounds."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import Daemon, leftover_files


def submit(c: httpx.Client, path: Path, **data: Any) -> httpx.Response:
    """POST /v1/jobs with a file and form fields."""
    headers = data.pop("headers", {})
    return c.post("/v1/jobs", files={"file": path.open("rb")}, data=data, headers=headers)


def wait_status(c: httpx.Client, job_id: str, statuses: set[str], timeout: float = 120) -> dict[str, Any]:
    """Poll a job until its status is one of `statuses`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = c.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never reached {statuses}: {job}")


def sse(
    c: httpx.Client, job_id: str, last_id: int | None = None, until: Callable[[str], bool] = lambda kind: False
) -> list[tuple[int, str, dict[str, Any]]]:
    """Read a job's event stream to its end, or until an event whose kind satisfies `until`: (id, event, data)."""
    headers = {"Last-Event-ID": str(last_id)} if last_id is not None else {}
    out: list[tuple[int, str, dict[str, Any]]] = []
    with c.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as r:
        assert r.status_code == 200
        ev: dict[str, str] = {}
        for line in r.iter_lines():
            if not line:
                if "data" in ev:
                    out.append((int(ev["id"]), ev["event"], json.loads(ev["data"])))
                    if until(ev["event"]):
                        break
                ev = {}
            elif not line.startswith(":"):
                key, _, value = line.partition(": ")
                ev[key] = value
    return out


def test_submit_returns_202_and_the_job_completes(daemon: Daemon, jfk: Path) -> None:
    """POST /v1/jobs answers 202 with id, status, links and Location; the job then completes."""
    with daemon.client() as c:
        r = submit(c, jfk, response_format="text", priority="3")
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["status"] in ("queued", "running") and body["priority"] == 3
        assert r.headers["location"] == f"/v1/jobs/{body['id']}" == body["links"]["self"]
        job = wait_status(c, body["id"], {"completed"})
        assert job["progress"]["fraction"] == 1.0 and job["attempts"] == 1
        assert job["timings"]["transcribe_s"] > 0
        text = c.get(body["links"]["transcript"], params={"format": "text"}).text
    assert "country" in text.lower()


def test_list_filters_by_status_newest_first_with_cursor(
    daemon: Daemon, jfk: Path, speech: Callable[..., Path]
) -> None:
    """GET /v1/jobs lists newest first, filters by status and pages with next_cursor."""
    clips = [speech(f"Number {n} is on the list.") for n in range(3)]
    with daemon.client() as c:
        ids = [submit(c, clip).json()["id"] for clip in clips]
        for i in ids:
            wait_status(c, i, {"completed"})
        page1 = c.get("/v1/jobs", params={"limit": 2, "status": "completed"}).json()
        page2 = c.get("/v1/jobs", params={"limit": 2, "status": "completed", "cursor": page1["next_cursor"]}).json()
        assert c.get("/v1/jobs", params={"status": "running"}).json()["data"] == []
        assert c.get("/v1/jobs", params={"status": "bogus"}).status_code == 400
    assert [j["id"] for j in page1["data"]] + [j["id"] for j in page2["data"]] == ids[::-1]
    assert page2["next_cursor"] is None


def test_transcript_is_409_until_finished_and_cancel_works_queued_and_running(
    daemon: Daemon, two_minutes: Path, jfk: Path
) -> None:
    """A queued job cancels at once, a running one within seconds (mid-chunk); unfinished transcripts are 409."""
    with daemon.client() as c:
        running = submit(c, two_minutes).json()["id"]
        wait_status(c, running, {"running"})
        queued = submit(c, two_minutes, language="en").json()["id"]
        assert c.get(f"/v1/jobs/{queued}/transcript").status_code == 409
        r = c.delete(f"/v1/jobs/{queued}")
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        t0 = time.monotonic()
        r = c.delete(f"/v1/jobs/{running}")
        assert r.status_code == 200 and r.json()["status"] == "cancelled"  # the reply already says so
        # marked at once, not when the thread reaches its next segment
        job = wait_status(c, running, {"cancelled", "completed"}, timeout=30)
        assert job["status"] == "cancelled" and time.monotonic() - t0 < 5
        assert c.get(f"/v1/jobs/{running}/transcript").status_code == 409
        events = sse(c, running)
        # the worker's thread stops at its next segment, stores nothing more and frees the slot
        after = submit(c, jfk).json()["id"]
        assert wait_status(c, after, {"completed", "failed"})["status"] == "completed"
        assert sse(c, running) == events
    assert events[-1][1] == "cancelled"


async def test_idempotency_key_returns_the_same_job(daemon: Daemon, jfk: Path, database: str) -> None:
    """The same Idempotency-Key gives back the same job, and only one row exists."""
    with daemon.client() as c:
        a = submit(c, jfk, headers={"Idempotency-Key": "upload-42"})
        b = submit(c, jfk, headers={"Idempotency-Key": "upload-42"})
    assert a.status_code == 202 and b.status_code == 202
    assert a.json()["id"] == b.json()["id"] and b.headers["idempotent-replayed"] == "true"
    conn = await asyncpg.connect(database)
    try:
        rows = await conn.fetch("SELECT id::text, idempotency_key FROM jobs")
    finally:
        await conn.close()
    assert [(r["id"], r["idempotency_key"]) for r in rows] == [(a.json()["id"], "upload-42")]


def test_replies_before_the_upload_is_read_keep_a_keep_alive_client_working(daemon: Daemon, jfk: Path) -> None:
    """A reply sent before the upload was read (a refusal, an idempotent replay) says Connection: close,
    so a client reusing its connection never gets "server disconnected" on its next request."""
    with daemon.client() as c:
        first = submit(c, jfk, headers={"Idempotency-Key": "keep-alive"})
        assert first.status_code == 202
        for n in range(100):  # the drop was a race: about 1 in 100 before the fix
            refused = submit(c, jfk, headers={"Idempotency-Key": "x" * 1000})
            assert refused.status_code == 400 and refused.headers["connection"] == "close"
            assert c.get("/healthz").status_code == 200
            replay = submit(c, jfk, headers={"Idempotency-Key": "keep-alive"})
            assert replay.headers["idempotent-replayed"] == "true" and replay.headers["connection"] == "close"
            assert c.get(f"/v1/jobs/{first.json()['id']}").status_code == 200, n


async def test_same_audio_and_options_is_deduplicated(daemon: Daemon, jfk: Path, database: str) -> None:
    """Re-submitting identical audio with identical options returns the stored transcript, no new job."""
    with daemon.client() as c:
        first = c.post("/v1/audio/transcriptions", files={"file": jfk.open("rb")})
        second = c.post("/v1/audio/transcriptions", files={"file": jfk.open("rb")})
        other = c.post("/v1/audio/transcriptions", files={"file": jfk.open("rb")}, data={"language": "en"})
    assert second.headers["x-job-id"] == first.headers["x-job-id"] and second.headers["x-deduplicated"] == "true"
    assert second.json() == first.json()
    assert other.headers["x-job-id"] != first.headers["x-job-id"]
    conn = await asyncpg.connect(database)
    try:
        assert await conn.fetchval("SELECT count(*) FROM jobs") == 2
    finally:
        await conn.close()
    assert daemon.logs().count('"job_started"') == 2


def test_deduplicated_submission_answers_200_with_the_finished_job(daemon: Daemon, jfk: Path) -> None:
    """POST /v1/jobs of audio and options already transcribed answers 200 (not 202) with the completed
    job and `X-Deduplicated: true`, as the README and the OpenAPI schema say; a new job is 202 without it."""
    with daemon.client() as c:
        first = submit(c, jfk)
        assert first.status_code == 202 and "x-deduplicated" not in first.headers
        wait_status(c, first.json()["id"], {"completed"})
        again = submit(c, jfk)
        assert again.status_code == 200, again.text
        assert again.headers["x-deduplicated"] == "true" and again.headers["x-job-id"] == first.json()["id"]
        assert again.json()["status"] == "completed" and again.headers["location"] == f"/v1/jobs/{first.json()['id']}"
        documented = c.get("/docs/openapi.json").json()["paths"]["/v1/jobs"]["post"]["responses"]
    assert {"200", "202"} <= set(documented)
    assert "X-Deduplicated" in documented["200"]["headers"] and "X-Deduplicated" in documented["202"]["headers"]


async def test_dedup_off_runs_the_model_again(make_daemon: Callable[..., Daemon], jfk: Path, database: str) -> None:
    """With ASR_DEDUP=false identical audio and options make a second job that really runs the model."""
    daemon = make_daemon(ASR_DEDUP="false")
    with daemon.client() as c:
        first = c.post("/v1/audio/transcriptions", files={"file": jfk.open("rb")})
        second = c.post("/v1/audio/transcriptions", files={"file": jfk.open("rb")})
    assert first.status_code == second.status_code == 200
    assert second.headers["x-job-id"] != first.headers["x-job-id"] and "x-deduplicated" not in second.headers
    assert second.json() == first.json()
    conn = await asyncpg.connect(database)
    try:
        rows = await conn.fetch(
            "SELECT j.id::text, j.status, j.attempts, (j.timings->>'transcribe_s')::float8 AS transcribe_s,"
            " (SELECT count(*) FROM segments s WHERE s.job_id = j.id) AS segments FROM jobs j ORDER BY created_at"
        )
    finally:
        await conn.close()
    assert [r["id"] for r in rows] == [first.headers["x-job-id"], second.headers["x-job-id"]]
    for r in rows:
        assert r["status"] == "completed" and r["attempts"] == 1 and r["transcribe_s"] > 0 and r["segments"] > 0
    assert daemon.logs().count('"job_started"') == 2 and '"job_deduplicated"' not in daemon.logs()


def test_queue_bound_gives_429_with_retry_after(make_daemon: Callable[..., Daemon], two_minutes: Path) -> None:
    """Past ASR_MAX_QUEUED_JOBS a submission gets 429 with Retry-After and leaves no file behind."""
    daemon = make_daemon(ASR_MAX_QUEUED_JOBS="1")
    with daemon.client() as c:
        first = submit(c, two_minutes).json()["id"]
        wait_status(c, first, {"running"})
        assert submit(c, two_minutes, language="en").status_code == 202
        r = submit(c, two_minutes, prompt="third")
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
        assert "ASR_MAX_QUEUED_JOBS" in r.json()["error"]["message"]
    assert not leftover_files(daemon.state_dir)


def test_events_replay_and_resume_with_last_event_id(daemon: Daemon, two_minutes: Path) -> None:
    """SSE gives queued, started, segments, completed; Last-Event-ID resumes without repeats."""
    with daemon.client() as c:
        job_id = submit(c, two_minutes).json()["id"]
        live = sse(c, job_id)
        after_end = sse(c, job_id)
        resumed = sse(c, job_id, last_id=3)
    kinds = [k for _, k, _ in live]
    assert kinds[:2] == ["queued", "started"] and kinds[-1] == "completed"
    assert kinds.count("segment") >= 2
    ids = [i for i, _, _ in live]
    assert ids == sorted(set(ids))
    assert after_end == live
    assert resumed == [e for e in live if e[0] > 3]
    segs = [d for _, k, d in live if k == "segment"]
    assert [s["seq"] for s in segs] == list(range(len(segs)))
    assert segs[-1]["progress"] == pytest.approx(1.0, abs=0.2)


def test_live_stream_resumes_with_last_event_id(make_daemon: Callable[..., Daemon], two_minutes: Path) -> None:
    """A client that drops a live stream and reconnects with Last-Event-ID misses nothing and gets nothing twice."""
    daemon = make_daemon(ASR_WINDOW_SECONDS="30")
    with daemon.client() as c:
        job_id = submit(c, two_minutes).json()["id"]
        first = sse(c, job_id, until=lambda kind: kind == "segment")
        # about 110 s of audio (four or five more 30-s windows) remain: the job is still running at the reconnect
        assert c.get(f"/v1/jobs/{job_id}").json()["status"] == "running"
        rest = sse(c, job_id, last_id=first[-1][0])
        whole = sse(c, job_id)
    assert [k for _, k, _ in first] == ["queued", "started", "segment"]
    assert first + rest == whole
    assert [i for i, _, _ in whole] == list(range(len(whole)))
    assert whole[-1][1] == "completed" and [k for _, k, _ in rest].count("segment") >= 2


def test_stream_true_streams_openai_deltas(daemon: Daemon, jfk: Path) -> None:
    """stream=true on /v1/audio/transcriptions streams transcript.text.delta events then done."""
    with (
        daemon.client() as c,
        c.stream("POST", "/v1/audio/transcriptions", files={"file": jfk.open("rb")}, data={"stream": "true"}) as r,
    ):
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1]["type"] == "transcript.text.done"
    deltas = [e["delta"] for e in events if e["type"] == "transcript.text.delta"]
    assert deltas and "".join(deltas).strip() == events[-1]["text"]


def test_two_workers_run_two_jobs_at_once(make_daemon: Callable[..., Daemon], two_minutes: Path, jfk: Path) -> None:
    """With ASR_WORKERS=2 two jobs run concurrently in one process, sharing one model."""
    daemon = make_daemon(ASR_WORKERS="2")
    with daemon.client() as c:
        a = submit(c, two_minutes).json()["id"]
        b = submit(c, two_minutes, language="en").json()["id"]
        deadline = time.monotonic() + 60
        both = False
        while time.monotonic() < deadline and not both:
            both = len(c.get("/v1/jobs", params={"status": "running"}).json()["data"]) == 2
            time.sleep(0.05)
        assert both
        for j in (a, b):
            wait_status(c, j, {"completed"})
