"""Webhooks of failed jobs: signed, retried with growing backoff, recorded, and never in the worker's way."""

from __future__ import annotations

import hashlib
import http.server
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest

from asr_daemon.pipeline import webhooks
from tests.conftest import Daemon
from tests.e2e.test_jobs import submit, wait_status


@dataclass
class Hook:
    """A receiver whose first delivery hangs until `release` is set, then answers 500, 500, 500, 200."""

    url: str = ""
    release: threading.Event = field(default_factory=threading.Event)
    calls: list[tuple[float, dict[str, str], bytes]] = field(default_factory=list)

    def wait_calls(self, n: int, timeout: float) -> None:
        """Wait until `n` deliveries arrived."""
        deadline = time.monotonic() + timeout
        while len(self.calls) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.calls) >= n, f"{len(self.calls)} webhook deliveries arrived, expected {n}"


@pytest.fixture
def hook() -> Iterator[Hook]:
    """A scripted webhook receiver on a free port."""
    state = Hook()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.calls.append((time.monotonic(), dict(self.headers), body))
            if len(state.calls) == 1:
                state.release.wait(60)
            self.send_response(200 if len(state.calls) >= 4 else 500)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            """Quiet."""

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield state
    state.release.set()
    server.shutdown()


async def test_failed_job_webhook_is_signed_retried_with_backoff_and_does_not_block_the_worker(
    make_daemon: Callable[..., Daemon], jfk: Path, hook: Hook, database: str
) -> None:
    """A job that fails POSTs a signed job.failed summary; while the receiver hangs the next job still runs;
    500s are retried with doubling pauses and every attempt is listed on the job."""
    daemon = make_daemon(ASR_WEBHOOK_SECRET="s3cret", ASR_WEBHOOK_TIMEOUT="60")
    # a job whose audio is not on disk (a database restored without its uploads): the worker fails it
    failing = uuid.uuid4()
    sha = hashlib.sha256(b"audio that is not there").hexdigest()
    conn = await asyncpg.connect(database)
    try:
        await conn.execute(
            "INSERT INTO jobs (id, model, fingerprint, audio_sha256, audio_bytes, duration_s, webhook_url)"
            " VALUES ($1, 'tiny.en', $2, $2, 1, 6, $3)",
            failing,
            sha,
            hook.url,
        )
    finally:
        await conn.close()
    hook.wait_calls(1, timeout=30)  # delivered, and now hanging
    with daemon.client() as c:
        other = submit(c, jfk).json()["id"]
        assert wait_status(c, other, {"completed", "failed"}, timeout=60)["status"] == "completed"
        assert len(hook.calls) == 1 and not hook.release.is_set()  # the receiver still holds the first POST
        hook.release.set()
        hook.wait_calls(4, timeout=30)
        deadline = time.monotonic() + 10
        while len((job := c.get(f"/v1/jobs/{failing}").json())["webhook_deliveries"]) < 4:
            assert time.monotonic() < deadline, job["webhook_deliveries"]
            time.sleep(0.05)
    assert job["status"] == "failed" and job["error"]["code"] == "audio_missing"
    codes = [(d["attempt"], d["status_code"]) for d in job["webhook_deliveries"]]
    assert codes == [(1, 500), (2, 500), (3, 500), (4, 200)]
    at = [t for t, _, _ in hook.calls]
    assert at[2] - at[1] >= 0.95 and at[3] - at[2] >= 1.95  # 0.5 s, 1 s, 2 s: doubling
    for _, headers, body in hook.calls:
        assert webhooks.verify("s3cret", headers["X-Asr-Signature"], body)
        assert not webhooks.verify("wrong", headers["X-Asr-Signature"], body)
    payload = httpx.Response(200, content=hook.calls[-1][2]).json()
    assert (payload["type"], payload["status"], payload["id"]) == ("job.failed", "failed", str(failing))
    assert "no longer on disk" in payload["error"]


def test_webhook_url_without_a_server_secret_is_refused(daemon: Daemon, jfk: Path) -> None:
    """With no ASR_WEBHOOK_SECRET a webhook could not be signed: the submission gets a 400 naming the
    setting, and nothing is stored."""
    with daemon.client() as c:
        r = submit(c, jfk, webhook_url="http://127.0.0.1:9/hook")
        assert r.status_code == 400 and "ASR_WEBHOOK_SECRET" in r.json()["error"]["message"]
        assert c.get("/v1/jobs").json()["data"] == []
    assert not [p for p in (daemon.state_dir / "uploads").rglob("*") if p.is_file()]
