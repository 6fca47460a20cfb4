"""Overhead, throughput, long audio and idle memory: each returns a JSON-able dict for the report.

Every daemon/library comparison is measured in one run, alternating which side goes first, so the
noise of this shared machine hits both sides alike; figures are medians with min–max.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench import stack, stats
from bench.clips import Clip
from bench.direct import Direct, run_in_subprocess


def _words(text: str) -> str:
    return " ".join("".join(ch if ch.isalnum() else " " for ch in text.lower()).split())


def overhead(
    svc: stack.Services,
    work: Path,
    direct: Direct,
    clips: list[Clip],
    runs: int,
    env: dict[str, str],
    variants: dict[str, dict[str, str]] | None = None,
) -> dict[str, Any]:
    """Same clip through faster-whisper in-process (A) and the daemon over HTTP (B), alternating.

    `variants` adds more daemons with other settings (name → extra env), measured in the same
    rounds, so a setting's before/after comes from one run.
    """
    # the library's `transcribe` is the sequential path: the daemon too, unless told otherwise (its
    # default batches audio of ASR_BATCH_MIN_SECONDS or more, another algorithm than the one compared)
    env = {"ASR_BATCH_SIZE": "0", **env}
    named = {"daemon": env, **{k: {**env, **v} for k, v in (variants or {}).items()}}
    daemons = {k: stack.make_daemon(svc, work / k, **e) for k, e in named.items()}
    out: dict[str, Any] = {"env": env, "variants": variants or {}, "clips": []}
    try:
        for d in daemons.values():
            d.start()
        cs = {k: httpx.Client(base_url=d.url, timeout=3600) for k, d in daemons.items()}
        for clip in clips:
            data = clip.path.read_bytes()
            _, a_text = direct.run(clip.path)  # first calls pay one-time costs on every side
            texts = {k: stack.post_transcription(c, clip.name, data)[2] for k, c in cs.items()}
            sides = ["library", *cs]
            rounds = []
            for i in range(runs):
                order = sides[i % len(sides) :] + sides[: i % len(sides)]
                r: dict[str, Any] = {"first": order[0]}
                for side in order:
                    if side == "library":
                        r["library"], _ = direct.run(clip.path)
                    else:
                        r[side], jid, _ = stack.post_transcription(cs[side], clip.name, data)
                        r[side + "_transcribe"] = stack.job(cs[side], jid)["timings"].get("transcribe_s")
                rounds.append(r)
            entry: dict[str, Any] = {
                "clip": clip.name,
                "seconds": clip.seconds,
                "rounds": rounds,
                "direct": stats.summary([r["library"] for r in rounds]),
            }
            for k in cs:
                pre = "" if k == "daemon" else k + ":"
                entry[pre + "daemon"] = stats.summary([r[k] for r in rounds])
                entry[pre + "ratio"] = stats.summary([r[k] / r["library"] for r in rounds])
                entry[pre + "daemon_transcribe"] = stats.summary([r[k + "_transcribe"] for r in rounds])
                entry[pre + "non_model"] = stats.summary([r[k] - r[k + "_transcribe"] for r in rounds])
                entry[pre + "same_text"] = _words(a_text) == _words(texts[k])
            out["clips"].append(entry)
        for c in cs.values():
            c.close()
    finally:
        for d in daemons.values():
            d.stop()
    return out


def _load(url: str, clip: Clip, data: bytes, clients: int, jobs: int) -> dict[str, Any]:
    """`clients` threads submitting `jobs` clips in total through the synchronous endpoint."""
    lock = threading.Lock()
    todo = list(range(jobs))
    done: list[tuple[float, float, str]] = []
    errors: list[str] = []

    def client() -> None:
        with httpx.Client(base_url=url, timeout=3600) as c:
            while True:
                with lock:
                    if not todo:
                        return
                    todo.pop()
                t0 = time.time()
                try:
                    _, jid, _ = stack.post_transcription(c, clip.name, data)
                except httpx.HTTPError as exc:
                    errors.append(type(exc).__name__)
                    continue
                with lock:
                    done.append((t0, time.time(), jid))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t_start = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - t_start
    with httpx.Client(base_url=url, timeout=60) as c:
        rows = [stack.job(c, jid) for _, _, jid in done]
    waits = [stack.epoch(r["started_at"]) - stack.epoch(r["created_at"]) for r in rows]
    e2e = [t1 - t0 for t0, t1, _ in done]
    return {
        "clients": clients,
        "jobs": len(done),
        "errors": errors,
        "wall_s": wall,
        "audio_per_wall": len(done) * clip.seconds / wall,
        "jobs_per_min": 60 * len(done) / wall,
        "queue_wait_p50": stats.percentile(waits, 50),
        "queue_wait_p95": stats.percentile(waits, 95),
        "e2e_p50": stats.percentile(e2e, 50),
        "e2e_p95": stats.percentile(e2e, 95),
    }


def _sequential(direct: Direct, clip: Clip, n: int) -> tuple[float, float]:
    """The library's sequential throughput over `n` runs: (audio-s per wall-s, CPU-s per audio-s)."""
    c0, t0 = stack.cpu_seconds(None), time.perf_counter()
    for _ in range(n):
        direct.run(clip.path)
    return n * clip.seconds / (time.perf_counter() - t0), (stack.cpu_seconds(None) - c0) / (n * clip.seconds)


