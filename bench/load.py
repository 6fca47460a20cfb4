"""Many clients at once: async jobs followed over SSE, and synchronous transcriptions, retrying on 429/503.

The scenario of issue 18, shared by the load test (`tests/e2e/test_load.py`) and `make bench`'s load
section. Each client submits one file and retries a 429 or 503 after its `Retry-After` (with a
little jitter, as a polite client does), until it is served or the plan's deadline passes:

- `job`: httpx.AsyncClient, `POST /v1/jobs`, then `GET /v1/jobs/{id}/events` (SSE) to the end;
- `sync`: httpx.Client in a thread, `POST /v1/audio/transcriptions`, waiting for the transcript;
- `openai`: the openai SDK (httpx underneath, its own retries off) in a thread, the same endpoint.

The httpx clients send their body at `Plan.rate` bytes per second, as a client on a LAN or Wi-Fi
does: on loopback a small body is otherwise in the server's buffers before any answer, and a
refusal that closes the connection under a client still sending (issue 18) would go unseen.

Meanwhile `/healthz` is asked every quarter second from a separate process and the daemon's worker
process is sampled (RSS and open file descriptors). Everything is bounded: the clients, one
submission each, the deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

KINDS = ("job", "sync", "openai")
TERMINAL = frozenset({"completed", "failed", "cancelled"})
RETRY_STATUSES = frozenset({429, 503})


@dataclass
class Outcome:
    """What one client got."""

    kind: str
    status: int | None = None
    """The final answer's status (the 202 of a job client); None when no answer came."""
    refusals: list[int] = field(default_factory=list)
    """429/503 answers the client was told to retry after."""
    no_retry_after: int = 0
    """429/503 answers that did not say when to retry."""
    transport_errors: list[str] = field(default_factory=list)
    """Requests that ended without an answer (reset, closed, timed out), by exception type."""
    seconds: float = 0.0
    """First attempt → transcript (sync) or the SSE stream's last event (job), retries included."""
    job_id: str | None = None
    end_event: str | None = None
    """The final event of a job client's SSE stream."""
    terminal_events: int = 0
    """Final events (completed/failed/cancelled) its SSE stream carried: exactly one when all is well."""
    text: str = ""
    gave_up: bool = False
    """The deadline passed before the client was served (it may have been accepted)."""

    @property
    def served(self) -> bool:
        """Accepted and finished: a transcript (sync) or a `completed` event (job)."""
        if self.kind == "job":
            return self.status == 202 and self.end_event == "completed"
        return self.status == 200 and bool(self.text)


