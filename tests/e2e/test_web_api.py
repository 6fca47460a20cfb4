"""The API the web page needs, through the real daemon: search, a job's audio with byte ranges,
deleting a job with its transcript and audio, CORS, and the page's own files and headers."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from websockets.exceptions import InvalidStatus

from tests import live
from tests.conftest import Daemon
from tests.e2e.test_jobs import submit, wait_status
from tests.e2e.test_keys import bearer, create_key


@pytest.fixture(scope="module")
def web_daemon(make_module_daemon: Callable[..., Daemon]) -> Daemon:
    """One daemon for the module (tiny.en)."""
    return make_module_daemon()


@pytest.fixture(scope="module")
def done(web_daemon: Daemon, jfk: Path) -> dict[str, Any]:
    """The jfk-like clip transcribed as a job."""
    with web_daemon.client() as c:
        r = submit(c, jfk)
        assert r.status_code == 202, r.text
        return wait_status(c, r.json()["id"], {"completed"})


def test_search_finds_a_transcribed_word_with_its_time_and_offsets(web_daemon: Daemon, done: dict[str, Any]) -> None:
    """GET /v1/search returns the segment holding the word, its job, times and the offsets of the match."""
    with web_daemon.client() as c:
        r = c.get("/v1/search", params={"q": "countries"})  # stemmed: "country" matches
        assert r.status_code == 200, r.text
        body = r.json()
    assert body["object"] == "list" and body["next_cursor"] is None
    hit = body["data"][0]
    assert hit["job_id"] == done["id"] and hit["filename"].endswith(".flac")
    assert 0 <= hit["start"] < hit["end"] <= done["audio"]["duration_s"] + 1
    words = {hit["text"][a:b].lower() for a, b in hit["matches"]}
    assert words == {"country"}


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"q": ""}, 400),
        ({"q": "   "}, 400),
        ({}, 400),
        ({"q": "x", "limit": "0"}, 400),
        ({"q": "x", "cursor": "zz"}, 400),
        ({"q": "x" * 501}, 400),
        ({"q": "\x00\x01"}, 200),  # control characters are spaces: nothing to find, no error
    ],
)
def test_bad_search_requests_are_400(web_daemon: Daemon, params: dict[str, str], status: int) -> None:
    """An empty or missing query, a bad limit or a foreign cursor is a 400 that says so, never a 500."""
    with web_daemon.client() as c:
        r = c.get("/v1/search", params=params)
    assert r.status_code == status, r.text
    assert r.json()["error"]["message"] if status == 400 else r.json()["data"] == []


def test_search_pages_with_next_cursor(web_daemon: Daemon, done: dict[str, Any], speech: Callable[..., Path]) -> None:
    """Pages of one hit, walked by next_cursor, give the same hits in the same order as one big page."""
    with web_daemon.client() as c:
        other = wait_status(c, submit(c, speech("A quiet country lane.")).json()["id"], {"completed"})
        ranked = c.get("/v1/search", params={"q": "country or lane", "limit": 50}).json()["data"]
        walked: list[dict[str, Any]] = []
        cursor = None
        for _ in range(20):
            page = c.get(
                "/v1/search", params={"q": "country or lane", "limit": 1, **({"cursor": cursor} if cursor else {})}
            )
            walked += page.json()["data"]
            cursor = page.json()["next_cursor"]
            if cursor is None:
                break
    assert walked == ranked and len(ranked) >= 2
    assert {other["id"], done["id"]} <= {h["job_id"] for h in ranked}
    assert [h["rank"] for h in ranked] == sorted((h["rank"] for h in ranked), reverse=True)


def test_audio_is_served_whole_and_by_range(web_daemon: Daemon, done: dict[str, Any], jfk: Path) -> None:
    """The audio comes back byte for byte as audio/flac; Range requests get 206 with Content-Range; past the end 416."""
    data = jfk.read_bytes()
    url = f"/v1/jobs/{done['id']}/audio"
    with web_daemon.client() as c:
        whole = c.get(url)
        part = c.get(url, headers={"Range": "bytes=100-199"})
        tail = c.get(url, headers={"Range": "bytes=-10"})
        open_end = c.get(url, headers={"Range": f"bytes={len(data) - 5}-"})
        past = c.get(url, headers={"Range": f"bytes={len(data)}-"})
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["content-type"] == "audio/flac" and whole.headers["accept-ranges"] == "bytes"
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    assert tail.status_code == 206 and tail.content == data[-10:]
    assert open_end.status_code == 206 and open_end.content == data[-5:]
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{len(data)}"


def test_audio_answers_304_to_the_copy_a_client_holds(web_daemon: Daemon, done: dict[str, Any]) -> None:
    """A browser revalidating its cached audio (If-None-Match with the ETag) gets 304 and no bytes again."""
    url = f"/v1/jobs/{done['id']}/audio"
    with web_daemon.client() as c:
        etag = c.get(url).headers["etag"]
        same = c.get(url, headers={"If-None-Match": f'"0000", W/{etag}'})
        other = c.get(url, headers={"If-None-Match": '"0000"'})
        gone = c.get(f"/v1/jobs/{'0' * 8}-0000-4000-8000-{'0' * 12}/audio", headers={"If-None-Match": "*"})
    assert same.status_code == 304 and same.content == b"" and same.headers["etag"] == etag
    assert other.status_code == 200 and len(other.content) > 1000
    assert gone.status_code == 404  # revalidating never answers for a job that is not there


def test_a_running_live_sessions_audio_is_not_cached_and_its_etag_follows_its_size(web_daemon: Daemon) -> None:
    """A live job's audio fetched while the session appends is `no-store`; once it ended, the ETag of the
    earlier copy no longer matches (200 with the whole file, not a 304 keeping the truncated copy)."""
    conn = live.ws(web_daemon.url)
    live.send(conn, live.session_update(vad=None))
    job_id = live.until(conn, "session.updated")[0]["session"]["job_id"]
    url = f"/v1/jobs/{job_id}/audio"
    with web_daemon.client() as c:
        live.send(conn, {"type": "input_audio_buffer.append", "audio": base64.b64encode(live.silence(2.0)).decode()})
        deadline = time.monotonic() + 10
        while (early := c.get(url)).status_code != 200 or len(early.content) < 60_000:
            assert time.monotonic() < deadline, early.status_code
            time.sleep(0.2)
        assert early.headers["cache-control"] == "no-store"
        live.send(conn, {"type": "input_audio_buffer.append", "audio": base64.b64encode(live.silence(4.0)).decode()})
        time.sleep(1)
        conn.close()
        wait_status(c, job_id, {"completed"})
        again = c.get(url, headers={"If-None-Match": early.headers["etag"]})
        later = c.get(url, headers={"If-None-Match": again.headers["etag"]})
    assert again.status_code == 200 and len(again.content) > len(early.content) + 100_000  # 4 s more at 16 kHz
    assert again.headers["cache-control"].startswith("private")
    assert later.status_code == 304  # the finished file's own ETag is stable


def test_audio_is_410_once_retention_deleted_it(web_daemon: Daemon, speech: Callable[..., Path]) -> None:
    """After the retention marked the audio deleted, the audio route says 410 Gone; the transcript stays."""
    clip = speech("The lamps were lit along the harbour.")
    with web_daemon.client() as c:
        job = wait_status(c, submit(c, clip).json()["id"], {"completed"})

        async def expire() -> None:
            conn = await asyncpg.connect(web_daemon.env["ASR_DATABASE_URL"])
            await conn.execute("UPDATE jobs SET audio_deleted_at = now() WHERE id = $1::uuid", job["id"])
            await conn.close()

        asyncio.run(expire())
        r = c.get(f"/v1/jobs/{job['id']}/audio")
        assert r.status_code == 410 and r.json()["error"]["code"] == "audio_deleted"
        assert c.get(f"/v1/jobs/{job['id']}/transcript").status_code == 200


def test_delete_removes_the_job_its_transcript_and_its_audio(
    web_daemon: Daemon, speech: Callable[..., Path], two_minutes: Path
) -> None:
    """POST /v1/jobs/{id}/delete removes the job, its segments (search no longer finds them) and the
    audio file; a running job is 409 (cancel first); an unknown one 404."""
    clip = speech("Seventeen purple umbrellas stood by the door.")
    with web_daemon.client() as c:
        job = wait_status(c, submit(c, clip).json()["id"], {"completed"})
        assert c.get("/v1/search", params={"q": "umbrellas"}).json()["data"]
        audio = web_daemon.state_dir / "uploads" / job["audio"]["sha256"]
        assert audio.exists()
        r = c.post(f"/v1/jobs/{job['id']}/delete")
        assert r.status_code == 200, r.text
        assert r.json() == {
            "id": job["id"],
            "object": "transcription.job.deleted",
            "deleted": True,
            "audio_deleted": True,
        }
        assert c.get(f"/v1/jobs/{job['id']}").status_code == 404
        assert c.get("/v1/search", params={"q": "umbrellas"}).json()["data"] == []
        assert not audio.exists()
        assert c.post(f"/v1/jobs/{job['id']}/delete").status_code == 404
        running = submit(c, two_minutes).json()["id"]
        wait_status(c, running, {"running"})
        r = c.post(f"/v1/jobs/{running}/delete")
        assert r.status_code == 409 and "cancel" in r.json()["error"]["message"]
        c.delete(f"/v1/jobs/{running}")
        wait_status(c, running, {"cancelled"})
        assert c.post(f"/v1/jobs/{running}/delete").status_code == 200


def test_the_page_is_served_with_a_strict_csp(web_daemon: Daemon) -> None:
    """`/` is the HTML page with a CSP that allows no inline script or style; its files come from /static/."""
    with httpx.Client(base_url=web_daemon.url) as c:
        page = c.get("/")
        js = c.get("/static/js/main.js")
        missing = c.get("/static/nope.js")
        escape = c.get("/static/..%2F..%2Fconfig.py")
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert js.status_code == 200 and js.headers["content-type"] == "text/javascript; charset=utf-8"
    assert missing.status_code == 404 and escape.status_code == 404


def test_docs_serve_the_schema_and_no_third_party_script(web_daemon: Daemon) -> None:
    """/docs answers the OpenAPI schema itself; no HTML viewer that loads script from a CDN onto this origin."""
    with web_daemon.client() as c:
        root, js, yaml = c.get("/docs"), c.get("/docs/openapi.json"), c.get("/docs/openapi.yaml")
        viewers = {p: c.get(f"/docs/{p}") for p in ("swagger", "redoc", "rapidoc", "elements", "scalar")}
    assert root.status_code == js.status_code == yaml.status_code == 200
    assert root.json()["info"]["title"] == "asr-server" and "openapi:" in yaml.text
    assert {p: r.status_code for p, r in viewers.items()} == dict.fromkeys(viewers, 404)
    assert not any(cdn in r.text for r in viewers.values() for cdn in ("unpkg", "jsdelivr", "cdn.redoc", "googleapis"))


def test_the_new_routes_are_in_the_openapi_schema(web_daemon: Daemon) -> None:
    """Search, audio and delete are documented; the page's own routes are not API."""
    with web_daemon.client() as c:
        paths = c.get("/docs/openapi.json").json()["paths"]
    assert "get" in paths["/v1/search"]
    assert "get" in paths["/v1/jobs/{job_id}/audio"]
    assert "post" in paths["/v1/jobs/{job_id}/delete"]
    assert "/" not in paths and not any(p.startswith("/static") for p in paths)


