"""A two-speaker dialogue rendered with espeak-ng (two different voices), with its reference turns.

Voice A is espeak-ng's `en-us` (male, default pitch and speed); voice B is `en+f3` (a female variant)
at pitch 75 and 190 words a minute. The lines alternate A, B, A, … with a 0.4 s pause between them,
joined with sox (16 kHz mono FLAC, `-R` for reproducible output). Reference turns span each line's
rendered audio (espeak's own few ms of lead-in and tail included). Cached by content.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

VOICES = {"A": ("en-us", "50", "160"), "B": ("en+f3", "75", "190")}
LINES = [
    "Good morning, thank you for coming in today to talk about the new project.",
    "Thanks for having me. I have been looking forward to this meeting all week.",
    "Let us start with the schedule, because the first deadline is only a month away.",
    "I think we can make it if the design team finishes the drawings by Friday.",
    "That sounds possible. What do you need from us to keep things moving?",
    "Mostly quick answers. When a question comes up, a short reply saves us days.",
]
PAUSE_S = 0.4


def _seconds(path: Path) -> float:
    out = subprocess.run(["soxi", "-D", str(path)], capture_output=True, text=True, check=True)
    return float(out.stdout)


def _line(text: str, speaker: str, out: Path) -> Path:
    voice, pitch, speed = VOICES[speaker]
    raw = out.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-p", pitch, "-s", speed, "-w", str(raw), text], check=True)
    subprocess.run(["sox", "-R", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(out)], check=True)
    raw.unlink()
    return out


def dialogue(cache: Path, lines: list[str] | None = None) -> tuple[Path, list[tuple[float, float, str]]]:
    """(FLAC file, reference turns as (start, end, speaker)) of the dialogue, made once into `cache`."""
    lines = lines or LINES
    key = hashlib.sha256(json.dumps([VOICES, lines, PAUSE_S]).encode()).hexdigest()[:16]
    out, ref_file = cache / f"dialogue-{key}.flac", cache / f"dialogue-{key}.json"
    if out.is_file() and ref_file.is_file():
        return out, [(s, e, spk) for s, e, spk in json.loads(ref_file.read_text())]
    cache.mkdir(parents=True, exist_ok=True)
    parts: list[str] = []
    turns: list[tuple[float, float, str]] = []
    at = 0.0
    gap = cache / f"gap-{key}.wav"
    subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", "-b", "16", str(gap), "trim", "0", str(PAUSE_S)], check=True)
    for i, text in enumerate(lines):
        speaker = "AB"[i % 2]
        piece = _line(text, speaker, cache / f"line-{key}-{i}.wav")
        dur = _seconds(piece)
        turns.append((round(at, 3), round(at + dur, 3), speaker))
        parts += [str(piece), str(gap)]
        at += dur + PAUSE_S
    tmp = out.with_suffix(".tmp.flac")
    subprocess.run(["sox", "-R", *parts[:-1], str(tmp)], check=True)
    for p in set(parts):
        Path(p).unlink()
    tmp.replace(out)
    ref_file.write_text(json.dumps(turns))
    return out, turns
