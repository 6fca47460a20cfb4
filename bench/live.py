"""Live transcription latency (issue 21): sessions streaming espeak speech in real time over `/v1/realtime`.

Each session sends three sentences (24 kHz PCM, 100 ms appends on a fixed schedule) with 1.2 s of
silence after each, through server VAD at its defaults (500 ms of silence ends an utterance). Per
utterance, with times taken at the client:

- `stopped_to_completed`: `speech_stopped` received → `completed` received (the issue's goal: ≤ 0.5 s);
- `speech_end_to_completed`: the last speech sample sent → `completed` (adds the VAD's 500 ms wait);
- `first_delta`: the speech's first sample sent → the utterance's first delta (goal: ≤ 1.0 s).

N sessions run at once for each level; the machine holds N in real time when every utterance's
final latency stays ≤ 1 s.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from bench import clips, live_real, stack, stats

RATE = 24000
CHUNK_S = 0.1
SILENCE_S = 1.2


def _pcm(clip: Path) -> bytes:
    out = subprocess.run(
        ["sox", str(clip), "-t", "raw", "-r", str(RATE), "-c", "1", "-e", "signed", "-b", "16", "-"],
        check=True,
        capture_output=True,
    )
    return out.stdout


def script(n: int = 3) -> tuple[bytes, list[tuple[float, float]]]:
    """The audio one session sends, and each sentence's (start, end) in seconds."""
    audio, spans = b"", []
    for text in clips.SENTENCES[:n]:
        path = clips.CACHE / f"live-{abs(hash(text)) % 10**8}.flac"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            clips._render(text, path)
        speech = _pcm(path)
        start = len(audio) / (2 * RATE)
        audio += speech
        spans.append((start, len(audio) / (2 * RATE)))
        audio += b"\0\0" * int(SILENCE_S * RATE)
    return audio, spans


async def session(url: str, audio: bytes, spans: list[tuple[float, float]]) -> list[dict[str, float]]:
    """Stream `audio` in real time; the latencies of each utterance."""
    async with live_real.configured(url) as ws:
        t0 = time.monotonic()
        step = int(CHUNK_S * RATE) * 2
        events: list[tuple[float, dict[str, Any]]] = []

        async def read() -> None:
            async for msg in ws:
                events.append((time.monotonic(), json.loads(msg)))

        reader = asyncio.create_task(read())
        for i in range(0, len(audio), step):
            await asyncio.sleep(max(0.0, t0 + i / (2 * RATE) - time.monotonic()))
            await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                      "audio": base64.b64encode(audio[i : i + step]).decode()}))  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _done(events) < len(spans):  # noqa: ASYNC110  # bounded poll
            await asyncio.sleep(0.05)
        reader.cancel()
    return _latencies(t0, events, spans)


def _done(events: list[tuple[float, dict[str, Any]]]) -> int:
    return sum(1 for _, e in events if e["type"] == "conversation.item.input_audio_transcription.completed")


Events = list[tuple[float, dict[str, Any]]]


def _latencies(t0: float, events: Events, spans: list[tuple[float, float]]) -> list[dict[str, float]]:
    out = []
    stopped = {e["item_id"]: t for t, e in events if e["type"] == "input_audio_buffer.speech_stopped"}
    first: dict[str, float] = {}
    for t, e in events:
        if e["type"] == "conversation.item.input_audio_transcription.delta":
            first.setdefault(e["item_id"], t)
    for t, e in events:
        if e["type"] != "conversation.item.input_audio_transcription.completed" or e["item_id"] not in stopped:
            continue
        start_s, end_s = spans[min(len(out), len(spans) - 1)]
        row = {"stopped_to_completed": t - stopped[e["item_id"]], "speech_end_to_completed": t - (t0 + end_s)}
        if e["item_id"] in first:
            row["first_delta"] = first[e["item_id"]] - (t0 + start_s)
        out.append(row)
    return out


def library_decode(model_dir: Path, audio: bytes, spans: list[tuple[float, float]]) -> dict[str, Any]:
    """The final decode of each utterance by faster-whisper in this process (as the daemon does it, one
    thread, beam 5): the machine's speed at this moment, to read the live latencies against."""
    import numpy as np
    from faster_whisper import WhisperModel

    from asr_daemon.engine import transcriber
    from asr_daemon.live import codec

    model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=1)
    dec = codec.Decoder(codec.AudioFormat("audio/pcm", RATE))
    samples = codec.to_float(np.concatenate([dec.feed(audio), dec.flush()]))
    times = []
    for start, end in spans:
        piece = samples[int(start * codec.RATE) : int((end + 0.5) * codec.RATE)]
        t0 = time.perf_counter()
        transcriber.decode_utterance(model, piece, beam_size=5, language="en")
        times.append(time.perf_counter() - t0)
    return stats.summary(times)


def live_latency(
    svc: stack.Services, work: Path, env: dict[str, str], models: list[str], levels: list[int],
    variants: dict[str, dict[str, str]] | None = None, real: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Every model × concurrency level; one daemon per model (and per variant: name → extra env, e.g.
    `PYTHONPATH` of an older tree or `ASR_LIVE_BEAM_SIZE=1`, measured one after another at each level).
    With `real` and the recordings of ../shared/audio present, each model's daemons then stream those
    too (bench/live_real.py: first delta on real speech, stability, WER), one session at a time."""
    audio, spans = script()
    result: dict[str, Any] = {"utterances_per_session": len(spans), "audio_s": len(audio) / (2 * RATE), "runs": [],
                              "real": {}}  # fmt: skip
    named = {"": env, **{k: {**env, **v} for k, v in (variants or {}).items()}}
    for model in models:
        fixed = {"ASR_MODEL": model, "ASR_PRELOAD": "true", "ASR_LIVE_MAX_SESSIONS": "32",
                 "ASR_LIVE_MAX_SESSIONS_PER_KEY": "32"}  # fmt: skip
        daemons = {
            name: stack.make_daemon(svc, work / (model + (f"-{name}" if name else "")), **{**e, **fixed})
            for name, e in named.items()
        }
        try:
            for d in daemons.values():
                d.start()
                asyncio.run(session(d.url, audio[: 2 * RATE * 2], spans[:0]))  # warm-up: model, VAD, first decode
            for n in levels:
                library = library_decode(stack.models_dir() / model, audio, spans)
                for name, d in daemons.items():
                    rows = asyncio.run(_many(d.url, audio, spans, n))
                    summary = _summary(model, n, rows, n * len(spans))
                    result["runs"].append({**summary, "variant": name, "library_final": library})
            if real and live_real.available():
                result["real"][model] = asyncio.run(live_real.run(daemons, 1))
        finally:
            for d in daemons.values():
                d.stop()
    return result


async def _many(url: str, audio: bytes, spans: list[tuple[float, float]], n: int) -> list[dict[str, float]]:
    done = await asyncio.gather(*(session(url, audio, spans) for _ in range(n)))
    return [row for rows in done for row in rows]


def _summary(model: str, n: int, rows: list[dict[str, float]], expected: int) -> dict[str, Any]:
    def col(key: str) -> list[float]:
        return [r[key] for r in rows if key in r]

    final = col("stopped_to_completed")
    return {
        "model": model,
        "sessions": n,
        "utterances": len(rows),
        "expected": expected,
        "stopped_to_completed": stats.summary(final) if final else None,
        "speech_end_to_completed": stats.summary(col("speech_end_to_completed")) if rows else None,
        "first_delta": stats.summary(col("first_delta")) if col("first_delta") else None,
        "realtime": bool(final) and len(rows) == expected and max(final) <= 1.0,
    }