def test_cors_is_off_by_default(web_daemon: Daemon) -> None:
    """Without ASR_CORS_ORIGINS no origin is allowed: no Access-Control-Allow-Origin on any answer."""
    with web_daemon.client() as c:
        r = c.get("/v1/jobs", headers={"Origin": "http://evil.example"})
        pre = c.options("/v1/jobs", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in r.headers
    assert "access-control-allow-origin" not in pre.headers


def test_a_keyless_daemon_refuses_other_sites_browsers(web_daemon: Daemon, done: dict[str, Any]) -> None:
    """Keyless on loopback: a rebound name in Host gets 403 (the archive stays unread), a foreign page's
    form-like POST and WebSocket are refused with nothing done; the own page, localhost and programs pass."""
    with web_daemon.client() as c:
        rebound = c.get("/v1/jobs", headers={"Host": "attacker.example:8765"})
        assert rebound.status_code == 403, rebound.text
        assert "ASR_ALLOWED_HOSTS" in rebound.json()["error"]["message"]
        assert done["id"] not in rebound.text
        form = c.post(
            "/v1/models/tiny.en/unload",
            content=b"x",
            headers={"Origin": "http://evil.example", "Content-Type": "text/plain"},
        )
        assert form.status_code == 403 and "ASR_CORS_ORIGINS" in form.json()["error"]["message"], form.text
        delete = c.delete(f"/v1/jobs/{done['id']}", headers={"Origin": "http://evil.example"})
        assert delete.status_code == 403
        assert c.get(f"/v1/jobs/{done['id']}").status_code == 200  # still there
        own = c.get("/v1/jobs", headers={"Host": "localhost", "Origin": "http://localhost"})
        assert own.status_code == 200
    with pytest.raises(InvalidStatus) as refused:
        live.ws(web_daemon.url, origin="http://evil.example")
    assert refused.value.response.status_code == 403
    with live.ws(web_daemon.url, origin=f"http://127.0.0.1:{web_daemon.port}") as conn:
        assert live.until(conn, "session.created")[0]["type"] == "session.created"


def test_cors_allows_the_configured_origin_without_credentials(
    make_daemon: Callable[..., Daemon], database: str, jfk: Path
) -> None:
    """With ASR_CORS_ORIGINS and keys on, a preflight from that origin is answered without a key and
    allows the Authorization header; the real request carries the allowed origin and exposed headers,
    never Allow-Credentials; another origin gets nothing; search only shows the key's own jobs."""
    alice, bob = create_key(database, "alice"), create_key(database, "bob")
    origin = "http://127.0.0.1:5173"
    d = make_daemon(ASR_AUTH="on", ASR_CORS_ORIGINS=f"{origin},https://app.example.org")
    with d.client() as c:
        pre = c.options(
            "/v1/search",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert pre.status_code in (200, 204), pre.text
        assert pre.headers["access-control-allow-origin"] == origin
        assert "authorization" in pre.headers["access-control-allow-headers"].lower()
        assert "access-control-allow-credentials" not in pre.headers
        r = c.post("/v1/jobs", files={"file": jfk.open("rb")}, headers={**bearer(alice), "Origin": origin})
        assert r.status_code == 202
        assert r.headers["access-control-allow-origin"] == origin
        assert "x-job-id" in r.headers["access-control-expose-headers"].lower()
        wait_status(httpx.Client(base_url=d.url, headers=bearer(alice)), r.json()["id"], {"completed"})
        other = c.get("/v1/search", params={"q": "country"}, headers={**bearer(alice), "Origin": "http://evil.example"})
        assert other.status_code == 200 and "access-control-allow-origin" not in other.headers
        assert len(other.json()["data"]) >= 1
        assert c.get("/v1/search", params={"q": "country"}, headers=bearer(bob)).json()["data"] == []
        assert c.get("/v1/search", params={"q": "country"}).status_code == 401
