"""Home Assistant's path (issue 22): a 3 s voice command over Wyoming → transcript, warm and from a
socket-activated cold start, with tiny.en and base.

The client is the `wyoming` package's AsyncTcpClient, sending as Home Assistant does: `transcribe`,
`audio-start`, 16 kHz mono 16-bit chunks of 64 ms, `audio-stop`. Two ways of sending:

- *burst*: all the audio at once (a recording played back): connection → transcript is the whole cost;
- *spoken*: chunks paced in real time as a microphone delivers them: what a person waits for is
  audio-stop → transcript, and in a cold start the daemon boots while they are still speaking.

Warm: a running daemon (one warm-up command first). Cold: `systemd-socket-activate` on the Wyoming
port runs bench/activate.py, which starts `asrctl serve` with ASR_WYOMING_UDS and ASR_PRELOAD=true
(as asr-server.service does), waits for READY=1 and becomes `systemd-socket-proxyd` to wyoming.sock,
as asr-wyoming.socket → asr-wyoming-proxy.service do in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path
from typing import Any

import httpx
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error

from bench import clips, coldstart, stack, stats
from bench.clips import Clip
from tests import services

HERE = Path(__file__).resolve().parent
COMMAND = "Turn on the living room lamp and dim the kitchen lights."
CHUNK_S = 0.064


def command_clip() -> Clip:
    """The 3 s voice command (espeak-ng, 16 kHz mono WAV)."""
    clips.CACHE.mkdir(parents=True, exist_ok=True)
    out = clips.CACHE / "command-3s.wav"
    if not out.exists():
        raw = out.with_suffix(".raw.wav")
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(raw), COMMAND], check=True)
        subprocess.run(["sox", "-R", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(out)], check=True)
        raw.unlink()
    return Clip("command-3s.wav", out, clips.duration(out))


def _pcm(clip: Clip) -> bytes:
    with wave.open(str(clip.path)) as w:
        return w.readframes(w.getnframes())


async def send(port: int, pcm: bytes, model: str, spoken: bool, connect_timeout: float = 60) -> dict[str, Any]:
    """One command; seconds from connecting and from audio-stop to the transcript, and its text."""
    step = int(16000 * CHUNK_S) * 2
    t_connect = time.perf_counter()
    client = AsyncTcpClient("127.0.0.1", port, connect_timeout=connect_timeout, read_timeout=600)
    async with client:
        await client.write_event(Transcribe(name=model, language="en").event())
        await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
        t_audio = time.perf_counter()
        for n, i in enumerate(range(0, len(pcm), step)):
            if spoken:  # the microphone delivers chunk n at t_audio + n * CHUNK_S
                await asyncio.sleep(max(0.0, t_audio + n * CHUNK_S - time.perf_counter()))
            await client.write_event(AudioChunk(rate=16000, width=2, channels=1, audio=pcm[i : i + step]).event())
        await client.write_event(AudioStop().event())
        t_stop = time.perf_counter()
        while (event := await client.read_event()) is not None:
            if Error.is_type(event.type):
                raise RuntimeError(f"wyoming error: {event.data}")
            if Transcript.is_type(event.type):
                t_done = time.perf_counter()
                return {
                    "total": t_done - t_connect,
                    "after_stop": t_done - t_stop,
                    "text": Transcript.from_event(event).text,
                }
    raise RuntimeError("the connection closed without a transcript")


def warm(svc: stack.Services, work: Path, clip: Clip, model: str, runs: int) -> dict[str, Any]:
    """`runs` commands of each kind to a running daemon whose model is loaded."""
    port = services.free_port()
    d = stack.make_daemon(svc, work, ASR_MODEL=model, ASR_WYOMING_PORT=str(port), ASR_PRELOAD="true")
    d.start()
    pcm = _pcm(clip)
    data = clip.path.read_bytes()
    results: dict[str, list[dict[str, Any]]] = {"burst": [], "spoken": [], "http": []}
    try:
        asyncio.run(send(port, pcm, model, spoken=False))  # warm-up
        with httpx.Client(base_url=d.url, timeout=600) as c:
            for _ in range(runs):  # interleaved, so that the machine's load falls on every kind alike
                results["burst"].append(asyncio.run(send(port, pcm, model, spoken=False)))
                dt, _, text = stack.post_transcription(c, clip.name, data, model=model, language="en")
                results["http"].append({"total": dt, "after_stop": dt, "text": text})
                results["spoken"].append(asyncio.run(send(port, pcm, model, spoken=True)))
    finally:
        d.stop()
    return {kind: _summary(rs) for kind, rs in results.items()}


def cold_once(d: stack.Daemon, work: Path, pcm: bytes, model: str, spoken: bool, run: int) -> dict[str, Any]:
    """One socket-activated cold start answered over Wyoming (the daemon's database already migrated)."""
    wyo, http = work / f"wyoming{run}.sock", work / f"http{run}.sock"
    marks = str(work / f"marks{run}.json")
    port = services.free_port()
    env = {**d.env, "ASR_WYOMING_UDS": str(wyo), "ASR_PRELOAD": "true", "ASR_START_REASON": "socket"}
    passed = [arg for name in env for arg in ("-E", name)]
    argv = [
        "systemd-socket-activate",
        "-l",
        f"127.0.0.1:{port}",
        *passed,
        sys.executable,
        "-I",
        "-S",
        str(HERE / "activate.py"),
        marks,
        str(wyo),
        sys.executable,
        "-m",
        "asr_daemon.cli",
        "serve",
        "--uds",
        str(http),
    ]
    sa = subprocess.Popen(
        argv, env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 10
        while not coldstart._listening(port) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # let the machine settle after starting the listener
        return asyncio.run(send(port, pcm, model, spoken))
    except (OSError, RuntimeError) as exc:
        log = Path(marks + ".log")
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
        raise RuntimeError(f"Wyoming cold start {run} failed: {exc}\n{tail}") from exc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(sa.pid, signal.SIGTERM)
        sa.wait(10)
        with contextlib.suppress(ProcessLookupError, OSError, ValueError):
            daemon = int(Path(marks + ".pid").read_text())
            os.killpg(daemon, signal.SIGTERM)
            for _ in range(600):
                if not Path(f"/proc/{daemon}").exists():
                    break
                time.sleep(0.1)


def cold(svc: stack.Services, work: Path, clip: Clip, model: str, runs: int) -> dict[str, Any]:
    """`runs` cold starts of each kind, alternating burst and spoken."""
    why = coldstart.available()
    if why:
        return {"skipped": why}
    work.mkdir(parents=True, exist_ok=True)
    d = stack.make_daemon(svc, work, ASR_MODEL=model)
    subprocess.run(
        [sys.executable, "-m", "asr_daemon.cli", "db", "migrate"], env=d.env, check=True, capture_output=True
    )
    pcm = _pcm(clip)
    results: dict[str, list[dict[str, Any]]] = {"burst": [], "spoken": []}
    n = 0
    for i in range(runs):
        for kind in ("burst", "spoken") if i % 2 == 0 else ("spoken", "burst"):
            results[kind].append(cold_once(d, work, pcm, model, kind == "spoken", n))
            n += 1
    return {kind: _summary(rs) for kind, rs in results.items()}


def _summary(rs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "total": stats.summary([r["total"] for r in rs]),
        "after_stop": stats.summary([r["after_stop"] for r in rs]),
        "texts": sorted({r["text"] for r in rs}),
        "n": len(rs),
    }


def wyoming(
    svc: stack.Services, work: Path, runs: int, models: tuple[str, ...] = ("tiny.en", "base")
) -> dict[str, Any]:
    """The section: warm and cold, per model."""
    clip = command_clip()
    out: dict[str, Any] = {"clip": clip.name, "seconds": clip.seconds, "runs": runs, "models": {}}
    for model in models:
        out["models"][model] = {
            "warm": warm(svc, work / f"warm-{model}", clip, model, runs),
            "cold": cold(svc, work / f"cold-{model}", clip, model, runs),
        }
    return out


def render(s: dict[str, Any]) -> list[str]:
    """Markdown for docs/benchmarks.md."""
    lines = [
        (
            f"A {s['seconds']:.1f} s voice command (`{s['clip']}`, espeak-ng) sent with the `wyoming` package's client "
            f"as Home Assistant sends it. Median (min–max) of {s['runs']} runs per cell."
        ),
        "",
        "| model | daemon | sent | connection → transcript | audio-stop → transcript | transcript |",
        "|---|---|---|---|---|---|",
    ]
    for model, m in s["models"].items():
        for state in ("warm", "cold"):
            r = m[state]
            if "skipped" in r:
                lines.append(f"| {model} | {state} | — | skipped: {r['skipped']} | | |")
                continue
            for kind in ("burst", "spoken", "http"):
                if kind not in r:
                    continue
                k = r[kind]
                text = " / ".join(f"“{t}”" for t in k["texts"])
                lines.append(
                    f"| {model} | {state} | {kind} | {stats.fmt(k['total'])} | {stats.fmt(k['after_stop'])} | {text} |"
                )
    lines += [
        "",
        (
            "*http*: the same WAV POSTed to `/v1/audio/transcriptions` of the same warm daemon, interleaved "
            "with the Wyoming runs (the job path without Wyoming). "
            "*burst*: the whole command sent at once; *spoken*: paced in real time (64 ms chunks), so the "
            "cold start overlaps the speaking and what the speaker waits for is audio-stop → transcript. "
            "Cold: a socket-activated start of `asrctl serve` (ASR_PRELOAD=true, as the unit sets) "
            "through a stand-in for asr-wyoming.socket → asr-wyoming-proxy.service; PostgreSQL and Redis "
            "already running."
        ),
    ]
    return lines
