"""`/metrics` against the real daemon: names, labels and values after a real transcription."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Daemon
from tests.e2e.test_jobs import submit, wait_status


def scrape(daemon: Daemon) -> dict[str, list[tuple[dict[str, str], float]]]:
    """{sample name: [(labels, value), ...]} from one scrape."""
    with daemon.client() as c:
        r = c.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def value(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    """The value of the one sample `name` whose labels include `labels`."""
    hits = [v for lab, v in samples.get(name, []) if labels.items() <= lab.items()]
    assert len(hits) == 1, (name, labels, samples.get(name))
    return hits[0]


def test_metrics_after_a_transcription(daemon: Daemon, jfk: Path) -> None:
    """Requests, jobs, audio seconds, realtime factor, queue wait, model load and memory are all exported."""
    with daemon.client() as c:
        r = c.post("/v1/audio/transcriptions", files={"file": jfk.open("rb")})
        assert r.status_code == 200, r.text
        assert c.get("/v1/jobs/not-a-uuid").status_code == 400
        assert c.get("/nowhere").status_code == 404
    m = scrape(daemon)
    route = "/v1/audio/transcriptions"
    assert value(m, "asr_http_requests_total", route=route, method="POST", status="200") == 1
    assert value(m, "asr_http_requests_total", route="unmatched", status="404") == 1
    assert value(m, "asr_http_requests_total", route="/v1/jobs/{job_id}", status="400") == 1
    assert value(m, "asr_jobs_finished_total", status="completed") == 1
    assert value(m, "asr_jobs_finished_total", status="failed") == 0
    assert 4 < value(m, "asr_audio_seconds_total", model="tiny.en") < 10
    assert value(m, "asr_realtime_factor_count", model="tiny.en", device="cpu") == 1
    assert 0 < value(m, "asr_realtime_factor_sum", model="tiny.en", device="cpu") < 5
    assert value(m, "asr_job_queue_wait_seconds_count") == 1
    assert value(m, "asr_job_processing_seconds_count", model="tiny.en") == 1
    assert 0 < value(m, "asr_model_load_seconds", model="tiny.en", device="cpu", compute_type="int8") < 30
    assert value(m, "asr_model_loads_total") == 1
    assert value(m, "asr_models_loaded", model="tiny.en", device="cpu", compute_type="int8") == 1
    assert value(m, "asr_queue_depth") == 0
    assert value(m, "asr_queue_oldest_age_seconds") == 0
    assert value(m, "asr_jobs_running") == 0
    assert value(m, "asr_database_up") == 1
    assert value(m, "process_resident_memory_bytes") > 50e6
    assert value(m, "asr_process_peak_resident_memory_bytes") >= value(m, "process_resident_memory_bytes")
    assert value(m, "process_start_time_seconds") <= time.time()
    assert value(m, "asr_start_info", reason="unknown") == 1
    assert value(m, "asr_workers") == 1
    assert "asr_gpu_memory_used_bytes" not in m  # no GPU here: absent rather than zero


async def test_jobs_finished_counter_never_goes_down(daemon: Daemon, jfk: Path, database: str) -> None:
    """asr_jobs_finished_total counts arrivals: a retry adds one more, a purge of the rows takes none away."""
    with daemon.client() as c:
        job_id = c.post("/v1/audio/transcriptions", files={"file": jfk.open("rb")}).headers["x-job-id"]
    conn = await asyncpg.connect(database)
    try:
        # what `asrctl jobs retry` and `asrctl jobs purge` do to the rows
        await conn.execute("UPDATE jobs SET status = 'failed' WHERE id = $1", job_id)
        await conn.execute("UPDATE jobs SET status = 'queued' WHERE id = $1", job_id)
        await conn.execute("UPDATE jobs SET status = 'completed' WHERE id = $1", job_id)
        m = scrape(daemon)
        assert value(m, "asr_jobs_finished_total", status="completed") == 2
        assert value(m, "asr_jobs_finished_total", status="failed") == 1
        await conn.execute("DELETE FROM segments")
        await conn.execute("DELETE FROM jobs")
    finally:
        await conn.close()
    m = scrape(daemon)
    assert value(m, "asr_jobs_finished_total", status="completed") == 2
    assert value(m, "asr_jobs_finished_total", status="failed") == 1
    assert value(m, "asr_jobs_finished_total", status="cancelled") == 0


def test_probes_and_scrapes_are_not_activity(make_daemon: Callable[..., Daemon]) -> None:
    """Health probes and /metrics leave asr_idle_seconds growing; a real request resets it."""
    daemon = make_daemon(ASR_START_REASON="socket")
    with daemon.client() as c:
        c.get("/v1/jobs")
        time.sleep(1.0)
        for path in ("/healthz", "/readyz", "/metrics"):
            assert c.get(path).status_code == 200
        m = scrape(daemon)
        assert value(m, "asr_idle_seconds") >= 1.0
        assert value(m, "asr_start_info", reason="socket") == 1
        assert value(m, "asr_http_requests_total", route="/metrics", method="GET", status="200") >= 1
        c.get("/v1/jobs")
        assert value(scrape(daemon), "asr_idle_seconds") < 1.0


def test_queue_gauges_while_jobs_wait_and_run(daemon: Daemon, two_minutes: Path, jfk: Path) -> None:
    """With one job running and one queued: asr_jobs_running 1, asr_queue_depth 1, the oldest queued age > 0."""
    with daemon.client() as c:
        running = submit(c, two_minutes).json()["id"]
        wait_status(c, running, {"running"})
        queued = submit(c, jfk).json()["id"]
        time.sleep(0.3)
        m = scrape(daemon)
        assert c.get(f"/v1/jobs/{queued}").json()["status"] == "queued"
        assert value(m, "asr_jobs_running") == 1
        assert value(m, "asr_queue_depth") == 1
        assert value(m, "asr_queue_oldest_age_seconds") >= 0.3
        c.delete(f"/v1/jobs/{running}")
        assert wait_status(c, queued, {"completed"}, timeout=60)["status"] == "completed"
    m = scrape(daemon)
    assert value(m, "asr_jobs_running") == 0 and value(m, "asr_queue_depth") == 0
