"""`asrctl status`: a stable JSON schema, correct with the daemon down and up, and never waking it."""

from __future__ import annotations

import json
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from asr_daemon.ops import host, migrate
from tests import services
from tests.integration.ops_support import MODEL, READYZ, asrctl, assert_one_error_line, db

__all__ = ["db"]  # a fixture, imported for pytest

KEYS = {
    "": {
        "schema",
        "checked_at",
        "systemd",
        "daemon",
        "device",
        "jobs",
        "database",
        "last_request",
        "idle_stop",
        "backups",
    },
    "systemd": {"present", "units"},
    "daemon": {"state", "via", "ready", "models", "error"},
    "device": {"source", "gpus", "daemon"},
    "jobs": {"running", "queued", "oldest_queued_age_s"},
    "database": {"reachable", "size_bytes", "latest_migration", "pending_migrations", "error"},
    "last_request": {"at", "age_s"},
    "idle_stop": {"after_s", "in_s"},
    "backups": {"dir", "count", "latest", "latest_age_s", "error"},
}


class _Stub(BaseHTTPRequestHandler):
    """The daemon's /readyz and /v1/models, answering what a real daemon on a GPU host answers."""

    requests: list[str] = []  # shared on purpose: the tests read what the stub was asked

    def do_GET(self) -> None:
        _Stub.requests.append(self.path)
        body: Any = READYZ if self.path == "/readyz" else {"object": "list", "data": [MODEL]}
        raw = json.dumps(body).encode()
        self.send_response(200 if self.path in {"/readyz", "/v1/models"} else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: Any) -> None:
        """Quiet."""

    def address_string(self) -> str:
        """Unix sockets have no peer address."""
        return "unix"


@pytest.fixture
def stub_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A stub daemon on a Unix socket; ASR_UDS points at it."""
    path = tmp_path / "http.sock"
    _Stub.requests.clear()
    server = socketserver.ThreadingUnixStreamServer(str(path), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("ASR_UDS", str(path))
    yield path
    server.shutdown()
    server.server_close()


@pytest.fixture
def public_port(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """A listener on ASR_PORT that counts connections (the socket-activated public port)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.settimeout(0.05)
    monkeypatch.setenv("ASR_PORT", str(sock.getsockname()[1]))
    hits = [0]
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                sock.accept()[0].close()
                hits[0] += 1
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield hits
    stop.set()
    thread.join()
    sock.close()


def fake_systemd(monkeypatch: pytest.MonkeyPatch, service_state: str, env: dict[str, str] | None = None) -> None:
    """Pretend systemd manages the units, with asr-server.service in `service_state` and `env` as
    its Environment= variables."""
    monkeypatch.setattr(host, "systemd_present", lambda: True)
    monkeypatch.setattr(host, "service_environment", lambda unit: env or {})
    monkeypatch.setattr(
        host,
        "unit_state",
        lambda name: {
            "loaded": True,
            "active": service_state if name == "asr-server.service" else "active",
            "sub": "running",
            "since": "2026-11-25T10:00:00+00:00",
        },
    )


def report(*args: str) -> dict[str, Any]:
    result = asrctl("status", "--json", *args)
    data: dict[str, Any] = json.loads(result.stdout)
    for section, keys in KEYS.items():
        node = data[section] if section else data
        if node is not None:
            assert set(node) == keys, section
    return data


