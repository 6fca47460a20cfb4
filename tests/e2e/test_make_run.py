"""`make run` from a clean clone reaches /readyz 200 and stops cleanly on Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests import services
from tests.conftest import ROOT


def session_processes(session: int) -> list[int]:
    """Live processes of session `session` (zombies excluded)."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            if os.getsid(int(pid)) == session and Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z":
                pids.append(int(pid))
    return pids


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_make_run_from_a_clean_clone_serves_and_stops(
    tmp_path: Path, database: str, redis_server: services.Redis
) -> None:
    """A fresh clone's `make run` installs, migrates and serves; /readyz is 200; Ctrl-C stops it cleanly."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    port = services.free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ASR_", "VIRTUAL_ENV", "UV_"))},
        "ASR_PORT": str(port),
        "ASR_DATABASE_URL": database,
        "ASR_REDIS_URL": redis_server.url,
        "ASR_STATE_DIR": str(tmp_path / "state"),
    }
    log = (tmp_path / "make.log").open("wb")
    proc = subprocess.Popen(["make", "run"], cwd=clone, env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        ready = None
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            time.sleep(0.5)
        assert ready is not None and ready.status_code == 200, (tmp_path / "make.log").read_text()[-3000:]
        assert ready.json()["checks"] == {"database": "ok", "redis": "ok", "model": "ok"}
        assert (tmp_path / "state" / "models" / "base" / "model.bin").is_file()
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the whole foreground process group
        # GNU make answers SIGINT by waiting for its recipe, then killing itself with SIGINT (never a
        # plain exit); a recipe (uv → asrctl serve) that did not exit 0 adds "make: *** [...] Error N"
        # (or "Interrupt" when it died by the signal) to the log
        assert proc.wait(60) == -signal.SIGINT
        out = (tmp_path / "make.log").read_text(errors="replace")
        assert "make: ***" not in out, out[-3000:]
        assert "Traceback" not in out and '"daemon_stopped"' in out, out[-3000:]
        assert session_processes(proc.pid) == [], "a process of `make run` outlived it"
        with socket.socket() as s:  # the port is free again (only a listener would block this bind)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
