"""`make run` from a clean clone reaches /readyz 200 and stops cleanly on Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests import services
from tests.conftest import ROOT


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_make_run_from_a_clean_clone_serves_and_stops(
    tmp_path: Path, database: str, redis_server: services.Redis
) -> None:
    """A fresh clone's `make run` installs, migrates and serves; /readyz is 200; SIGINT ends it with 0."""
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
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(60) in (0, 2, -signal.SIGINT)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
