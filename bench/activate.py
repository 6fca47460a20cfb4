"""Stand-in for systemd in cold-start runs: what asr-server.socket → proxy → service do in production.

Run by `systemd-socket-activate` on the first connection (so it holds the listening socket as fd 3).
Like systemd it starts the daemon at once, hands it a `NOTIFY_SOCKET`, and waits for `READY=1`: the
proxy unit is ordered after the `Type=notify` service, so in production the waiting connection is
forwarded only then. It records the times, then becomes `systemd-socket-proxyd` (same pid, so
LISTEN_PID still matches) to forward it. Usage: python -I -S activate.py MARKS_JSON UDS DAEMON_ARGV...

Only `os`, `sys` and `time` (built in) are imported before the daemon is spawned, so the stand-in's
own start-up, which systemd does not have, adds as little as it can to the measured cold start.
"""

import os
import sys
import time

PROXYD = "/lib/systemd/systemd-socket-proxyd"


def main() -> None:
    """Spawn, wait for READY=1, record, exec the proxy."""
    spawn = time.time()
    marks, uds, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
    import socket  # after the clock read; the bind below still precedes the daemon's first notify

    notify = marks + ".notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(notify)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    env["NOTIFY_SOCKET"] = notify
    log = os.open(marks + ".log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    # fd 3 is the listening socket systemd-socket-activate handed over (inheritable, for the proxy):
    # the service never gets it in production, so the daemon does not get it here either
    out = [(os.POSIX_SPAWN_DUP2, log, 1), (os.POSIX_SPAWN_DUP2, log, 2), (os.POSIX_SPAWN_CLOSE, 3)]
    pid = os.posix_spawnp(argv[0], argv, env, file_actions=out, setsid=True)
    os.close(log)
    sock.settimeout(0.2)
    deadline = time.monotonic() + 120  # TimeoutStartSec's part: a daemon that never gets ready fails the run
    while True:
        try:
            if b"READY=1" in sock.recv(4096).split(b"\n"):
                break
        except TimeoutError:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                raise SystemExit(f"daemon exited with status {status} before READY=1") from None
            if time.monotonic() > deadline:
                os.killpg(pid, 15)
                raise SystemExit("daemon sent no READY=1 within 120 s") from None
    ready = time.time()
    sock.close()
    os.unlink(notify)
    import json

    with open(marks, "w", encoding="utf-8") as fh:
        json.dump({"spawn": spawn, "ready": ready, "daemon_pid": pid, "uds": uds}, fh)
    os.execv(PROXYD, [PROXYD, uds])


if __name__ == "__main__":
    main()
