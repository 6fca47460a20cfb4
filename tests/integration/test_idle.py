"""`asrctl idle-watch` against real PostgreSQL, a real access log and a stand-in for `systemctl`.

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

from asr_daemon import accesslog, migrate
from asr_daemon.config import Settings
from asr_daemon.idle import IdleWatcher
from tests import services

STAND_IN = """#!/bin/sh
# stand-in for systemctl: records calls; `is-active` answers from the state file
echo "$*" >> "{calls}"
if [ "$1" = is-active ]; then
  s=$(cat "{state}" 2>/dev/null || echo inactive); echo "$s"; [ "$s" = active ]; exit
fi
exit 0
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


def stops(calls: Path) -> list[str]:
    return [c for c in calls.read_text().splitlines() if c.startswith("stop")] if calls.exists() else []


async def watch(watcher: IdleWatcher, seconds: float, interval: float = 0.05) -> None:
    """Run the watcher's loop for `seconds`."""
    task = asyncio.create_task(watcher.run(interval))
    await asyncio.sleep(seconds)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def test_stops_after_the_quiet_window_not_before(env: tuple[Settings, Path, Path]) -> None:
    """Quiet for the window → one `stop --no-block proxy server`; no stop earlier than the window."""
    settings, calls, _ = env

    async def go() -> list[str]:
        w = IdleWatcher(settings, window=0.6)
        await watch(w, 0.4)
        early = stops(calls)
        await watch(w, 0.6)
        return early

    early = asyncio.run(go())
    assert early == []
    assert stops(calls) == ["stop --no-block asr-server-proxy.service asr-server.service"]


def test_never_stops_while_a_job_is_queued_or_running(env: tuple[Settings, Path, Path]) -> None:
    """A queued or running job keeps the daemon up however quiet HTTP is; the window restarts after it."""
    settings, calls, _ = env
    url = settings.database_url.get_secret_value()

    async def go(w: IdleWatcher, seconds: float) -> None:
        await watch(w, seconds)

    w = IdleWatcher(settings, window=0.3)
    job = add_job(url, "queued")
    asyncio.run(go(w, 0.8))
    asyncio.run(_sql(url, "UPDATE jobs SET status = 'running' WHERE id = $1", job))
    asyncio.run(go(w, 0.8))
    assert stops(calls) == []
    asyncio.run(_sql(url, "UPDATE jobs SET status = 'completed' WHERE id = $1", job))
    done = time.time()
    asyncio.run(go(w, 0.15))
    assert stops(calls) == []  # the window counts from the job's end, not from the last request
    asyncio.run(go(w, 0.5))
    assert stops(calls) and time.time() - done >= 0.3


def test_probes_do_not_keep_it_alive_but_requests_do(env: tuple[Settings, Path, Path]) -> None:
    """Health checks (/healthz, /readyz, /metrics) every 50 ms do not prevent the stop; a request does."""
    settings, calls, _ = env
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

    async def go(paths: list[str]) -> None:
        w = IdleWatcher(settings, window=0.4)
        task = asyncio.create_task(watch(w, 0.9))
        for i in range(16):
            log.write(line(paths[i % len(paths)]))
            await asyncio.sleep(0.05)
        await task

    asyncio.run(go(["/v1/models", "/healthz"]))
    assert stops(calls) == []
    asyncio.run(go(["/healthz", "/readyz", "/metrics"]))
    assert stops(calls)


def test_never_stops_while_a_request_is_in_flight_or_a_client_is_connected(
    env: tuple[Settings, Path, Path],
) -> None:
    """A fresh busy marker (request in flight) or an active proxy (open connection) keeps it up."""
    settings, calls, state = env
    log = accesslog.AccessLog(settings.access_log_path, touch_every=0.05)

    async def in_flight() -> None:
        w = IdleWatcher(settings, window=0.3)
        log.begin()  # what the middleware does when a request starts
        await watch(w, 0.8)
        log.end()

    asyncio.run(in_flight())
    assert stops(calls) == []
    state.write_text("active\n")
    asyncio.run(watch(IdleWatcher(settings, window=0.2), 0.6))
    assert stops(calls) == [] and "is-active asr-server-proxy.service" in calls.read_text()
    state.write_text("inactive\n")
    asyncio.run(watch(IdleWatcher(settings, window=0.2), 0.6))
    assert stops(calls)


def test_unreachable_database_means_no_stop(env: tuple[Settings, Path, Path]) -> None:
    """When the job table cannot be read the watcher keeps the daemon (it cannot rule out work)."""
    settings, calls, _ = env
    dead = settings.model_copy(update={"database_url": f"postgresql://x@127.0.0.1:{services.free_port()}/asr"})
    asyncio.run(watch(IdleWatcher(dead, window=0.1), 0.4))
    assert stops(calls) == []


def test_cli_once(env: tuple[Settings, Path, Path]) -> None:
    """`asrctl idle-watch --once` reads ASR_* settings, stops through the given systemctl, says why."""
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
    assert stops(calls)