def throughput(
    svc: stack.Services,
    work: Path,
    direct: Direct,
    clip: Clip,
    levels: list[int],
    reps: int,
    jobs: int,
    env: dict[str, str],
    long_clip: Clip | None = None,
    variants: dict[str, dict[str, str]] | None = None,
) -> dict[str, Any]:
    """Concurrency sweep, each level right after the library's sequential throughput on the same clip.

    Besides wall-clock figures, CPU seconds per audio second (daemon worker process vs the library)
    measure efficiency independently of what else the shared machine is running.

    With `variants`, each level is run against every daemon in turn (order rotating), so settings
    are compared in the same run; the mix with the long file runs on the main daemon only.
    """
    named = {"daemon": env, **{k: {**env, **v} for k, v in (variants or {}).items()}}
    daemons = {k: stack.make_daemon(svc, work / k, **e) for k, e in named.items()}
    data = clip.path.read_bytes()
    runs: list[dict[str, Any]] = []
    seq: list[float] = []
    seq_cpu: list[float] = []
    mix = None
    try:
        for d in daemons.values():
            d.start()
            with httpx.Client(base_url=d.url, timeout=3600) as c:
                stack.post_transcription(c, clip.name, data)  # model load, first-call costs
        names = list(daemons)
        for rep in range(reps):
            order = levels if rep % 2 == 0 else list(reversed(levels))
            for i, n in enumerate(order):
                wall, cpu = _sequential(direct, clip, min(jobs, 4))
                seq.append(wall)
                seq_cpu.append(cpu)
                k = (rep + i) % len(names)
                for name in names[k:] + names[:k]:
                    pid = daemons[name].worker_pid()
                    c0 = stack.cpu_seconds(pid)
                    r = _load(daemons[name].url, clip, data, n, max(jobs, n))
                    r["cpu_per_audio"] = (stack.cpu_seconds(pid) - c0) / (r["jobs"] * clip.seconds)
                    r.update(rep=rep, daemon=name, vs_sequential=r["audio_per_wall"] / wall)
                    r["cpu_vs_sequential"] = r["cpu_per_audio"] / cpu
                    runs.append(r)
        if long_clip:
            mix = _mix(daemons["daemon"].url, clip, data, long_clip, jobs)
    finally:
        for d in daemons.values():
            d.stop()
    keys = (
        "audio_per_wall",
        "jobs_per_min",
        "queue_wait_p50",
        "queue_wait_p95",
        "e2e_p50",
        "e2e_p95",
        "vs_sequential",
        "cpu_per_audio",
        "cpu_vs_sequential",
    )
    by_level: dict[str, Any] = {}
    for name in daemons:
        pre = "" if name == "daemon" else name + ":"
        for n in levels:
            rs = [r for r in runs if r["clients"] == n and r["daemon"] == name]
            by_level[pre + str(n)] = {k: stats.summary([r[k] for r in rs if r[k] is not None]) for k in keys}
    return {
        "env": env,
        "variants": variants or {},
        "clip": clip.name,
        "seconds": clip.seconds,
        "reps": reps,
        "jobs_per_level": jobs,
        "sequential": stats.summary(seq),
        "sequential_cpu": stats.summary(seq_cpu),
        "levels": by_level,
        "runs": runs,
        "mix": mix,
    }


def _mix(url: str, clip: Clip, data: bytes, long_clip: Clip, jobs: int) -> dict[str, Any]:
    """One long file submitted first, then 4 clients of short clips: does the long file hold them up?"""
    with httpx.Client(base_url=url, timeout=3600) as c:
        t0 = time.time()
        r = c.post("/v1/jobs", files={"file": (long_clip.name, long_clip.path.read_bytes())})
        r.raise_for_status()
        long_id = r.json()["id"]
        short = _load(url, clip, data, 4, max(jobs, 8))
        while (row := stack.job(c, long_id))["status"] not in ("completed", "failed", "cancelled"):
            time.sleep(0.5)
        wall = stack.epoch(row["finished_at"]) - t0
    audio = long_clip.seconds + short["jobs"] * clip.seconds
    return {
        "long": long_clip.name,
        "long_seconds": long_clip.seconds,
        "long_status": row["status"],
        "long_wall_s": wall,
        "short": short,
        "audio_per_wall": audio / max(wall, short["wall_s"]),
    }


