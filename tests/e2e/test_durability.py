"""Nothing accepted is lost: kill -9 mid-job, PostgreSQL down, Redis down, webhooks, retention."""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import itertools
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis

from asr_daemon.engine import audio
from asr_daemon.pipeline import webhooks
from tests import services
from tests.conftest import Daemon, leftover_files
from tests.e2e.test_jobs import sse, submit, wait_status
from tests.e2e.test_keys import bearer, create_key


async def fetch(database: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    """Run one query against the test database."""
    conn = await asyncpg.connect(database)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


def check_segments(rows: list[asyncpg.Record]) -> None:
    """Segments are numbered 0..n-1 and their times never go backwards."""
    assert [r["seq"] for r in rows] == list(range(len(rows)))
    for a, b in itertools.pairwise(rows):
        assert a["start_s"] <= b["start_s"] and a["end_s"] <= b["end_s"] + 0.01


@pytest.mark.slow
@pytest.mark.parametrize("batch", ["8", "0"], ids=["batched", "sequential"])
async def test_kill_9_mid_job_resumes_from_the_last_segment(
    make_daemon: Callable[..., Daemon], two_minutes: Path, database: str, batch: str
) -> None:
    """After kill -9 and a restart the job completes once, resuming after its stored segments
    (batched: the two minutes are over ASR_BATCH_MIN_SECONDS; and sequential)."""
    daemon = make_daemon(ASR_WINDOW_SECONDS="30", ASR_BATCH_SIZE=batch)
    with daemon.client() as c:
        job_id = submit(c, two_minutes).json()["id"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        before = await fetch(database, "SELECT * FROM segments WHERE job_id = $1::uuid ORDER BY seq", job_id)
        if len(before) >= 3:
            break
        await asyncio.sleep(0.05)
    daemon.stop(signal.SIGKILL)
    before = await fetch(database, "SELECT * FROM segments WHERE job_id = $1::uuid ORDER BY seq", job_id)
    assert len(before) >= 3
    daemon.start()
    with daemon.client() as c:
        job = wait_status(c, job_id, {"completed", "failed"}, timeout=240)
    assert job["status"] == "completed" and job["attempts"] == 2
    after = await fetch(database, "SELECT * FROM segments WHERE job_id = $1::uuid ORDER BY seq", job_id)
    check_segments(after)
    assert [(r["text"], r["start_s"]) for r in after[: len(before)]] == [(r["text"], r["start_s"]) for r in before]
    resumed = [line for line in daemon.logs().splitlines() if '"job_started"' in line][-1]
    assert f'"resume_from": {before[-1]["end_s"]}' in resumed
    texts = [r["text"].strip() for r in after]
    assert all(a != b for a, b in itertools.pairwise(texts)), "a segment was repeated at the seam"
    assert after[-1]["end_s"] > job["audio"]["duration_s"] - 5


@pytest.mark.slow
async def test_postgres_outage_gives_503_then_recovers_without_restart(
    daemon: Daemon, jfk: Path, pg: services.Postgres, database: str
) -> None:
    """While PostgreSQL is down submissions get 503 + Retry-After; afterwards everything works again."""
    with daemon.client() as c:
        accepted = [submit(c, jfk).json()["id"]]
        pg.stop()
        try:
            down = submit(c, jfk, language="en")
            assert down.status_code == 503 and int(down.headers["retry-after"]) > 0
            assert "database" in down.json()["error"]["message"]
            assert c.get("/readyz").status_code == 503
            assert c.get("/healthz").status_code == 200
        finally:
            pg.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r = submit(c, jfk, prompt="after the outage")
            if r.status_code == 202:
                accepted.append(r.json()["id"])
                break
            assert r.status_code == 503
            await asyncio.sleep(0.5)
        assert len(accepted) == 2
        for job_id in accepted:
            assert wait_status(c, job_id, {"completed", "failed"}, timeout=60)["status"] == "completed"
    assert not leftover_files(daemon.state_dir)
    rows = await fetch(database, "SELECT id FROM jobs")
    assert sorted(str(r["id"]) for r in rows) == sorted(accepted)


@pytest.mark.slow
def test_hung_redis_holds_up_neither_the_api_nor_the_worker(
    make_daemon: Callable[..., Daemon], two_minutes: Path, redis_server: services.Redis, database: str
) -> None:
    """A Redis that hangs (SIGSTOP: connections accepted, never answered) costs a submission and a job
    at most a short bounded wait: 202 at once, the job completes with its events, keyed requests are
    not each held by the rate limiter, then Redis is used again."""
    daemon = make_daemon(ASR_POLL_INTERVAL="1")
    token = create_key(database, "hung")
    assert redis_server.proc is not None
    redis_server.proc.send_signal(signal.SIGSTOP)
    try:
        with daemon.client(timeout=30) as c:
            t0 = time.monotonic()
            for _ in range(10):  # the first waits out the limiter's 0.5 s; the rest pass at once
                assert c.get("/v1/jobs", headers=bearer(token)).status_code == 200
            assert time.monotonic() - t0 < 2.5
            t0 = time.monotonic()
            r = submit(c, two_minutes)  # many segments to publish
            accepted_in = time.monotonic() - t0
            assert r.status_code == 202 and accepted_in < 3, (r.status_code, accepted_in)
            job_id = r.json()["id"]
            events = sse(c, job_id)
            assert [e[1] for e in events][-1] == "completed"
            assert sum(1 for e in events if e[1] == "segment") >= 3
            job = wait_status(c, job_id, {"completed"}, timeout=30)
            # every segment published would have waited 0.5 s: after one timeout Redis is skipped a while
            assert job["timings"]["transcribe_s"] < job["audio"]["duration_s"]
        assert '"redis_hung"' in daemon.logs()
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)
    with daemon.client() as c:
        deadline = time.monotonic() + 15
        while c.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert c.get("/readyz").json()["checks"]["redis"] == "ok"


@pytest.mark.slow
async def test_redis_outage_loses_nothing_and_redis_is_used_again(
    make_daemon: Callable[..., Daemon],
    jfk: Path,
    speech: Callable[..., Path],
    redis_server: services.Redis,
    database: str,
) -> None:
    """With Redis stopped jobs are accepted, run and stream events; when it returns the doorbell and
    live pub/sub (both ways) work again without a restart."""
    daemon = make_daemon(ASR_POLL_INTERVAL="30")
    clips = [speech(f"Redis is down and job {n} still runs.") for n in range(3)]
    redis_server.stop()
    try:
        with daemon.client() as c:
            ids = [submit(c, clip).json()["id"] for clip in clips]
            events = sse(c, ids[0])
            assert events[-1][1] == "completed"
            for job_id in ids:
                assert wait_status(c, job_id, {"completed"}, timeout=60)
            assert c.get("/readyz").json()["checks"]["redis"] == "unavailable"
    finally:
        redis_server.start()
    # another process queues a job and rings the doorbell: only Redis can wake the worker in time
    deadline = time.monotonic() + 10
    with daemon.client() as c:
        while c.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.5)  # the doorbell listener reconnects within a second
        r = redis.Redis.from_url(redis_server.url)
        while not r.pubsub_numpat() and time.monotonic() < deadline:  # the daemon's event listener is back
            await asyncio.sleep(0.1)
        while not r.pubsub_numsub("asr:doorbell")[0][1] and time.monotonic() < deadline:  # and its doorbell's
            await asyncio.sleep(0.1)
        assert r.pubsub_numpat() == 1
        watch = r.pubsub(ignore_subscribe_messages=True)
        watch.psubscribe("asr:job:*")
        job_id = await queue_directly(database, daemon.state_dir, jfk)
        r.publish("asr:doorbell", "1")
        job = wait_status(c, job_id, {"completed"}, timeout=15)
    assert job["status"] == "completed"
    published = set()
    until = time.monotonic() + 2
    while time.monotonic() < until:
        if msg := watch.get_message(timeout=0.2):
            published.add(msg["channel"].decode())
    assert f"asr:job:{job_id}" in published  # the worker publishes its job's events again
    # another process changes a job and publishes it: a follower here hears of it at once, not at the next 30-s poll
    parked = await queue_directly(database, daemon.state_dir, jfk, delay="1 day")
    seen: list[str] = []

    def note(kind: str) -> bool:
        seen.append(kind)
        return False

    def follow() -> None:
        with daemon.client() as c:
            sse(c, parked, until=note)

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert seen == ["queued"]
    await fetch(database, "UPDATE jobs SET status = 'cancelled', finished_at = now() WHERE id = $1::uuid", parked)
    t0 = time.monotonic()
    r.publish(f"asr:job:{parked}", "1")
    follower.join(10)
    assert seen == ["queued", "cancelled"] and time.monotonic() - t0 < 5


