"""The HTTP side and the worker in two processes on one PostgreSQL: `asrctl serve --no-worker` + `asrctl worker`.

The API process runs no worker and loads no model; the worker process has no HTTP side. A job submitted
to the first is completed by the second, a cancel sent to the first stops the job in the second
(through PostgreSQL, with or without Redis), and a live session is refused clearly by the API process.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from tests import live, services
from tests.conftest import Daemon
from tests.e2e.test_jobs import submit, wait_status

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def worker_process(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`asrctl worker` with `env`, started and waited for (its `worker_started` log line); stopped at the end."""
    with log.open("ab") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "asr_daemon.cli", "worker"], env=env, stdout=fh, stderr=fh, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 60
        while "worker_started" not in log.read_text(errors="replace"):
            assert proc.poll() is None, f"asrctl worker exited {proc.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"asrctl worker did not start:\n{log.read_text()[-3000:]}"
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)


def events_of(log: Path, event: str) -> list[dict[str, Any]]:
    """The JSON log records of `event` in a process's log."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            rec = json.loads(line)
            if isinstance(rec, dict) and rec.get("event", rec.get("message")) == event:
                out.append(rec)
    return out


def _split(make_daemon: Callable[..., Daemon], **env: str) -> tuple[Daemon, dict[str, str]]:
    """A started API-only daemon and the environment of its worker (same database, Redis and state)."""
    api = make_daemon(start=False, ASR_RUN_WORKER="false", **env)
    api.start(wait_ready="ASR_REDIS_URL" not in env)  # /readyz says 503 while Redis is down
    return api, {**api.env, "ASR_PORT": str(services.free_port())}


def test_a_job_sent_to_the_api_process_is_run_and_cancelled_by_the_worker_process(
    make_daemon: Callable[..., Daemon], tmp_path: Path, jfk: Path, two_minutes: Path
) -> None:
    """--no-worker queues, `asrctl worker` completes it; DELETE on the API stops a job running in the worker
    within seconds; the worker drains cleanly on SIGTERM; the API process never ran a job."""
    api, env = _split(make_daemon)
    wlog = tmp_path / "worker.log"
    with api.client() as c:
        queued = submit(c, jfk).json()["id"]
        time.sleep(1.5)  # no worker anywhere yet: the job waits
        assert c.get(f"/v1/jobs/{queued}").json()["status"] == "queued"
        with worker_process(env, wlog) as proc:
            done = wait_status(c, queued, {"completed", "failed"})
            assert done["status"] == "completed", done
            assert "fellow americans" in c.get(f"/v1/jobs/{queued}/transcript", params={"format": "text"}).text.lower()

            long = submit(c, two_minutes, language="en").json()["id"]
            wait_status(c, long, {"running"})
            t0 = time.monotonic()
            r = c.delete(f"/v1/jobs/{long}")
            assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text  # the worker elsewhere heard it
            assert time.monotonic() - t0 < 5
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0
    assert {r["job_id"] for r in events_of(wlog, "job_completed")} == {queued}
    assert {r["job_id"] for r in events_of(wlog, "job_cancelled")} == {long}
    assert not events_of(api.log, "job_completed") and not events_of(api.log, "job_started")
    assert not events_of(api.log, "model_loaded")  # the HTTP side loads no model


def test_without_redis_the_worker_process_still_runs_and_cancels(
    make_daemon: Callable[..., Daemon], tmp_path: Path, jfk: Path, two_minutes: Path
) -> None:
    """Redis down for both processes: the worker finds the job by polling and hears the cancel through
    PostgreSQL (NOTIFY; its heartbeat would find it too)."""
    dead = f"redis://127.0.0.1:{services.free_port()}/0"
    api, env = _split(make_daemon, ASR_REDIS_URL=dead)
    with api.client() as c, worker_process(env, tmp_path / "worker.log"):
        jid = submit(c, jfk).json()["id"]
        assert wait_status(c, jid, {"completed", "failed"})["status"] == "completed"
        long = submit(c, two_minutes, language="en").json()["id"]
        wait_status(c, long, {"running"})
        r = c.delete(f"/v1/jobs/{long}")
        assert r.status_code == 200
        assert wait_status(c, long, {"cancelled", "completed"}, timeout=10)["status"] == "cancelled"


def test_the_api_process_refuses_live_sessions_and_model_loads_clearly(make_daemon: Callable[..., Daemon]) -> None:
    """/v1/realtime on an API-only process: an error event that says why, then a policy close (1008); a
    model load is 409 (models load where jobs run); /readyz does not ask for a model."""
    api = make_daemon(ASR_RUN_WORKER="false")
    with api.client() as c:
        r = c.post("/v1/models/tiny.en/load")
        assert r.status_code == 409 and "ASR_RUN_WORKER" in r.json()["error"]["message"]
        ready = c.get("/readyz").json()
        assert ready["status"] == "ready" and "model" not in ready["checks"]
    with live.ws(api.url) as conn:
        err, _ = live.until(conn, "error")
        assert err["error"]["code"] == "live_unavailable" and "ASR_RUN_WORKER" in err["error"]["message"]
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                conn.recv(timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
