"""Stand-in for systemd in cold-start runs: what asr-server.socket → proxy → service do in production.

Run by `systemd-socket-activate` on the first connection (so it holds the listening socket as fd 3).
Like systemd it starts the daemon at once, hands it a `NOTIFY_SOCKET`, and waits for `READY=1`: the
proxy unit is ordered after the `Type=notify` service, so in production the waiting connection is
forwarded only then. It records the times, then becomes `systemd-socket-proxyd` (same pid, so
LISTEN_PID still matches) to forward it. Usage: python -I -S activate.py MARKS_JSON UDS DAEMON_ARGV...

Only `os`, `sys` and `time` (built in) are imported before the clock is read, so the stand-in's own
start-up, which systemd does not have, adds as little as it can to the measured cold start. The
daemon's pid goes to MARKS_JSON.pid at once, so that the bench can stop it even if this fails;
failures are written to MARKS_JSON.log, beside the daemon's own output.
"""

import os
import sys
import time

PROXYD = "/lib/systemd/systemd-socket-proxyd"

#: TimeoutStartSec of the unit: READY=1 must come within it, unless EXTEND_TIMEOUT_USEC extends it
START_TIMEOUT = 180.0


def main() -> None:
    """Spawn, wait for READY=1, record, exec the proxy."""
    spawn = time.time()
    marks, uds, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
    import socket  # after the clock read; the bind below still precedes the daemon's first notify

    # an abstract socket: no path length limit, nothing left on disk
    name = f"asr-bench-notify-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    env["NOTIFY_SOCKET"] = "@" + name
    log = os.open(marks + ".log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    # fd 3 is the listening socket systemd-socket-activate handed over (inheritable, for the proxy):
    # the service never gets it in production, so the daemon does not get it here either
    out = [(os.POSIX_SPAWN_DUP2, log, 1), (os.POSIX_SPAWN_DUP2, log, 2), (os.POSIX_SPAWN_CLOSE, 3)]
    pid = os.posix_spawnp(argv[0], argv, env, file_actions=out, setsid=True)
    with open(marks + ".pid", "w", encoding="ascii") as fh:
        fh.write(str(pid))
    sock.settimeout(0.2)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            fields = sock.recv(4096).split(b"\n")
        except TimeoutError:
            fields = []
        if b"READY=1" in fields:
            break
        for f in fields:
            if f.startswith(b"EXTEND_TIMEOUT_USEC="):  # as systemd: the start may take this much longer from now
                deadline = max(deadline, time.monotonic() + int(f.split(b"=", 1)[1]) / 1e6)
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            fail(log, f"daemon exited with status {os.waitstatus_to_exitcode(status)} before READY=1")
        if time.monotonic() > deadline:
            stop(pid)
            fail(log, f"daemon sent no READY=1 within {START_TIMEOUT:.0f} s (and its extensions)")
    ready = time.time()
    sock.close()
    os.close(log)
    import json

    with open(marks, "w", encoding="utf-8") as fh:
        json.dump({"spawn": spawn, "ready": ready}, fh)  # the pid is in MARKS_JSON.pid
    os.execv(PROXYD, [PROXYD, uds])


def stop(pid: int) -> None:
    """SIGTERM the daemon's process group, SIGKILL it after 10 s, and reap it."""
    import signal

    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        until = time.monotonic() + wait
        while time.monotonic() < until:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
            time.sleep(0.05)


def fail(log: int, message: str) -> None:
    """Write why to the daemon's log (the bench shows it) and exit 1."""
    os.write(log, f"activate.py: {message}\n".encode())
    raise SystemExit(1)


if __name__ == "__main__":
    main()