async def queue_directly(database: str, state_dir: Path, clip: Path, delay: str = "0 s") -> str:
    """Insert a queued job the way another process would (file in uploads/, row in jobs), runnable after `delay`."""
    data = clip.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    shutil.copy(clip, state_dir / "uploads" / sha)
    job_id = str(uuid.uuid4())
    await fetch(
        database,
        "INSERT INTO jobs (id, model, fingerprint, audio_sha256, audio_bytes, duration_s, options, run_after) "
        "VALUES ($1::uuid, 'tiny.en', $2, $3, $4, 6, '{\"task\": \"transcribe\"}', now() + $5::text::interval)",
        job_id,
        job_id,
        sha,
        len(data),
        delay,
    )
    return job_id


class Receiver(http.server.BaseHTTPRequestHandler):
    """A webhook receiver that fails the first delivery with 500 and accepts the next."""

    calls: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.calls.append((dict(self.headers), body))
        self.send_response(500 if len(Receiver.calls) == 1 else 200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def receiver() -> Iterator[str]:
    """A local webhook receiver URL."""
    Receiver.calls = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()


def test_webhook_is_signed_retried_and_recorded(make_daemon: Callable[..., Daemon], jfk: Path, receiver: str) -> None:
    """A finished job POSTs its summary, HMAC-signed; a failed delivery is retried; attempts are on the job."""
    daemon = make_daemon(ASR_WEBHOOK_SECRET="s3cret")
    with daemon.client() as c:
        job_id = submit(c, jfk, webhook_url=receiver).json()["id"]
        wait_status(c, job_id, {"completed"})
        deadline = time.monotonic() + 20
        job = c.get(f"/v1/jobs/{job_id}").json()
        while len(job["webhook_deliveries"]) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)  # the receiver sees the retry before the daemon records its answer
            job = c.get(f"/v1/jobs/{job_id}").json()
    assert [d["status_code"] for d in job["webhook_deliveries"]] == [500, 200]
    headers, body = Receiver.calls[-1]
    assert webhooks.verify("s3cret", headers["X-Asr-Signature"], body)
    assert not webhooks.verify("wrong", headers["X-Asr-Signature"], body)
    assert httpx.Response(200, content=body).json()["status"] == "completed"


