#!/usr/bin/env python3
"""make test-systemd, host side: open /v1/realtime through the public port and print the first event.

Standard library only (the host's python3 has no websockets package): the upgrade request, the 101,
one unmasked server text frame. Exits 0 when that frame is `session.created`.
"""

import base64
import json
import os
import socket
import sys

host, port = "127.0.0.1", int(sys.argv[1])
s = socket.create_connection((host, port), timeout=300)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(
    f"GET /v1/realtime?intent=transcription HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
)
buf = b""
while b"\r\n\r\n" not in buf:
    chunk = s.recv(4096)
    if not chunk:
        sys.exit("closed before the upgrade answer")
    buf += chunk
head, _, buf = buf.partition(b"\r\n\r\n")
if not head.startswith(b"HTTP/1.1 101"):
    sys.exit(f"no upgrade: {head[:200]!r}")


def read(n: int) -> bytes:
    global buf
    while len(buf) < n:
        chunk = s.recv(65536)
        if not chunk:
            sys.exit("closed mid-frame")
        buf += chunk
    out, buf = buf[:n], buf[n:]
    return out


b0, b1 = read(2)
size = b1 & 0x7F
if size == 126:
    size = int.from_bytes(read(2), "big")
elif size == 127:
    size = int.from_bytes(read(8), "big")
event = json.loads(read(size))
print("  first event:", event["type"], event.get("session", {}).get("id", ""))
s.close()
sys.exit(0 if b0 & 0x0F == 1 and event["type"] == "session.created" else 1)