@dataclass
class Plan:
    """Who sends what, and for how long at most."""

    url: str
    audio: bytes
    filename: str
    kinds: list[str]
    """One entry per client."""
    deadline_s: float = 120.0
    retry_cap_s: float = 10.0
    """Longest wait after one refusal (Retry-After is honoured up to this)."""
    rate: float | None = 4e6
    """Bytes per second the httpx clients send their body at (None: as fast as the socket takes it)."""

    @classmethod
    def mixed(cls, url: str, audio: bytes, filename: str, clients: int, deadline_s: float = 120.0) -> Plan:
        """`clients` clients: two in three async jobs with SSE, the rest synchronous (httpx and openai alternating)."""
        kinds = ["job" if i % 3 != 2 else ("sync" if (i // 3) % 2 == 0 else "openai") for i in range(clients)]
        return cls(url, audio, filename, kinds, deadline_s)

    def form(self) -> tuple[bytes, dict[str, str]]:
        """The multipart body with the audio as its `file` part, and its headers."""
        b = uuid.uuid4().hex
        head = (
            f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="{self.filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        body = head.encode() + self.audio + f"\r\n--{b}--\r\n".encode()
        return body, {"content-type": f"multipart/form-data; boundary={b}", "content-length": str(len(body))}

    def chunks(self, body: bytes) -> Iterator[tuple[bytes, float]]:
        """`body` in pieces, each with the seconds to wait after it to keep to `rate`."""
        step = 16 << 10
        for i in range(0, len(body), step):
            piece = body[i : i + step]
            yield piece, (len(piece) / self.rate if self.rate else 0.0)

    async def paced(self, body: bytes) -> AsyncIterator[bytes]:
        """`body` at `rate` bytes per second, for an async client."""
        for piece, wait in self.chunks(body):
            yield piece
            if wait:
                await asyncio.sleep(wait)

    def paced_sync(self, body: bytes) -> Iterator[bytes]:
        """`body` at `rate` bytes per second, for a sync client."""
        for piece, wait in self.chunks(body):
            yield piece
            if wait:
                time.sleep(wait)


@dataclass
class Report:
    """Everything the clients and the samplers saw."""

    outcomes: list[Outcome]
    wall_s: float
    health: list[tuple[float, str, float]] = field(default_factory=list)
    """`/healthz` answers: (time since start, status or exception name, seconds it took)."""
    rss: list[int] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Counts, latencies, throughput and the process peaks, as the bench report shows them."""
        lat = sorted(o.seconds for o in self.outcomes if o.served)
        errors = [e for o in self.outcomes for e in o.transport_errors]
        return {
            "clients": len(self.outcomes),
            "accepted": sum(o.status in (200, 202) for o in self.outcomes),
            "served": sum(o.served for o in self.outcomes),
            "refusals": sum(len(o.refusals) for o in self.outcomes),
            "refused_clients": sum(bool(o.refusals) for o in self.outcomes),
            "no_retry_after": sum(o.no_retry_after for o in self.outcomes),
            "transport_errors": len(errors),
            "error_types": sorted(set(errors)),
            "server_errors": sum(1 for o in self.outcomes if o.status is not None and o.status >= 500),
            "gave_up": sum(o.gave_up for o in self.outcomes),
            "p50_s": _pct(lat, 0.50),
            "p95_s": _pct(lat, 0.95),
            "throughput_per_s": len(lat) / self.wall_s if self.wall_s else 0.0,
            "wall_s": self.wall_s,
            "peak_rss": max(self.rss, default=0),
            "peak_fds": max(self.fds, default=0),
            "healthz_failures": sum(1 for _, st, _ in self.health if st != "200"),
            "healthz_max_s": max((s for _, _, s in self.health), default=0.0),
        }


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def worker_pid(main_pid: int) -> int | None:
    """The Granian worker process (the child of `asrctl serve`'s process) holding the app."""
    with contextlib.suppress(OSError, ValueError):
        kids = Path(f"/proc/{main_pid}/task/{main_pid}/children").read_text().split()
        return int(kids[0]) if kids else None
    return None


def rss(pid: int) -> int:
    """VmRSS of a process in bytes (0 when it is gone)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def open_fds(pid: int) -> int:
    """File descriptors a process has open (0 when it is gone)."""
    with contextlib.suppress(OSError):
        return len(list(Path(f"/proc/{pid}/fd").iterdir()))
    return 0


def _retry_wait(r: httpx.Response, o: Outcome, cap: float) -> float | None:
    """Seconds to wait before retrying a refused answer, noting it on `o`; None when it is final."""
    if r.status_code not in RETRY_STATUSES:
        return None
    o.refusals.append(r.status_code)
    raw = r.headers.get("retry-after")
    if raw is None or not raw.strip().isdigit():
        o.no_retry_after += 1
        raw = "1"
    return min(float(raw), cap) * (1 + random.random() * 0.5)  # jitter, not a secret


async def _job(plan: Plan, o: Outcome, end: float) -> None:
    timeout = httpx.Timeout(30.0, read=plan.deadline_s)
    body, headers = plan.form()
    async with httpx.AsyncClient(base_url=plan.url, timeout=timeout) as c:
        while True:
            if time.monotonic() > end:
                o.gave_up = True
                return
            try:
                r = await c.post("/v1/jobs", content=plan.paced(body), headers=headers)
            except httpx.TransportError as exc:
                o.transport_errors.append(type(exc).__name__)
                await asyncio.sleep(1.0)
                continue
            wait = _retry_wait(r, o, plan.retry_cap_s)
            if wait is None:
                break
            await asyncio.sleep(wait)
        o.status = r.status_code
        if r.status_code != 202:
            return
        o.job_id = r.json()["id"]
        try:
            await asyncio.wait_for(_follow(c, o), max(0.1, end - time.monotonic()))
        except TimeoutError:
            o.gave_up = True  # accepted, not finished by the deadline
        except httpx.TransportError as exc:
            o.transport_errors.append("sse:" + type(exc).__name__)


async def _follow(c: httpx.AsyncClient, o: Outcome) -> None:
    """Read the job's SSE stream to its end, counting its final events."""
    async with c.stream("GET", f"/v1/jobs/{o.job_id}/events") as s:
        event = None
        async for line in s.aiter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif not line and event:
                if event in TERMINAL:
                    o.terminal_events += 1
                    o.end_event = event
                event = None


def _left(end: float) -> float:
    """Seconds to the deadline (at least one, so a request can still be answered)."""
    return max(1.0, end - time.monotonic())


def _sync(plan: Plan, o: Outcome, end: float) -> None:
    body, headers = plan.form()
    with httpx.Client(base_url=plan.url, timeout=httpx.Timeout(30.0, read=plan.deadline_s)) as c:
        while True:
            if time.monotonic() > end:
                o.gave_up = True
                return
            try:
                r = c.post(
                    "/v1/audio/transcriptions",
                    content=plan.paced_sync(body),
                    headers=headers,
                    timeout=httpx.Timeout(30.0, read=_left(end)),
                )
            except httpx.TransportError as exc:
                if isinstance(exc, httpx.ReadTimeout) and time.monotonic() >= end - 0.5:
                    o.gave_up = True  # waited for the transcript until the deadline
                    return
                o.transport_errors.append(type(exc).__name__)
                time.sleep(1.0)
                continue
            wait = _retry_wait(r, o, plan.retry_cap_s)
            if wait is None:
                break
            time.sleep(wait)
        o.status = r.status_code
        o.job_id = r.headers.get("x-job-id")
        if r.status_code == 200:
            o.text = r.json()["text"]


def _openai(plan: Plan, o: Outcome, end: float) -> None:
    import openai

    c = openai.OpenAI(base_url=plan.url + "/v1", api_key="sk-load", max_retries=0, timeout=plan.deadline_s)
    try:
        while True:
            if time.monotonic() > end:
                o.gave_up = True
                return
            try:
                raw = c.with_options(timeout=_left(end)).audio.transcriptions.with_raw_response.create(
                    model="whisper-1", file=(plan.filename, plan.audio)
                )
            except openai.APIStatusError as exc:
                wait = _retry_wait(exc.response, o, plan.retry_cap_s)
                if wait is None:
                    o.status = exc.status_code
                    return
                time.sleep(wait)
                continue
            except openai.APIConnectionError as exc:  # the SDK's name for a transport error (and timeouts)
                if isinstance(exc, openai.APITimeoutError) and time.monotonic() >= end - 0.5:
                    o.gave_up = True
                    return
                cause = exc.__cause__
                o.transport_errors.append(type(cause).__name__ if cause else type(exc).__name__)
                time.sleep(1.0)
                continue
            o.status = raw.http_response.status_code
            o.job_id = raw.headers.get("x-job-id")
            o.text = raw.parse().text
            return
    finally:
        c.close()


async def _timed(o: Outcome, run: Callable[[], Any]) -> None:
    t0 = time.monotonic()
    try:
        await run()
    finally:
        o.seconds = time.monotonic() - t0


async def run(plan: Plan, pid: int | None = None) -> Report:
    """Start every client at once, sample `/healthz` and the process `pid`, return when all are done."""
    loop = asyncio.get_running_loop()
    t0 = time.monotonic()
    end = t0 + plan.deadline_s
    outcomes = [Outcome(kind) for kind in plan.kinds]
    report = Report(outcomes, 0.0)
    threaded = sum(k != "job" for k in plan.kinds)
    pool = ThreadPoolExecutor(max_workers=max(1, threaded), thread_name_prefix="load")
    done = asyncio.Event()

    async def sample() -> None:
        while pid is not None and not done.is_set():
            report.rss.append(rss(pid))
            report.fds.append(open_fds(pid))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.2)

    def client(o: Outcome) -> Callable[[], Any]:
        if o.kind == "job":
            return lambda: _job(plan, o, end)
        fn = _sync if o.kind == "sync" else _openai
        return lambda: loop.run_in_executor(pool, fn, plan, o, end)

    probe = _start_probe(plan.url)
    watchers = [asyncio.create_task(sample())]
    try:
        await asyncio.gather(*(_timed(o, client(o)) for o in outcomes))
    finally:
        report.wall_s = time.monotonic() - t0
        done.set()
        await asyncio.gather(*watchers)
        pool.shutdown(wait=True)
        report.health = _stop_probe(probe)
    return report


#: `/healthz` every quarter second from a process of its own, so that what it measures is the daemon,
#: not the load generator's own event loop and threads; one JSON line per answer
PROBE = """
import http.client, json, sys, time
host, port = sys.argv[1], int(sys.argv[2])
t0 = time.monotonic()
while True:
    t = time.monotonic()
    try:
        c = http.client.HTTPConnection(host, port, timeout=60)
        c.request("GET", "/healthz")
        status = str(c.getresponse().status)
        c.close()
    except OSError as exc:
        status = type(exc).__name__
    print(json.dumps([t - t0, status, time.monotonic() - t]), flush=True)
    time.sleep(max(0.0, 0.25 - (time.monotonic() - t)))
"""


def _start_probe(url: str) -> subprocess.Popen[str]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return subprocess.Popen([sys.executable, "-c", PROBE, host, port], stdout=subprocess.PIPE, text=True)


def _stop_probe(probe: subprocess.Popen[str]) -> list[tuple[float, str, float]]:
    """Stop the probe (a last answer in flight is let go) and return its answers."""
    probe.terminate()
    out, _ = probe.communicate(timeout=10)
    rows = []
    for line in out.splitlines():
        with contextlib.suppress(ValueError):
            t, status, took = json.loads(line)
            rows.append((float(t), str(status), float(took)))
    return rows