async def test_retention_deletes_old_audio_and_keeps_transcripts(
    daemon: Daemon, jfk: Path, speech: Callable[..., Path], database: str
) -> None:
    """Audio of jobs finished longer ago than the retention goes; transcripts stay; needed audio stays."""
    with daemon.client() as c:
        old = submit(c, jfk).json()["id"]
        wait_status(c, old, {"completed"})
    daemon.stop()
    await fetch(database, "UPDATE jobs SET finished_at = now() - interval '40 days' WHERE id = $1::uuid", old)
    keep_clip = speech("This audio belongs to a job that is still queued.")
    queued = await queue_directly(database, daemon.state_dir, keep_clip)
    await fetch(database, "UPDATE jobs SET run_after = now() + interval '1 day' WHERE id = $1::uuid", queued)
    daemon.env["ASR_AUDIO_RETENTION_DAYS"] = "30"
    daemon.start()
    with daemon.client() as c:
        deadline = time.monotonic() + 20
        while not c.get(f"/v1/jobs/{old}").json()["audio"]["deleted"] and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        job = c.get(f"/v1/jobs/{old}").json()
        assert job["audio"]["deleted"]
        assert "country" in c.get(f"/v1/jobs/{old}/transcript", params={"format": "text"}).text.lower()
    assert not (daemon.state_dir / "uploads" / job["audio"]["sha256"]).exists()
    assert (daemon.state_dir / "uploads" / hashlib.sha256(keep_clip.read_bytes()).hexdigest()).exists()


