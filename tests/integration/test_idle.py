"""`asrctl idle-watch` against real PostgreSQL, a real access log and a stand-in for `systemctl`.

The watcher's whole output is its exit: it runs while the daemon is busy and returns once it is
quiet (systemd then stops the daemon, StopWhenUnneeded=; tests/systemd proves that part under PID 1).
The stand-in records its arguments and answers `is-active` from a state file; it is the only fake.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from pydantic import SecretStr

from asr_daemon import accesslog
from asr_daemon.config import Settings
from asr_daemon.ops import migrate
from asr_daemon.ops.idle import IdleWatcher
from asr_daemon.wyoming.activity import Activity
from tests import services

STAND_IN = """#!/bin/sh
# stand-in for systemctl: records calls; `is-active UNIT` answers from the state file (`<state>.UNIT`
# when there is one), nothing else works
echo "$*" >> "{calls}"
if [ "$1" = is-active ]; then
  f="{state}"; [ -e "{state}.$2" ] && f="{state}.$2"
  s=$(cat "$f" 2>/dev/null || echo inactive); echo "$s"; [ "$s" = active ]; exit
fi
exit 1
"""


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A migrated `asr` database on a throwaway PostgreSQL."""
    with services.postgres() as pg:
        pg.psql("CREATE DATABASE asr")

        async def up() -> None:
            conn = await asyncpg.connect(pg.url("asr"))
            try:
                await migrate.migrate(conn)
            finally:
                await conn.close()

        asyncio.run(up())
        yield pg.url("asr")


@pytest.fixture
def env(tmp_path: Path, database: str) -> Iterator[tuple[Settings, Path, Path]]:
    """Settings pointing at the database and a log dir, the stand-in systemctl, and its call record."""
    calls, state = tmp_path / "calls", tmp_path / "proxy-state"
    script = tmp_path / "systemctl"
    script.write_text(STAND_IN.format(calls=calls, state=state))
    script.chmod(0o755)
    settings = Settings(database_url=database, log_dir=tmp_path / "log", idle_systemctl=str(script))  # type: ignore[arg-type]
    yield settings, calls, state
    asyncio.run(_sql(database, "DELETE FROM jobs"))


async def _sql(url: str, sql: str, *args: object) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


def add_job(url: str, status: str) -> uuid.UUID:
    job = uuid.uuid4()
    asyncio.run(
        _sql(
            url,
            "INSERT INTO jobs (id, status, model, fingerprint, audio_sha256, audio_bytes, duration_s)"
            " VALUES ($1, $2, 'tiny.en', 'f', 'a', 1, 1.0)",
            job,
            status,
        )
    )
    return job


async def watch(watcher: IdleWatcher, seconds: float, interval: float = 0.05) -> float | None:
    """Run the watcher's loop for up to `seconds`: when it returned (found the daemon quiet), the
    seconds it ran; None when it was still holding the daemon up."""
    start = time.monotonic()
    try:
        verdict = await asyncio.wait_for(watcher.run(interval), seconds)
    except TimeoutError:
        return None
    assert verdict.stop and verdict.reason == "quiet"
    return time.monotonic() - start


def test_exits_after_the_quiet_window_not_before(env: tuple[Settings, Path, Path]) -> None:
    """Quiet for the window → the watcher exits (releasing the daemon) and stops nothing itself."""
    settings, calls, _ = env
    w = IdleWatcher(settings, window=0.6)
    ran = asyncio.run(watch(w, 3))
    assert ran is not None and 0.6 <= ran < 1.5
    assert set(calls.read_text().splitlines()) == {
        "is-active asr-server-proxy.service",
        "is-active asr-wyoming-proxy.service",
    }


def test_never_stops_while_a_job_is_queued_or_running(env: tuple[Settings, Path, Path]) -> None:
    """A queued or running job keeps the daemon up however quiet HTTP is; the window restarts after it."""
    settings, _, _ = env
    url = settings.database_url.get_secret_value()
    job = add_job(url, "queued")

    async def go() -> float:
        conn = await asyncpg.connect(url)
        task = asyncio.create_task(IdleWatcher(settings, window=1.0).run(0.05))
        try:
            await asyncio.sleep(1.2)
            assert not task.done(), "stopped with a job queued"
            await conn.execute("UPDATE jobs SET status = 'running' WHERE id = $1", job)
            await asyncio.sleep(1.2)  # quiet HTTP for 2.4 s now, over the window: the job holds it
            assert not task.done(), "stopped with a job running"
            await conn.execute("UPDATE jobs SET status = 'completed' WHERE id = $1", job)
            done = time.monotonic()
            await asyncio.sleep(0.5)
            assert not task.done(), "the window did not restart when the job ended"
            verdict = await asyncio.wait_for(task, 2.0)
            assert verdict.stop
            return time.monotonic() - done
        finally:
            task.cancel()
            await conn.close()

    # counted from the last look that saw the job: at most one 0.05 s interval before its end
    assert asyncio.run(go()) >= 1.0 - 0.1


