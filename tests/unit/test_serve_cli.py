"""`asrctl serve`: its own small argument parser, clear errors, and nothing slow on its import path."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def _serve(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "asr_daemon.cli", "serve", *args],
        env={**os.environ, **env},
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serve_with_a_bad_setting_names_the_variable_and_exits_2() -> None:
    """An invalid ASR_* value stops `asrctl serve` before Granian starts, with one line naming it."""
    r = _serve(ASR_PORT="eighty")
    errors = [line for line in r.stderr.splitlines() if not line.startswith("import time:")]
    assert r.returncode == 2
    assert errors == [errors[0]] and errors[0].startswith("asrctl: error: invalid ASR_PORT:")


@pytest.mark.parametrize("args", [["--port", "eighty"], ["--listen", "x"], ["--po", "8080"]])
def test_serve_with_a_bad_option_shows_its_usage_and_exits_2(args: list[str]) -> None:
    """A malformed, unknown or abbreviated option is refused with the usage line and exit status 2."""
    r = _serve(*args)
    assert r.returncode == 2
    assert "usage: asrctl serve" in r.stderr and "error:" in r.stderr


def test_serve_help_lists_its_options() -> None:
    """`asrctl serve --help` documents the three options and exits 0."""
    r = _serve("--help")
    assert r.returncode == 0
    assert all(opt in r.stdout for opt in ("--host", "--port", "--uds"))


def test_serve_imports_neither_typer_nor_the_other_commands() -> None:
    """The cold-start path imports only its own command: no typer/click, rich, asyncpg, httpx or CLI helpers."""
    r = _serve("--help")
    imported = {m.group(1) for m in re.finditer(r"^import time:.*\|\s*(\S+)$", r.stderr, re.MULTILINE)}
    assert "asr_daemon.cli.serve" in imported and "pydantic_settings" in imported
    slow = {"typer", "click", "rich", "asyncpg", "httpx", "asr_daemon.cli.common", "asr_daemon.cli.models"}
    assert not slow & imported


def test_the_command_tree_lists_and_runs_serve() -> None:
    """`asrctl --help` lists serve, and the tree passes its options on to the same parser."""
    from typer.testing import CliRunner

    from asr_daemon.cli import build_app

    app = build_app()
    assert "serve" in CliRunner().invoke(app, ["--help"]).output
    r = CliRunner().invoke(app, ["serve", "--port", "eighty"])
    assert r.exit_code == 2 and "usage: asrctl serve" in r.output


def test_options_reach_the_settings_without_touching_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--port`, `--uds`, `--no-worker` become the Settings handed to Granian's worker; os.environ stays as it was."""
    from asr_daemon import dbprobe
    from asr_daemon.cli import serve
    from asr_daemon.config import Settings

    for name in ("ASR_PORT", "ASR_UDS", "ASR_RUN_WORKER"):
        monkeypatch.delenv(name, raising=False)
    seen: list[Settings] = []
    monkeypatch.setattr(serve, "serve", lambda s: seen.append(s) or 0)
    monkeypatch.setattr(dbprobe, "wait_listening", lambda s: None)  # no PostgreSQL in a unit test
    before = dict(os.environ)
    assert serve.main(["--port", "9123", "--uds", "/run/x.sock", "--no-worker"]) == 0
    assert os.environ == before
    assert seen[0].port == 9123 and str(seen[0].uds) == "/run/x.sock" and seen[0].run_worker is False
    assert serve.main([]) == 0 and seen[1].run_worker is True  # the default: HTTP and worker in one process


def test_worker_help_and_its_cold_path() -> None:
    """`asrctl worker --help` exits 0 without importing typer or the other commands; serve documents --no-worker."""
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "asr_daemon.cli", "worker", "--help"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and "usage: asrctl worker" in r.stdout
    imported = {m.group(1) for m in re.finditer(r"^import time:.*\|\s*(\S+)$", r.stderr, re.MULTILINE)}
    assert not {"typer", "click", "rich", "asr_daemon.cli.serve"} & imported
    assert "--no-worker" in _serve("--help").stdout


def test_serve_that_cannot_listen_says_why_in_one_line(tmp_path: Path) -> None:
    """Port taken, a socket in a missing directory, an address that is not one: one error line each
    (no traceback), a non-zero exit, and no state directory left behind."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    # something listens where PostgreSQL's socket would be: `serve` probes it before Granian binds
    pg_socket = socket.socket(socket.AF_UNIX)
    pg_socket.bind(str(tmp_path / ".s.PGSQL.5432"))
    pg_socket.listen()
    env = {
        "ASR_STATE_DIR": str(tmp_path / "state"),
        "ASR_REDIS_URL": "redis://127.0.0.1:1/0",
        "ASR_DATABASE_URL": f"postgresql:///asr?host={tmp_path}&port=5432",
    }
    cases = [
        (["--port", str(port)], 1, f"cannot listen on 127.0.0.1 port {port}: Address already in use"),
        (["--uds", "/nonexistent/dir/x.sock"], 1, "cannot listen on /nonexistent/dir/x.sock: No such file"),
        (["--host", "256.1.1.1"], 2, "cannot listen on '256.1.1.1': not an IP address"),
    ]
    try:
        for args, code, message in cases:
            r = _serve(*args, **env)
            errors = [line for line in r.stderr.splitlines() if not line.startswith("import time:")]
            assert r.returncode == code, r.stderr
            assert len(errors) == 1 and errors[0].startswith(f"asrctl: error: {message}"), errors
    finally:
        taken.close()
        pg_socket.close()
    assert not (tmp_path / "state").exists()
