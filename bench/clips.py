"""Benchmark audio: espeak-ng clips rendered reproducibly (`sox -R`), and ../shared/audio when present.

Clips are cached under var/bench-cache/audio by name; nothing here is ever committed.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "var" / "bench-cache" / "audio"
#: ../shared/audio beside the repository (or beside the worktree folder holding it).
SHARED = next(
    (p for p in (ROOT.parent / "shared" / "audio", ROOT.parent.parent / "shared" / "audio") if p.is_dir()),
    ROOT.parent / "shared" / "audio",
)

SENTENCES = [
    "The committee met on Tuesday morning to review the budget for the coming year.",
    "Several members asked whether the new library could open before the end of the summer.",
    "The engineer explained that the bridge needed repairs to its northern support.",
    "A small group of volunteers planted two hundred trees along the river bank.",
    "Prices at the market rose slightly after the long winter storms.",
    "The school announced a new programme for students interested in music and science.",
    "Travellers were advised to check the timetable because several trains were delayed.",
    "The museum will display paintings borrowed from collections across the country.",
    "Farmers in the valley reported an excellent harvest of apples and pears this autumn.",
    "The mayor thanked the fire brigade for their quick response to the warehouse fire.",
    "Researchers found that regular walking improves sleep and reduces stress.",
    "The old lighthouse on the cliff has been turned into a small hotel.",
]


@dataclass(frozen=True)
class Clip:
    """An audio file and its duration in seconds."""

    name: str
    path: Path
    seconds: float


def duration(path: Path) -> float:
    """Seconds of audio in `path` (via soxi, or PyAV for formats sox lacks)."""
    out = subprocess.run(["soxi", "-D", str(path)], capture_output=True, text=True, check=False)
    if out.returncode == 0 and out.stdout.strip():
        return float(out.stdout)
    from asr_daemon.engine import audio

    return len(audio.decode(path)) / audio.SAMPLE_RATE


def _render(text: str, out: Path, voice: str = "en-us") -> None:
    wav = out.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), text], check=True)
    subprocess.run(["sox", "-R", str(wav), "-r", "16000", "-c", "1", str(out)], check=True)
    wav.unlink()


def espeak(seconds: float) -> Clip:
    """A clip of about `seconds` of espeak-ng speech: sentences in rotating order, cut at the length."""
    CACHE.mkdir(parents=True, exist_ok=True)
    name = f"espeak-{int(seconds)}s"
    out = CACHE / f"{name}.flac"
    if not out.exists():
        if seconds > 120:
            _long(seconds, out)
        else:
            words_needed = int(seconds * 3.2) + 10  # espeak-ng speaks ~2.9 words per second
            text, i = "", 0
            while len(text.split()) < words_needed:
                text += SENTENCES[i % len(SENTENCES)] + " "
                i += 1
            full = out.with_suffix(".full.flac")
            _render(text, full)
            subprocess.run(
                ["sox", "-R", str(full), str(out), "trim", "0", str(seconds), "fade", "0", "-0", "0.3"], check=True
            )
            full.unlink()
    return Clip(name, out, duration(out))


def _long(seconds: float, out: Path) -> None:
    """Minutes of speech: 60 s pieces of the sentences in different orders, concatenated."""
    pieces = []
    for k in range(int(seconds // 60)):
        piece = CACHE / f"piece-{k}.flac"
        if not piece.exists():
            order = SENTENCES[k % len(SENTENCES) :] + SENTENCES[: k % len(SENTENCES)]
            text = " ".join(order * 2)
            _render(text, piece, voice="en-us" if k % 2 == 0 else "en-gb")
            subprocess.run(["sox", "-R", str(piece), str(piece.with_suffix(".t.flac")), "trim", "0", "60"], check=True)
            piece.with_suffix(".t.flac").rename(piece)
        pieces.append(str(piece))
    subprocess.run(["sox", "-R", *pieces, str(out)], check=True)


def repeat(clip: Clip, times: int) -> Clip:
    """`clip` concatenated `times` times (60 minutes from 10)."""
    out = CACHE / f"{clip.name}-x{times}.flac"
    if not out.exists():
        subprocess.run(["sox", "-R", *[str(clip.path)] * times, str(out)], check=True)
    return Clip(f"{clip.name}-x{times}", out, duration(out))


def shared(name: str) -> Clip | None:
    """A recording from ../shared/audio, or None where it is absent (it is never copied here)."""
    path = SHARED / name
    if not path.is_file():
        return None
    return Clip(name, path, duration(path))


def short() -> Clip:
    """The 11 s clip: jfk.flac when present, else espeak-ng."""
    return shared("jfk.flac") or espeak(11)


def minute() -> Clip:
    """The 60 s clip: multilingual.mp3 is English then German; the espeak clip is the English baseline."""
    return espeak(60)
