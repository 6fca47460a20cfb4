"""Helpers of the live-transcription tests: speech as wire audio, and a raw WebSocket client."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

SILENCE_S = 1.5


def pcm(path: Path, rate: int = 24000, encoding: str = "signed", bits: int = 16) -> bytes:
    """The audio of `path` as raw mono samples (`sox`): 16-bit PCM, or `encoding="mu-law"`/`"a-law"` 8-bit."""
    out = subprocess.run(
        ["sox", str(path), "-t", "raw", "-r", str(rate), "-c", "1", "-e", encoding, "-b", str(bits), "-"],
        check=True,
        capture_output=True,
    )
    return out.stdout


def silence(seconds: float, rate: int = 24000) -> bytes:
    """Silent 16-bit PCM."""
    return b"\0\0" * int(seconds * rate)


def chunks(audio: bytes, size: int = 4800) -> Iterator[str]:
    """The audio as base64 appends of `size` bytes (100 ms of 24 kHz PCM by default)."""
    for i in range(0, len(audio), size):
        yield base64.b64encode(audio[i : i + size]).decode()


def session_update(rate: int = 24000, vad: dict[str, Any] | bool | None = True, **transcription: Any) -> dict[str, Any]:
    """A GA `session.update` for a transcription session."""
    inp: dict[str, Any] = {
        "format": {"type": "audio/pcm", "rate": rate},
        "transcription": {"model": "whisper-1", **transcription},
    }
    if vad is not True:
        inp["turn_detection"] = vad
    return {"type": "session.update", "session": {"type": "transcription", "audio": {"input": inp}}}


def ws(url: str, token: str | None = None, subprotocols: list[str] | None = None, query: str = "intent=transcription",
       **kw: Any) -> ClientConnection:  # fmt: skip
    """A raw WebSocket to the daemon's `/v1/realtime`."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    target = url.replace("http://", "ws://") + "/v1/realtime" + (f"?{query}" if query else "")
    return connect(  # legacy: connected at once, usable with or without `with`
        target, additional_headers=headers, subprotocols=subprotocols, open_timeout=30, legacy=True, **kw
    )  # type: ignore[arg-type]


def send(conn: ClientConnection, event: dict[str, Any]) -> None:
    """Send one event."""
    conn.send(json.dumps(event))


def until(conn: ClientConnection, kind: str, timeout: float = 60) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Read events until one of type `kind`; it and every event read before it."""
    seen: list[dict[str, Any]] = []
    while True:
        ev = json.loads(conn.recv(timeout=timeout))
        seen.append(ev)
        if ev["type"] == kind:
            return ev, seen