@pytest.mark.slow
async def test_sigterm_checkpoints_a_running_job_that_then_completes(
    make_daemon: Callable[..., Daemon], two_minutes: Path, database: str
) -> None:
    """On SIGTERM a job past the drain timeout is requeued with its segments and attempt, then completes."""
    daemon = make_daemon(ASR_DRAIN_TIMEOUT="0.5", ASR_WINDOW_SECONDS="30")
    with daemon.client() as c:
        job_id = submit(c, two_minutes).json()["id"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        rows = await fetch(database, "SELECT seq FROM segments WHERE job_id = $1::uuid", job_id)
        if rows:
            break
        await asyncio.sleep(0.05)
    assert daemon.stop(signal.SIGTERM) == 0
    row = (await fetch(database, "SELECT status, attempts FROM jobs WHERE id = $1::uuid", job_id))[0]
    kept = await fetch(database, "SELECT seq FROM segments WHERE job_id = $1::uuid", job_id)
    assert (row["status"], row["attempts"]) == ("queued", 0) and kept
    assert '"job_checkpointed"' in daemon.logs()
    daemon.start()
    with daemon.client() as c:
        job = wait_status(c, job_id, {"completed", "failed"}, timeout=240)
    assert job["status"] == "completed" and job["attempts"] == 1
    check_segments(await fetch(database, "SELECT * FROM segments WHERE job_id = $1::uuid ORDER BY seq", job_id))


async def wait_first_segment(database: str, job_id: str | None = None, timeout: float = 120) -> str:
    """Wait until a job (the only one when `job_id` is None) stored a segment; returns its id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = await fetch(database, "SELECT DISTINCT job_id::text FROM segments")
        ids = [r["job_id"] for r in rows if job_id in (None, r["job_id"])]
        if ids:
            return str(ids[0])
        await asyncio.sleep(0.05)
    raise AssertionError("no segment stored in time")


async def test_sigterm_lets_an_in_flight_synchronous_transcription_answer_in_full(
    make_daemon: Callable[..., Daemon], two_minutes: Path, database: str
) -> None:
    """A synchronous /v1/audio/transcriptions whose job runs at SIGTERM and ends within the drain timeout
    still gets its complete 200 answer, every segment of the finished job, before the daemon exits 0."""
    daemon = make_daemon(ASR_DRAIN_TIMEOUT="60")
    answer: list[httpx.Response] = []

    def call() -> None:
        with daemon.client() as c:
            answer.append(c.post("/v1/audio/transcriptions", files={"file": two_minutes.open("rb")}))

    thread = threading.Thread(target=call)
    thread.start()
    job_id = await wait_first_segment(database)
    status = await fetch(database, "SELECT status FROM jobs WHERE id = $1::uuid", job_id)
    assert status[0]["status"] == "running" and thread.is_alive()  # SIGTERM lands mid-transcription
    assert daemon.stop(signal.SIGTERM, timeout=90) == 0
    thread.join(10)
    assert answer, daemon.logs()
    r = answer[0]
    assert r.status_code == 200, r.text
    assert r.headers["X-Job-Id"] == job_id
    segs = await fetch(database, "SELECT text FROM segments WHERE job_id = $1::uuid ORDER BY seq", job_id)
    assert r.json()["text"] == "".join(x["text"] for x in segs).strip()
    ends = await fetch(database, "SELECT max(s.end_s) AS end_s FROM segments s WHERE job_id = $1::uuid", job_id)
    assert ends[0]["end_s"] > audio.probe(two_minutes).duration - 5  # the whole clip, not a part
    row = (await fetch(database, "SELECT status, attempts FROM jobs WHERE id = $1::uuid", job_id))[0]
    assert (row["status"], row["attempts"]) == ("completed", 1)
    logs = daemon.logs()  # the drain begins at SIGTERM; the waiter stays while the drain may finish its job
    assert '"job_checkpointed"' not in logs and logs.index('"daemon_draining"') < logs.index('"job_completed"')


async def test_sigterm_lets_a_running_job_finish_within_the_drain_timeout(
    make_daemon: Callable[..., Daemon], two_minutes: Path, database: str
) -> None:
    """A queued-API job running at SIGTERM that needs less than ASR_DRAIN_TIMEOUT completes (not
    checkpointed) before the daemon exits 0."""
    daemon = make_daemon(ASR_DRAIN_TIMEOUT="60")
    with daemon.client() as c:
        job_id = submit(c, two_minutes).json()["id"]  # long enough to be running after its first segment
    await wait_first_segment(database, job_id)
    assert (await fetch(database, "SELECT status FROM jobs WHERE id = $1::uuid", job_id))[0]["status"] == "running"
    assert daemon.stop(signal.SIGTERM, timeout=90) == 0
    row = (await fetch(database, "SELECT status, attempts FROM jobs WHERE id = $1::uuid", job_id))[0]
    assert (row["status"], row["attempts"]) == ("completed", 1)
    logs = daemon.logs()
    assert '"job_checkpointed"' not in logs
    assert logs.index('"daemon_draining"') < logs.index('"job_completed"') < logs.index('"daemon_stopped"')


async def test_a_webhook_interrupted_by_a_stop_is_delivered_after_restart(
    make_daemon: Callable[..., Daemon], jfk: Path, receiver: str, database: str
) -> None:
    """A finished job whose webhook never got a 2xx is delivered by the next daemon process."""
    daemon = make_daemon(ASR_WEBHOOK_SECRET="s3cret")
    with daemon.client() as c:
        job_id = submit(c, jfk, webhook_url=receiver).json()["id"]
        wait_status(c, job_id, {"completed"})
    daemon.stop(signal.SIGKILL)
    await fetch(database, "DELETE FROM webhook_deliveries WHERE status_code = 200")
    Receiver.calls = [({}, b"")]  # the receiver now answers 200 at once
    daemon.start()
    deadline = time.monotonic() + 20
    with daemon.client() as c:
        deliveries = c.get(f"/v1/jobs/{job_id}").json()["webhook_deliveries"]
        while not any(d["status_code"] == 200 for d in deliveries) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)  # recorded once the daemon has the receiver's answer
            deliveries = c.get(f"/v1/jobs/{job_id}").json()["webhook_deliveries"]
    assert len(Receiver.calls) >= 2 and deliveries[-1]["status_code"] == 200
    assert [d["attempt"] for d in deliveries] == list(range(1, len(deliveries) + 1))


async def test_database_lost_at_the_insert_leaves_no_stored_audio(daemon: Daemon, jfk: Path, database: str) -> None:
    """PostgreSQL drops the connection exactly at the job's INSERT, after the audio was stored: 503,
    the stored audio is removed again, no row; the next submission works."""
    conn = await asyncpg.connect(database)
    try:
        await conn.execute(
            """
            CREATE FUNCTION drop_me() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NEW; END $$;
            CREATE TRIGGER drop_me BEFORE INSERT ON jobs FOR EACH ROW EXECUTE FUNCTION drop_me();
            """
        )
        with daemon.client() as c:
            r = submit(c, jfk)
            assert r.status_code == 503 and "database" in r.json()["error"]["message"], r.text
            assert not [p for p in (daemon.state_dir / "uploads").iterdir() if p.is_file()]
            assert not leftover_files(daemon.state_dir)
            assert await conn.fetchval("SELECT count(*) FROM jobs") == 0
            await conn.execute("DROP TRIGGER drop_me ON jobs; DROP FUNCTION drop_me()")
            r = submit(c, jfk)
            assert r.status_code == 202, r.text
            assert [p.name for p in (daemon.state_dir / "uploads").iterdir() if p.is_file()] == [
                hashlib.sha256(jfk.read_bytes()).hexdigest()
            ]
    finally:
        await conn.close()