def long_audio(
    svc: stack.Services,
    work: Path,
    clips: list[Clip],
    env: dict[str, str],
    library: Callable[[Clip], dict[str, float]] | None = None,
) -> dict[str, Any]:
    """Each long clip in a fresh daemon: total time, realtime factor, peak RSS of the worker process."""
    out: dict[str, Any] = {"env": env, "clips": []}
    for clip in clips:
        d = stack.make_daemon(svc, work / clip.name, **env)
        d.start()
        try:
            pid = d.worker_pid()
            rss_ready = stack.rss(pid)
            with httpx.Client(base_url=d.url, timeout=60) as c:
                r = c.post("/v1/jobs", files={"file": (clip.name, clip.path.read_bytes())})
                r.raise_for_status()
                jid = r.json()["id"]
                while (row := stack.job(c, jid))["status"] not in ("completed", "failed", "cancelled"):
                    time.sleep(0.5)
            total = stack.epoch(row["finished_at"]) - stack.epoch(row["created_at"])
            entry = {
                "clip": clip.name,
                "seconds": clip.seconds,
                "status": row["status"],
                "total_s": total,
                "rtf": total / clip.seconds,
                "x_realtime": clip.seconds / total,
                "timings": row["timings"],
                "rss_ready": rss_ready,
                "peak_rss": stack.peak_rss(pid),
            }
        finally:
            d.stop()
        if library is not None:
            entry["library"] = library(clip)
        out["clips"].append(entry)
    return out


def idle_memory(svc: stack.Services, work: Path, clip: Clip, model_dir: Path, env: dict[str, str]) -> dict[str, Any]:
    """RSS of the daemon before and after the model is loaded, against the library alone; and how long
    a graceful stop (SIGTERM → every process gone) takes once it is idle, the part of "idle → gone"
    that is the daemon's own (the rest is the idle window and the watcher's check interval)."""
    d = stack.make_daemon(svc, work, **env)
    d.start()
    try:
        pid = d.worker_pid()
        before = stack.rss(pid)
        with httpx.Client(base_url=d.url, timeout=600) as c:
            stack.post_transcription(c, clip.name, clip.path.read_bytes())
        time.sleep(0.5)
        after = stack.rss(pid)
        peak = stack.peak_rss(pid)
        t0 = time.perf_counter()
        d.stop()
        stop_s = time.perf_counter() - t0
    finally:
        d.stop()
    lib = run_in_subprocess(model_dir, clip.path)
    return {
        "clip": clip.name,
        "daemon_rss_started": before,
        "daemon_rss_loaded": after,
        "daemon_peak": peak,
        "stop_s": stop_s,
        "library": lib,
    }


STAND_IN_SYSTEMCTL = """#!/bin/sh
# stand-in for systemctl (bench): the proxy is never active
case "$1" in
  is-active) echo inactive; exit 3 ;;
esac
exit 1
"""


def idle_stop(svc: stack.Services, work: Path, clip: Clip, env: dict[str, str], window: float = 5.0) -> dict[str, Any]:
    """Last request → daemon process gone, under the real `asrctl idle-watch` with a short window.

    A stand-in `systemctl` reports the proxy inactive, and the bench plays PID 1: when the watcher
    exits (quiet), nothing needs the daemon any more (StopWhenUnneeded=), so it gets SIGTERM.
    Everything else (access log, job table, the watcher's decision, the drain) is real.
    """
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("asr_daemon.ops.idle") is None:
        return {"skipped": "`asrctl idle-watch` is not on this branch"}
    work.mkdir(parents=True, exist_ok=True)
    ctl = work / "systemctl"
    ctl.write_text(STAND_IN_SYSTEMCTL)
    ctl.chmod(0o755)
    d = stack.make_daemon(svc, work, **env)
    d.start()
    assert d.proc is not None
    watch_env = {**d.env, "ASR_IDLE_STOP_AFTER": str(window), "ASR_IDLE_SYSTEMCTL": str(ctl)}
    watcher = subprocess.Popen(
        [sys.executable, "-m", "asr_daemon.cli", "idle-watch", "--interval", "0.25"],
        env=watch_env,
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with httpx.Client(base_url=d.url, timeout=600) as c:
            stack.post_transcription(c, clip.name, clip.path.read_bytes())
            for _ in range(3):  # probes must not count as activity
                c.get("/healthz")
        last = time.perf_counter()
        if watcher.wait(window * 4 + 60) != 0:
            raise RuntimeError(f"asrctl idle-watch failed with {watcher.returncode}")
        d.proc.terminate()  # what systemd does to a unit nobody needs
        d.proc.wait(60)
        gone = time.perf_counter() - last
    finally:
        watcher.terminate()
        watcher.wait(10)
        d.stop()
    return {"window_s": window, "interval_s": 0.25, "idle_to_gone_s": gone, "after_window_s": gone - window}
