"""sd_notify from the daemon: what systemd is told, in which order, and when the watchdog goes quiet.

A stand-in NOTIFY_SOCKET (a real AF_UNIX datagram socket in tmp) plays systemd; a real Unix stream
socket that starts listening late plays Granian's socket.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from asr_daemon.config import Settings
from asr_daemon.ops import systemd


@dataclass
class Worker:
    """The job worker's progress interface (`running`, `last_progress`), driven by the test."""

    running: int = 0
    last_progress: float = field(default_factory=time.monotonic)


@dataclass
class Systemd:
    """Stand-in for PID 1's notify socket: every datagram with its arrival time."""

    sock: socket.socket
    got: list[tuple[float, str]] = field(default_factory=list)

    async def collect(self) -> None:
        """Receive datagrams until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.sock, 4096)
            self.got.append((time.monotonic(), data.decode("latin-1")))

    def fields(self) -> list[str]:
        """All received fields, in order (a datagram may carry several)."""
        return [f for _, msg in self.got for f in msg.split("\n")]

    def first(self, prefix: str) -> int:
        """Index in `fields()` of the first field starting with `prefix` (ValueError when absent)."""
        return next(i for i, f in enumerate(self.fields()) if f.startswith(prefix))


@asynccontextmanager
async def stand_in_systemd(tmp: Path, monkeypatch: pytest.MonkeyPatch, watchdog_usec: int) -> AsyncIterator[Systemd]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp / "notify.sock"))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp / "notify.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", str(watchdog_usec))
    monkeypatch.setenv("WATCHDOG_PID", "1")  # Granian's main process: must not switch pings off
    sd = Systemd(sock)
    task = asyncio.create_task(sd.collect())
    try:
        yield sd
    finally:
        await asyncio.sleep(0.05)
        task.cancel()
        sock.close()


def test_messages_in_order_and_ready_only_once_the_socket_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EXTEND while loading, READY only once the UDS accepts and the DB is up, WATCHDOG/STATUS, STOPPING, EXTEND."""
    monkeypatch.setattr(systemd, "EXTEND_EVERY", 0.05)
    monkeypatch.setattr(systemd, "STATUS_EVERY", 0.05)
    uds = tmp_path / "http.sock"
    settings = Settings(uds=uds, drain_timeout=5)
    worker = Worker()
    checks: list[float] = []
    drained: list[float] = []

    async def db_check() -> None:
        checks.append(time.monotonic())
        if len(checks) < 3:
            raise OSError("database not reachable yet")

    async def status() -> str:
        return systemd.status_line("tiny.en", worker.running, 2)

    async def drain() -> None:
        await asyncio.sleep(0.2)
        drained.append(time.monotonic())

    async def scenario() -> tuple[Systemd, float]:
        async with stand_in_systemd(tmp_path, monkeypatch, watchdog_usec=200_000) as sd:
            life = systemd.Lifecycle(settings)
            async with life.extending("loading model tiny.en"):
                await asyncio.sleep(0.15)
            # Granian binds its socket but listens only after the lifespan startup returned
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.bind(str(uds))
            life.start(progress=worker, ready_check=db_check, status=status)
            await asyncio.sleep(0.3)
            assert not life.ready.is_set()
            listening_at = time.monotonic()
            server.listen()
            await asyncio.wait_for(life.ready.wait(), 5)
            worker.running = 1
            worker.last_progress = time.monotonic()
            await asyncio.sleep(0.4)
            await life.stop(drain)
            server.close()
        return sd, listening_at

    sd, listening_at = asyncio.run(scenario())
    fields = sd.fields()
    ready_at = next(t for t, m in sd.got if "READY=1" in m)
    assert ready_at > listening_at and ready_at >= checks[-1]
    assert len(checks) == 3
    assert sd.first("EXTEND_TIMEOUT_USEC=") < sd.first("READY=1")
    assert fields[sd.first("READY=1") + 1] == "STATUS=model tiny.en; 0 jobs running; 2 queued"
    assert "STATUS=model tiny.en; 1 job running; 2 queued" in fields
    stopping = sd.first("STOPPING=1")
    assert sd.first("READY=1") < sd.first("WATCHDOG=1") < stopping
    after = fields[stopping:]
    assert any(f.startswith("EXTEND_TIMEOUT_USEC=") for f in after)  # the drain extends the stop timeout
    stopping_at = next(t for t, m in sd.got if "STOPPING=1" in m)
    assert stopping_at < drained[0]
    assert fields[-1] == "STATUS=stopped"
    assert not any(f.startswith(("MAINPID=", "READY=1")) for f in after)


def test_watchdog_pings_stop_while_the_worker_is_wedged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A running job without progress for `watchdog_stall_after` withholds WATCHDOG=1; progress resumes it."""
    uds = tmp_path / "http.sock"
    settings = Settings(uds=uds, watchdog_stall_after=0.3)
    worker = Worker()

    def pings(sd: Systemd, since: float, until: float) -> int:
        return sum(1 for t, m in sd.got if m == "WATCHDOG=1" and since <= t < until)

    async def scenario() -> list[int]:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(uds))
        server.listen()
        async with stand_in_systemd(tmp_path, monkeypatch, watchdog_usec=100_000) as sd:
            life = systemd.Lifecycle(settings)
            life.start(progress=worker)
            await asyncio.wait_for(life.ready.wait(), 5)
            t0 = time.monotonic()
            await asyncio.sleep(0.5)  # idle: no job, pings
            worker.running, worker.last_progress = 1, time.monotonic()
            t1 = time.monotonic()
            await asyncio.sleep(0.2)  # a job progressing: pings
            t2 = time.monotonic()
            await asyncio.sleep(0.2)  # the job stalls: pings stop 0.3 s after its last progress
            t3 = time.monotonic()
            await asyncio.sleep(0.6)
            t4 = time.monotonic()
            worker.last_progress = time.monotonic()  # a segment arrives: pings again
            await asyncio.sleep(0.3)
            t5 = time.monotonic()
            await life.stop()
        server.close()
        return [pings(sd, t0, t1), pings(sd, t1, t2), pings(sd, t3 + 0.1, t4), pings(sd, t4, t5)]

    idle, progressing, wedged, resumed = asyncio.run(scenario())
    assert idle >= 3 and progressing >= 1 and resumed >= 1
    assert wedged == 0


def test_watchdog_interval_is_half_of_watchdog_usec_and_ignores_watchdog_pid() -> None:
    """Pings go at half WatchdogSec even though WATCHDOG_PID names Granian's main process."""
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": "1"}) == 60.0
    assert systemd.watchdog_interval({}) is None
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "junk"}) is None


def test_without_notify_socket_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside systemd (tests, `make run`) notifying is a silent no-op, never an error."""
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.Notifier().send("READY=1") is False
