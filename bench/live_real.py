"""Live partial text on real speech (issue 21): recordings from ../shared/audio (never committed) streamed
in real time through `/v1/realtime` (24 kHz PCM, 100 ms appends, server VAD at its defaults, which cuts
them into utterances), one clip at a time, alternating between daemon variants clip by clip.

Per utterance: the first partial delta's latency after the VAD's speech start (the sample where Silero
crossed its threshold, `audio_start_ms` + `prefix_padding_ms`), whether the partial deltas (those sent
before the utterance was committed) are a prefix of the completed text (normalized words), how many
of their words the completed text contradicts; per clip the completed texts' WER against the words
the README gives (where it gives them) and against the first variant's completed texts.

`python -m bench.live_real --models tiny.en,base --variant before:PYTHONPATH=/tmp/before [--out F.json]`
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect

from bench import stack
from bench.clips import SHARED
from bench.realspeech import REFERENCES, normalize, wer

RATE = 24000
CHUNK_S = 0.1
TAIL_S = 1.5
PAD_S = 0.3  # server VAD's default prefix_padding_ms

#: (file, first second, last second, reference words or None)
CLIPS: list[tuple[str, float, float, str | None]] = [
    ("jfk.flac", 0, 11.0, REFERENCES["jfk.flac"]),
    ("multilingual.mp3", 0, 20.0, None),  # the MIT licence read in English (its first 20 s)
    ("pyannote_sample.wav", 0, 20.0, None),  # two speakers in conversation
    ("stereo_diarization.wav", 0, 5.0, REFERENCES["stereo_diarization.wav"]),
    ("living_room_light_en.wav", 0, 2.4, REFERENCES["living_room_light_en.wav"]),
    ("turn_on_the_living_room_lamp.wav", 0, 3.0, REFERENCES["turn_on_the_living_room_lamp.wav"]),
    ("hotwords.mp3", 0, 4.0, None),
    ("speaches_audio.wav", 0, 1.3, REFERENCES["speaches_audio.wav"]),
]


def available() -> bool:
    """Whether the recordings are here (they are never committed)."""
    return all((SHARED / name).is_file() for name, *_ in CLIPS)


def pcm(name: str, start: float, end: float) -> bytes:
    """The clip's span as 24 kHz mono s16 PCM, TAIL_S of silence after it."""
    from faster_whisper.audio import decode_audio  # PyAV: reads the mp3s too (sox here cannot)

    samples = decode_audio(str(SHARED / name), sampling_rate=RATE)[int(start * RATE) : int(end * RATE)]
    out: bytes = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    return out + b"\0\0" * int(TAIL_S * RATE)


@contextlib.asynccontextmanager
async def configured(url: str) -> AsyncIterator[ClientConnection]:
    """A `/v1/realtime` WebSocket to the daemon at `url`, its session set to 24 kHz PCM and updated."""
    ws_url = url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
    async with connect(ws_url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "session.update", "session": {"type": "transcription", "audio": {
            "input": {"format": {"type": "audio/pcm", "rate": RATE}}}}}))  # fmt: skip
        while json.loads(await ws.recv())["type"] != "session.updated":
            pass
        yield ws


async def stream(url: str, audio: bytes) -> tuple[float, list[tuple[float, dict[str, Any]]]]:
    """Stream `audio` in real time; (start time, every server event with its arrival time)."""
    async with configured(url) as ws:
        events: list[tuple[float, dict[str, Any]]] = []

        async def read() -> None:
            async for msg in ws:
                events.append((time.monotonic(), json.loads(msg)))

        reader = asyncio.create_task(read())
        t0 = time.monotonic()
        step = int(CHUNK_S * RATE) * 2
        for i in range(0, len(audio), step):
            await asyncio.sleep(max(0.0, t0 + i / (2 * RATE) - time.monotonic()))
            await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                      "audio": base64.b64encode(audio[i : i + step]).decode()}))  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # bounded poll: every committed item completed
            done = {e["item_id"] for _, e in events if e["type"].endswith("transcription.completed")}
            committed = {e["item_id"] for _, e in events if e["type"] == "input_audio_buffer.committed"}
            if committed and committed <= done:
                break
            await asyncio.sleep(0.05)
        reader.cancel()
    return t0, events