def test_probes_do_not_keep_it_alive_but_requests_do(env: tuple[Settings, Path, Path]) -> None:
    """Health checks (/healthz, /readyz, /metrics) every 50 ms do not prevent the stop; a request does."""
    settings, _, _ = env
    log = accesslog.AccessLog(settings.access_log_path)

    def line(path: str) -> dict[str, object]:
        now = accesslog._iso(time.time())
        return {
            "start": now,
            "end": now,
            "method": "GET",
            "path": path,
            "probe": path in accesslog.PROBE_PATHS,
        }

    async def go(paths: list[str]) -> float | None:
        w = IdleWatcher(settings, window=0.4)
        task = asyncio.create_task(watch(w, 0.9))
        for i in range(16):
            log.write(line(paths[i % len(paths)]))
            await asyncio.sleep(0.05)
        return await task

    assert asyncio.run(go(["/v1/models", "/healthz"])) is None
    assert asyncio.run(go(["/healthz", "/readyz", "/metrics"])) is not None


def test_never_stops_while_a_request_is_in_flight_or_a_client_is_connected(
    env: tuple[Settings, Path, Path],
) -> None:
    """A fresh busy marker (request in flight) or an active proxy (open connection) keeps it up."""
    settings, calls, state = env
    log = accesslog.AccessLog(settings.access_log_path, touch_every=0.05)

    async def in_flight() -> float | None:
        w = IdleWatcher(settings, window=0.3)
        log.begin()  # what the middleware does when a request starts
        try:
            return await watch(w, 0.8)
        finally:
            log.end()

    assert asyncio.run(in_flight()) is None
    state.write_text("active\n")
    assert asyncio.run(watch(IdleWatcher(settings, window=0.2), 0.6)) is None
    assert "is-active asr-server-proxy.service" in calls.read_text()
    state.write_text("inactive\n")
    assert asyncio.run(watch(IdleWatcher(settings, window=0.2), 0.6)) is not None


def test_an_open_wyoming_connection_keeps_it_up(env: tuple[Settings, Path, Path]) -> None:
    """Home Assistant connected through the Wyoming proxy (issue 22): not quiet while that proxy runs."""
    settings, calls, state = env
    wyoming = Path(f"{state}.asr-wyoming-proxy.service")
    wyoming.write_text("active\n")
    assert asyncio.run(watch(IdleWatcher(settings, window=0.2), 0.6)) is None
    assert "is-active asr-wyoming-proxy.service" in calls.read_text()
    wyoming.write_text("inactive\n")
    assert asyncio.run(watch(IdleWatcher(settings, window=0.2), 0.6)) is not None


def test_wyoming_commands_in_the_access_log_are_activity(env: tuple[Settings, Path, Path]) -> None:
    """A Wyoming command's access-log line (what `asr_daemon.wyoming.activity` writes) restarts the window."""
    settings, _, _ = env
    activity = Activity(accesslog.AccessLog(settings.access_log_path))

    async def go() -> float | None:
        w = IdleWatcher(settings, window=0.5)
        task = asyncio.create_task(watch(w, 1.2))
        for _ in range(4):
            await asyncio.sleep(0.2)
            activity.request("transcribe", 200, time.monotonic())
        return await task

    assert asyncio.run(go()) is None
    assert asyncio.run(watch(IdleWatcher(settings, window=0.3), 1.0)) is not None


def test_unreachable_database_means_no_stop(env: tuple[Settings, Path, Path]) -> None:
    """When the job table cannot be read the watcher keeps the daemon (it cannot rule out work)."""
    settings, _, _ = env
    dead = settings.model_copy(
        update={"database_url": SecretStr(f"postgresql://x@127.0.0.1:{services.free_port()}/asr")}
    )
    assert asyncio.run(watch(IdleWatcher(dead, window=0.1), 0.4)) is None


def test_cli_once(env: tuple[Settings, Path, Path]) -> None:
    """`asrctl idle-watch --once` reads ASR_* settings, asks the given systemctl, says why; with a 0
    window (idle stops off) `--once` refuses and the watcher holds the daemon up instead of exiting."""
    settings, calls, _ = env
    asrctl = str(Path(sys.executable).parent / "asrctl")
    environ = {
        **os.environ,
        "ASR_DATABASE_URL": settings.database_url.get_secret_value(),
        "ASR_LOG_DIR": str(settings.log_dir),
        "ASR_IDLE_SYSTEMCTL": settings.idle_systemctl,
    }
    out = subprocess.run(
        [asrctl, "idle-watch", "--once", "--window", "0"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2 and "idle stops are off" in out.stderr
    out = subprocess.run(
        [asrctl, "idle-watch", "--once", "--window", "60"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("stop: quiet")
    assert "is-active asr-server-proxy.service" in calls.read_text()
    holding = subprocess.Popen([asrctl, "idle-watch", "--window", "0"], env=environ, stderr=subprocess.PIPE)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            holding.wait(timeout=3)  # exiting would let systemd stop the daemon
    finally:
        holding.terminate()
        holding.wait(timeout=10)