def test_status_with_daemon_down(
    pg: services.Postgres, db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Daemon down, no systemd: the report comes from PostgreSQL, the access log and the backup dir."""
    monkeypatch.setattr(host, "systemd_present", lambda: False)
    monkeypatch.setenv("ASR_PORT", str(services.free_port()))
    name = db.rsplit("/", 1)[1]
    for status, age in (("queued", 90), ("queued", 10), ("running", 5), ("completed", 500)):
        pg.psql(
            "INSERT INTO jobs (id, status, model, fingerprint, audio_sha256, audio_bytes, duration_s,"
            f" created_at) VALUES (gen_random_uuid(), '{status}', 'm', 'f', 's', 1, 1,"
            f" now() - interval '{age} seconds')",
            name,
        )
    log = tmp_path / "state" / "log" / "access.log"
    log.parent.mkdir(parents=True)
    old, at, now = "2026-01-01T00:00:01+00:00", datetime.now(UTC) - timedelta(seconds=120), datetime.now(UTC)
    lines = [
        {"start": old, "end": old, "path": "/x"},
        {"start": at.isoformat(), "end": at.isoformat(), "path": "/v1/jobs", "probe": False},
        {"start": now.isoformat(), "end": now.isoformat(), "path": "/readyz", "probe": True},
    ]
    log.write_text("".join(json.dumps(line) + "\n" for line in lines))  # the probe does not count
    (tmp_path / "state" / "backups").mkdir()
    (tmp_path / "state" / "backups" / "asr-20260101T000000Z.dump").write_bytes(b"x")

    r = report()
    assert r["schema"] == 1 and r["systemd"] == {"present": False, "units": {}}
    assert r["daemon"]["state"] == "not-running" and r["daemon"]["models"] == []
    assert r["jobs"]["running"] == 1 and r["jobs"]["queued"] == 2
    assert 89 <= r["jobs"]["oldest_queued_age_s"] < 150
    assert r["database"]["reachable"] and r["database"]["latest_migration"] == migrate.load()[-1].name
    assert r["database"]["pending_migrations"] == 0 and r["database"]["size_bytes"] > 1_000_000
    assert 119 <= r["last_request"]["age_s"] < 180
    assert r["idle_stop"]["in_s"] is None
    assert r["backups"]["count"] == 1 and r["backups"]["latest"].endswith("asr-20260101T000000Z.dump")
    human = asrctl("status")
    assert human.exit_code == 0 and "not-running" in human.stdout


def test_status_with_daemon_up(db: str, stub_daemon: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Daemon answering on its socket: ready, models with their memory and the device (GPU VRAM) come
    from it, in JSON and on the human screen; idle stop counts down."""
    monkeypatch.setattr(host, "systemd_present", lambda: False)
    monkeypatch.setenv("ASR_IDLE_STOP_AFTER", "900")
    log = tmp_path / "state" / "log" / "access.log"
    log.parent.mkdir(parents=True)
    log.write_text(json.dumps({"ts": time.time() - 100}) + "\n")
    r = report()
    assert r["daemon"]["state"] == "answering" and r["daemon"]["ready"] is True
    assert r["daemon"]["via"] == f"unix:{stub_daemon}"
    assert [m["id"] for m in r["daemon"]["models"]] == ["tiny.en"]
    assert r["daemon"]["models"][0]["memory_bytes"] == 96 << 20
    assert r["device"]["daemon"] == READYZ["device"] and r["device"]["source"] == "daemon"
    assert 780 < r["idle_stop"]["in_s"] <= 800
    assert r["jobs"] == {"running": 0, "queued": 0, "oldest_queued_age_s": None}
    human = asrctl("status")
    assert human.exit_code == 0, human.stderr
    screen = " ".join(human.stdout.split())
    assert "models tiny.en (cuda float16, 96.0 MiB in memory)" in screen
    assert "device cuda float16, NVIDIA H100 80GB HBM3: 1688 MiB used, 79871 MiB free" in screen


def test_status_never_wakes_an_inactive_service(
    db: str, stub_daemon: Path, public_port: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under systemd with asr-server.service inactive, status connects to neither socket."""
    fake_systemd(monkeypatch, "inactive")
    r = report()
    assert r["daemon"]["state"] == "not-running" and r["daemon"]["via"] is None
    assert r["systemd"]["units"]["asr-server.service"]["active"] == "inactive"
    assert public_port[0] == 0 and _Stub.requests == []


def test_status_asks_an_active_service_on_its_unix_socket_only(
    db: str, stub_daemon: Path, public_port: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under systemd with the service active, status asks the UDS named by the unit, never the public port."""
    monkeypatch.delenv("ASR_UDS")
    fake_systemd(monkeypatch, "active", {"ASR_UDS": str(stub_daemon), "PYTHONUNBUFFERED": "1"})
    r = report()
    assert r["daemon"]["state"] == "answering" and r["daemon"]["via"] == f"unix:{stub_daemon}"
    assert public_port[0] == 0 and _Stub.requests == ["/readyz", "/v1/models"]


def test_status_active_but_silent_daemon_exits_1(db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Service active but its socket does not answer: the report says so, one error line, exit 1."""
    fake_systemd(monkeypatch, "active")
    monkeypatch.setenv("ASR_UDS", str(tmp_path / "missing.sock"))
    result = asrctl("status", "--json")
    assert json.loads(result.stdout)["daemon"]["state"] == "not-answering"
    assert_one_error_line(result, "does not answer")


def test_status_with_database_down(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """PostgreSQL unreachable: the report still prints, then one error line and exit 1, no password."""
    monkeypatch.setattr(host, "systemd_present", lambda: False)
    monkeypatch.setenv("ASR_DATABASE_URL", f"postgresql://asr:pw-s3cret@127.0.0.1:{services.free_port()}/asr")
    monkeypatch.setenv("ASR_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("ASR_PORT", str(services.free_port()))
    result = asrctl("status", "--json")
    data = json.loads(result.stdout)
    assert data["database"]["reachable"] is False and data["jobs"] is None
    assert_one_error_line(result, "PostgreSQL")
    assert "pw-s3cret" not in result.stdout + result.stderr
