"""The load section: clients 1 → 200 at once (mixed async+SSE / sync / openai), and what an upload costs.

One daemon with the shipped admission defaults (`ASR_MAX_UPLOADS_PER_KEY`, `ASR_MAX_QUEUED_JOBS`);
only deduplication is off, so every client's job really runs. Each level starts its clients at
once (`bench.load`), each submitting one short clip and retrying 429/503 after Retry-After, and is
bounded by a deadline: clients not served by then count as `gave_up`. Before the levels, while the
daemon is idle, the cost of concurrent streamed uploads: N uploads held open mid-body (RSS and file
descriptors per upload), and N uploads sent as fast as loopback takes them (peak RSS per upload,
aggregate MB/s).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from asr_daemon.config import Settings
from bench import load, stack
from bench.clips import Clip


def _defaults() -> dict[str, str]:
    """The shipped admission settings (stack.make_daemon raises the slots for the other sections)."""
    fields = Settings.model_fields
    return {
        "ASR_MAX_UPLOADS_PER_KEY": str(fields["max_uploads_per_key"].default),
        "ASR_MAX_QUEUED_JOBS": str(fields["max_queued_jobs"].default),
    }


def load_levels(
    svc: stack.Services,
    work: Path,
    clip: Clip,
    levels: list[int],
    env: dict[str, str],
    deadline_s: float,
    held: int = 64,
    fast: int = 16,
    fast_bytes: int = 16 << 20,
    settle: float = 2.0,
) -> dict[str, Any]:
    """Each level of clients in turn against one daemon, then the upload cost; a JSON-able dict."""
    admission = _defaults()
    held = min(held, int(admission["ASR_MAX_UPLOADS_PER_KEY"]))  # one more would get its 429
    d = stack.make_daemon(svc, work, **{**env, **admission})
    d.start()
    out: dict[str, Any] = {"clip": clip.name, "seconds": clip.seconds, "deadline_s": deadline_s, "env": admission}
    try:
        pid = d.worker_pid()
        assert pid is not None
        data = clip.path.read_bytes()
        out["bytes"] = len(data)
        with httpx.Client(base_url=d.url, timeout=600) as c:  # the model loaded: the idle level
            stack.post_transcription(c, clip.name, data)
        out["idle_rss"], out["idle_fds"] = load.rss(pid), load.open_fds(pid)
        out["uploads"] = upload_cost(d.port, pid, held, fast, fast_bytes, settle)  # first: nothing else moves the RSS
        out["levels"] = {}
        for n in levels:
            plan = load.Plan.mixed(d.url, data, clip.path.name, n, deadline_s=deadline_s)
            report = asyncio.run(load.run(plan, pid))
            out["levels"][str(n)] = {**report.summary(), "kinds": {k: plan.kinds.count(k) for k in load.KINDS}}
            print(f"bench: load {n} clients: {out['levels'][str(n)]}", flush=True)
            out["levels"][str(n)]["cancelled_after"] = _cancel_unfinished(d.url)
            time.sleep(settle)  # connections closed, the last SSE streams ended
        out["after_rss"], out["after_fds"] = load.rss(pid), load.open_fds(pid)
    finally:
        d.stop()
    return out


def _cancel_unfinished(url: str) -> int:
    """Cancel the jobs a level left queued or running at its deadline, so the next starts empty."""
    n = 0
    with httpx.Client(base_url=url, timeout=60) as c:
        for status in ["queued"] * 5 + ["running"] * 5:  # bounded: a few pages, a few looks
            rows = c.get("/v1/jobs", params={"status": status, "limit": 200}).json()["data"]
            for row in rows:
                n += c.delete(f"/v1/jobs/{row['id']}").status_code == 200
            if rows and status == "running":
                time.sleep(0.5)
    return n


def _head(length: int) -> bytes:
    part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.wav"\r\n\r\n'
    return (
        b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        b"Content-Length: %d\r\n\r\n" % (length + len(part))
    ) + part


def upload_cost(
    port: int, pid: int, held: int, fast: int, fast_bytes: int = 16 << 20, settle: float = 2.0
) -> dict[str, Any]:
    """RSS and fds per upload held open mid-body; peak RSS per upload and MB/s for uploads at full speed.

    The uploads never finish (the client closes mid-body), so no job is made: only the streaming costs.
    """
    base_rss, base_fds = load.rss(pid), load.open_fds(pid)
    socks = []
    try:
        for _ in range(held):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(_head(100 << 20) + b"\0" * (256 << 10))  # a quarter of a flush buffer each
            socks.append(s)
        time.sleep(settle * 1.5)  # every upload has reached its part file
        held_rss, held_fds = load.rss(pid) - base_rss, load.open_fds(pid) - base_fds
    finally:
        for s in socks:
            s.close()
    time.sleep(settle)
    before = load.rss(pid)
    peak = [before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], load.rss(pid))
            time.sleep(0.02)

    def send() -> None:
        chunk = b"\0" * (1 << 20)
        with socket.create_connection(("127.0.0.1", port)) as s, contextlib.suppress(OSError):
            s.sendall(_head(fast_bytes + 64))
            for _ in range(fast_bytes // len(chunk)):
                s.sendall(chunk)

    sampler = threading.Thread(target=sample)
    sampler.start()
    senders = [threading.Thread(target=send) for _ in range(fast)]
    t0 = time.monotonic()
    for t in senders:
        t.start()
    for t in senders:
        t.join()
    wall = time.monotonic() - t0
    time.sleep(0.5)
    stop.set()
    sampler.join()
    return {
        "held": held,
        "held_rss_per_upload": held_rss / held,
        "held_fds_per_upload": held_fds / held,
        "fast": fast,
        "fast_bytes": fast_bytes,
        "fast_peak_rss_per_upload": (peak[0] - before) / fast,
        "fast_mb_per_s": fast * fast_bytes / wall / 1e6,
    }
