"""Upload limits enforced while the body streams: ASR_MAX_UPLOAD_BYTES (413) and ASR_UPLOAD_TIMEOUT (408).

Each test talks to a real daemon over a raw socket, sending a body slowly, and watches for the
answer between sends: so it can tell that the server answered before the client had finished.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from tests import services
from tests.conftest import Daemon, leftover_files
from tests.e2e.test_bad_input import job_count, stored_audio

BOUNDARY = b"limits-boundary"
PART_HEAD = (
    b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n'
    b"Content-Type: application/octet-stream\r\n\r\n"
)


@dataclass
class Answer:
    """What a trickled upload got back, and how far the client had got when it came."""

    status: int
    body: dict[str, object]
    sent: int  # body bytes sent when the answer arrived
    total: int  # body bytes the request promised (Content-Length)
    elapsed: float  # seconds from the first body byte to the answer


def trickle(d: Daemon, total: int, chunk: int, interval: float, give_up: float) -> Answer:
    """POST a multipart upload of `total` body bytes, `chunk` bytes every `interval` s; stop at the first answer."""
    head = (
        b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: multipart/form-data; boundary=" + BOUNDARY + b"\r\n"
        b"Content-Length: " + str(total).encode() + b"\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", d.port)) as s:
        s.sendall(head + PART_HEAD)
        sent, start = len(PART_HEAD), time.monotonic()
        filler = b"\x00" * chunk
        while sent < total and time.monotonic() - start < give_up:
            if select.select([s], [], [], 0)[0]:
                break  # the server answered: stop sending
            n = min(chunk, total - sent)
            try:
                s.sendall(filler[:n])
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += n
            time.sleep(interval)
        elapsed = time.monotonic() - start
        assert sent < total, "the whole body went out before any answer came"
        s.settimeout(10)
        data = b""
        try:
            while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
                got = s.recv(65536)
                if not got:
                    break
                data += got
        except TimeoutError:
            pass
    head_bytes, _, body = data.partition(b"\r\n\r\n")
    assert head_bytes, f"no answer after {elapsed:.1f} s and {sent} of {total} bytes"
    return Answer(int(head_bytes.split()[1]), json.loads(body or b"{}"), sent, total, elapsed)


def _length(data: bytes) -> int:
    """The Content-Length of a response whose head is in `data` (0 when it has none)."""
    for line in data.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def assert_nothing_left(d: Daemon, pg: services.Postgres) -> None:
    """No temporary upload file, no stored audio, no job row, and the daemon still healthy."""
    deadline = time.monotonic() + 5  # the handler's clean-up may trail the answer by a moment
    while leftover_files(d.state_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not leftover_files(d.state_dir)
    assert stored_audio(d) == []
    assert job_count(pg, d) == 0
    with d.client() as c:
        assert c.get("/healthz").status_code == 200


def test_an_oversized_upload_is_refused_while_it_is_still_being_sent(
    make_daemon: Callable[..., Daemon], pg: services.Postgres
) -> None:
    """A 64 MiB body against a 1 MiB limit, sent slowly, gets its 413 after little more than 1 MiB."""
    d = make_daemon(ASR_MAX_UPLOAD_BYTES=str(1 << 20))
    a = trickle(d, total=64 << 20, chunk=64 << 10, interval=0.01, give_up=60)
    assert a.status == 413, a
    err = a.body["error"]
    assert isinstance(err, dict) and err["code"] == "too_large" and "ASR_MAX_UPLOAD_BYTES" in err["message"]
    # the answer came with most of the body unsent (socket buffers may hold a few MiB in flight)
    assert a.sent < 8 << 20, f"413 only after {a.sent} of {a.total} bytes"
    assert_nothing_left(d, pg)


def test_an_upload_trickling_past_the_total_timeout_gets_408(
    make_daemon: Callable[..., Daemon], pg: services.Postgres
) -> None:
    """Never idle for 2 s but slower than ASR_UPLOAD_TIMEOUT=3 s overall: a 408 naming the total limit."""
    d = make_daemon(ASR_UPLOAD_TIMEOUT="3", ASR_UPLOAD_IDLE_TIMEOUT="2")
    a = trickle(d, total=1 << 20, chunk=1024, interval=0.25, give_up=30)
    assert a.status == 408, a
    err = a.body["error"]
    assert isinstance(err, dict) and err["code"] == "request_timeout"
    assert "ASR_UPLOAD_TIMEOUT" in err["message"] and "stalled" not in err["message"], err
    assert 2.5 < a.elapsed < 10, f"answered after {a.elapsed:.1f} s"
    assert_nothing_left(d, pg)
