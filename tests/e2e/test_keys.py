"""API keys, per-key visibility, rate limits and upload limits against the real daemon."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests import services
from tests.conftest import Daemon


def asrctl(database: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `asrctl` against `database`."""
    return subprocess.run(
        [sys.executable, "-m", "asr_daemon.cli", *args],
        check=False,
        env={**os.environ, "ASR_DATABASE_URL": database},
        capture_output=True,
        text=True,
        timeout=60,
    )


def create_key(database: str, name: str, *extra: str) -> str:
    """`asrctl keys create` and return the token it printed."""
    out = asrctl(database, "keys", "create", "--name", name, *extra)
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    assert token.startswith("asr_") and len(token) > 40
    return token


def bearer(token: str) -> dict[str, str]:
    """The Authorization header for `token`."""
    return {"Authorization": f"Bearer {token}"}


def test_keys_cli_shows_token_once_and_stores_only_a_hash(database: str, pg: services.Postgres) -> None:
    """`keys create` prints the token once; the database and `keys ls` hold only its hash and prefix."""
    token = create_key(database, "ci", "--rate", "30", "--admin")
    listed = json.loads(asrctl(database, "keys", "ls", "--json").stdout)
    assert [(k["name"], k["rate"], k["admin"]) for k in listed] == [("ci", 30, True)]
    assert token not in json.dumps(listed) and token.startswith(listed[0]["prefix"])
    table = asrctl(database, "keys", "ls").stdout
    assert "ci" in table and listed[0]["prefix"] in table and token not in table
    dbname = database.rsplit("/", 1)[1]
    stored = pg.psql("SELECT hash || prefix || name FROM api_keys", dbname)
    assert token not in stored
    assert asrctl(database, "keys", "create", "--name", "ci").returncode == 1, "duplicate active name accepted"
    assert asrctl(database, "keys", "revoke", "ci").returncode == 0
    assert json.loads(asrctl(database, "keys", "ls", "--json").stdout) == []
    assert asrctl(database, "keys", "revoke", "ci").returncode == 1, "revoking nothing must fail"


def test_daemon_refuses_to_start_when_keys_are_required_and_none_exists(make_daemon: Callable[..., Daemon]) -> None:
    """Listening beyond loopback with no key: the daemon exits with a message naming the fix."""
    d = make_daemon(start=False, ASR_HOST="0.0.0.0")
    with pytest.raises(RuntimeError, match="daemon exited"):
        d.start()
    assert "asrctl keys create" in d.logs()


def test_auth_off_is_the_explicit_override_beyond_loopback(make_daemon: Callable[..., Daemon]) -> None:
    """ASR_AUTH=off on 0.0.0.0 with no key: the daemon starts and serves requests without a token."""
    d = make_daemon(ASR_HOST="0.0.0.0", ASR_AUTH="off")
    with d.client() as c:
        assert c.get("/v1/jobs").status_code == 200
        assert c.get("/v1/models").status_code == 200


def test_open_on_loopback_but_a_bad_asr_key_is_refused(daemon: Daemon) -> None:
    """Loopback with keys optional: no key or a foreign token works; an invalid `asr_` key gets 401."""
    with daemon.client() as c:
        assert c.get("/v1/jobs").status_code == 200
        assert c.get("/v1/jobs", headers=bearer("sk-openai-style")).status_code == 200
        r = c.get("/v1/jobs", headers=bearer("asr_" + "x" * 43))
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"


def test_keys_required_beyond_loopback(make_daemon: Callable[..., Daemon], database: str) -> None:
    """On 0.0.0.0: 401 without or with a revoked key, 200 with a valid one; probes and schema stay open."""
    token = create_key(database, "alice")
    d = make_daemon(ASR_HOST="0.0.0.0")
    with d.client() as c:
        r = c.get("/v1/jobs")
        assert r.status_code == 401 and "Bearer" in r.headers["www-authenticate"]
        assert "asrctl keys create" in r.json()["error"]["message"]
        assert c.get("/v1/jobs", headers={"Authorization": "Basic YTpi"}).status_code == 401
        assert c.get("/v1/jobs", headers=bearer("sk-not-ours")).status_code == 401
        assert c.get("/v1/jobs", headers=bearer(token)).status_code == 200
        for path in ("/healthz", "/readyz", "/docs/openapi.json"):
            assert c.get(path).status_code == 200, path
        assert asrctl(database, "keys", "revoke", "alice").returncode == 0
        assert c.get("/v1/jobs", headers=bearer(token)).status_code == 401
    assert token not in d.logs()


def job_routes(job_id: str) -> list[tuple[str, str]]:
    """Every route that shows or touches one job."""
    base = f"/v1/jobs/{job_id}"
    return [
        ("GET", base),
        ("GET", f"{base}/transcript"),
        ("GET", f"{base}/events"),
        ("GET", f"{base}/audio"),
        ("DELETE", base),
        ("POST", f"{base}/delete"),
    ]


