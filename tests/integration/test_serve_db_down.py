"""`asrctl serve` and `asrctl worker` with PostgreSQL unreachable: JSON log lines only, one clear error, exit 1."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from asr_daemon import dbprobe
from asr_daemon.config import Settings
from tests import services


def _env(tmp_path: Path, port: int) -> dict[str, str]:
    """A daemon's environment whose PostgreSQL is 127.0.0.1:`port`, where nothing listens."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASR_", "PG"))}
    env.update(
        ASR_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{port}/asr",
        ASR_REDIS_URL=f"redis://127.0.0.1:{services.free_port()}/0",
        ASR_STATE_DIR=str(tmp_path / "state"),
        ASR_PORT=str(services.free_port()),
        ASR_WYOMING_PORT="0",
        ASR_PRELOAD="false",
    )
    return env


@pytest.mark.slow
def test_serve_and_worker_with_postgresql_down_exit_1_with_json_lines_only(tmp_path: Path) -> None:
    """After the 30 s wait: exit 1, every stderr line a JSON log record (no traceback, no stamina line),
    one error naming what was tried, and serve never started Granian (nothing listened on its port)."""
    port = services.free_port()
    env = _env(tmp_path, port)
    procs = {
        cmd: subprocess.Popen(
            [sys.executable, "-m", "asr_daemon.cli", cmd],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for cmd in ("serve", "worker")
    }
    time.sleep(3)
    with pytest.raises(OSError):  # Granian does not bind while the database is missing
        socket.create_connection(("127.0.0.1", int(env["ASR_PORT"])), timeout=1).close()
    for cmd, proc in procs.items():
        _, err = proc.communicate(timeout=dbprobe.DB_WAIT_S + 60)
        assert proc.returncode == 1, (cmd, err)
        records = [json.loads(line) for line in err.splitlines()]  # fails on any line that is not JSON
        assert not [r for r in records if r["logger"].startswith("stamina")], (cmd, err)
        errors = [r for r in records if r["level"] == "error"]
        assert errors[0]["event"] == "database_unreachable", (cmd, err)
        assert f"unreachable: tried host 127.0.0.1, port {port}" in errors[0]["error"]
        assert [r["attempt"] for r in records if r["event"] == "database_wait"][:3] == [2, 3, 4]
        if cmd == "serve":
            assert len(errors) == 1, err


def test_the_probe_waits_for_postgresql_to_listen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A socket that starts listening during the wait ends it (database_wait logged meanwhile); one that
    never does raises Unreachable once the budget is spent, with the one-line explanation logged."""
    monkeypatch.setenv("ASR_DATABASE_URL", f"postgresql:///asr?host={tmp_path}&port=5432")
    settings = Settings()
    server = socket.socket(socket.AF_UNIX)

    def listen_later() -> None:
        time.sleep(1.5)
        server.bind(str(tmp_path / ".s.PGSQL.5432"))
        server.listen()

    later = threading.Thread(target=listen_later)
    later.start()
    caplog.set_level(logging.INFO, logger="asr_daemon.runtime")
    started = time.monotonic()
    try:
        dbprobe.wait_listening(settings, budget=10)
        assert 1.4 < time.monotonic() - started < 8
        ours = [r.msg for r in caplog.records if r.name == "asr_daemon.runtime"]
        assert ours and set(ours) == {"database_wait"}
    finally:
        later.join()
        server.close()
    caplog.clear()
    (tmp_path / ".s.PGSQL.5432").unlink()
    with pytest.raises(dbprobe.Unreachable, match=f"tried socket directory {tmp_path}, port 5432"):
        dbprobe.wait_listening(settings, budget=1.5)
    assert [r.msg for r in caplog.records if r.name == "asr_daemon.runtime"][-1] == "database_unreachable"
