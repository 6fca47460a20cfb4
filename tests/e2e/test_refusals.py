"""An upload refused before its body was read reaches every client as its status and JSON (issue 18).

Real clients against a real daemon: httpx async and sync (bodies paced like a LAN client's, so the
refusal meets a body still in flight), the openai SDK, curl with and without `Expect: 100-continue`,
and a raw socket that sends its whole body before it reads. Before the fix, httpx async reported
`ReadError` and the raw socket `BrokenPipeError` for the same refusals.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from bench.load import Plan
from tests.conftest import Daemon, leftover_files
from tests.e2e.test_keys import bearer, create_key

RATE = 4e6  # bytes per second: a body of 600 kB is on the wire for 0.15 s
CLIENTS = ["httpx-async", "httpx-sync", "openai", "curl-expect", "curl-no-expect", "raw"]


@dataclass
class Answer:
    """What a client got: the status, the JSON error body, the headers (lower-case names)."""

    status: int
    body: dict[str, object]
    headers: dict[str, str]


def form(size: int) -> tuple[bytes, dict[str, str]]:
    """A multipart body with `size` bytes of (not audio) data as its file, and its headers."""
    return Plan("", b"\x01" * size, "x.wav", [], rate=RATE).form()


def send(client: str, url: str, body: bytes, headers: dict[str, str], tmp: Path) -> Answer:
    """POST `body` to /v1/jobs with `client`; an exception here is a transport error: the test fails."""
    plan = Plan(url, b"", "x.wav", [], rate=RATE)
    if client == "httpx-async":

        async def post() -> httpx.Response:
            async with httpx.AsyncClient(base_url=url, timeout=30) as c:
                return await c.post("/v1/jobs", content=plan.paced(body), headers=headers)

        r = asyncio.run(post())
        return Answer(r.status_code, r.json(), dict(r.headers))
    if client == "httpx-sync":
        with httpx.Client(base_url=url, timeout=30) as c:
            r = c.post("/v1/jobs", content=plan.paced_sync(body), headers=headers)
        return Answer(r.status_code, r.json(), dict(r.headers))
    if client == "openai":  # the SDK makes its own multipart body (the size stays about the same)
        key = headers.get("authorization", "Bearer sk-test").split()[1]
        with openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=30) as c:
            try:
                c.audio.transcriptions.create(model="whisper-1", file=("x.wav", body))
            except openai.APIStatusError as exc:
                return Answer(exc.status_code, exc.response.json(), dict(exc.response.headers))
        raise AssertionError("the request was accepted")
    if client.startswith("curl"):
        return _curl(url, body, headers, tmp, expect=client == "curl-expect")
    return _raw(url, body, headers)


def _curl(url: str, body: bytes, headers: dict[str, str], tmp: Path, expect: bool) -> Answer:
    data = tmp / "body.bin"
    data.write_bytes(body)
    head = tmp / "head.txt"
    args = ["curl", "-sS", "--max-time", "30", "--limit-rate", str(int(RATE)), "-D", str(head), "--data-binary"]
    args += [f"@{data}", "-H", "Expect: 100-continue" if expect else "Expect:"]
    for name, value in headers.items():
        if name != "content-length":
            args += ["-H", f"{name}: {value}"]
    out = subprocess.run([*args, url + "/v1/jobs"], capture_output=True, timeout=60, check=False)
    assert out.returncode == 0, f"curl failed: {out.stderr.decode(errors='replace')}"
    heads = [h for h in head.read_bytes().decode("latin-1").split("\r\n\r\n") if h.strip()]
    assert heads, f"curl got no answer: {out.stderr.decode(errors='replace')} {out.stdout[:200]!r}"
    lines = heads[-1].split("\r\n")  # the last head (after any 100 Continue)
    found = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return Answer(int(lines[0].split()[1]), json.loads(out.stdout), found)


def _raw(url: str, body: bytes, headers: dict[str, str]) -> Answer:
    """A client that writes its whole request before it reads a byte (paced); a send error fails the test."""
    host, port = url.removeprefix("http://").split(":")
    head = (
        "POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    )
    plan = Plan(url, b"", "x.wav", [], rate=RATE)
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(head.encode())
        for piece in plan.paced_sync(body):
            s.sendall(piece)  # BrokenPipeError / ConnectionResetError: the answer was cut off
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    raw_head, _, raw_body = data.partition(b"\r\n\r\n")
    lines = raw_head.decode("latin-1").split("\r\n")
    found = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return Answer(int(lines[0].split()[1]), json.loads(raw_body), found)


@contextlib.contextmanager
def slot_taken(d: Daemon) -> Iterator[None]:
    """Hold the daemon's one upload slot with an upload that trickles until the block ends."""
    stop = threading.Event()
    body, headers = form(100 << 20)
    head = (
        "POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    )

    def trickle() -> None:
        with socket.create_connection(("127.0.0.1", d.port)) as s:
            s.sendall(head.encode() + body[:1000])
            for i in range(1000, len(body), 100):
                if stop.wait(0.2):
                    break
                s.sendall(body[i : i + 100])

    t = threading.Thread(target=trickle)
    t.start()
    try:
        probe, probe_headers = form(10)
        deadline = time.monotonic() + 20
        with httpx.Client(base_url=d.url, timeout=10) as c:  # the slot is held once a tiny upload gets 429
            while c.post("/v1/jobs", content=probe, headers=probe_headers).status_code != 429:
                assert time.monotonic() < deadline, "the trickling upload never took the slot"
                time.sleep(0.1)
        yield
    finally:
        stop.set()
        t.join()


@pytest.fixture(scope="module")
def one_slot(make_module_daemon: Callable[..., Daemon]) -> Daemon:
    """A daemon with one upload slot for everyone and a 1 MiB upload limit."""
    return make_module_daemon(ASR_MAX_UPLOADS_PER_KEY="1", ASR_MAX_UPLOAD_BYTES=str(1 << 20))


def needs_curl(client: str) -> None:
    if client.startswith("curl") and shutil.which("curl") is None:
        pytest.skip("curl is not installed")


@pytest.mark.parametrize("client", CLIENTS)
def test_a_429_for_the_upload_slots_reaches_the_client(one_slot: Daemon, client: str, tmp_path: Path) -> None:
    """All slots taken: a 600 kB upload gets its 429 with Retry-After and the JSON error, not a reset."""
    needs_curl(client)
    body, headers = form(600 << 10)
    with slot_taken(one_slot):
        for _ in range(2):  # the second on a fresh connection right after the first refusal
            a = send(client, one_slot.url, body, headers, tmp_path)
            assert a.status == 429 and a.headers.get("retry-after") == "2", a
            assert a.body["error"]["code"] == "rate_limited", a


@pytest.mark.parametrize("client", CLIENTS)
def test_a_413_half_way_through_reaches_the_client(one_slot: Daemon, client: str, tmp_path: Path) -> None:
    """3 MB against a 1 MiB limit: the 413 comes mid-body and the client, still sending, reads it."""
    needs_curl(client)
    body, headers = form(3 << 20)
    a = send(client, one_slot.url, body, headers, tmp_path)
    assert a.status == 413 and a.body["error"]["code"] == "too_large", a


@pytest.mark.parametrize("client", [c for c in CLIENTS if c != "openai"])  # the SDK sets its own Content-Type
def test_a_415_for_a_body_that_is_not_multipart_reaches_the_client(
    one_slot: Daemon, client: str, tmp_path: Path
) -> None:
    """A 600 kB body sent as application/octet-stream: 415 before a byte of it is read, and the client gets it."""
    needs_curl(client)
    body, headers = form(600 << 10)
    headers["content-type"] = "application/octet-stream"
    a = send(client, one_slot.url, body, headers, tmp_path)
    assert a.status == 415 and a.body["error"]["code"] == "unsupported_media", a


def with_field(body: bytes, headers: dict[str, str], name: str, value: str) -> tuple[bytes, dict[str, str]]:
    """`body` (from `form`) with a form field sent before its file part, as httpx and the SDK order them."""
    boundary = headers["content-type"].split("boundary=")[1]
    part = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    return part + body, {**headers, "content-length": str(len(part) + len(body))}


@pytest.mark.parametrize("client", [c for c in CLIENTS if c != "openai"])  # the SDK: the next test
def test_a_bad_field_before_the_file_is_refused_before_the_body_and_reaches_the_client(
    one_slot: Daemon, client: str, tmp_path: Path
) -> None:
    """model=no-such-model ahead of a 3 MB file (over the 1 MiB limit): the 404 comes as the field arrives,
    before the file is read (not the 413 its size would give), no spool file is left, and the client,
    still sending, reads it."""
    needs_curl(client)
    body, headers = with_field(*form(3 << 20), "model", "no-such-model")
    a = send(client, one_slot.url, body, headers, tmp_path)
    assert a.status == 404 and a.body["error"]["code"] == "model_not_found", a
    assert leftover_files(one_slot.state_dir) == []


def test_a_bad_model_from_the_openai_sdk_is_refused_before_its_file(one_slot: Daemon) -> None:
    """The OpenAI SDK (fields before the file) naming a model this host lacks, with 3 MB over the 1 MiB
    limit: its error is the 404 for the model, found before the file was read, not the 413."""
    sdk = openai.OpenAI(base_url=one_slot.url + "/v1", api_key="sk-test", max_retries=0, timeout=30)
    with sdk as c, pytest.raises(openai.NotFoundError) as exc:
        c.audio.transcriptions.create(model="no-such-model", file=("x.wav", b"\x01" * (3 << 20)))
    assert exc.value.response.json()["error"]["code"] == "model_not_found"
    assert leftover_files(one_slot.state_dir) == []


def test_a_401_for_a_wrong_key_reaches_every_client(
    make_daemon: Callable[..., Daemon], database: str, tmp_path: Path
) -> None:
    """Keys required, a revoked-looking key sent with a 600 kB upload: every client reads the 401."""
    create_key(database, "load")
    d = make_daemon(ASR_AUTH="on")
    body, headers = form(600 << 10)
    headers.update(bearer("asr_not-a-key"))
    for client in CLIENTS:
        if client.startswith("curl") and shutil.which("curl") is None:
            continue
        a = send(client, d.url, body, headers, tmp_path)
        assert a.status == 401 and a.body["error"]["code"] == "unauthorized", (client, a)
        assert a.headers.get("www-authenticate", "").startswith("Bearer"), (client, a)
