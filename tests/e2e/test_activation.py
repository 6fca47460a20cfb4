"""Socket activation without PID-1 systemd: systemd-socket-activate + systemd-socket-proxyd + the real
daemon under Granian on its Unix socket, with a stand-in NOTIFY_SOCKET.

`systemd-socket-activate` holds the public socket as PID 1 would. The only stand-in is for PID 1's job
ordering (`BindsTo=`/`After=` in asr-server-proxy.service): a shell script that starts the daemon,
waits until the test's notify socket received READY=1, then becomes systemd-socket-proxyd.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests import services
from tests.conftest import Daemon

PROXYD = Path("/usr/lib/systemd/systemd-socket-proxyd")
ORDERING = """#!/bin/sh
# stand-in for PID 1's ordering (BindsTo=/After=): the daemon first, the proxy once it sent READY=1
{exports}
env -u LISTEN_FDS -u LISTEN_PID -u LISTEN_FDNAMES "$ASRCTL" serve 3<&- >>"$DAEMON_LOG" 2>&1 &
echo $! > "$DAEMON_PID"
while [ ! -e "$READY_FLAG" ]; do sleep 0.05; done
exec {proxyd} --exit-idle-time=2s "$ASR_UDS"
"""

pytestmark = pytest.mark.skipif(
    not (shutil.which("systemd-socket-activate") and PROXYD.exists()), reason="systemd tools missing"
)


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class NotifyLog:
    """Stand-in NOTIFY_SOCKET: records datagrams; creates the READY flag when READY=1 arrives."""

    def __init__(self, path: Path, flag: Path, uds: Path, on_ready: Callable[[], object] | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.flag, self.uds, self.on_ready = flag, uds, on_ready
        self.at_ready: object = None
        self.fields: list[str] = []
        self.uds_accepted_before_ready: bool | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.is_set():
            try:
                data = self.sock.recv(4096).decode("latin-1")
            except TimeoutError:
                continue
            if "READY=1" in data and self.uds_accepted_before_ready is None:
                with socket.socket(socket.AF_UNIX) as probe:  # READY must mean "connect works now"
                    self.uds_accepted_before_ready = probe.connect_ex(str(self.uds)) == 0
                if self.on_ready is not None:  # what the daemon says at the moment READY=1 arrives
                    self.at_ready = self.on_ready()
                self.flag.touch()
            self.fields += data.split("\n")

    def close(self) -> None:
        self.done.set()
        self.thread.join()
        self.sock.close()


def test_first_connection_starts_the_daemon_and_is_answered(
    make_daemon: Callable[..., Daemon], tmp_path: Path, jfk: Path
) -> None:
    """The first request to the public socket starts proxy and daemon and gets its transcript."""
    # READY=1 comes only once Granian's socket accepts; SIGTERM sends STOPPING=1 and the daemon exits cleanly
    uds = tmp_path / "run/http.sock"
    uds.parent.mkdir()
    d = make_daemon(start=False, ASR_UDS=str(uds), ASR_LOG_DIR=str(tmp_path / "log"))
    notify = NotifyLog(tmp_path / "notify.sock", tmp_path / "ready", uds)
    port = services.free_port()
    env = {
        **d.env,
        "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
        "WATCHDOG_USEC": "2000000",
        "ASRCTL": str(Path(sys.executable).parent / "asrctl"),
        "DAEMON_LOG": str(d.log),
        "DAEMON_PID": str(tmp_path / "daemon.pid"),
        "READY_FLAG": str(tmp_path / "ready"),
    }
    # systemd-socket-activate passes on only LISTEN_*: the environment goes into the script
    exports = "\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items() if k.isidentifier())
    script = tmp_path / "ordering.sh"
    script.write_text(ORDERING.format(proxyd=PROXYD, exports=exports))
    script.chmod(0o755)
    activate = subprocess.Popen(
        ["systemd-socket-activate", "-l", f"127.0.0.1:{port}", str(script)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    daemon_pid = 0
    try:
        deadline = time.monotonic() + 10
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:  # the public socket listens...
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # ...but that probe connection already triggered the activation: like a client that hung up
        t0 = time.monotonic()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
            r = c.post("/v1/audio/transcriptions", files={"file": jfk.open("rb")}, data={"model": "tiny.en"})
        assert r.status_code == 200, r.text + d.logs()
        assert "americans" in r.text.lower()
        first_request_s = time.monotonic() - t0
        daemon_pid = int((tmp_path / "daemon.pid").read_text())
        assert notify.uds_accepted_before_ready is True
        assert "READY=1" in notify.fields
        assert any(f.startswith("STATUS=model tiny.en") for f in notify.fields)
        access = tmp_path / "log/access.log"
        deadline = time.monotonic() + 10
        while not (access.exists() and access.read_text()):  # the line is written once the app returns,
            assert time.monotonic() < deadline  # which can be just after the client has its answer
            time.sleep(0.05)
        lines = [json.loads(x) for x in access.read_text().splitlines()]
        assert [x["path"] for x in lines] == ["/v1/audio/transcriptions"]
        assert lines[0]["status"] == 200 and lines[0]["job_id"] and lines[0]["bytes_in"] > 0
        time.sleep(1.5)  # WatchdogSec=2 s: pings every second once READY
        assert notify.fields.count("WATCHDOG=1") >= 1
        os.kill(daemon_pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while _alive(daemon_pid):
            assert time.monotonic() < deadline, d.logs()
            time.sleep(0.1)
        time.sleep(0.3)
        assert "STOPPING=1" in notify.fields
        assert notify.fields.index("READY=1") < notify.fields.index("STOPPING=1")
        print(f"cold first request answered in {first_request_s:.1f} s")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(activate.pid, signal.SIGKILL)
        if daemon_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(daemon_pid, signal.SIGKILL)
        activate.wait(10)
        notify.close()


def test_preload_extends_the_start_timeout_and_ready_waits_for_the_model(
    make_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    """ASR_PRELOAD=true under a notify socket: STATUS=loading and EXTEND_TIMEOUT_USEC go out before
    READY=1, and READY=1 comes only once the model is in memory."""
    d = make_daemon(start=False, ASR_PRELOAD="true", NOTIFY_SOCKET=str(tmp_path / "notify.sock"))

    def loaded() -> object:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(d.url + "/v1/models/tiny.en", timeout=10).json()["loaded"]
        return None

    notify = NotifyLog(tmp_path / "notify.sock", tmp_path / "ready", d.state_dir / "no-uds", on_ready=loaded)
    try:
        d.start()
        deadline = time.monotonic() + 30
        while "READY=1" not in notify.fields:
            assert time.monotonic() < deadline, d.logs()
            time.sleep(0.05)
        fields = notify.fields
        extend = next(i for i, f in enumerate(fields) if f.startswith("EXTEND_TIMEOUT_USEC="))
        assert fields[extend] == "EXTEND_TIMEOUT_USEC=30000000"
        assert fields.index("STATUS=loading model tiny.en") < extend < fields.index("READY=1")
        assert notify.at_ready is True, d.logs()
        assert d.stop() == 0
    finally:
        notify.close()
