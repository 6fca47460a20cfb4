"""Prometheus metrics: one registry per application, filled by one-line calls and at scrape time.

`create_app` builds a `Metrics` (nothing happens at import). Counters and histograms are updated
where things happen (HTTP responses through a `before_send` hook, job starts and completions in
the worker); what describes the present (queue depth, oldest queued job, loaded models and their
load time, the model cache's counts, idle time, memory, VRAM) is read when Prometheus scrapes. Job
totals by final state come from PostgreSQL, so they are exact across restarts and processes (the
daemon stops when idle; an in-process counter would lose what happened since the last scrape).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from asr_daemon import __version__, jobs
from asr_daemon.accesslog import PROBE_PATHS
from asr_daemon.engine import device

if TYPE_CHECKING:
    from asr_daemon.queries import QueueStats


_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
_PROCESSING_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
_RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)


def peak_rss_bytes() -> int:
    """This process's peak resident set size (VmHWM), 0 where /proc is unavailable."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def process_age() -> float:
    """Seconds since this process started (from /proc; 0 where it is unavailable)."""
    try:
        with open("/proc/self/stat", encoding="ascii") as fh:
            start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime", encoding="ascii") as fh:
            uptime = float(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))


_MODEL_COUNTS = {
    "loads": "Models loaded",
    "unloads": "Models unloaded (idle TTL, eviction, request)",
    "evictions": "Idle models unloaded to make room for another",
    "cpu_fallbacks": "Times CUDA failed and later loads went to the CPU",
}


class _Totals(Collector):
    """Counters read at scrape time: jobs by final state (PostgreSQL) and the model cache's counts."""

    def __init__(self) -> None:
        self.jobs: dict[str, int] = {}
        self.models: dict[str, int] = {}

    def collect(self) -> Iterable[Metric]:
        fam = CounterMetricFamily(
            "asr_jobs_finished",
            "Jobs that reached a final state (all processes; PostgreSQL's job_totals, which purges leave alone)",
            labels=["status"],
        )
        for status in sorted(self.jobs):
            fam.add_metric([status], self.jobs[status])
        yield fam
        for key, text in _MODEL_COUNTS.items():
            if key in self.models:
                yield CounterMetricFamily(f"asr_model_{key}", text + " (this process)", self.models[key])

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily("asr_jobs_finished", "Jobs that reached a final state", labels=["status"])
        for key, text in _MODEL_COUNTS.items():
            yield CounterMetricFamily(f"asr_model_{key}", text)


