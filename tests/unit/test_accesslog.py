"""The JSON access log: one line per request with the fields the idle watcher and operators need."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
from litestar import Litestar, Request, Response, get, post

from asr_daemon import accesslog


@post("/v1/jobs")
async def create(request: Request[Any, Any, Any]) -> Response[dict[str, int]]:
    body = await request.body()
    return Response({"got": len(body)}, status_code=202, headers={"X-Job-Id": "0b6c3c4e-1"})


@get("/healthz", sync_to_thread=False)
def healthz() -> str:
    return "ok"


@get("/slow")
async def slow() -> str:
    await asyncio.sleep(0.4)
    return "done"


@get("/boom", sync_to_thread=False)
def boom() -> str:
    raise RuntimeError("boom")


def serve(path: Path, **kw: float) -> tuple[accesslog.AccessLog, httpx.AsyncClient]:
    log = accesslog.AccessLog(path, **kw)  # type: ignore[arg-type]
    app = accesslog.AccessLogMiddleware(Litestar([create, healthz, slow, boom]), log)
    return log, httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_one_line_per_request_with_job_id_bytes_and_times(tmp_path: Path) -> None:
    """A request leaves one JSON line: times, method, path without query, status, sizes, X-Job-Id."""
    path = tmp_path / "log/access.log"
    _, client = serve(path)

    async def go() -> None:
        async with client:
            r = await client.post("/v1/jobs?api_key=secret", content=b"12345")
            assert r.status_code == 202
            assert (await client.get("/nope")).status_code == 404
            assert (await client.get("/boom")).status_code == 500

    asyncio.run(go())
    first, missing, failed = lines(path)
    assert first["method"] == "POST" and first["path"] == "/v1/jobs" and first["status"] == 202
    assert first["job_id"] == "0b6c3c4e-1" and first["bytes_in"] == 5 and first["bytes"] == len(b'{"got":5}')
    assert first["probe"] is False and str(first["start"]) <= str(first["end"])
    assert isinstance(first["duration_ms"], float)
    assert "secret" not in path.read_text()
    assert missing["status"] == 404 and failed["status"] == 500 and failed["job_id"] is None


def test_probes_are_logged_but_are_not_activity(tmp_path: Path) -> None:
    """/healthz lines carry probe=true and do not move the last activity the watcher sees."""
    path = tmp_path / "access.log"
    _, client = serve(path)

    async def go() -> tuple[float | None, float | None]:
        async with client:
            await client.post("/v1/jobs", content=b"x")
            after_request = accesslog.last_activity(path)
            await asyncio.sleep(0.05)
            for _ in range(3):
                await client.get("/healthz")
            return after_request, accesslog.last_activity(path)

    after_request, after_probes = asyncio.run(go())
    assert [x["probe"] for x in lines(path)] == [False, True, True, True]
    assert after_request is not None and after_probes == after_request


def test_a_request_in_flight_is_activity(tmp_path: Path) -> None:
    """While a long request runs (no line yet) the busy marker keeps the last activity current."""
    path = tmp_path / "access.log"
    log, client = serve(path, touch_every=0.05)
    seen: list[float | None] = []

    async def go() -> None:
        async with client:
            req = asyncio.create_task(client.get("/slow"))
            await asyncio.sleep(0.3)
            seen.append(accesslog.last_activity(path))
            seen.append(time.time())
            assert log.in_flight == 1
            assert not path.exists(), "a line was written before the request ended"
            await req
        assert log.in_flight == 0

    asyncio.run(go())
    assert [(x["path"], x["status"], x["probe"]) for x in lines(path)] == [("/slow", 200, False)]
    assert seen[0] is not None and seen[1] is not None and seen[1] - seen[0] < 0.2


def test_rotated_by_size_and_newest_line_still_found(tmp_path: Path) -> None:
    """The log rotates at max_bytes, keeps `backups` old files, and the watcher reads the newest line."""
    path = tmp_path / "access.log"
    log = accesslog.AccessLog(path, max_bytes=4096, backups=2)
    for i in range(200):
        log.write({"end": f"2026-01-01T00:00:{i % 60:02d}.000+00:00", "path": f"/{i}", "probe": False})
    log.write({"end": "2026-01-02T00:00:00.000+00:00", "path": "/last", "probe": False})
    log.close()
    assert path.stat().st_size <= 4096
    assert sorted(p.name for p in tmp_path.iterdir()) == ["access.log", "access.log.1", "access.log.2"]
    assert accesslog.last_activity(path) == 1767312000.0
