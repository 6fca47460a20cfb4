"""`make run` from a clean clone reaches /readyz 200, the README's `asrctl` commands then run as
written with the default DSN, and Ctrl-C stops it cleanly."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
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


def readme_command(line: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run one command line as the README writes it, through a shell with `env`'s PATH."""
    return subprocess.run(
        ["bash", "-c", line], check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def check_readme_commands(clone: Path, tmp_path: Path, env: dict[str, str], shim_dir: Path) -> None:
    """`asrctl status`, `asrctl backup`, `asrctl restore FILE --into DB` and `--verify`, bare, from
    another directory, with the shim `make run` installed first on PATH and no ASR_STATE_DIR: each
    succeeds and prints nothing on stderr (no "Bytecode compiled …"); `uv run asrctl` is quiet too."""
    user = {k: v for k, v in env.items() if k != "ASR_STATE_DIR"}
    user["PATH"] = f"{shim_dir}:{os.environ['PATH']}"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    status = readme_command("asrctl status", user, elsewhere)
    assert status.returncode == 0 and status.stderr == "", status.stdout + status.stderr
    assert "answering" in status.stdout and "ready" in status.stdout, status.stdout
    made = readme_command("asrctl backup", user, elsewhere)
    assert made.returncode == 0 and made.stderr == "", made.stdout + made.stderr
    found = re.search(r"^backup (\S+\.dump) ", made.stdout, re.MULTILINE)
    assert found and Path(found.group(1)).parent == tmp_path / "state" / "backups", made.stdout
    dump = found.group(1)
    for line in (f"asrctl restore {dump} --into asr_copy", f"asrctl restore {dump} --verify"):
        done = readme_command(line, user, elsewhere)
        assert done.returncode == 0 and done.stderr == "", line + "\n" + done.stdout + done.stderr
    listed = readme_command("asrctl backup ls", {**user, "COLUMNS": "200"}, elsewhere)  # rich fits the width
    assert listed.returncode == 0 and Path(dump).name in listed.stdout
    uv = shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")
    quiet = subprocess.run(
        [uv, "run", "asrctl", "--help"], check=False, cwd=clone, env=user, capture_output=True, text=True, timeout=300
    )
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_make_run_from_a_clean_clone_serves_and_stops(
    tmp_path: Path, pg: services.Postgres, template_db: str, redis_server: services.Redis
) -> None:
    """A fresh clone's `make run` installs, migrates and serves with the default DSN (`postgresql:///asr`,
    libpq's environment naming the test cluster's socket directory as /var/run/postgresql is on a
    host); it says where it serves in one line; /readyz is 200; the README's asrctl commands (status,
    backup, restore --into and --verify) run as written; Ctrl-C stops it cleanly."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    pg.psql("DROP DATABASE IF EXISTS asr WITH (FORCE)")
    pg.psql("DROP DATABASE IF EXISTS asr_copy WITH (FORCE)")
    pg.psql("CREATE DATABASE asr")
    port = services.free_port()
    shim_dir = tmp_path / "bin"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ASR_", "VIRTUAL_ENV", "UV_", "PG"))},
        "ASR_PORT": str(port),
        "ASR_DATABASE_URL": "postgresql:///asr",  # the README's default, spelled out: dev-services leaves it be
        "PGHOST": str(pg.root),
        "PGPORT": str(pg.port),
        "PGUSER": "postgres",
        "ASR_REDIS_URL": redis_server.url,
        "ASR_STATE_DIR": str(tmp_path / "state"),
        "ASR_SHIM_DIR": str(shim_dir),
    }
    log = (tmp_path / "make.log").open("wb")
    # SIGINT handled as in a terminal: a test run started in the background of a script inherits it ignored,
    # and make would then wait for its recipe and exit 0 instead of dying by the signal
    make = ["env", "--default-signal=INT", "make", "run"]
    proc = subprocess.Popen(make, cwd=clone, env=env, stdout=log, stderr=log, start_new_session=True)
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
        out = (tmp_path / "make.log").read_text(errors="replace")
        assert "Bytecode compiled" not in out.split("exec ", 1)[-1], out[-3000:]
        assert "asrctl: installed " in out and str(shim_dir / "asrctl") in out, out[-3000:]
        check_readme_commands(clone, tmp_path, env, shim_dir)
        out = (tmp_path / "make.log").read_text(errors="replace")
        ready_lines = [ln for ln in out.splitlines() if ln.startswith("asr-server ready: ")]
        assert len(ready_lines) == 1 and f"http://127.0.0.1:{port}/docs" in ready_lines[0], out[-3000:]
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
        pg.psql("DROP DATABASE IF EXISTS asr WITH (FORCE)")
        pg.psql("DROP DATABASE IF EXISTS asr_copy WITH (FORCE)")