class Metrics:
    """The daemon's metrics in their own registry (one per app: tests build several apps per process)."""

    def __init__(self, *, workers: int = 1, start_reason: str = "") -> None:
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)  # process_resident_memory_bytes, process_start_time_seconds, CPU
        self.last_activity = time.time()
        self.requests = Counter(
            "asr_http_requests",
            "HTTP responses by route template, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.queue_wait = Histogram(
            "asr_job_queue_wait_seconds",
            "Seconds from submission to a job's first start",
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        self.processing = Histogram(
            "asr_job_processing_seconds",
            "Seconds a completed job ran here (model load included)",
            ["model"],
            buckets=_PROCESSING_BUCKETS,
            registry=r,
        )
        self.audio = Counter(
            "asr_audio_seconds", "Seconds of audio transcribed by completed jobs", ["model"], registry=r
        )
        self.rtf = Histogram(
            "asr_realtime_factor",
            "Transcription seconds per audio second, per completed job (< 1: faster than real time)",
            ["model", "device"],
            buckets=_RTF_BUCKETS,
            registry=r,
        )
        self.models_loaded = Gauge(
            "asr_models_loaded",
            "Models in memory (1 per model, device and compute type)",
            ["model", "device", "compute_type"],
            registry=r,
        )
        self.model_load = Gauge(
            "asr_model_load_seconds",
            "Seconds the load of each model in memory took",
            ["model", "device", "compute_type"],
            registry=r,
        )
        self.queue_depth = Gauge("asr_queue_depth", "Jobs queued (all processes)", registry=r)
        self.oldest_queued = Gauge(
            "asr_queue_oldest_age_seconds", "Age of the oldest queued job, 0 when none", registry=r
        )
        self.running = Gauge("asr_jobs_running", "Jobs running in this process", registry=r)
        self.live_sessions = Gauge("asr_live_sessions", "Live WebSocket sessions open in this process", registry=r)
        self.idle = Gauge(
            "asr_idle_seconds",
            "Seconds since the last request or job activity (0 while a job is queued "
            "or running); probes and /metrics do not count",
            registry=r,
        )
        self.peak_rss = Gauge(
            "asr_process_peak_resident_memory_bytes", "Peak resident memory of this process", registry=r
        )
        self.vram_used = Gauge("asr_gpu_memory_used_bytes", "GPU memory in use (whole device)", ["gpu"], registry=r)
        self.vram_free = Gauge("asr_gpu_memory_free_bytes", "GPU memory free", ["gpu"], registry=r)
        self.db_up = Gauge("asr_database_up", "1 when the last scrape could read the job table", registry=r)
        Gauge("asr_workers", "Transcriptions run at once (ASR_WORKERS)", registry=r).set(workers)
        Gauge("asr_build_info", "Version of asr-server", ["version"], registry=r).labels(__version__).set(1)
        Gauge(
            "asr_start_info",
            "Why this process started (ASR_START_REASON; `unknown` when not told)",
            ["reason"],
            registry=r,
        ).labels(start_reason or "unknown").set(1)
        self._totals = _Totals()
        r.register(self._totals)

    # --- one-line calls from where things happen ---------------------------------------------
    def response(self, route: str, method: str, status: int, path: str) -> None:
        """Count one HTTP response; anything but a probe or a scrape is activity."""
        self.requests.labels(route, method, str(status)).inc()
        if path not in PROBE_PATHS:  # probes and scrapes must not keep an idle daemon alive
            self.last_activity = time.time()

    def job_started(self, job: jobs.Job) -> None:
        """A job was claimed: its queue wait is observed on its first attempt only."""
        if job.attempts == 1 and job.started_at is not None:
            self.queue_wait.observe(max(0.0, (job.started_at - job.created_at).total_seconds()))

    def job_completed(self, model: str, device: str, audio_s: float, transcribe_s: float, elapsed_s: float) -> None:
        """A job completed here: processing time, audio seconds and realtime factor."""
        self.last_activity = time.time()
        self.processing.labels(model).observe(elapsed_s)
        self.audio.labels(model).inc(max(0.0, audio_s))
        if audio_s > 0:
            self.rtf.labels(model, device).observe(transcribe_s / audio_s)

    # --- scrape time -----------------------------------------------------------------------
    def refresh(
        self, stats: QueueStats | None, totals: Mapping[jobs.Status, int] | None, running: int, cache: Any
    ) -> None:
        """Set the gauges that describe now; `stats`/`totals` are None when PostgreSQL did not answer."""
        self.db_up.set(0 if stats is None else 1)
        queued = 0
        if stats is not None:
            queued = stats.queued
            self.queue_depth.set(queued)
            self.oldest_queued.set(stats.oldest_queued_s or 0.0)
        if totals is not None:
            self._totals.jobs = {str(status): totals.get(status, 0) for status in jobs.TERMINAL}
        self._totals.models = cache.stats()
        self.running.set(running)
        busy = running > 0 or queued > 0
        self.idle.set(0.0 if busy else max(0.0, time.time() - self.last_activity))
        if busy:
            self.last_activity = time.time()
        self.models_loaded.clear()
        self.model_load.clear()
        loaded = cache.loaded()
        for m in loaded:
            self.models_loaded.labels(m.name, m.device, m.compute_type).set(1)
            self.model_load.labels(m.name, m.device, m.compute_type).set(m.load_seconds)
        self.peak_rss.set(peak_rss_bytes())
        if any(m.device == "cuda" for m in loaded) and (v := device.vram()) is not None:
            free, total = v
            self.vram_used.labels("0").set(total - free)
            self.vram_free.labels("0").set(free)

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)


async def on_send(message: Any, scope: Any) -> None:
    """Litestar `before_send` hook: count every response (404s included) by its route template."""
    if message["type"] != "http.response.start" or scope.get("type") != "http":
        return
    metrics: Metrics | None = getattr(scope["app"].state, "metrics", None)
    if metrics is not None:
        route = scope.get("path_template") or "unmatched"
        metrics.response(route, scope.get("method", ""), int(message["status"]), scope.get("path", ""))
