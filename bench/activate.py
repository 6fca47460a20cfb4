"""Stand-in for systemd in cold-start runs: what asr-server.socket → proxy → service do in production.

Run by `systemd-socket-activate` on the first connection (so it holds the listening socket as fd 3):
starts the daemon on its Unix socket, waits until it answers (production: READY=1), records the
times, then becomes `systemd-socket-proxyd` (same pid, so LISTEN_PID still matches) to forward the
waiting connection. Usage: activate.py MARKS_JSON UDS DAEMON_ARGV...
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time

PROXYD = "/lib/systemd/systemd-socket-proxyd"


def answers(uds: str) -> bool:
    """True when /healthz on the Unix socket returns 200."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as s:
        s.settimeout(2)
        s.connect(uds)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        return b" 200 " in s.recv(64)
    return False


def main() -> None:
    """Start, wait, record, exec the proxy."""
    spawn = time.time()
    marks, uds, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    with open(marks + ".log", "ab") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=log, start_new_session=True)
    while not answers(uds):
        if proc.poll() is not None:
            raise SystemExit(f"daemon exited with {proc.returncode}")
        time.sleep(0.005)
    with open(marks, "w", encoding="utf-8") as fh:
        json.dump({"spawn": spawn, "ready": time.time(), "daemon_pid": proc.pid}, fh)
    os.execv(PROXYD, [PROXYD, uds])


if __name__ == "__main__":
    main()
