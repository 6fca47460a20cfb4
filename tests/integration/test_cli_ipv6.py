"""`asrctl status`, `transcribe` and `search` reach a daemon whose ASR_HOST is an IPv6 address
(`scripts/install --listen [::1]:8765` writes `::1`), through a stub HTTP server on ::1."""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from asr_daemon import logs, urls
from asr_daemon.ops import host
from tests.integration.ops_support import MODEL, READYZ, asrctl, db

__all__ = ["db"]  # a fixture, imported for pytest


class _Stub(BaseHTTPRequestHandler):
    """The daemon's /readyz, /v1/models, /v1/search and POST /v1/jobs, as a real daemon answers them."""

    def _send(self, status: int, body: Any) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        if self.path == "/readyz":
            self._send(200, READYZ)
        elif self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [MODEL]})
        elif self.path.startswith("/v1/search?"):
            self._send(200, {"object": "list", "data": [], "next_cursor": None})
        else:
            self._send(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._send(202, {"id": str(uuid.uuid4()), "object": "job", "status": "queued"})

    def log_message(self, *args: Any) -> None:
        """Quiet."""


class _V6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


@pytest.fixture
def v6_daemon(db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A stub daemon on [::1]:PORT; ASR_HOST=::1 and ASR_PORT point at it, no systemd."""
    server = _V6Server(("::1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = int(server.server_address[1])
    monkeypatch.setenv("ASR_HOST", "::1")
    monkeypatch.setenv("ASR_PORT", str(port))
    monkeypatch.delenv("ASR_URL", raising=False)
    monkeypatch.setattr(host, "systemd_present", lambda: False)
    yield port
    server.shutdown()
    server.server_close()


def test_status_transcribe_and_search_reach_a_daemon_on_ipv6(v6_daemon: int, tmp_path: Path) -> None:
    """ASR_HOST=::1: status reports the daemon answering at http://[::1]:PORT, transcribe submits
    to it and search asks it; no command crashes on the address."""
    status = asrctl("status", "--json")
    assert status.exit_code == 0, status.stderr
    daemon = json.loads(status.stdout)["daemon"]
    assert (daemon["state"], daemon["via"]) == ("answering", f"http://[::1]:{v6_daemon}")
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"RIFF")
    submitted = asrctl("transcribe", "--async", str(audio))
    assert submitted.exit_code == 0, submitted.stderr
    assert uuid.UUID(submitted.stdout.split("\t")[0])
    found = asrctl("search", "hello")
    assert found.exit_code == 1 and found.stderr.strip() == "no matches", found.stderr


@pytest.mark.parametrize(
    ("host_", "url"),
    [("::1", "http://[::1]:8765"), ("[::1]", "http://[::1]:8765"), ("::", "http://[::1]:8765"),
     ("fd00::5", "http://[fd00::5]:8765"), ("0.0.0.0", "http://127.0.0.1:8765"), ("", "http://127.0.0.1:8765"),
     ("10.0.0.2", "http://10.0.0.2:8765"), ("asr.lan", "http://asr.lan:8765")],
)  # fmt: skip
def test_daemon_url_brackets_ipv6_and_maps_wildcards_to_loopback(host_: str, url: str) -> None:
    """The one place the daemon's URL is built: IPv6 in brackets, a wildcard as the loopback of its family."""
    assert urls.daemon_url(host_, 8765) == url
    assert f"docs {url}/docs" in logs.ready_line(host_, 8765, "base", "cpu", "int8")