def test_a_job_is_visible_only_to_its_key_and_to_admins(
    make_daemon: Callable[..., Daemon], database: str, jfk: Path
) -> None:
    """Another key gets 404 on every route of a job and does not list it; an admin key sees it (and manages models)."""
    alice, bob, root = (
        create_key(database, "alice"),
        create_key(database, "bob"),
        create_key(database, "root", "--admin"),
    )
    d = make_daemon(ASR_AUTH="on")
    with d.client() as c:
        r = c.post("/v1/jobs", files={"file": jfk.open("rb")}, headers=bearer(alice))
        assert r.status_code == 202, r.text
        jid = r.json()["id"]
        for method, path in job_routes(jid):
            r = c.request(method, path, headers=bearer(bob))
            assert r.status_code == 404, (method, path, r.text)
        assert c.get("/v1/jobs", headers=bearer(bob)).json()["data"] == []
        assert [j["id"] for j in c.get("/v1/jobs", headers=bearer(alice)).json()["data"]] == [jid]
        assert [j["id"] for j in c.get("/v1/jobs", headers=bearer(root)).json()["data"]] == [jid]
        assert c.get(f"/v1/jobs/{jid}", headers=bearer(root)).status_code == 200
        # managing models is for admins
        assert c.post("/v1/models/tiny.en/load", headers=bearer(bob)).status_code == 403
        assert c.post("/v1/models/tiny.en/load", headers=bearer(root)).status_code == 200
        # the same audio from bob is not deduplicated into alice's job
        r = c.post("/v1/jobs", files={"file": jfk.open("rb")}, headers=bearer(bob))
        assert r.status_code == 202 and r.json()["id"] != jid


def test_anonymous_callers_see_only_the_jobs_made_without_a_key(
    make_daemon: Callable[..., Daemon], database: str, jfk: Path
) -> None:
    """While keys are optional, a caller without a key gets 404 for a key's job and lists only keyless
    jobs; the key does not see the keyless job; an admin key sees both; anonymous may manage models."""
    alice, root = create_key(database, "alice"), create_key(database, "root", "--admin")
    d = make_daemon()  # loopback: keys optional
    with d.client() as c:
        keyed = c.post("/v1/jobs", files={"file": jfk.open("rb")}, headers=bearer(alice)).json()["id"]
        anon = c.post("/v1/jobs", files={"file": jfk.open("rb")}, data={"temperature": "0.1"}).json()["id"]
        for method, path in job_routes(keyed):
            assert c.request(method, path).status_code == 404, (method, path)
        assert c.get(f"/v1/jobs/{anon}").status_code == 200
        assert [j["id"] for j in c.get("/v1/jobs").json()["data"]] == [anon]
        assert c.get(f"/v1/jobs/{anon}", headers=bearer(alice)).status_code == 404
        assert [j["id"] for j in c.get("/v1/jobs", headers=bearer(alice)).json()["data"]] == [keyed]
        assert {j["id"] for j in c.get("/v1/jobs", headers=bearer(root)).json()["data"]} == {keyed, anon}
        assert c.post("/v1/models/tiny.en/load").status_code == 200
        assert c.post("/v1/models/tiny.en/load", headers=bearer(alice)).status_code == 403


def test_rate_limit_per_key_and_fail_open_without_redis(
    make_daemon: Callable[..., Daemon], database: str, redis_server: services.Redis
) -> None:
    """A key with --rate 3 gets 429 + Retry-After on its 4th request; with Redis down requests pass."""
    slow, other = create_key(database, "slow", "--rate", "3"), create_key(database, "other")
    d = make_daemon(ASR_AUTH="on")
    with d.client() as c:
        codes = [c.get("/v1/jobs", headers=bearer(slow)).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = c.get("/v1/jobs", headers=bearer(slow))
        assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 61
        assert r.json()["error"]["code"] == "rate_limited"
        assert c.get("/v1/jobs", headers=bearer(other)).status_code == 200, "limits are per key"
        redis_server.stop()
        try:
            assert [c.get("/v1/jobs", headers=bearer(slow)).status_code for _ in range(5)] == [200] * 5
        finally:
            redis_server.start()
    assert "rate_limit_unavailable" in d.logs()


def _start_upload(port: int, token: str | None, path: str = "/v1/jobs") -> socket.socket:
    """Open a connection and send the start of a multipart upload, then keep it open without finishing."""
    s = socket.create_connection(("127.0.0.1", port))
    body = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\nRIFF'
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    s.sendall(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: 1000000\r\n\r\n".encode()
        + body
    )
    return s


def _read_response(s: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes or `timeout` passes."""
    s.settimeout(timeout)
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def test_concurrent_uploads_per_key_are_bounded(make_daemon: Callable[..., Daemon], database: str, jfk: Path) -> None:
    """With one upload slot per key, a second upload of the same key gets 429 while the first streams."""
    a, b = create_key(database, "a"), create_key(database, "b")
    d = make_daemon(ASR_AUTH="on", ASR_MAX_UPLOADS_PER_KEY="1", ASR_UPLOAD_IDLE_TIMEOUT="30")
    first = _start_upload(d.port, a)
    try:
        time.sleep(0.5)
        with d.client() as c:
            r = c.post("/v1/jobs", files={"file": jfk.open("rb")}, headers=bearer(a))
            assert r.status_code == 429 and "ASR_MAX_UPLOADS_PER_KEY" in r.json()["error"]["message"]
            assert c.post("/v1/jobs", files={"file": jfk.open("rb")}, headers=bearer(b)).status_code == 202
    finally:
        first.close()
    time.sleep(0.5)
    with d.client() as c:
        assert (
            c.post("/v1/jobs", files={"file": jfk.open("rb")}, headers=bearer(a), data={"priority": "1"}).status_code
            == 202
        ), "the slot was not given back"


def test_slow_headers_are_cut_off(make_daemon: Callable[..., Daemon]) -> None:
    """A client that never finishes its request headers is disconnected after ASR_HEADER_TIMEOUT."""
    d = make_daemon(ASR_HEADER_TIMEOUT="1")
    s = socket.create_connection(("127.0.0.1", d.port))
    try:
        s.sendall(b"GET /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        t0 = time.monotonic()
        _read_response(s, timeout=10)
        assert time.monotonic() - t0 < 5, "the connection was held open"
    finally:
        s.close()
    assert httpx.get(d.url + "/healthz", timeout=5).status_code == 200
