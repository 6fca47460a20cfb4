"""Cold start through socket activation, as in production: first connection → complete transcript.

`systemd-socket-activate` listens on the TCP port; the first connection runs bench/activate.py,
which starts `asrctl serve --uds`, waits for its READY=1 (as the proxy unit does) and then execs
`systemd-socket-proxyd`. The phases come from the
stand-in's marks, the daemon's own log lines (`app_created`, `daemon_started` with db_s/redis_s)
and the job's row (created/started/finished, timings.model_load_s/first_segment_s/transcribe_s).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench import stack, stats
from bench.clips import Clip
from tests import services

HERE = Path(__file__).resolve().parent
PHASES = (
    "activation",
    "process_start",
    "imports",
    "app_db_redis",
    "ready",
    "request_in",
    "queue",
    "model_load",
    "first_segment",
    "rest_of_transcript",
    "response",
    "total",
    "total_minus_model_load",
)


def available() -> str | None:
    """None when socket activation can run here, else why not."""
    if not shutil.which("systemd-socket-activate"):
        return "systemd-socket-activate not installed"
    if not Path(stack.PROXYD).exists():
        return f"{stack.PROXYD} not installed"
    return None


def _listening(port: int) -> bool:
    needle = f":{port:04X} "
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            parts = line.split()
            if parts[1].endswith(needle.strip()) and parts[3] == "0A":
                return True
    return False


def once(d: stack.Daemon, work: Path, clip: Clip, run: int) -> dict[str, Any]:
    """One cold start of daemon `d` (its database already migrated); returns the phases in seconds."""
    uds = str(work / f"http{run}.sock")
    marks = str(work / f"marks{run}.json")
    port = services.free_port()
    passed = [arg for name in d.env for arg in ("-E", name)]  # it passes no environment unless told
    argv = [
        "systemd-socket-activate",
        "-l",
        f"127.0.0.1:{port}",
        *passed,
        sys.executable,
        "-I",
        "-S",
        str(HERE / "activate.py"),
        marks,
        uds,
        sys.executable,
        "-m",
        "asr_daemon.cli",
        "serve",
        "--uds",
        uds,
    ]
    # cwd: not the checkout, so that a variant's PYTHONPATH decides which code runs
    sa = subprocess.Popen(
        argv, env=d.env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    data = clip.path.read_bytes()
    try:
        deadline = time.monotonic() + 10
        while not _listening(port) and time.monotonic() < deadline:
            time.sleep(0.01)
        # the client (its TLS context takes ~30 ms) exists before the clock starts: only the request counts
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as c:
            time.sleep(0.2)  # let the machine settle after starting the listener
            t_connect = time.time()
            r = c.post("/v1/audio/transcriptions", files={"file": (clip.name, data)})
            t_done = time.time()
            r.raise_for_status()
            row = stack.job(c, r.headers["x-job-id"])
        m = json.loads(Path(marks).read_text())
    except (httpx.HTTPError, OSError) as exc:  # the stand-in writes why it failed into the daemon's log
        log = Path(marks + ".log")
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
        raise RuntimeError(f"cold start {run} failed: {exc}\n{tail}") from exc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(sa.pid, signal.SIGTERM)
        sa.wait(10)
        with contextlib.suppress(ProcessLookupError, OSError, ValueError):
            daemon = int(Path(marks + ".pid").read_text())  # written by the stand-in as it spawned it
            os.killpg(daemon, signal.SIGTERM)
            for _ in range(600):
                if not Path(f"/proc/{daemon}").exists():
                    break
                time.sleep(0.1)
    ev = {e["event"]: e for e in stack.Daemon(env={}, workdir=work, log=Path(marks + ".log")).events()}
    app_created = stack.epoch(ev["app_created"]["ts"])
    proc_start = app_created - ev["app_created"]["since_process_start_s"]
    started = stack.epoch(ev["daemon_started"]["ts"])
    t = row["timings"]
    created, began, finished = (stack.epoch(row[k]) for k in ("created_at", "started_at", "finished_at"))
    phases = {
        "activation": m["spawn"] - t_connect,
        "process_start": proc_start - m["spawn"],
        "imports": app_created - proc_start,
        "app_db_redis": started - app_created,
        "db_s": ev["daemon_started"].get("db_s"),
        "redis_s": ev["daemon_started"].get("redis_s"),
        "ready": m["ready"] - started,
        "request_in": created - m["ready"],
        "queue": began - created,
        "model_load": t["model_load_s"],
        "first_segment": t.get("first_segment_s", 0.0),
        "rest_of_transcript": t["transcribe_s"] - t.get("first_segment_s", 0.0),
        "response": t_done - finished,
        "total": t_done - t_connect,
    }
    phases["total_minus_model_load"] = phases["total"] - t["model_load_s"]
    return phases


def coldstart(
    svc: stack.Services,
    work: Path,
    clip: Clip,
    runs: int,
    env: dict[str, str],
    variants: dict[str, dict[str, str]] | None = None,
) -> dict[str, Any]:
    """`runs` cold starts per configuration, alternating; median and min–max per phase.

    A variant may set `PYTHONPATH` to another checkout of the package to compare code before and
    after a change in the same run.
    """
    why = available()
    if why:
        return {"skipped": why}
    named = {"daemon": env, **{k: {**env, **v} for k, v in (variants or {}).items()}}
    daemons = {}
    for name, e in named.items():
        (work / name).mkdir(parents=True, exist_ok=True)
        d = daemons[name] = stack.make_daemon(svc, work / name, **e)
        # production applies migrations at install time; only the check remains on each start
        subprocess.run(
            [sys.executable, "-m", "asr_daemon.cli", "db", "migrate"], env=d.env, check=True, capture_output=True
        )
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in daemons}
    names = list(daemons)
    for i in range(runs):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            results[name].append(once(daemons[name], work / name, clip, i))
    keys = [*PHASES, "db_s", "redis_s"]
    out: dict[str, Any] = {"clip": clip.name, "env": env, "variants": variants or {}, "runs": results["daemon"]}
    for name, rs in results.items():
        pre = "" if name == "daemon" else name + ":"
        out[pre + "phases"] = {k: stats.summary([r[k] for r in rs if r.get(k) is not None]) for k in keys}
        if pre:
            out[pre + "runs"] = rs
    return out