def items(t0: float, events: list[tuple[float, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per utterance: first partial delta latency, partial text, completed text, prefix check."""
    out: dict[str, dict[str, Any]] = {}
    committed: set[str] = set()
    for t, e in events:
        kind, iid = e["type"], str(e.get("item_id"))
        if kind == "input_audio_buffer.speech_started":
            out[iid] = {"start": e["audio_start_ms"] / 1000 + PAD_S, "partial": "", "first": None, "text": None}
        elif kind == "input_audio_buffer.committed":
            committed.add(iid)
        elif kind.endswith("transcription.delta") and iid in out and iid not in committed:
            row = out[iid]
            row["partial"] += e["delta"]
            if row["first"] is None:
                row["first"] = round(t - (t0 + row["start"]), 3)
        elif kind.endswith("transcription.completed") and iid in out:
            out[iid]["text"] = e["transcript"]
    rows = []
    for row in out.values():
        if row["text"] is None:
            continue
        said, final = normalize(row["partial"]), normalize(row["text"])
        row["words"] = len(said)
        row["contradicted"] = sum(1 for i, w in enumerate(said) if i >= len(final) or final[i] != w)
        row["prefix"] = final[: len(said)] == said
        rows.append(row)
    return rows


async def run(daemons: dict[str, stack.Daemon], rounds: int) -> dict[str, Any]:
    """Every clip to every variant in turn (alternating), `rounds` times."""
    res: dict[str, Any] = {name: [] for name in daemons}
    for r in range(rounds):
        for name, start, end, ref in CLIPS:
            audio = pcm(name, start, end)
            order = list(daemons.items())
            for vname, d in order if r % 2 == 0 else order[::-1]:
                t0, events = await stream(d.url, audio)
                rows = items(t0, events)
                text = " ".join(row["text"] for row in rows)
                res[vname].append({"clip": name, "round": r, "load": os.getloadavg()[0], "items": rows,
                                   "text": text, "wer_ref": wer(ref, text) if ref else None})  # fmt: skip
    return res


def summary(res: dict[str, Any]) -> list[str]:
    """Markdown lines: per variant the first-delta latencies, stability, WER."""
    base = next(iter(res))
    head = (
        "| variant | utterances | with a partial delta | first delta, median (min–max) | partial deltas a prefix "
        "of completed | partial words contradicted | completed WER vs README (clips with words) | completed "
        "words changed vs first variant | load (1 min) |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    for vname, clips in res.items():
        rows = [row for c in clips for row in c["items"]]
        firsts = sorted(row["first"] for row in rows if row["first"] is not None)
        words = sum(row["words"] for row in rows)
        bad = sum(row["contradicted"] for row in rows)
        refs = [c["wer_ref"] for c in clips if c["wer_ref"] is not None]
        changed = [wer(b["text"], c["text"]) for b, c in zip(res[base], clips, strict=True) if b["text"]]
        lat = f"{statistics.median(firsts):.2f} ({firsts[0]:.2f}–{firsts[-1]:.2f}) s" if firsts else "–"
        loads = [c["load"] for c in clips]
        lines.append(
            f"| {vname or 'this tree'} | {len(rows)} | {len(firsts)} | {lat} | "
            f"{sum(row['prefix'] for row in rows)}/{len(rows)} | {bad}/{words} | "
            f"{statistics.mean(refs):.3f} | {statistics.mean(changed):.3f} | {min(loads):.2f}–{max(loads):.2f} |"
        )
    return lines


def main() -> None:
    """Start one daemon per variant and model; stream the clips; print a table, write the raw result."""
    ap = argparse.ArgumentParser(prog="python -m bench.live_real", description=__doc__)
    ap.add_argument("--models", default="tiny.en")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:ASR_X=V[,K=V]")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("/tmp/live_real.json"))
    a = ap.parse_args()
    variants = {"": {}, **{v.split(":", 1)[0]: dict(kv.split("=", 1) for kv in v.split(":", 1)[1].split(","))
                           for v in a.variant}}  # fmt: skip
    work = Path("/tmp") / f"live_real_{os.getpid()}"
    result: dict[str, Any] = {}
    with stack.running_services() as svc:
        for model in a.models.split(","):
            daemons = {
                name: stack.make_daemon(
                    svc,
                    work / f"{model}-{name or 'this'}",
                    ASR_MODEL=model,
                    ASR_PRELOAD="true",
                    ASR_WYOMING_PORT="0",
                    **env,
                )
                for name, env in variants.items()
            }
            try:
                for d in daemons.values():
                    d.start()
                    asyncio.run(stream(d.url, pcm("speaches_audio.wav", 0, 1.3)))  # warm-up
                result[model] = asyncio.run(run(daemons, a.rounds))
            finally:
                for d in daemons.values():
                    d.stop()
            print(f"\n{model}\n" + "\n".join(summary(result[model])), flush=True)
    a.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
