"""Throwaway PostgreSQL and Redis servers on free ports, for the test suite and the benchmarks.

Real servers, never the user's: each lives in a temporary directory and is stopped (and removed)
afterwards. PostgreSQL's `initdb` refuses to run as root, so as root the cluster belongs to the
`postgres` system user (created by Debian's postgresql package), or to `nobody`.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg_bindir() -> Path:
    """The newest PostgreSQL server binaries installed (Debian puts them under /usr/lib/postgresql)."""
    env = os.environ.get("ASR_TEST_PG_BINDIR")
    if env:
        return Path(env)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise RuntimeError("PostgreSQL server binaries not found: run `make deps` (apt install postgresql)")
    return Path(found[-1]).parent


def _run_as() -> list[str]:
    """Prefix that runs a command as an unprivileged user when we are root."""
    if os.geteuid() != 0:
        return []
    for user in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(user)
            return ["runuser", "-u", user, "--"]
    raise RuntimeError("running as root, but neither a postgres nor a nobody user exists")


@dataclass
class Postgres:
    """A running throwaway PostgreSQL cluster."""

    root: Path
    port: int
    bindir: Path

    @property
    def datadir(self) -> Path:
        """The cluster's data directory."""
        return self.root / "data"

    def url(self, dbname: str = "postgres") -> str:
        """DSN for a database of this cluster, as the superuser `postgres`, over TCP."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            [*_run_as(), str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-w", "-t", "60", *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.root} -c fsync=off"
        self._ctl("-o", opts, "-l", str(self.root / "log"), "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`fast` disconnects clients, `immediate` is a crash)."""
        self._ctl("-m", mode, "stop")

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run SQL through psql and return its unaligned output."""
        out = subprocess.run(
            ["psql", "-X", "-qAt", "-v", "ON_ERROR_STOP=1", self.url(dbname), "-c", sql],
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()


@contextlib.contextmanager
def postgres() -> Iterator[Postgres]:
    """Init and start a PostgreSQL cluster in a temporary directory; remove it afterwards."""
    root = Path(tempfile.mkdtemp(prefix="asr-pg-"))
    prefix = _run_as()
    if prefix:
        shutil.chown(root, user=prefix[2])
    pg = Postgres(root=root, port=free_port(), bindir=pg_bindir())
    subprocess.run(
        [
            *prefix,
            str(pg.bindir / "initdb"),
            "-D",
            str(pg.datadir),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    pg.start()
    try:
        yield pg
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            pg.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Redis:
    """A running throwaway Redis server."""

    root: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Redis URL of this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start redis-server in the foreground as a child and wait for its first PONG."""
        exe = shutil.which("redis-server")
        if not exe:
            raise RuntimeError("redis-server not found: run `make deps` (apt install redis-server)")
        self.proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.root),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        """Stop the server (SIGKILL: Redis may vanish at any time)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None


@contextlib.contextmanager
def redis() -> Iterator[Redis]:
    """Start a Redis server in a temporary directory; stop and remove it afterwards."""
    root = Path(tempfile.mkdtemp(prefix="asr-redis-"))
    r = Redis(root=root, port=free_port())
    r.start()
    try:
        yield r
    finally:
        r.stop()
        shutil.rmtree(root, ignore_errors=True)
