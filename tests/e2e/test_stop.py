"""SIGTERM begins the stop at once: no job is claimed after it, event streams and synchronous waiters end
with a way to resume, and the daemon exits within the drain timeout (ARCHITECTURE.md invariant 3)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.conftest import Daemon
from tests.e2e.test_durability import fetch, wait_first_segment
from tests.e2e.test_jobs import sse, submit, wait_status


class Follower:
    """A client reading a job's event stream in a thread, line by line."""

    def __init__(self, daemon: Daemon, job_id: str) -> None:
        self.lines: list[str] = []
        self.opened = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(daemon, job_id), daemon=True)
        self.thread.start()
        assert self.opened.wait(15), "the event stream did not open"

    def _run(self, daemon: Daemon, job_id: str) -> None:
        with daemon.client(timeout=120) as c, c.stream("GET", f"/v1/jobs/{job_id}/events") as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                self.lines.append(line)
                self.opened.set()

    def ended(self, timeout: float = 5) -> bool:
        """Whether the server closed the stream within `timeout` seconds."""
        self.thread.join(timeout)
        return not self.thread.is_alive()


def stop_timed(daemon: Daemon, timeout: float) -> tuple[int | None, float]:
    """SIGTERM the daemon; its exit code and how long it took to exit."""
    t0 = time.monotonic()
    code = daemon.stop(signal.SIGTERM, timeout=timeout)
    return code, time.monotonic() - t0


async def test_sigterm_ends_an_event_stream_at_once_without_a_worker(
    make_daemon: Callable[..., Daemon], jfk: Path, database: str
) -> None:
    """API-only daemon, a client follows a queued job: SIGTERM ends the stream with `retry:`, exit in < 5 s."""
    daemon = make_daemon(ASR_RUN_WORKER="false")
    with daemon.client() as c:
        job_id = submit(c, jfk).json()["id"]
    follower = Follower(daemon, job_id)
    code, took = stop_timed(daemon, timeout=20)
    assert code == 0 and took < 5, daemon.logs()[-3000:]
    assert follower.ended()
    assert any(line.startswith("retry: ") for line in follower.lines), follower.lines
    assert (await fetch(database, "SELECT status FROM jobs WHERE id = $1::uuid", job_id))[0]["status"] == "queued"


async def test_sigterm_claims_no_queued_job_and_ends_streams_and_waiters(
    make_daemon: Callable[..., Daemon], two_minutes: Path, jfk: Path, database: str
) -> None:
    """SIGTERM: queued B and C never start, B gets `retry:`, C's sync caller a 503 naming its job; B resumes."""
    daemon = make_daemon(ASR_DRAIN_TIMEOUT="3", ASR_WINDOW_SECONDS="30")
    with daemon.client() as c:
        a = submit(c, two_minutes).json()["id"]
        await wait_first_segment(database, a)
        b = submit(c, jfk).json()["id"]
    follower = Follower(daemon, b)
    answer: list[httpx.Response] = []

    def call() -> None:
        with daemon.client() as c:
            answer.append(c.post("/v1/audio/transcriptions", files={"file": jfk.open("rb")}, data={"prompt": "c"}))

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    deadline = time.monotonic() + 15
    while len(await fetch(database, "SELECT id FROM jobs")) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    code, took = stop_timed(daemon, timeout=40)
    assert code == 0 and took < 3 + 10, daemon.logs()[-3000:]
    caller.join(5)
    assert follower.ended() and answer
    r = answer[0]
    assert r.status_code == 503 and r.json()["error"]["code"] == "server_stopping", r.text
    c_id = r.json()["error"]["job_id"]
    assert r.headers["location"] == f"/v1/jobs/{c_id}" and r.headers["x-job-id"] == c_id
    assert "x-should-retry" not in r.headers  # the SDK's retry joins the same job on the next process
    assert any(line.startswith("retry: ") for line in follower.lines), follower.lines
    rows = await fetch(database, "SELECT id::text, status, started_at, attempts FROM jobs")
    by_id = {row["id"]: row for row in rows}
    for queued in (b, c_id):
        assert (by_id[queued]["status"], by_id[queued]["started_at"], by_id[queued]["attempts"]) == ("queued", None, 0)
    assert by_id[a]["status"] == "queued" and '"job_checkpointed"' in daemon.logs()
    daemon.start()
    with daemon.client() as c:
        resumed = sse(c, b, last_id=0)
        assert resumed[0][:2] == (1, "started") and resumed[-1][1] == "completed"
        assert wait_status(c, c_id, {"completed"}, timeout=120)["status"] == "completed"


def test_events_of_a_finished_job_resumed_at_its_last_event_answer_204(daemon: Daemon, jfk: Path) -> None:
    """Last-Event-ID at a finished job's final event: 204 (an EventSource stops), not an empty 200."""
    with daemon.client() as c:
        job_id = submit(c, jfk).json()["id"]
        final = sse(c, job_id)[-1]
        assert final[1] == "completed"
        done = c.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": str(final[0])})
        assert done.status_code == 204 and done.content == b""
        assert [e[:2] for e in sse(c, job_id, last_id=final[0] - 1)] == [final[:2]]
